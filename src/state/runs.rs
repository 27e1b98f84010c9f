//! `runs.json`: how the last runs ended, so `/metrics`, `/readyz` and
//! `status` show them after a restart (a daemon restarted after a
//! successful `--run-now` reports that success before its own first run).
//!
//! Two kinds of success are kept apart, because a notification outage is
//! not a rotation outage: a run *succeeded* when every due secret rotated
//! (and verified) and nothing but a sink failed; its *deliveries
//! succeeded* when every sink holds its values afterwards.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::fs::{check_version, read_json, write_json_atomic};
use super::{StateDir, StateError, RUNS_FILE};
use crate::dirfd::Dir;

/// Format version of `runs.json`.
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

impl StateDir {
    /// The run history (empty before the first run).
    pub fn load_runs(&self) -> Result<RunHistory, StateError> {
        load(self.handle())
    }

    /// Replaces `runs.json` atomically.
    pub fn save_runs(&self, runs: &RunHistory) -> Result<(), StateError> {
        let runs = RunHistory {
            version: RUNS_VERSION,
            ..runs.clone()
        };
        write_json_atomic(self.handle(), RUNS_FILE, &runs, 0o600)
    }
}

/// Reads `<dir>/runs.json` without a [`StateDir`] (read-only views too).
pub(crate) fn load(dir: &Dir) -> Result<RunHistory, StateError> {
    let path = dir.shown(RUNS_FILE.as_ref());
    let Some(runs) = read_json::<RunHistory>(dir, RUNS_FILE)? else {
        return Ok(RunHistory {
            version: RUNS_VERSION,
            ..RunHistory::default()
        });
    };
    check_version(&path, runs.version, RUNS_VERSION)?;
    Ok(runs)
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
