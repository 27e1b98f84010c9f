//! The journal: rotations in flight, in the `journal` table of `state.db`.
//!
//! An [`Intent`] is committed before the mutating API call and removed once
//! the new secret is persisted and recorded. An intent found at start-up
//! means the process stopped in between: the rotation engine resumes it
//! (reads the credential back and compares fingerprints) before starting
//! new work. Like the records, intents hold fingerprints, never secrets.
//!
//! A streaming pass begins and settles intents user by user, each user's in
//! one transaction ([`StateDir::append_journal`]), committed before the API
//! calls it protects.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::db::{from_json, to_json, Db};
use super::{CredentialKey, Fingerprint, StateDir, StateError};

/// The `version` of the journal file of earlier builds (imported).
pub const JOURNAL_VERSION: u32 = 1;

/// The rotations in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version, [`JOURNAL_VERSION`].
    pub version: u32,
    /// In start order.
    #[serde(default)]
    pub intents: Vec<Intent>,
}

impl Default for Journal {
    /// An empty journal of the current version.
    fn default() -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            intents: Vec::new(),
        }
    }
}

/// One rotation that was started and not yet finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Correlates the journal, the records and the audit log.
    pub rotation_id: Uuid,
    pub started_at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: IntentKind,
}

/// What is being rotated, with what is needed to tell afterwards whether the
/// API call took effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IntentKind {
    ObjectStorage {
        key: CredentialKey,
        user_email: String,
        old_access_key: String,
        old_fingerprint: Fingerprint,
    },
    ClientSecret {
        old_fingerprint: Fingerprint,
    },
}

impl Journal {
    /// Adds an intent; one with the same `rotation_id` is replaced, so
    /// re-recording a resumed rotation does not duplicate it.
    pub fn begin(&mut self, intent: Intent) {
        match self
            .intents
            .iter_mut()
            .find(|i| i.rotation_id == intent.rotation_id)
        {
            Some(existing) => *existing = intent,
            None => self.intents.push(intent),
        }
    }

    /// Removes and returns the intent of `rotation_id`, if present.
    pub fn finish(&mut self, rotation_id: Uuid) -> Option<Intent> {
        let index = self
            .intents
            .iter()
            .position(|i| i.rotation_id == rotation_id)?;
        Some(self.intents.remove(index))
    }
}

impl StateDir {
    /// The intents in start order; none when nothing is in flight.
    pub fn load_journal(&self) -> Result<Journal, StateError> {
        load(&self.db)
    }

    /// Replaces the whole journal with `journal`, in one transaction.
    pub fn save_journal(&self, journal: &Journal) -> Result<(), StateError> {
        self.db.write(|tx| {
            tx.execute("DELETE FROM journal", [])?;
            for intent in &journal.intents {
                put(tx, intent)?;
            }
            Ok(())
        })
    }

    /// Applies `ops` in one transaction, committed (durable) on return.
    pub fn append_journal(&self, ops: &[JournalOp]) -> Result<(), StateError> {
        self.db.write(|tx| {
            for op in ops {
                match op {
                    JournalOp::Begin(intent) => put(tx, intent)?,
                    JournalOp::Finish(id) => {
                        tx.prepare_cached("DELETE FROM journal WHERE rotation_id = ?1")?
                            .execute([id.to_string()])?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// Adds `intent`, or replaces the one of the same rotation id in place.
pub(crate) fn put(tx: &Connection, intent: &Intent) -> rusqlite::Result<()> {
    let kind = match intent.kind {
        IntentKind::ObjectStorage { .. } => "object_storage",
        IntentKind::ClientSecret { .. } => "client_secret",
    };
    tx.prepare_cached(
        "INSERT INTO journal (rotation_id, kind, started_at, intent) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (rotation_id) DO UPDATE
         SET kind = excluded.kind, started_at = excluded.started_at, intent = excluded.intent",
    )?
    .execute(params![
        intent.rotation_id.to_string(),
        kind,
        intent.started_at,
        to_json(intent)?
    ])?;
    Ok(())
}

/// The journal in `db` (read-only views too).
pub(crate) fn load(db: &Db) -> Result<Journal, StateError> {
    let intents = db.read(|c| {
        let mut stmt = c.prepare_cached("SELECT intent FROM journal ORDER BY seq")?;
        let rows = stmt.query_map([], |r| from_json(0, &r.get::<_, String>(0)?))?;
        rows.collect()
    })?;
    Ok(Journal {
        intents,
        ..Journal::default()
    })
}

/// One change to the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalOp {
    /// An intent, written before its API call.
    Begin(Intent),
    /// The intent of this rotation id is settled.
    Finish(Uuid),
}

impl Journal {
    /// Applies an appended operation.
    pub fn apply(&mut self, op: JournalOp) {
        match op {
            JournalOp::Begin(intent) => self.begin(intent),
            JournalOp::Finish(id) => {
                self.finish(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(kind: IntentKind) -> Intent {
        Intent {
            rotation_id: Uuid::new_v4(),
            started_at: Utc::now(),
            kind,
        }
    }

    fn client_secret() -> IntentKind {
        IntentKind::ClientSecret {
            old_fingerprint: Fingerprint::repeated(0),
        }
    }

    #[test]
    fn begin_replaces_same_id_and_finish_removes_it() {
        let mut journal = Journal::default();
        let first = intent(client_secret());
        let second = intent(client_secret());
        journal.begin(first.clone());
        journal.begin(second.clone());
        journal.begin(first.clone());
        assert_eq!(journal.intents.len(), 2);
        assert_eq!(journal.finish(first.rotation_id), Some(first.clone()));
        assert_eq!(journal.finish(first.rotation_id), None);
        assert_eq!(journal.intents, [second]);
    }

    #[test]
    fn operations_apply_in_one_transaction_and_keep_the_start_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let [first, second, third] = [(); 3].map(|()| intent(client_secret()));
        let mut journal = Journal::default();
        journal.begin(first.clone());
        journal.begin(second.clone());
        state.save_journal(&journal).unwrap();
        state
            .append_journal(&[
                JournalOp::Begin(third.clone()),
                JournalOp::Begin(first.clone()),
                JournalOp::Finish(second.rotation_id),
            ])
            .unwrap();
        assert_eq!(state.load_journal().unwrap().intents, [first, third]);
        state.save_journal(&Journal::default()).unwrap();
        assert!(state.load_journal().unwrap().intents.is_empty());
    }

    #[test]
    fn intents_are_tagged_by_kind() {
        let value = serde_json::to_value(intent(client_secret())).unwrap();
        assert_eq!(value["kind"], "client_secret");
        assert_eq!(
            value["old_fingerprint"],
            "hmac-sha256:00000000000000000000000000000000"
        );
    }
}
