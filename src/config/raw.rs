//! The configuration file as written: serde structs that mirror the TOML
//! key for key. This is the user's reference for every key.
//!
//! Every table refuses unknown keys. Values are only checked for their TOML
//! type here; [`super::validate`] checks the rest (ranges, URLs, cron, ...).
//!
//! - Durations are strings such as `"90s"`, `"12h"`, `"30d"` or `"1h 30m"`.
//! - A secret is a plain string (allowed, with a warning when the file is
//!   readable by group or others) or one of `{ file = "PATH" }`,
//!   `{ env = "VAR" }`, `{ credential = "NAME" }` (systemd's
//!   `$CREDENTIALS_DIRECTORY/NAME`). Files are read with one trailing
//!   newline removed.
//! - Relative paths (sinks, templates, the state directory, secret files)
//!   are relative to the directory holding the configuration file.
//!
//! `[[sinks]]` is one flat table here, checked per `type` during
//! validation: serde's internally tagged enums buffer the table and lose
//! toml's positions, so an error inside a sink could not be pointed at.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

use super::secret::{SecretRef, SecretRefs};
use super::settings::{FileFormat, Kind, OnFirstSight, Verify};

pub const DEFAULT_BASE_URL: &str = "https://api.contabo.com";
pub const DEFAULT_TOKEN_URL: &str =
    "https://auth.contabo.com/auth/realms/contabo/protocol/openid-connect/token";
pub const DEFAULT_CRON: &str = "0 30 3 * * *";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[api]`, required: how to reach and log in to the Contabo API.
    pub api: RawApi,
    /// `[schedule]`: when the daemon runs. Default: daily at 03:30:00 UTC.
    #[serde(default)]
    pub schedule: RawSchedule,
    /// `[state]`: where the daemon keeps its records.
    #[serde(default)]
    pub state: RawState,
    /// `[client_secret]`: rotation of the account's OAuth client secret.
    #[serde(default)]
    pub client_secret: RawClientSecret,
    /// `[object_storage]`: rotation of the users' S3 credentials.
    #[serde(default)]
    pub object_storage: RawObjectStorage,
    /// `[[sinks]]`: where the current secrets are delivered. Default: none.
    #[serde(default)]
    pub sinks: Vec<RawSink>,
    /// `[metrics]`: Prometheus `/metrics`, `/healthz` and `/readyz`.
    /// Off unless the table is present.
    pub metrics: Option<RawMetrics>,
}

/// `[api]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Base URL of the Contabo API, http or https.
    /// Default `"https://api.contabo.com"`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// OAuth2 token endpoint used to log in, http or https. Default
    /// `"https://auth.contabo.com/auth/realms/contabo/protocol/openid-connect/token"`.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// OAuth2 client id of the account (`"INT-12345678"`, Customer Control
    /// Panel → API). Required, non-empty.
    pub client_id: String,
    /// OAuth2 client secret of the account. Required; a secret. Once the
    /// daemon rotates it, the copy in the state directory is used instead.
    pub client_secret: SecretRef,
    /// E-mail of the API user to log in as. Required, non-empty.
    pub username: String,
    /// Password of the API user. Required; a secret.
    pub password: SecretRef,
    /// Timeout of each HTTP request, `1s` to `10m`. Default `"30s"`.
    #[serde(default = "default_api_timeout")]
    pub timeout: DurationStr,
    /// Most API requests in flight at once, 1 to 64. Default 4.
    #[serde(default = "default_concurrency")]
    pub concurrency: i64,
    /// Retries of a request that failed with 429, 5xx, a timeout or a
    /// dropped connection (exponential backoff with jitter), 0 to 20.
    /// Default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: i64,
    /// Most requests per second sent to the API, 1 to 1000. Default 10.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: i64,
    /// Longest `Retry-After` honoured on a 429, `1s` to `10m`. A 429 pauses
    /// every request for its `Retry-After`; one asking for longer fails
    /// that call. Default `"60s"`.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: DurationStr,
    /// API failures in a row (5xx, 429, timeouts, dropped connections,
    /// across all tasks) after which the pass stops and reports what it
    /// did not attempt, 1 to 1000. Default 10.
    #[serde(default = "default_max_consecutive_failures")]
    pub max_consecutive_failures: i64,
    /// PEM certificates trusted for `base_url` and `token_url` besides the
    /// system's trust store (a private CA, e.g. of a TLS proxy). Default:
    /// none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[schedule]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchedule {
    /// When to run: cron with 6 fields (`sec min hour day-of-month month
    /// day-of-week`) or 5 (no seconds, taken as 0). When both day fields
    /// are restricted, both must match. Default `"0 30 3 * * *"`.
    pub cron: String,
    /// IANA time zone `cron` is evaluated in (`"Europe/Berlin"`).
    /// Default `"UTC"`.
    pub timezone: String,
    /// Random delay added to each scheduled run, less than `24h`, so that
    /// many installations do not call the API at the same second.
    /// Default `"0s"`.
    pub jitter: DurationStr,
    /// Also run once right after start-up. Default `false`.
    pub run_on_start: bool,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: DEFAULT_CRON.to_owned(),
            timezone: "UTC".to_owned(),
            jitter: DurationStr("0s".to_owned()),
            run_on_start: false,
        }
    }
}

