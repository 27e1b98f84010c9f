//! Typed settings: what the rest of the crate uses once the configuration is
//! loaded. Every value here has been checked, so nothing downstream has to
//! re-validate it: URLs are parsed, durations typed, cron parsed, globs
//! compiled, relative paths made relative to the configuration file, and
//! secrets resolved into [`SecretString`]s.
//!
//! No `Debug` implementation here prints a secret: `SecretString` redacts
//! itself. Each sink's settings are its own type, in its module of
//! [`crate::sinks`] (as are their `Debug` implementations); they are
//! re-exported here, where the configuration assembles them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

pub use crate::globs::EmailGlobs;
pub use crate::sinks::file::{FileFormat, FileSink};
pub use crate::sinks::template::TemplateSink;
pub use crate::sinks::webhook::WebhookSink;
pub use crate::sinks::{Kind, Selection, SinkSettings};

/// The whole configuration, validated and with every secret resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file this was loaded from (as given), for messages and reloads.
    pub path: PathBuf,
    pub api: ApiSettings,
    pub schedule: ScheduleSettings,
    pub state: StateSettings,
    pub client_secret: ClientSecretSettings,
    pub object_storage: ObjectStorageSettings,
    pub sinks: Vec<SinkSettings>,
    /// `None` when the configuration has no `[metrics]` table.
    pub metrics: Option<MetricsSettings>,
    /// The environment variables secrets were read from (`{ env = "VAR" }`),
    /// kept out of the environment of `on_change` commands.
    pub secret_env_vars: Vec<String>,
}

/// `[api]`: how to reach and log in to the Contabo API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Always http or https.
    pub base_url: Url,
    /// Always http or https.
    pub token_url: Url,
    pub client_id: String,
    /// The client secret from the configuration. Once the daemon has rotated
    /// it, the copy in the state directory takes precedence.
    pub client_secret: SecretString,
    pub username: String,
    pub password: SecretString,
    /// Per request, 1 s to 10 min.
    pub timeout: Duration,
    /// 1 to 64.
    pub concurrency: usize,
    /// 0 to 20.
    pub max_retries: u32,
    /// 1 to 1000.
    pub requests_per_second: u32,
    /// The longest `Retry-After` honoured, 1 s to 10 min.
    pub max_retry_after: Duration,
    /// Failures in a row that stop a pass, 1 to 1000.
    pub max_consecutive_failures: u32,
    /// `ca_file`: trusted besides the system's roots.
    pub ca: Option<crate::tls::ExtraRoots>,
}

/// `[schedule]`: when the daemon runs.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Parsed exactly as tokio-cron-scheduler 0.15 parses it (seconds
    /// required, day-of-month AND day-of-week), from [`Self::six_field_expr`].
    pub cron: croner::Cron,
    /// The expression as the user wrote it (5 or 6 fields).
    pub cron_expr: String,
    pub timezone: chrono_tz::Tz,
    /// Less than 24 h.
    pub jitter: Duration,
    pub run_on_start: bool,
}

impl ScheduleSettings {
    /// The expression with a seconds field: a 5-field `cron_expr` gets `0`
    /// prepended. tokio-cron-scheduler 0.15 refuses 5-field expressions, so
    /// hand it this rather than `cron_expr`.
    pub fn six_field_expr(&self) -> String {
        six_fields(&self.cron_expr)
    }
}

/// `cron_expr` with a leading seconds field when it has only five fields.
pub(super) fn six_fields(expr: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() == 5 {
        format!("0 {}", fields.join(" "))
    } else {
        fields.join(" ")
    }
}

/// `[state]`: where the daemon keeps its records, lock and outbox.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Absolute unless the configuration file itself was given relatively.
    pub dir: PathBuf,
}

/// `[client_secret]`: rotation of the account's OAuth client secret.
#[derive(Debug, Clone)]
pub struct ClientSecretSettings {
    pub rotate: bool,
    /// At least 1 h.
    pub max_age: Duration,
}

/// `[object_storage]`: rotation of the users' S3 credentials.
#[derive(Debug, Clone)]
pub struct ObjectStorageSettings {
    pub rotate: bool,
    /// At least 1 h.
    pub max_age: Duration,
    /// `None` selects every user.
    pub users: Option<EmailGlobs>,
    /// `None` excludes nobody.
    pub exclude_users: Option<EmailGlobs>,
    /// Region names; empty selects every region.
    pub regions: Vec<String>,
    /// Object-storage ids or display names; empty selects all.
    pub object_storages: Vec<String>,
    /// `None` is unlimited; otherwise at least 1.
    pub max_per_run: Option<usize>,
    pub on_first_sight: OnFirstSight,
    pub verify: Verify,
    /// 1 s to 10 min.
    pub verify_timeout: Duration,
    /// Above 0 and finite.
    pub verify_requests_per_second: f64,
    /// Twin users (docs/design.md §4), in the file's order.
    pub twins: Vec<TwinSettings>,
}

/// One `[[object_storage.twins]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinSettings {
    pub name: String,
    /// The two users' e-mails, in the file's order: the first is active
    /// when the twin is first seen.
    pub users: [String; 2],
    pub retire_after: Duration,
    pub probe_buckets: Vec<String>,
}

impl ObjectStorageSettings {
    /// The twin `email` belongs to, if any (e-mails compare without case).
    pub fn twin_of(&self, email: &str) -> Option<&TwinSettings> {
        self.twins
            .iter()
            .find(|t| t.users.iter().any(|u| u.eq_ignore_ascii_case(email)))
    }
}

/// How a regenerated key is proven (docs/design.md §4, Verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// A SigV4-signed ListBuckets with the new key at the storage's
    /// `s3Url`, retried while the storage does not accept it yet.
    #[default]
    S3,
    /// The confirming re-read through the Contabo API only.
    Api,
    /// No proof beyond the regenerate's answer (the re-read that decides
    /// the outcome is still made).
    Off,
}

impl Verify {
    /// The name users write in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::S3 => "s3",
            Verify::Api => "api",
            Verify::Off => "off",
        }
    }
}

/// What to do with a credential the state has no record of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFirstSight {
    /// Rotate it on this run: its age is unknown.
    #[default]
    Rotate,
    /// Record it as new now and rotate it once `max_age` has passed.
    Adopt,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_prepends_seconds_only_to_five_fields() {
        assert_eq!(six_fields("30 3 * * *"), "0 30 3 * * *");
        assert_eq!(six_fields(" 0  30 3 * * * "), "0 30 3 * * *");
    }
}
