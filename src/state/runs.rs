//! The `runs` table of `state.db`: how the last runs ended, so `/metrics`, `/readyz` and
//! `status` show them after a restart (a daemon restarted after a
//! successful `--run-now` reports that success before its own first run).
//!
//! Two kinds of success are kept apart, because a notification outage is
//! not a rotation outage: a run *succeeded* when every due secret rotated
//! (and verified) and nothing but a sink failed; its *deliveries
//! succeeded* when every sink holds its values afterwards.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use rusqlite::{params, Connection, OptionalExtension};

use super::db::Db;
use super::{StateDir, StateError};

/// Format version of the runs file of earlier builds (imported).
pub const RUNS_VERSION: u32 = 1;

/// The outcome of the last run, and when each kind of success last held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHistory {
    pub version: u32,
    /// When the last run (scheduled or `--run-now`, not a dry run) ended.
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_run_duration_ms: Option<u64>,
    /// The end of the last run in which no secret failed to rotate.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The end of the last run after which every sink was delivered.
    pub last_delivery_success_at: Option<DateTime<Utc>>,
    /// What failed in the last run (empty: nothing).
    #[serde(default)]
    pub last_failures: LastFailures,
}

/// Counts of what failed in the last run, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailures {
    /// Secrets, users, the login or the state: anything but a sink.
    pub rotation: u32,
    /// File and template sinks: their consumers may hold a dead key.
    pub file_sinks: u32,
    /// Webhook sinks: notifications, kept in the outbox.
    pub webhooks: u32,
}

impl RunHistory {
    /// Notes a run that ended `at` after `duration` with `failures`.
    pub fn record(
        &mut self,
        failures: LastFailures,
        duration: std::time::Duration,
        at: DateTime<Utc>,
    ) {
        self.last_run_at = Some(at);
        self.last_run_duration_ms = Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        if failures.rotation == 0 {
            self.last_success_at = Some(at);
        }
        if failures.file_sinks == 0 && failures.webhooks == 0 {
            self.last_delivery_success_at = Some(at);
        }
        self.last_failures = failures;
    }
}

impl StateDir {
    /// The run history (empty before the first run).
    pub fn load_runs(&self) -> Result<RunHistory, StateError> {
        load(&self.db)
    }

    /// Replaces the run history.
    pub fn save_runs(&self, runs: &RunHistory) -> Result<(), StateError> {
        self.db.write(|tx| put(tx, runs))
    }
}

pub(crate) fn put(tx: &Connection, runs: &RunHistory) -> rusqlite::Result<()> {
    let f = &runs.last_failures;
    tx.execute(
        "INSERT OR REPLACE INTO runs VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            runs.last_run_at,
            runs.last_run_duration_ms,
            runs.last_success_at,
            runs.last_delivery_success_at,
            f.rotation,
            f.file_sinks,
            f.webhooks
        ],
    )?;
    Ok(())
}

/// The run history in `db` (read-only views too).
pub(crate) fn load(db: &Db) -> Result<RunHistory, StateError> {
    let read = db.read(|c| {
        c.query_row(
            "SELECT last_run_at, last_run_duration_ms, last_success_at, last_delivery_success_at,
                    failed_rotations, failed_file_sinks, failed_webhooks FROM runs",
            [],
            |r| {
                Ok(RunHistory {
                    version: RUNS_VERSION,
                    last_run_at: r.get(0)?,
                    last_run_duration_ms: r.get(1)?,
                    last_success_at: r.get(2)?,
                    last_delivery_success_at: r.get(3)?,
                    last_failures: LastFailures {
                        rotation: r.get(4)?,
                        file_sinks: r.get(5)?,
                        webhooks: r.get(6)?,
                    },
                })
            },
        )
        .optional()
    })?;
    Ok(read.unwrap_or(RunHistory {
        version: RUNS_VERSION,
        ..RunHistory::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load_runs().unwrap().last_run_at, None);
        let at = Utc::now();
        let runs = RunHistory {
            last_run_at: Some(at),
            last_success_at: Some(at),
            last_failures: LastFailures {
                webhooks: 2,
                ..LastFailures::default()
            },
            ..RunHistory::default()
        };
        state.save_runs(&runs).unwrap();
        let read = state.load_runs().unwrap();
        assert_eq!(read.last_success_at, Some(at));
        assert_eq!(read.last_failures.webhooks, 2);
        assert_eq!(read.version, RUNS_VERSION);
    }
}