/// `[state]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Directory for the lock, rotation records, delivery state, webhook
    /// outbox, audit log and the rotated client secret. Default:
    /// `$STATE_DIRECTORY` (systemd `StateDirectory=`, first entry), else
    /// `/var/lib/contabo-rotator` as root, else
    /// `$XDG_STATE_HOME/contabo-rotator` or `~/.local/state/contabo-rotator`.
    pub dir: Option<PathBuf>,
}

/// `[client_secret]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClientSecret {
    /// Rotate the account's OAuth client secret. Opt-in, because it is
    /// account-wide: other tools (cntb, Terraform) using it must then read
    /// it from a sink. Default `false`.
    pub rotate: bool,
    /// Rotate once the secret is older than this, at least `1h`.
    /// Default `"30d"`.
    pub max_age: DurationStr,
}

impl Default for RawClientSecret {
    fn default() -> Self {
        RawClientSecret {
            rotate: false,
            max_age: DurationStr("30d".to_owned()),
        }
    }
}

/// `[object_storage]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawObjectStorage {
    /// Rotate the users' S3 credentials. Default `true`.
    pub rotate: bool,
    /// Rotate a credential once it is older than this, at least `1h`.
    /// Default `"7d"`.
    pub max_age: DurationStr,
    /// Only users whose e-mail matches one of these globs
    /// (`["*@example.com"]`, case-insensitive). Default: every user.
    pub users: Option<Vec<String>>,
    /// Skip users whose e-mail matches one of these globs. Default: none.
    pub exclude_users: Option<Vec<String>>,
    /// Only credentials in these regions (`["European Union"]`).
    /// Default (empty): every region.
    pub regions: Vec<String>,
    /// Only these object storages, by objectStorageId or display name.
    /// Default (empty): all.
    pub object_storages: Vec<String>,
    /// Rotate at most this many credentials per run (at least 1); the rest
    /// wait for the next run. Default: no limit.
    pub max_per_run: Option<i64>,
    /// A credential the state has no record of: `"rotate"` it now, or
    /// `"adopt"` it (start its clock now, rotate after `max_age`).
    /// Default `"rotate"`.
    pub on_first_sight: OnFirstSight,
    /// After a regenerate, prove the new key at the storage: `"s3"` (a
    /// SigV4-signed ListBuckets), `"api"` (the confirming re-read only) or
    /// `"off"`. Default `"s3"`.
    pub verify: Verify,
    /// How long the storage may take to accept a new key (1s to 10m).
    /// Default `"60s"`.
    pub verify_timeout: DurationStr,
    /// Most S3 requests per second the proofs send, all storages together
    /// (new keys, old keys, probe buckets): their share of the customer's
    /// S3 request limit, which the customer's applications use too
    /// (Contabo takes about 250/s). A number above 0; a fraction such as
    /// `0.5` is one request every two seconds. Default 25.
    pub verify_requests_per_second: f64,
    /// `[[object_storage.twins]]`: pairs of users rotated one after the
    /// other for zero downtime. Default: none.
    pub twins: Vec<RawTwin>,
}

/// `[[object_storage.twins]]`: two users with the same storage access;
/// the sinks hold one, the other is rotated and handed over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTwin {
    /// What sinks select (`select = { twins = ["app"] }`) and the profile
    /// names start with: letters, digits, `_` and `-`. Required.
    pub name: String,
    /// Exactly two user e-mails, each in no other twin. Required.
    pub users: Vec<String>,
    /// How long the key handed over before keeps working; then its user's
    /// keys are regenerated and discarded (1s to 30d). Default `"1h"`.
    #[serde(default = "default_retire_after")]
    pub retire_after: DurationStr,
    /// Buckets each new key must list, on every storage, before it is
    /// handed over. Default: none (ListBuckets only).
    #[serde(default)]
    pub probe_buckets: Vec<String>,
}

