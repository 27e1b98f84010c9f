//! `journal.json`: rotations in flight.
//!
//! An [`Intent`] is saved before the mutating API call and removed once the
//! new secret is persisted and recorded. An intent found at start-up means
//! the process stopped in between: the rotation engine resumes it (reads the
//! credential back and compares fingerprints) before starting new work.
//! Like the records, intents hold fingerprints, never secrets.
//!
//! A streaming pass begins and settles intents user by user, so the file is
//! written in two ways ([`StateDir::append_journal`]): a snapshot (the whole
//! journal, pretty JSON, written atomically) followed by appended operation
//! lines (`{"begin": {...}}`, `{"finish": "<rotation id>"}`), each append
//! fsync'd before the API call it protects. Rewriting the whole file for
//! every user would cost the number of pending intents each time. Reading
//! replays the lines over the snapshot; a last line cut short by a crash
//! (no newline) is an append that never completed, whose API call was
//! therefore never sent, and is ignored. [`StateDir::save_journal`] writes a
//! fresh snapshot (compaction).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fs::{check_version, open_file, parse_json, read_optional, write_json_atomic};
use super::{CredentialKey, Fingerprint, StateDir, StateError};
use crate::dirfd::Dir;

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
        load(self.handle())
    }

    /// Atomically replaces `journal.json` with a snapshot of `journal`.
    pub fn save_journal(&self, journal: &Journal) -> Result<(), StateError> {
        write_json_atomic(self.handle(), super::JOURNAL_FILE, journal, 0o600)
    }

    /// Appends operations to `journal.json` (one line each, then fsync).
    /// The file must exist (a snapshot written by [`StateDir::save_journal`]).
    pub fn append_journal(&self, ops: &[JournalOp]) -> Result<(), StateError> {
        use std::io::Write;
        let path = self.handle().shown(super::JOURNAL_FILE.as_ref());
        let mut text = Vec::new();
        for op in ops {
            serde_json::to_writer(&mut text, op)
                .map_err(|e| StateError::io("encode", &path, e.into()))?;
            text.push(b'\n');
        }
        let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::APPEND;
        let mut file = open_file(self.handle(), super::JOURNAL_FILE, flags, 0o600)
            .map_err(|e| StateError::io("append", &path, e))?;
        file.write_all(&text)
            .and_then(|()| file.sync_data())
            .map_err(|e| StateError::io("append", &path, e))
    }
}

/// One appended line of `journal.json`.
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

/// Reads `<dir>/journal.json` without a [`StateDir`] (read-only views too).
pub(crate) fn load(dir: &Dir) -> Result<Journal, StateError> {
    let path = dir.shown(super::JOURNAL_FILE.as_ref());
    let Some(bytes) = read_optional(dir, super::JOURNAL_FILE)? else {
        return Ok(Journal::default());
    };
    // A snapshot alone (the common case, and every file written before
    // appends existed) parses whole.
    if let Ok(journal) = parse_json::<Journal>(&path, &bytes) {
        check_version(&path, journal.version, JOURNAL_VERSION)?;
        return Ok(journal);
    }
    // A snapshot, then operation lines. The snapshot is pretty JSON: it ends
    // at the first line that is exactly `}`.
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| StateError::corrupt(&path, "the file is not UTF-8"))?;
    let end = text
        .find("\n}\n")
        .map(|i| i + 3)
        .ok_or_else(|| StateError::corrupt(&path, "no journal snapshot at the start"))?;
    let mut journal: Journal = parse_json(&path, &text.as_bytes()[..end])?;
    check_version(&path, journal.version, JOURNAL_VERSION)?;
    let rest = &text[end..];
    let complete = rest.rfind('\n').map_or("", |i| &rest[..=i]);
    for (n, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op: JournalOp = serde_json::from_str(line).map_err(|e| {
            StateError::corrupt(
                &path,
                format!("appended line {} is not a journal operation: {e}", n + 1),
            )
        })?;
        journal.apply(op);
    }
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
    fn appended_operations_replay_over_the_snapshot_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let first = intent(client_secret());
        let second = intent(client_secret());
        let mut journal = Journal::default();
        journal.begin(first.clone());
        state.save_journal(&journal).unwrap();
        state
            .append_journal(&[
                JournalOp::Begin(second.clone()),
                JournalOp::Finish(first.rotation_id),
            ])
            .unwrap();
        assert_eq!(
            state.load_journal().unwrap().intents,
            std::slice::from_ref(&second)
        );
        // A crash in the middle of an append: the cut line is ignored.
        let path = dir.path().join(crate::state::JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"begin\": {\"rotation_id\": \"0f");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            state.load_journal().unwrap().intents,
            std::slice::from_ref(&second)
        );
        // A complete line that is not an operation is corruption.
        bytes.extend_from_slice(b"\n");
        std::fs::write(&path, &bytes).unwrap();
        assert!(state.load_journal().is_err());
        // A snapshot compacts it.
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
