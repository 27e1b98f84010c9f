//! `StateError`: what can go wrong with the state directory, named by file.
//!
//! Messages are self-contained (they carry the OS error text) because the
//! operator reads them in a run report as often as in a printed chain. No
//! variant ever holds file content: a corrupt file is described by the JSON
//! error's category and position only, since serde's own messages can quote
//! the offending value, and in `client-secret.json` that value is a secret.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::error::Category;

/// An error reading, writing or locking the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An OS-level failure on one path; `op` says what was being done
    /// ("write", "read", "lock" …) so the message reads as a sentence.
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// Another process holds the directory's lock file.
    #[error("state directory {} is in use by another contabo-rotator{}", .dir.display(), fmt_pid(*.pid))]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// A state file exists but cannot be understood. It is never reset
    /// silently: the operator decides, and the message says what follows.
    #[error("state file {} is corrupt: {detail}; {}", .path.display(), advice(.path))]
    Corrupt { path: PathBuf, detail: String },

    /// The state directory is not closed to other users: it does not
    /// belong to the daemon's user, or group or others can write it.
    #[error("refusing the state directory {}: {detail}", .dir.display())]
    Unsafe { dir: PathBuf, detail: String },

    /// A file holding a secret (or the fingerprint key) is accessible to
    /// group or others, so it is refused rather than used.
    #[error(
        "refusing to use {}: its mode {mode:04o} gives group or others access to a secret; \
         run `chmod 600 {}` and consider the secret exposed",
        .path.display(),
        .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
}

impl StateError {
    /// Builds an [`StateError::Io`]; a closure-friendly shorthand.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StateError {
        StateError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds a [`StateError::Corrupt`] from a JSON error, keeping only its
    /// category and position (never the message, which may quote content).
    pub(crate) fn json(path: &Path, err: &serde_json::Error) -> StateError {
        let what = match err.classify() {
            Category::Eof => "it ends early (truncated?)",
            Category::Syntax => "it is not valid JSON",
            Category::Data => "its JSON does not have the expected fields or types",
            Category::Io => "it could not be decoded",
        };
        StateError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{what} at line {}, column {}", err.line(), err.column()),
        }
    }

    /// Builds a [`StateError::Corrupt`] with a detail written by the caller.
    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

fn fmt_pid(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// What moving a corrupt file aside costs, by file: the operator needs to
/// know before doing it.
fn advice(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match name {
        super::db::DB_FILE => {
            "stop the daemon and restore it from a backup, or move it (with its -wal and -shm \
             files) aside to start over; every credential will then be treated as first seen, \
             and rotations in flight and webhook events not yet sent are lost, so check those \
             by hand (the audit log lists them)"
        }
        super::CLIENT_SECRET_FILE => {
            "move it aside to start over; the daemon will then log in with the client secret \
             from the config, which no longer works if it was rotated"
        }
        super::KEY_FILE => {
            "move it aside to start over; a new key will be created and fingerprints recorded \
             so far will no longer match"
        }
        _ => "move it aside to start over",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_the_cause() {
        let err = StateError::io(
            "write",
            Path::new("/x/records.json"),
            io::Error::from_raw_os_error(28),
        );
        assert_eq!(
            err.to_string(),
            "cannot write /x/records.json: No space left on device (os error 28)"
        );

        let err = StateError::Locked {
            dir: PathBuf::from("/x"),
            pid: Some(1234),
        };
        assert_eq!(
            err.to_string(),
            "state directory /x is in use by another contabo-rotator (pid 1234)"
        );

        let text = StateError::corrupt(Path::new("/x/state.db"), "damage").to_string();
        assert!(text.contains("restore it from a backup"), "{text}");
        assert!(text.contains("treated as first seen"), "{text}");

        let err = StateError::Permissions {
            path: PathBuf::from("/x/client-secret.json"),
            mode: 0o644,
        };
        let text = err.to_string();
        assert!(text.contains("/x/client-secret.json"), "{text}");
        assert!(text.contains("0644"), "{text}");
    }

    #[test]
    fn corrupt_describes_position_but_not_content() {
        let bad = br#"{"version": 1, "credentials": hunter2}"#;
        let err = serde_json::from_slice::<serde_json::Value>(bad).unwrap_err();
        let text = StateError::json(Path::new("/x/records.json"), &err).to_string();
        assert!(text.starts_with("state file /x/records.json is corrupt: "));
        assert!(text.contains("line 1, column"), "{text}");
        assert!(text.contains("move it aside"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
