//! The JSON state files of earlier versions (`records.json`,
//! `journal.json`, `outbox.json`, `runs.json`), imported into `state.db`
//! once, in one transaction, before anything else: the first start that
//! finds them reads them all, writes their content and a note of the
//! import into the database, commits, and only then renames each file to
//! `<name>.imported`. A file that cannot be read fails the import, which
//! then changes nothing and names the file. A start that finds the files
//! beside a database that imported them (a stop between the commit and the
//! renames) renames them.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;

use super::fs::{check_version, parse_json, read_json, read_optional};
use super::journal::{Journal, JournalOp, JOURNAL_VERSION};
use super::outbox::{Outbox, OUTBOX_VERSION};
use super::records::{ClientSecretRecord, CredentialKey, CredentialRecord, SinkRecord};
use super::runs::{RunHistory, RUNS_VERSION};
use super::StateError;
use crate::dirfd::Dir;

/// The files earlier versions wrote, in the order they are imported.
pub(crate) const FILES: [&str; 4] = ["records.json", "journal.json", "outbox.json", "runs.json"];

/// The `meta` key noting when the import was committed.
const IMPORTED: &str = "imported_json_at";

/// `records.json` as earlier versions wrote it.
#[derive(Deserialize)]
struct RecordsFile {
    version: u32,
    #[serde(default)]
    credentials: BTreeMap<CredentialKey, CredentialRecord>,
    #[serde(default)]
    client_secret: Option<ClientSecretRecord>,
    #[serde(default)]
    sinks: BTreeMap<String, SinkRecord>,
}

/// The earlier versions' files found in `dir`.
pub(crate) fn present(dir: &Dir) -> Result<Vec<&'static str>, StateError> {
    let mut found = Vec::new();
    for name in FILES {
        let stat = dir
            .stat(OsStr::new(name))
            .map_err(|e| StateError::io("inspect", &dir.shown(OsStr::new(name)), e))?;
        if stat.is_some() {
            found.push(name);
        }
    }
    Ok(found)
}

/// Whether `conn` notes an import already committed.
pub(crate) fn imported(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM meta WHERE key = ?1", [IMPORTED], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Everything the files hold, read and checked before the database is
/// touched.
pub(crate) struct Read {
    records: Option<RecordsFile>,
    journal: Journal,
    outbox: Outbox,
    runs: Option<RunHistory>,
}

/// Reads the files in `dir`; a missing one is empty.
pub(crate) fn read(dir: &Dir) -> Result<Read, StateError> {
    let shown = |name: &str| dir.shown(OsStr::new(name));
    let records = read_json::<RecordsFile>(dir, FILES[0])?;
    if let Some(r) = &records {
        check_version(&shown(FILES[0]), r.version, 1)?;
    }
    let outbox = read_json::<Outbox>(dir, FILES[2])?.unwrap_or_default();
    check_version(&shown(FILES[2]), outbox.version, OUTBOX_VERSION)?;
    // Only what the metrics and `status` show: a damaged file is reported
    // and left out, as earlier versions did when they read it.
    let runs = match read_json::<RunHistory>(dir, FILES[3]) {
        Ok(runs) => runs.filter(|r| r.version == RUNS_VERSION),
        Err(err) => {
            tracing::warn!(error = %err, "Not importing the run history.");
            None
        }
    };
    Ok(Read {
        records,
        journal: read_journal(dir)?,
        outbox,
        runs,
    })
}

/// Writes what was read into `tx`, with the note of the import.
pub(crate) fn write(tx: &Connection, read: &Read) -> rusqlite::Result<()> {
    if let Some(r) = &read.records {
        for (key, record) in &r.credentials {
            super::records::put_credential(tx, key, record)?;
        }
        super::records::put_others(tx, r.client_secret.as_ref(), &r.sinks)?;
    }
    for intent in &read.journal.intents {
        super::journal::put(tx, intent)?;
    }
    super::outbox::put(tx, &Outbox::default(), &read.outbox)?;
    if let Some(runs) = &read.runs {
        super::runs::put(tx, runs)?;
    }
    tx.execute(
        "INSERT INTO meta VALUES (?1, ?2)",
        rusqlite::params![IMPORTED, Utc::now()],
    )?;
    Ok(())
}

/// Renames each file of `found` to `<name>.imported`, then syncs the
/// directory.
pub(crate) fn set_aside(dir: &Dir, found: &[&str]) -> Result<(), StateError> {
    for name in found {
        let to = format!("{name}.imported");
        dir.rename(OsStr::new(name), OsStr::new(&to))
            .map_err(|e| StateError::io("rename", &dir.shown(OsStr::new(name)), e))?;
    }
    dir.sync()
        .map_err(|e| StateError::io("sync", dir.path(), e))
}

/// `journal.json`: a pretty snapshot, then appended operation lines, each
/// `{"begin": {...}}` or `{"finish": "<rotation id>"}`. A last line cut
/// short (no newline) is an append that never completed, whose API call
/// was therefore never sent, and is ignored.
fn read_journal(dir: &Dir) -> Result<Journal, StateError> {
    let path = dir.shown(OsStr::new(FILES[1]));
    let Some(bytes) = read_optional(dir, FILES[1])? else {
        return Ok(Journal::default());
    };
    if let Ok(journal) = parse_json::<Journal>(&path, &bytes) {
        check_version(&path, journal.version, JOURNAL_VERSION)?;
        return Ok(journal);
    }
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

    #[test]
    fn a_journal_with_appended_lines_is_replayed_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Dir::open_private(dir.path(), false).unwrap();
        let id = |n: u8| uuid::Uuid::from_bytes([n; 16]);
        let intent = |n: u8| {
            format!(
                r#"{{"rotation_id": "{}", "started_at": "2026-01-01T00:00:00Z", "kind": "client_secret", "old_fingerprint": "hmac-sha256:00000000000000000000000000000000"}}"#,
                id(n)
            )
        };
        let text = format!(
            "{{\n  \"version\": 1,\n  \"intents\": [{}]\n}}\n{{\"begin\": {}}}\n{{\"finish\": \"{}\"}}\n{{\"begin\": {{\"rot",
            intent(1),
            intent(2),
            id(1)
        );
        std::fs::write(dir.path().join("journal.json"), &text).unwrap();
        let journal = read_journal(&handle).unwrap();
        let ids: Vec<_> = journal.intents.iter().map(|i| i.rotation_id).collect();
        assert_eq!(ids, [id(2)]);
        // A complete line that is not an operation is named.
        std::fs::write(dir.path().join("journal.json"), format!("{text}\n")).unwrap();
        let err = read_journal(&handle).unwrap_err().to_string();
        assert!(
            err.contains("journal.json") && err.contains("line 3"),
            "{err}"
        );
    }
}
