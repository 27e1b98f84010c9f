//! The `twins` table of `state.db`: per twin (docs/design.md §4, Twin users),
//! which user the sinks hold, the switch in flight and the retirement due.
//!
//! A switch is journalled in its own row (`switch_*`) before the standby's
//! first regenerate, and cleared in the same transaction that records it.
//! Start-up recovery reads a row with a switch as "the standby's keys may
//! be in some sinks already" and finishes or abandons it; it never retires
//! the active user.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::db::Db;
use super::{StateDir, StateError};

/// A user of a twin, as the state names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinUser {
    pub user_id: String,
    pub email: String,
}

/// One twin's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinState {
    pub name: String,
    /// The user whose keys the sinks hold.
    pub active: TwinUser,
    /// When the active user's keys were handed over (or first seen).
    pub active_since: DateTime<Utc>,
    pub last_switch_at: Option<DateTime<Utc>>,
    /// The user whose keys were handed over before, until retired.
    pub previous: Option<TwinUser>,
    /// When the previous user's keys are due to be regenerated.
    pub retire_at: Option<DateTime<Utc>>,
    pub last_retired_at: Option<DateTime<Utc>>,
    /// A switch journalled and not finished.
    pub switch: Option<PendingSwitch>,
}

/// A switch under way: the standby whose keys are being regenerated and
/// handed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSwitch {
    pub switch_id: uuid::Uuid,
    pub to: TwinUser,
    pub started_at: DateTime<Utc>,
}

impl TwinState {
    /// A twin seen for the first time: `active` holds the sinks from `now`.
    pub fn first_sight(name: &str, active: TwinUser, now: DateTime<Utc>) -> TwinState {
        TwinState {
            name: name.to_owned(),
            active,
            active_since: now,
            last_switch_at: None,
            previous: None,
            retire_at: None,
            last_retired_at: None,
            switch: None,
        }
    }

    /// The switch to the pending standby recorded at `at`: the active user
    /// becomes the previous one, retired at `at + retire_after`.
    pub fn switched(&mut self, at: DateTime<Utc>, retire_after: std::time::Duration) {
        let Some(switch) = self.switch.take() else {
            return;
        };
        let previous = std::mem::replace(&mut self.active, switch.to);
        self.previous = Some(previous);
        self.active_since = at;
        self.last_switch_at = Some(at);
        self.retire_at = Some(at + chrono::Duration::from_std(retire_after).unwrap_or_default());
    }

    /// The previous user's keys regenerated at `at`.
    pub fn retired(&mut self, at: DateTime<Utc>) {
        self.previous = None;
        self.retire_at = None;
        self.last_retired_at = Some(at);
    }
}

impl StateDir {
    /// Every twin's row, by name.
    pub fn load_twins(&self) -> Result<Vec<TwinState>, StateError> {
        load(&self.db)
    }

    /// Writes `twin`'s row in one durable transaction.
    pub fn save_twin(&self, twin: &TwinState) -> Result<(), StateError> {
        self.db.write(|tx| put(tx, twin))
    }
}

fn put(tx: &Connection, t: &TwinState) -> rusqlite::Result<()> {
    let previous = t.previous.as_ref();
    let switch = t.switch.as_ref();
    tx.execute(
        "INSERT OR REPLACE INTO twins (name, active_user_id, active_email, active_since,
            last_switch_at, previous_user_id, previous_email, retire_at, last_retired_at,
            switch_id, switch_user_id, switch_email, switch_started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            t.name,
            t.active.user_id,
            t.active.email,
            t.active_since,
            t.last_switch_at,
            previous.map(|p| &p.user_id),
            previous.map(|p| &p.email),
            t.retire_at,
            t.last_retired_at,
            switch.map(|s| s.switch_id.to_string()),
            switch.map(|s| &s.to.user_id),
            switch.map(|s| &s.to.email),
            switch.map(|s| s.started_at),
        ],
    )?;
    Ok(())
}

/// Every twin in `db` (read-only views too).
pub(crate) fn load(db: &Db) -> Result<Vec<TwinState>, StateError> {
    db.read(|c| {
        let mut query = c.prepare(
            "SELECT name, active_user_id, active_email, active_since, last_switch_at,
                    previous_user_id, previous_email, retire_at, last_retired_at,
                    switch_id, switch_user_id, switch_email, switch_started_at
             FROM twins ORDER BY name",
        )?;
        let rows = query.query_map([], |r| {
            let user = |id: Option<String>, email: Option<String>| {
                id.zip(email)
                    .map(|(user_id, email)| TwinUser { user_id, email })
            };
            let switch_id: Option<String> = r.get(9)?;
            let to = user(r.get(10)?, r.get(11)?);
            let started_at: Option<DateTime<Utc>> = r.get(12)?;
            Ok(TwinState {
                name: r.get(0)?,
                active: TwinUser {
                    user_id: r.get(1)?,
                    email: r.get(2)?,
                },
                active_since: r.get(3)?,
                last_switch_at: r.get(4)?,
                previous: user(r.get(5)?, r.get(6)?),
                retire_at: r.get(7)?,
                last_retired_at: r.get(8)?,
                switch: match (switch_id, to, started_at) {
                    (Some(id), Some(to), Some(started_at)) => Some(PendingSwitch {
                        // A row this build wrote; an unreadable id is
                        // still a switch in flight.
                        switch_id: id.parse().unwrap_or_else(|_| uuid::Uuid::nil()),
                        to,
                        started_at,
                    }),
                    _ => None,
                },
            })
        })?;
        rows.collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> TwinUser {
        TwinUser {
            user_id: format!("u-{n}"),
            email: format!("app-{n}@example.com"),
        }
    }

    #[test]
    fn a_switch_round_trips_and_makes_the_active_user_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.load_twins().unwrap().is_empty());
        let now = Utc::now();
        let mut twin = TwinState::first_sight("app", user(1), now);
        twin.switch = Some(PendingSwitch {
            switch_id: uuid::Uuid::new_v4(),
            to: user(2),
            started_at: now,
        });
        state.save_twin(&twin).unwrap();
        assert_eq!(state.load_twins().unwrap(), vec![twin.clone()]);
        twin.switched(now, std::time::Duration::from_secs(3600));
        state.save_twin(&twin).unwrap();
        let read = state.load_twins().unwrap().remove(0);
        assert_eq!(read.active, user(2));
        assert_eq!(read.previous, Some(user(1)));
        assert_eq!(read.retire_at, Some(now + chrono::Duration::hours(1)));
        assert!(read.switch.is_none());
        twin.retired(now);
        state.save_twin(&twin).unwrap();
        let read = state.load_twins().unwrap().remove(0);
        assert_eq!((read.previous, read.retire_at), (None, None));
        assert_eq!(read.last_retired_at, Some(now));
    }
}