fn default_retire_after() -> DurationStr {
    DurationStr("1h".to_owned())
}

impl Default for RawObjectStorage {
    fn default() -> Self {
        RawObjectStorage {
            rotate: true,
            max_age: DurationStr("7d".to_owned()),
            users: None,
            exclude_users: None,
            regions: Vec::new(),
            object_storages: Vec::new(),
            max_per_run: None,
            on_first_sight: OnFirstSight::Rotate,
            verify: Verify::S3,
            verify_timeout: DurationStr("60s".to_owned()),
            verify_requests_per_second: 25.0,
            twins: Vec::new(),
        }
    }
}

/// `[[sinks]]`. Which keys apply depends on `type`; a key that does not
/// apply is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// `"file"`, `"template"` or `"webhook"`. Required.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// file, template (required): the file to write. Written atomically,
    /// created with `mode` from the start, rewritten only when its content
    /// changes. Two sinks may not write the same file.
    pub path: Option<PathBuf>,
    /// file (required): `"json"` (the snapshot), `"env"` (`AWS_*` variables;
    /// the selection must hold exactly one credential) or
    /// `"aws-credentials"` (an INI profile per credential, named
    /// `<e-mail>-<region code>-<credential id>`) or `"aws-config"` (the
    /// same profiles as `[profile NAME]` sections of an AWS config file).
    /// See `sinks::formats` for the quoting rules.
    pub format: Option<FileFormat>,
    /// template (required): a Jinja (minijinja) template, read and compiled
    /// when the configuration is loaded (a missing file, a syntax error or
    /// an unknown variable is a configuration error). Rendered with the
    /// snapshot (`client`, `object_storage_credentials`) and the helpers of
    /// `sinks::template`; an undefined value is a render error, which
    /// leaves the old file untouched.
    pub template: Option<PathBuf>,
    /// file, template: permission bits as an octal string. Nothing for
    /// others is allowed, since the file holds secrets. Default `"0600"`.
    pub mode: Option<ModeStr>,
    /// file, template: owner (name or uid) to give the file, set before any
    /// byte is written. Default: the daemon's user.
    pub owner: Option<String>,
    /// file, template: group (name or gid) to give the file, set before any
    /// byte is written. Default: the daemon's group.
    pub group: Option<String>,
    /// file, template: which credentials the sink receives. Default: all.
    pub select: Option<RawSelect>,
    /// file, template: a command (argv, no shell) run once after each
    /// changed write, e.g. `["systemctl", "reload", "myapp"]`, with 60 s to
    /// finish and `CONTABO_ROTATOR_SINK_PATH` set to the file. Its output
    /// is logged with secrets redacted; if it fails, the next run writes
    /// the file and runs it again.
    pub on_change: Option<Vec<String>>,
    /// file, template: how long a sink holding several users' credentials
    /// gathers rotations before writing them at once (and running
    /// `on_change` once), `0s` to `10s`. The old S3 secret stops working
    /// when the API regenerates it, so this bounds how long the sink's
    /// readers hold a dead key (plus the write itself). A sink holding one
    /// user's credentials is written as soon as that user is done, whatever
    /// this says. Default `"250ms"`.
    pub wait: Option<DurationStr>,
    /// webhook (required): where to POST events, http or https.
    pub url: Option<String>,
    /// webhook (required): Standard Webhooks signing key
    /// (`"whsec_<base64>"`), a secret; or an array of them, each signing
    /// every event, to move a receiver from one key to the next.
    pub signing_secret: Option<SecretRefs>,
    /// webhook: put the secret values in the events. Refused unless `url`
    /// is https or loopback. Default `false`: identifiers, access key and
    /// fingerprint only.
    pub include_secrets: Option<bool>,
    /// webhook: timeout of each delivery attempt, `1s` to `10m`.
    /// Default `"10s"`.
    pub timeout: Option<DurationStr>,
    /// webhook: extra HTTP headers, `{ "X-Env" = "prod" }`. Each value is
    /// a secret (`{ Authorization = { file = "/etc/x/token" } }`): any of
    /// the forms, and redacted like every secret. The signature and
    /// content headers cannot be overridden. Default: none.
    pub headers: Option<BTreeMap<String, SecretRef>>,
    /// webhook: PEM certificates trusted for `url` besides the system's
    /// trust store (an internal receiver's private CA). Default: none.
    pub ca_file: Option<PathBuf>,
}

