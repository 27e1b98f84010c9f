//! `journal.json`: rotations in flight.
//!
//! An [`Intent`] is saved before the mutating API call and removed once the
//! new secret is persisted and recorded. An intent found at start-up means
//! the process stopped in between: the rotation engine resumes it (reads the
//! credential back and compares fingerprints) before starting new work.
//! Like the records, intents hold fingerprints, never secrets.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fs::{check_version, read_json, to_json, write_atomic};
use super::{CredentialKey, Fingerprint, StateDir, StateError};

/// The `version` this build writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// The content of `journal.json`.
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
    /// Reads `journal.json`; a missing file means nothing is in flight.
    pub fn load_journal(&self) -> Result<Journal, StateError> {
        load(self.path())
    }

    /// Atomically replaces `journal.json`.
    pub fn save_journal(&self, journal: &Journal) -> Result<(), StateError> {
        let path = self.path().join(super::JOURNAL_FILE);
        write_atomic(&path, &to_json(&path, journal)?, 0o600)
    }
}

/// Reads `<dir>/journal.json` without a [`StateDir`] (read-only views too).
pub(crate) fn load(dir: &Path) -> Result<Journal, StateError> {
    let path = dir.join(super::JOURNAL_FILE);
    let Some(journal) = read_json::<Journal>(&path)? else {
        return Ok(Journal::default());
    };
    check_version(&path, journal.version, JOURNAL_VERSION)?;
    Ok(journal)
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
            old_fingerprint: Fingerprint("hmac-sha256:00".into()),
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
    fn intents_are_tagged_by_kind() {
        let value = serde_json::to_value(intent(client_secret())).unwrap();
        assert_eq!(value["kind"], "client_secret");
        assert_eq!(value["old_fingerprint"], "hmac-sha256:00");
    }
}
