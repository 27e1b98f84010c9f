//! Typed settings: what the rest of the crate uses once the configuration is
//! loaded. Every value here has been checked, so nothing downstream has to
//! re-validate it: URLs are parsed, durations typed, cron parsed, globs
//! compiled, relative paths made relative to the configuration file, and
//! secrets resolved into [`SecretString`]s.
//!
//! No `Debug` implementation in this module prints a secret: `SecretString`
//! redacts itself, and the two hand-written ones ([`EmailGlobs`],
//! [`WebhookSink`]) print patterns, header names and the URL's origin only.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::sinks::template::Template;

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

/// A compiled list of e-mail globs (`*@example.com`), matched without
/// regard to case.
#[derive(Clone)]
pub struct EmailGlobs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl EmailGlobs {
    /// Compiles `patterns`; on failure returns the index of the bad pattern
    /// and what is wrong with it.
    pub fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.trim().is_empty() {
                return Err((i, "pattern must not be empty".to_owned()));
            }
            let glob = GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| (i, format!("invalid glob `{pattern}`: {}", e.kind())))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| (0, format!("invalid glob list: {}", e.kind())))?;
        Ok(Self {
            set,
            patterns: patterns.to_vec(),
        })
    }

    /// Whether `email` matches any of the patterns (case-insensitively).
    pub fn is_match(&self, email: &str) -> bool {
        self.set.is_match(email)
    }

    /// The patterns as written in the configuration.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl fmt::Debug for EmailGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EmailGlobs").field(&self.patterns).finish()
    }
}

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

/// `scheme://host[:port]`, plus `/…` when the URL has more than that.
fn redacted_url(url: &Url) -> String {
    let origin = url.origin().ascii_serialization();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        origin
    } else {
        format!("{origin}/…")
    }
}

/// `type = "file"`: the selected secrets written in a fixed format.
#[derive(Debug, Clone)]
pub struct FileSink {
    pub path: PathBuf,
    pub format: FileFormat,
    /// Permission bits (at most 0o770: never any for others).
    pub mode: u32,
    /// User name or numeric id; `None` leaves the owner as created.
    pub owner: Option<String>,
    /// Group name or numeric id; `None` leaves the group as created.
    pub group: Option<String>,
    pub select: Selection,
    /// argv run after a changed write; never empty, `[0]` never empty.
    pub on_change: Option<Vec<String>>,
    /// How long rotations are gathered before a write (`wait`).
    pub wait: Duration,
}

/// The format of a `file` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// The snapshot as JSON.
    Json,
    /// `AWS_*` variables for exactly one credential.
    Env,
    /// An INI profile per credential, as in `~/.aws/credentials`.
    AwsCredentials,
}

impl FileFormat {
    /// The name users write in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Env => "env",
            FileFormat::AwsCredentials => "aws-credentials",
        }
    }
}

/// `type = "template"`: the selected secrets rendered through a template.
#[derive(Debug, Clone)]
pub struct TemplateSink {
    /// The template file, as configured (relative to the configuration's
    /// directory).
    pub template: PathBuf,
    /// The template, read and compiled while the configuration was loaded.
    /// Its `Debug` shows the file only.
    pub compiled: Template,
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub select: Selection,
    pub on_change: Option<Vec<String>>,
    /// How long rotations are gathered before a write (`wait`).
    pub wait: Duration,
}

/// `type = "webhook"`: signed events POSTed to a URL.
#[derive(Clone)]
pub struct WebhookSink {
    /// http or https; https or loopback when `include_secrets` is set.
    pub url: Url,
    /// Standard Webhooks keys (`whsec_<base64>`), never empty. Every key
    /// signs each event, so a receiver can move from one key to the next.
    pub signing_secrets: Vec<SecretString>,
    pub include_secrets: bool,
    /// 1 s to 10 min.
    pub timeout: Duration,
    /// Extra headers, sorted by name. Values may be credentials, so `Debug`
    /// shows the names only.
    pub headers: Vec<(String, String)>,
}

impl WebhookSink {
    /// Whether secret values may be sent to `url`: https, or a loopback
    /// host. The configuration refuses `include_secrets` otherwise; the
    /// sender checks again before every send.
    pub fn may_carry_secrets(&self) -> bool {
        self.url.scheme() == "https" || super::checks::is_loopback(&self.url)
    }

    /// `webhook <origin>/…`, as [`SinkSettings::describe`].
    pub fn describe(&self) -> String {
        format!("webhook {}", redacted_url(&self.url))
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookSink")
            .field("url", &redacted_url(&self.url))
            .field("signing_secrets", &self.signing_secrets)
            .field("include_secrets", &self.include_secrets)
            .field("timeout", &self.timeout)
            .field("header_names", &header_names)
            .finish()
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
}

impl Selection {
    /// Whether this selection takes secrets of `kind`.
    pub fn includes_kind(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// The two kinds of secret the daemon manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ObjectStorage,
    ClientSecret,
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
    fn email_globs_match_case_insensitively() {
        let globs = EmailGlobs::new(&["*@Example.com".into(), "ops+*@corp.io".into()]).unwrap();
        for (email, want) in [
            ("app@example.com", true),
            ("APP@EXAMPLE.COM", true),
            ("ops+ci@corp.io", true),
            ("ops@corp.io", false),
            ("app@example.com.evil", false),
        ] {
            assert_eq!(globs.is_match(email), want, "{email}");
        }
    }

    #[test]
    fn email_globs_report_the_bad_pattern() {
        let err = EmailGlobs::new(&["ok@x".into(), "[oops".into()]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("[oops"), "{}", err.1);
    }

    #[test]
    fn six_fields_prepends_seconds_only_to_five_fields() {
        assert_eq!(six_fields("30 3 * * *"), "0 30 3 * * *");
        assert_eq!(six_fields(" 0  30 3 * * * "), "0 30 3 * * *");
    }

    #[test]
    fn webhook_description_hides_path_and_query() {
        let sink = SinkSettings::Webhook(WebhookSink {
            url: Url::parse("https://hooks.example.com/services/T0/B0/tok3n?k=v").unwrap(),
            signing_secrets: vec![],
            include_secrets: false,
            timeout: Duration::from_secs(10),
            headers: vec![("Authorization".into(), "Bearer s3cr3t".into())],
        });
        assert_eq!(sink.describe(), "webhook https://hooks.example.com/…");
        let debug = format!("{sink:?}");
        assert!(
            !debug.contains("tok3n") && !debug.contains("s3cr3t"),
            "{debug}"
        );
        assert!(debug.contains("Authorization"), "{debug}");
    }
}
