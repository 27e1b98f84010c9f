//! `audit.log`: an append-only record of rotations, deliveries, failures and
//! recoveries, one JSON object per line.
//!
//! Each line goes out in a single `write_all` on a file opened with
//! `O_APPEND`, then `sync_data`, so concurrent readers (`tail -f`, log
//! shippers) never see two events interleaved. A crash can still leave a
//! torn last line; [`repair_tail`] ends it at the next open so that the
//! following event starts on a line of its own. Events carry identifiers and
//! fingerprints; whoever builds `detail` must keep secrets out of it.
//!
//! The log is rotated by size: an append that would take `audit.log` past
//! [`MAX_AUDIT_BYTES`] first renames it to `audit.log.1` (and `.1` to `.2`,
//! …), keeping [`KEEP_AUDIT_FILES`] old files; the oldest is removed. Only
//! the process holding the state directory's lock writes, so the renames
//! race with nobody; a reader following the file by name (`tail -F`, log
//! shippers) moves on to the new file. A batch is never split across files.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use rustix::fs::OFlags;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fs::open_file;
use super::{StateDir, StateError};
use crate::dirfd::Dir;

/// One line of `audit.log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub event: AuditKind,
    /// The rotation this event belongs to, if any.
    pub rotation_id: Option<Uuid>,
    /// The run's `x-trace-id`, to find it in Contabo's audit log.
    pub trace_id: Option<String>,
    /// What the event is about: a credential key, `client_secret`, a sink id.
    pub subject: String,
    /// Event-specific fields. Never a secret value.
    pub detail: serde_json::Value,
}

/// The kind of an [`AuditEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Rotation,
    Delivery,
    Failure,
    Recovery,
    /// A rotated S3 key probed at the storage.
    Verification,
}

/// Audit events encoded as they happen, for one append later: a batch of
/// a pass (hundreds of users) costs its text, not a parsed `detail` map
/// per event as well.
#[derive(Debug, Default)]
pub struct AuditLines {
    text: Vec<u8>,
}

impl AuditLines {
    pub fn push(&mut self, event: &AuditEvent) {
        // Writing into a Vec fails only if a Serialize impl does; these
        // are derived over strings, times and a JSON value.
        serde_json::to_writer(&mut self.text, event).expect("an audit event encodes");
        self.text.push(b'\n');
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Bytes gathered.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn clear(&mut self) {
        self.text.clear();
    }
}

/// `audit.log` is rotated before it would grow past this many bytes.
pub const MAX_AUDIT_BYTES: u64 = 10 << 20;
/// Rotated files kept (`audit.log.1` … `audit.log.5`).
pub const KEEP_AUDIT_FILES: u32 = 5;

impl StateDir {
    /// Appends `event` to `audit.log` and syncs it to disk.
    pub fn audit(&self, event: &AuditEvent) -> Result<(), StateError> {
        self.audit_all(std::slice::from_ref(event))
    }

    /// Appends several events with one write and one `sync_data` (a run
    /// rotating thousands of credentials must not pay a sync per line).
    pub fn audit_all(&self, events: &[AuditEvent]) -> Result<(), StateError> {
        self.audit_all_rotating(events, MAX_AUDIT_BYTES, KEEP_AUDIT_FILES)
    }

    fn audit_all_rotating(
        &self,
        events: &[AuditEvent],
        max_bytes: u64,
        keep: u32,
    ) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut lines = AuditLines::default();
        for event in events {
            lines.push(event);
        }
        self.append_rotating(&lines.text, max_bytes, keep, true)
    }

    /// Appends the lines gathered in `lines` with one write and one
    /// `sync_data`, as one batch (the sync covers earlier
    /// [`StateDir::audit_lines_unsynced`] appends too).
    pub fn audit_lines(&self, lines: &AuditLines) -> Result<(), StateError> {
        self.append_rotating(&lines.text, MAX_AUDIT_BYTES, KEEP_AUDIT_FILES, true)
    }

    /// Appends `lines` without waiting for the disk: a pass appends its
    /// lines as they gather and syncs once per batch of records
    /// ([`StateDir::audit_lines`]), not once per append.
    pub fn audit_lines_unsynced(&self, lines: &AuditLines) -> Result<(), StateError> {
        self.append_rotating(&lines.text, MAX_AUDIT_BYTES, KEEP_AUDIT_FILES, false)
    }

    fn append_rotating(
        &self,
        lines: &[u8],
        max_bytes: u64,
        keep: u32,
        sync: bool,
    ) -> Result<(), StateError> {
        let dir = self.handle();
        let path = dir.shown(OsStr::new(super::AUDIT_FILE));
        if lines.is_empty() {
            if sync {
                // Earlier appends may not be on disk yet.
                match open_file(dir, super::AUDIT_FILE, APPEND, 0o600) {
                    Ok(file) => {
                        file.sync_data()
                            .map_err(|e| StateError::io("sync", &path, e))?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StateError::io("open", &path, e)),
                }
            }
            return Ok(());
        }
        let size = match dir.stat(OsStr::new(super::AUDIT_FILE)) {
            Ok(stat) => stat.map_or(0, |s| s.st_size as u64),
            Err(e) => return Err(StateError::io("read", &path, e)),
        };
        if size > 0 && size + lines.len() as u64 > max_bytes {
            // Unsynced appends go to disk before the file is renamed.
            let (file, _) = open_append(dir)?;
            file.sync_data()
                .map_err(|e| StateError::io("sync", &path, e))?;
            rotate(dir, keep)?;
        }
        let (mut file, created) = open_append(dir)?;
        file.write_all(lines)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            .map_err(|e| StateError::io("append to", &path, e))?;
        if created {
            // The new directory entry must survive a crash as well.
            dir.sync()
                .map_err(|e| StateError::io("sync directory", dir.path(), e))?;
        }
        Ok(())
    }
}

