//! `audit.log`: an append-only record of rotations, deliveries, failures and
//! recoveries, one JSON object per line.
//!
//! Each line goes out in a single `write_all` on a file opened with
//! `O_APPEND`, then `sync_data`, so concurrent readers (`tail -f`, log
//! shippers) never see two events interleaved. A crash can still leave a
//! torn last line; [`repair_tail`] ends it at the next open so that the
//! following event starts on a line of its own. Events carry identifiers and
//! fingerprints; whoever builds `detail` must keep secrets out of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fs::sync_dir;
use super::{StateDir, StateError};

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

impl StateDir {
    /// Appends `event` to `audit.log` and syncs it to disk.
    pub fn audit(&self, event: &AuditEvent) -> Result<(), StateError> {
        self.audit_all(std::slice::from_ref(event))
    }

    /// Appends several events with one write and one `sync_data` (a run
    /// rotating thousands of credentials must not pay a sync per line).
    pub fn audit_all(&self, events: &[AuditEvent]) -> Result<(), StateError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = self.path().join(super::AUDIT_FILE);
        let mut lines = Vec::new();
        for event in events {
            serde_json::to_writer(&mut lines, event)
                .map_err(|e| StateError::io("encode an event for", &path, e.into()))?;
            lines.push(b'\n');
        }

        let (mut file, created) = open_append(&path)?;
        file.write_all(&lines)
            .and_then(|()| file.sync_data())
            .map_err(|e| StateError::io("append to", &path, e))?;
        if created {
            // The new directory entry must survive a crash as well.
            sync_dir(self.path())?;
        }
        Ok(())
    }
}

/// Opens the log for appending, creating it (0600) if needed; says whether
/// it was created.
fn open_append(path: &Path) -> Result<(File, bool), StateError> {
    let open = |create: bool| {
        OpenOptions::new()
            .append(true)
            .create_new(create)
            .mode(0o600)
            .open(path)
    };
    match open(false) {
        Ok(file) => Ok((file, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => open(true)
            .map(|file| (file, true))
            .map_err(|e| StateError::io("create", path, e)),
        Err(e) => Err(StateError::io("open", path, e)),
    }
}

/// Ends a torn last line (from a crash mid-append) with a newline, so the
/// next event is not glued to it. Called at open, under the lock.
pub(crate) fn repair_tail(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(super::AUDIT_FILE);
    let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
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
