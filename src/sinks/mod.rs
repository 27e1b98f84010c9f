//! Sinks: where the current secrets are delivered after a run.
//!
//! Every sink is fed the same [`Snapshot`] (the values the API holds after the
//! run, not a diff), narrowed by its own `select`. A sink writes only when its
//! rendered content differs from what it last delivered; the state records
//! the delivered version (a keyed fingerprint of the content) per sink, so a
//! sink that failed is delivered again on the next run and a sink that
//! succeeded is left alone.

pub mod file;
pub mod snapshot;
pub mod webhook;

pub use snapshot::{Snapshot, SnapshotCredential};

use crate::config::SinkSettings;

/// Why one sink could not be delivered. Messages name the sink and never
/// carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {detail}")]
    Write { sink: String, detail: String },
    #[error("{sink}: {detail}")]
    Content { sink: String, detail: String },
    #[error("{sink}: not supported yet: {what}")]
    Unsupported { sink: String, what: String },
}

/// A stable id for a sink's state record: its kind and target. A webhook
/// is named by its URL's origin and a hash of the whole URL, since paths and
/// queries often carry tokens and the id is written to the state files and
/// shown by `status`.
pub fn sink_id(sink: &SinkSettings) -> String {
    match sink {
        SinkSettings::File(f) => format!("file:{}", f.path.display()),
        SinkSettings::Template(t) => format!("template:{}", t.path.display()),
        SinkSettings::Webhook(w) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(w.url.as_str().as_bytes());
            let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("webhook:{}#{short}", w.url.origin().ascii_serialization())
        }
    }
}
