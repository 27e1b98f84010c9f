//! Sinks: where the current secrets are delivered after a run.
//!
//! Every sink is fed the same [`Snapshot`] (the values the API holds after the
//! run, not a diff), narrowed by its own `select`. A sink writes only when its
//! rendered content differs from what it last delivered; the state records
//! the delivered version (a keyed fingerprint of the content) per sink, so a
//! sink that failed is delivered again on the next run and a sink that
//! succeeded is left alone.
//!
//! * [`file`]: a fixed format ([`formats`]: `json`, `env`,
//!   `aws-credentials`, `aws-config`);
//! * [`template`]: a Jinja template compiled at configuration load;
//! * both write through [`write`]: atomic replace with the final mode, owner
//!   and group from creation, then `on_change`;
//! * [`webhook`]: signed Standard Webhooks events, kept in an outbox in the
//!   state directory until delivered.
//!
//! The engine calls [`file::deliver`] / [`template::deliver`] with the last
//! delivered version and records the version they return; on
//! [`SinkError::OnChange`] it forgets the recorded version so the next run
//! writes the file and runs `on_change` again. `check --online` calls
//! [`healthcheck`].

pub mod change;
pub mod file;
pub mod formats;
pub mod snapshot;
pub mod template;
pub mod webhook;
pub mod write;

pub use snapshot::{
    Interner, Keys, LazyRedactor, Redact, Redactor, Snapshot, SnapshotCredential, Storage,
};

/// One `[[sinks]]` entry.
#[derive(Debug, Clone)]
pub enum SinkSettings {
    File(FileSink),
    Template(TemplateSink),
    Webhook(WebhookSink),
}

impl SinkSettings {
    /// A one-line description for logs and `check` output, free of
    /// secrets: `file /etc/myapp/contabo.json (json)`. A webhook shows only
    /// its URL's origin, since paths and queries often carry tokens.
    pub fn describe(&self) -> String {
        match self {
            SinkSettings::File(s) => {
                format!("file {} ({})", s.path.display(), s.format.as_str())
            }
            SinkSettings::Template(s) => format!(
                "template {} (from {})",
                s.path.display(),
                s.template.display()
            ),
            SinkSettings::Webhook(s) => s.describe(),
        }
    }

    /// The credential selection, for the sinks that have one.
    pub fn select(&self) -> Option<&Selection> {
        match self {
            SinkSettings::File(s) => Some(&s.select),
            SinkSettings::Template(s) => Some(&s.select),
            SinkSettings::Webhook(_) => None,
        }
    }
}

/// Which credentials a sink receives. Every part that is set must match.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `None` selects every user.
    pub users: Option<EmailGlobs>,
    /// Region names; empty selects every region.
    pub regions: Vec<String>,
    /// Empty selects both kinds.
    pub kinds: Vec<Kind>,
    /// Twins whose active keys the sink holds; with twins and no `users`
    /// the sink holds no other user.
    pub twins: Vec<String>,
}

impl Selection {
    /// Whether this selection takes secrets of `kind`.
    pub fn includes_kind(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// The two kinds of secret the daemon manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ObjectStorage,
    ClientSecret,
}

impl Kind {
    /// `object_storage` or `client_secret`, as the configuration and the
    /// reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ObjectStorage => "object_storage",
            Kind::ClientSecret => "client_secret",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use crate::globs::EmailGlobs;
use file::FileSink;
use template::TemplateSink;
use webhook::WebhookSink;

/// What a sink's validation hook found wrong with its settings: the key
/// (under the sink's own `sinks[N]`) and the problem. The configuration
/// adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: &'static str,
    pub problem: String,
}

/// Why one sink could not be delivered. Messages name the sink and never
/// carry a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be written (or, from [`healthcheck`], could not
    /// be): directory, permissions, owner or group, disk.
    #[error("{sink}: {detail}")]
    Write { sink: String, detail: String },
    /// The content could not be produced (a template's render error, a
    /// format that cannot hold the selection); nothing was written.
    #[error("{sink}: {detail}")]
    Content { sink: String, detail: String },
    /// The file is in place but `on_change` failed or timed out: the next
    /// run must write it and run `on_change` again.
    #[error("{sink}: {detail}")]
    OnChange { sink: String, detail: String },
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

/// `check --online`: whether the sink could be delivered now, without
/// delivering it. File and template sinks: the parent directory exists and
/// takes a new file, the owner and group exist. Webhooks: the URL answers
/// (any HTTP status counts as reachable).
pub async fn healthcheck(sink: &SinkSettings) -> Result<(), SinkError> {
    match sink {
        SinkSettings::File(f) => file::healthcheck(f),
        SinkSettings::Template(t) => template::healthcheck(t),
        SinkSettings::Webhook(w) => webhook::healthcheck(w).await,
    }
}