/// Opens the log for appending, creating it (0600) if needed; says whether
/// it was created.
fn open_append(dir: &Dir) -> Result<(File, bool), StateError> {
    let path = dir.shown(OsStr::new(super::AUDIT_FILE));
    let open = |create: bool| {
        let flags = if create {
            APPEND | OFlags::CREATE | OFlags::EXCL
        } else {
            APPEND
        };
        open_file(dir, super::AUDIT_FILE, flags, 0o600)
    };
    match open(false) {
        Ok(file) => Ok((file, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => open(true)
            .map(|file| (file, true))
            .map_err(|e| StateError::io("create", &path, e)),
        Err(e) => Err(StateError::io("open", &path, e)),
    }
}

/// Ends a torn last line (from a crash mid-append) with a newline, so the
/// next event is not glued to it. Called at open, under the lock.
pub(crate) fn repair_tail(dir: &Dir) -> Result<(), StateError> {
    let path = dir.shown(OsStr::new(super::AUDIT_FILE));
    let flags = OFlags::RDWR | OFlags::APPEND;
    let mut file = match open_file(dir, super::AUDIT_FILE, flags, 0o600) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StateError::io("open", &path, e)),
    };
    let mut repair = || -> io::Result<()> {
        if file.metadata()?.len() == 0 {
            return Ok(());
        }
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        Ok(())
    };
    repair().map_err(|e| StateError::io("repair", &path, e))
}
/// `audit.log.{keep-1}` → `.{keep}` (the old `.{keep}` is replaced), …,
/// `audit.log` → `audit.log.1`.
fn rotate(dir: &Dir, keep: u32) -> Result<(), StateError> {
    let current = OsStr::new(super::AUDIT_FILE);
    let numbered = |n: u32| std::ffi::OsString::from(format!("{}.{n}", super::AUDIT_FILE));
    for n in (1..keep).rev() {
        match dir.rename(&numbered(n), &numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io("rotate", &dir.shown(&numbered(n)), e)),
        }
    }
    let rotated = if keep == 0 {
        dir.remove(current)
    } else {
        dir.rename(current, &numbered(1))
    };
    rotated.map_err(|e| StateError::io("rotate", &dir.shown(current), e))?;
    dir.sync()
        .map_err(|e| StateError::io("sync directory", dir.path(), e))
}

/// Appending writes, as the log is always opened.
const APPEND: OFlags = OFlags::WRONLY.union(OFlags::APPEND);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at: Utc::now(),
            event: AuditKind::Delivery,
            rotation_id: None,
            trace_id: None,
            subject: format!("event {n:04}"),
            detail: serde_json::json!({ "n": n }),
        }
    }

    /// Past the limit the log moves to `audit.log.1`, older files move up,
    /// the oldest beyond `keep` is dropped, and no event is lost or split.
    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let line = serde_json::to_vec(&event(0)).unwrap().len() as u64 + 1;
        // Four events fit; the fifth rotates.
        let limit = 4 * line + line / 2;
        for n in 0..40 {
            state.audit_all_rotating(&[event(n)], limit, 3).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let subjects = |text: String| -> Vec<String> {
            text.lines()
                .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().subject)
                .collect()
        };
        assert_eq!(
            subjects(read("audit.log")),
            ["event 0036", "event 0037", "event 0038", "event 0039"]
        );
        assert_eq!(subjects(read("audit.log.1"))[0], "event 0032");
        assert_eq!(subjects(read("audit.log.3"))[0], "event 0024");
        assert!(!dir.path().join("audit.log.4").exists(), "only 3 kept");
        for name in ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"] {
            assert!(std::fs::metadata(dir.path().join(name)).unwrap().len() <= limit);
        }
        // A batch larger than the limit goes whole into a fresh file.
        let batch: Vec<AuditEvent> = (100..110).map(event).collect();
        state.audit_all_rotating(&batch, limit, 3).unwrap();
        assert_eq!(subjects(read("audit.log")).len(), 10);
        assert_eq!(subjects(read("audit.log.1"))[0], "event 0036");
    }

    /// Lines appended unsynced are in the log in order, and a sync with
    /// nothing left to append is accepted (also before the log exists).
    #[test]
    fn unsynced_appends_keep_their_order_and_a_bare_sync_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.audit_lines(&AuditLines::default()).unwrap();
        assert!(!dir.path().join("audit.log").exists());
        let mut lines = AuditLines::default();
        for n in 0..3 {
            lines.push(&event(n));
            state.audit_lines_unsynced(&lines).unwrap();
            lines.clear();
        }
        state.audit_lines(&lines).unwrap();
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let subjects: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().subject)
            .collect();
        assert_eq!(subjects, ["event 0000", "event 0001", "event 0002"]);
    }
}
