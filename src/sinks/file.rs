//! The `file` sink: the snapshot rendered in one format, written atomically
//! with its final mode from creation, only when the content changed.

use super::{SinkError, Snapshot};
use crate::config::{FileFormat, FileSink};
use crate::state::{write_atomic, StateDir};
use secrecy::ExposeSecret;

/// Writes the sink if its content differs from `delivered` (the version it
/// last delivered) or the file is gone. Returns the new version when it wrote.
pub fn deliver(
    sink: &FileSink,
    snapshot: &Snapshot,
    state: &StateDir,
    delivered: Option<&str>,
) -> Result<Option<String>, SinkError> {
    let name = format!("file sink {}", sink.path.display());
    if sink.owner.is_some() || sink.group.is_some() || sink.on_change.is_some() {
        return Err(SinkError::Unsupported {
            sink: name,
            what: "owner, group and on_change arrive with the sinks release".into(),
        });
    }
    let content = match sink.format {
        FileFormat::Json => snapshot.select(&sink.select).to_json(),
        other => {
            return Err(SinkError::Unsupported {
                sink: name,
                what: format!(
                    "format \"{}\" arrives with the sinks release",
                    other.as_str()
                ),
            })
        }
    };
    let version = state.fingerprint(&content).0;
    if delivered == Some(version.as_str()) && sink.path.exists() {
        return Ok(None);
    }
    write_atomic(&sink.path, content.expose_secret().as_bytes(), sink.mode).map_err(|e| {
        SinkError::Write {
            sink: name,
            detail: e.to_string(),
        }
    })?;
    Ok(Some(version))
}