/// The `type` of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    File,
    Template,
    Webhook,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::File => "file",
            SinkType::Template => "template",
            SinkType::Webhook => "webhook",
        }
    }

    /// The keys a sink of this type takes.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            SinkType::File => &[
                "type",
                "path",
                "format",
                "mode",
                "owner",
                "group",
                "select",
                "on_change",
                "wait",
            ],
            SinkType::Template => &[
                "type",
                "template",
                "path",
                "mode",
                "owner",
                "group",
                "select",
                "on_change",
                "wait",
            ],
            SinkType::Webhook => &[
                "type",
                "url",
                "signing_secret",
                "include_secrets",
                "timeout",
                "headers",
                "ca_file",
            ],
        }
    }
}

impl RawSink {
    /// The keys this sink sets, in declaration order.
    pub fn present_keys(&self) -> Vec<&'static str> {
        let set = [
            ("path", self.path.is_some()),
            ("format", self.format.is_some()),
            ("template", self.template.is_some()),
            ("mode", self.mode.is_some()),
            ("owner", self.owner.is_some()),
            ("group", self.group.is_some()),
            ("select", self.select.is_some()),
            ("on_change", self.on_change.is_some()),
            ("wait", self.wait.is_some()),
            ("url", self.url.is_some()),
            ("signing_secret", self.signing_secret.is_some()),
            ("include_secrets", self.include_secrets.is_some()),
            ("timeout", self.timeout.is_some()),
            ("headers", self.headers.is_some()),
            ("ca_file", self.ca_file.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

/// `select = { ... }` of a file or template sink. Every part given must
/// match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSelect {
    /// Only users whose e-mail matches one of these globs. Default: all.
    pub users: Option<Vec<String>>,
    /// Only credentials in these regions. Default (empty): all.
    pub regions: Vec<String>,
    /// `"object_storage"` and/or `"client_secret"`. Default (empty): both.
    pub kinds: Vec<Kind>,
    /// Twins (`[[object_storage.twins]]` names) whose active keys the sink
    /// holds. With `twins` and no `users`, the sink holds no other user.
    pub twins: Vec<String>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address to serve on, `IP:PORT`. Default `"127.0.0.1:9464"`.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

/// A duration as written (`"30s"`); parsed during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationStr(pub String);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StringVisitor(
                "a duration such as \"90s\", \"12h\" or \"30d\"",
            ))
            .map(DurationStr)
    }
}

/// A file mode as written (`"0600"`); parsed during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeStr(pub String);

impl<'de> Deserialize<'de> for ModeStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(StringVisitor(
                "an octal mode in quotes such as \"0600\" (a bare 600 would be decimal)",
            ))
            .map(ModeStr)
    }
}

/// Accepts a string; any other type is refused with `self.0` as the hint.
struct StringVisitor(&'static str);

impl Visitor<'_> for StringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(E::invalid_type(Unexpected::Other("integer"), &self))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(E::invalid_type(
            Unexpected::Other("floating-point number"),
            &self,
        ))
    }
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

fn default_token_url() -> String {
    DEFAULT_TOKEN_URL.to_owned()
}

fn default_api_timeout() -> DurationStr {
    DurationStr("30s".to_owned())
}

fn default_concurrency() -> i64 {
    4
}

fn default_max_retries() -> i64 {
    5
}

fn default_requests_per_second() -> i64 {
    10
}

fn default_max_retry_after() -> DurationStr {
    DurationStr("60s".to_owned())
}

fn default_max_consecutive_failures() -> i64 {
    10
}

fn default_metrics_listen() -> String {
    DEFAULT_METRICS_LISTEN.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sink_key_belongs_to_some_type() {
        let all: Vec<&str> = [SinkType::File, SinkType::Template, SinkType::Webhook]
            .iter()
            .flat_map(|t| t.keys().iter().copied())
            .collect();
        let sink: RawSink = toml::from_str(
            r#"type = "file"
            path = "p"
            format = "json"
            template = "t"
            mode = "0600"
            owner = "o"
            group = "g"
            select = {}
            on_change = ["x"]
            url = "https://x"
            signing_secret = "whsec_AA=="
            include_secrets = false
            timeout = "1s"
            headers = {}"#,
        )
        .unwrap();
        let present = sink.present_keys();
        assert_eq!(present.len(), 13);
        for key in present {
            assert!(all.contains(&key), "{key}");
        }
    }
}
