//! Configuration: strict TOML parsing, validation into typed settings,
//! secret resolution.
//!
//! [`load`] reads the file and goes through four steps, each its own module:
//!
//! 1. parse into the raw structs of `raw` (the reference for every key),
//!    refusing unknown keys and wrong types;
//! 2. validate them into settings that cannot be invalid (`validate`; no
//!    I/O), with secrets still references;
//! 3. resolve the secret references (`secret`): read files, `$VARS` and
//!    systemd credentials, and check the webhook signing keys; read and
//!    compile the sinks' templates (a missing file, a syntax error or an
//!    unknown variable is reported at `sinks[N].template`, with the
//!    template's file and line);
//! 4. pick the default state directory from the environment if none is set.
//!
//! Errors name the file, line, key path and problem, and never contain a
//! secret or a line of the file (see [`ConfigError`]). Relative paths in the
//! file (sinks, templates, state directory, secret files) are relative to the
//! directory holding the configuration file.

mod checks;
pub mod env_secrets;
mod error;
mod file_trust;
mod locate;
mod raw;
mod secret;
mod settings;
mod validate;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use error::ConfigError;
pub use locate::Location;
pub use settings::{
    ApiSettings, ClientSecretSettings, EmailGlobs, FileFormat, FileSink, Kind, MetricsSettings,
    ObjectStorageSettings, OnFirstSight, ScheduleSettings, Selection, Settings, SinkSettings,
    StateSettings, TemplateSink, TwinSettings, Verify, WebhookSink,
};
pub use validate::default_state_dir;

use crate::sinks::template::Template;
use checks::header_value;
use error::Ctx;
use locate::Locator;
use raw::RawConfig;
use secret::{check_signing_secret, readable_by_group_or_others, Resolver};
use validate::{PendingSink, Validated};

/// Where the configuration is read from unless `-c` or
/// `$CONTABO_ROTATOR_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/contabo-rotator/config.toml";

/// Reads, parses, validates and resolves the configuration at `path`.
/// A file that everyone may write is refused, and one that others than
/// root and the daemon's user may write is warned about (`file_trust`).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    use std::io::Read;
    let read_error = |error| ConfigError::Read {
        file: path.to_owned(),
        error,
    };
    // Judged and read through one handle: what is read is what was judged.
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let euid = nix::unistd::geteuid().as_raw();
    match file_trust::judge(path, meta.mode(), meta.uid(), euid) {
        file_trust::Verdict::Trusted => {}
        file_trust::Verdict::Warn(warning) => {
            tracing::warn!(file = %path.display(), "{warning}");
        }
        file_trust::Verdict::Refuse(message) => {
            return Err(ConfigError::Unsafe {
                file: path.to_owned(),
                message,
            })
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    load_from_str(&text, path)
}

/// Like [`load`], with the file's content given. `path` names the file in
/// messages and anchors relative paths; when a file exists there, its mode
/// decides whether plain-text secrets are warned about.
pub fn load_from_str(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    // `{ env }` secrets taken out of the environment at start come first.
    let env = Environment {
        var: &env_secrets::var,
        is_root: running_as_root(),
        file_mode: std::fs::metadata(path).ok().map(|m| m.mode()),
    };
    let loaded = load_with_env(text, path, &env)?;
    for key in &loaded.exposed_plain_secrets {
        tracing::warn!(
            file = %path.display(),
            key = %key,
            "Secret written in plain text in a configuration file that group or others can read; \
             use {{ file = ... }}, {{ env = ... }} or {{ credential = ... }}, or chmod the file."
        );
    }
    Ok(loaded.settings)
}

/// What the process environment contributes, passed in so tests need not
/// touch the real one.
struct Environment<'a> {
    /// Looks up an environment variable.
    var: &'a dyn Fn(&str) -> Option<String>,
    is_root: bool,
    /// The configuration file's mode, `None` when there is no such file.
    file_mode: Option<u32>,
}

#[derive(Debug)]
struct Loaded {
    settings: Settings,
    /// Keys holding plain-text secrets in a file group or others can read.
    exposed_plain_secrets: Vec<String>,
}

fn load_with_env(text: &str, path: &Path, env: &Environment) -> Result<Loaded, ConfigError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let locator = Locator::new(text);
    let ctx = Ctx {
        file: path,
        text,
        locator: &locator,
        base_dir: &base_dir,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.parse_error(&e))?;
    let validated = validate::validate(raw, &ctx)?;
    let mut resolver = Resolver {
        ctx: &ctx,
        var: env.var,
        plain_keys: Vec::new(),
        env_vars: Vec::new(),
    };
    let settings = resolve(validated, path, &mut resolver, env)?;
    let exposed = env.file_mode.is_some_and(readable_by_group_or_others);
    Ok(Loaded {
        settings,
        exposed_plain_secrets: if exposed {
            resolver.plain_keys
        } else {
            Vec::new()
        },
    })
}

/// Reads every secret of `v`, and picks the state directory.
fn resolve(
    v: Validated,
    path: &Path,
    resolver: &mut Resolver,
    env: &Environment,
) -> Result<Settings, ConfigError> {
    let api = ApiSettings {
        client_secret: resolver.resolve("api.client_secret", &v.api.client_secret)?,
        password: resolver.resolve("api.password", &v.api.password)?,
        base_url: v.api.base_url,
        token_url: v.api.token_url,
        client_id: v.api.client_id,
        username: v.api.username,
        timeout: v.api.timeout,
        concurrency: v.api.concurrency,
        max_retries: v.api.max_retries,
        requests_per_second: v.api.requests_per_second,
        max_retry_after: v.api.max_retry_after,
        max_consecutive_failures: v.api.max_consecutive_failures,
        ca: v.api.ca,
    };
    let mut sinks = Vec::with_capacity(v.sinks.len());
    for sink in v.sinks {
        sinks.push(match sink {
            PendingSink::Ready(sink) => sink,
            PendingSink::Template(t) => {
                let compiled = Template::compile(&t.template)
                    .map_err(|err| resolver.ctx.invalid(&t.key, err.to_string()))?;
                SinkSettings::Template(TemplateSink {
                    template: t.template,
                    compiled,
                    path: t.path,
                    mode: t.mode,
                    owner: t.owner,
                    group: t.group,
                    select: t.select,
                    on_change: t.on_change,
                    wait: t.wait,
                })
            }
            PendingSink::Webhook(w) => {
                let mut signing_secrets = Vec::with_capacity(w.signing_secrets.len());
                for (key, reference) in &w.signing_secrets {
                    let secret = resolver.resolve(key, reference)?;
                    check_signing_secret(&secret).map_err(|m| resolver.ctx.secret(key, m))?;
                    signing_secrets.push(secret);
                }
                let mut headers = Vec::with_capacity(w.headers.len());
                for header in &w.headers {
                    let value = resolver.resolve(&header.key, &header.value)?;
                    header_value(&value).map_err(|m| resolver.ctx.secret(&header.key, m))?;
                    headers.push((header.name.clone(), value));
                }
                SinkSettings::Webhook(WebhookSink {
                    url: w.url,
                    signing_secrets,
                    include_secrets: w.include_secrets,
                    timeout: w.timeout,
                    headers,
                    ca: w.ca,
                })
            }
        });
    }
    let dir = match v.state_dir {
        Some(dir) => dir,
        None => default_state_dir(env.var, env.is_root).ok_or_else(|| {
            resolver.ctx.invalid(
                "state.dir",
                "not set, and no default applies: not running as root, and none of \
                 $STATE_DIRECTORY, $XDG_STATE_HOME, $HOME is set",
            )
        })?,
    };
    Ok(Settings {
        path: path.to_owned(),
        api,
        schedule: v.schedule,
        state: StateSettings { dir },
        client_secret: v.client_secret,
        object_storage: v.object_storage,
        sinks,
        metrics: v.metrics,
        secret_env_vars: std::mem::take(&mut resolver.env_vars),
    })
}

/// Whether this process runs as root (its effective user: `/proc/self`
/// belongs to root once the process is not dumpable, whoever runs it).
fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    /// Writes a secret file with mode 0600 (others-readable ones are refused).
    fn write_private(
        path: impl AsRef<std::path::Path>,
        content: impl AsRef<[u8]>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path.as_ref(), content)?;
        std::fs::set_permissions(path.as_ref(), std::fs::Permissions::from_mode(0o600))
    }

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use secrecy::ExposeSecret;

    use super::*;

    const PATH: &str = "/etc/contabo-rotator/config.toml";

    /// Only `[api]`, with plain-string secrets.
    const MINIMAL: &str = r#"[api]
client_id = "INT-12345678"
client_secret = "cs-plain-0001"
username = "api-user@example.com"
password = "pw-plain-0002"
"#;

    /// docs/design.md §3, with every optional line switched on.
    const EXAMPLE: &str = r#"[api]
base_url  = "https://api.contabo.com"
token_url = "https://auth.contabo.com/auth/realms/contabo/protocol/openid-connect/token"
client_id     = "INT-12345678"
client_secret = { credential = "client-secret" }
username      = "api-user@example.com"
password      = { credential = "api-password" }
timeout = "30s"
concurrency = 4
max_retries = 5
requests_per_second = 10
max_retry_after = "60s"
max_consecutive_failures = 10

[schedule]
cron = "0 30 3 * * *"        # 6 fields with seconds, or 5 without; evaluated in `timezone`
timezone = "Europe/Berlin"
jitter = "10m"
run_on_start = true

[state]
dir = "/var/lib/contabo-rotator"

[client_secret]
rotate = false               # opt-in: the client secret is account-wide (cntb, Terraform use it too)
max_age = "30d"

[object_storage]
rotate  = true
max_age = "7d"
users = ["*@example.com"]
exclude_users = []
regions = ["European Union"]
object_storages = []
max_per_run = 100
on_first_sight = "adopt"
verify = "s3"
verify_timeout = "2m"
verify_requests_per_second = 12.5

[[sinks]]
type = "file"
path = "/etc/myapp/contabo.json"
format = "json"              # json | env | aws-credentials | aws-config
mode = "0640"
owner = "myapp"
group = "myapp"
select = { users = ["app@example.com"], regions = [], kinds = ["object_storage", "client_secret"] }
on_change = ["systemctl", "reload", "myapp"]     # argv, no shell; runs once per change

[[sinks]]
type = "template"
template = "/etc/contabo-rotator/app.env.j2"
path = "/etc/myapp/app.env"

[[sinks]]
type = "webhook"
url = "https://hooks.example.com/contabo"
signing_secret = { file = "/etc/contabo-rotator/webhook.key" }   # "whsec_<base64>" (Standard Webhooks)
include_secrets = false
timeout = "10s"
headers = { "X-Env" = "prod" }

[metrics]
listen = "127.0.0.1:9464"  # Prometheus /metrics, /healthz, /readyz
"#;

    const CLIENT_SECRET: &str = "cs-from-credential-7f3a";
    const PASSWORD: &str = "pw-from-credential-91bd";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn load_test(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load_with_mode(text, env, None)
    }

    fn load_with_mode(
        text: &str,
        env: &[(&str, &str)],
        file_mode: Option<u32>,
    ) -> Result<Loaded, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = move |name: &str| env.get(name).cloned();
        load_with_env(
            text,
            Path::new(PATH),
            &Environment {
                var: &var,
                is_root: true,
                file_mode,
            },
        )
    }

    /// A temporary credentials directory holding the example's secrets.
    fn example_secrets() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        write_private(
            dir.path().join("client-secret"),
            format!("{CLIENT_SECRET}\n"),
        )
        .unwrap();
        write_private(dir.path().join("api-password"), format!("{PASSWORD}\r\n")).unwrap();
        write_private(dir.path().join("webhook.key"), format!("{WHSEC}\n")).unwrap();
        std::fs::write(
            dir.path().join("app.env.j2"),
            "{% for c in object_storage_credentials %}{{ c.access_key }}{% endfor %}\n",
        )
        .unwrap();
        let text = EXAMPLE
            .replace(
                "/etc/contabo-rotator/webhook.key",
                dir.path().join("webhook.key").to_str().unwrap(),
            )
            .replace(
                "/etc/contabo-rotator/app.env.j2",
                dir.path().join("app.env.j2").to_str().unwrap(),
            );
        (dir, text)
    }

    fn load_example() -> Settings {
        let (dir, text) = example_secrets();
        let creds = dir.path().to_str().unwrap();
        load_test(&text, &[("CREDENTIALS_DIRECTORY", creds)])
            .unwrap_or_else(|e| panic!("{e}"))
            .settings
    }

    #[test]
    fn design_example_validates() {
        let s = load_example();
        assert_eq!(s.path, PathBuf::from(PATH));
        assert_eq!(s.api.client_secret.expose_secret(), CLIENT_SECRET);
        assert_eq!(
            s.api.password.expose_secret(),
            PASSWORD,
            "\\r\\n is trimmed"
        );
        assert_eq!(s.schedule.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(s.schedule.jitter, Duration::from_secs(600));
        assert!(s.schedule.run_on_start);
        assert_eq!(s.state.dir, PathBuf::from("/var/lib/contabo-rotator"));
        let os = &s.object_storage;
        assert_eq!(os.max_age, Duration::from_secs(7 * 86400));
        assert!(os.users.as_ref().unwrap().is_match("Someone@Example.com"));
        assert!(os.exclude_users.is_none(), "an empty list excludes nobody");
        assert_eq!(os.regions, ["European Union"]);
        assert_eq!(os.max_per_run, Some(100));
        assert_eq!(os.on_first_sight, OnFirstSight::Adopt);
        assert_eq!(os.verify, Verify::S3);
        assert_eq!(os.verify_timeout, Duration::from_secs(120));
        assert_eq!(os.verify_requests_per_second, 12.5);
        assert_eq!(s.sinks.len(), 3);
        let SinkSettings::File(file) = &s.sinks[0] else {
            panic!("{:?}", s.sinks[0])
        };
        assert_eq!(file.format, FileFormat::Json);
        assert_eq!(file.mode, 0o640);
        assert_eq!(file.owner.as_deref(), Some("myapp"));
        assert_eq!(file.select.kinds, [Kind::ObjectStorage, Kind::ClientSecret]);
        assert!(file
            .select
            .users
            .as_ref()
            .unwrap()
            .is_match("app@example.com"));
        assert_eq!(
            file.on_change.as_deref().unwrap(),
            ["systemctl", "reload", "myapp"]
        );
        assert_eq!(s.sinks[0].describe(), "file /etc/myapp/contabo.json (json)");
        let SinkSettings::Template(template) = &s.sinks[1] else {
            panic!()
        };
        assert_eq!(template.mode, 0o600);
        assert!(template.select.includes_kind(Kind::ClientSecret));
        let SinkSettings::Webhook(hook) = &s.sinks[2] else {
            panic!()
        };
        assert_eq!(hook.url.as_str(), "https://hooks.example.com/contabo");
        assert_eq!(hook.signing_secrets.len(), 1);
        assert_eq!(hook.signing_secrets[0].expose_secret(), WHSEC);
        assert_eq!(hook.headers.len(), 1);
        assert_eq!(hook.headers[0].0, "X-Env");
        assert_eq!(hook.headers[0].1.expose_secret(), "prod");
        assert_eq!(s.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let s = load_test(MINIMAL, &[]).unwrap().settings;
        assert_eq!(s.api.base_url.as_str(), "https://api.contabo.com/");
        assert_eq!(s.api.token_url.as_str(), raw::DEFAULT_TOKEN_URL);
        assert_eq!(s.api.client_id, "INT-12345678");
        assert_eq!(s.api.client_secret.expose_secret(), "cs-plain-0001");
        assert_eq!(s.api.username, "api-user@example.com");
        assert_eq!(s.api.timeout, Duration::from_secs(30));
        assert_eq!(
            (
                s.api.concurrency,
                s.api.max_retries,
                s.api.requests_per_second
            ),
            (4, 5, 10)
        );
        assert_eq!(s.api.max_retry_after, Duration::from_secs(60));
        assert_eq!(s.api.max_consecutive_failures, 10);
        assert_eq!(s.schedule.cron_expr, "0 30 3 * * *");
        assert_eq!(s.schedule.timezone, chrono_tz::UTC);
        assert_eq!(s.schedule.jitter, Duration::ZERO);
        assert!(!s.schedule.run_on_start);
        assert_eq!(
            s.state.dir,
            PathBuf::from("/var/lib/contabo-rotator"),
            "as root"
        );
        assert!(!s.client_secret.rotate);
        assert_eq!(s.client_secret.max_age, Duration::from_secs(30 * 86400));
        let os = &s.object_storage;
        assert!(os.rotate);
        assert_eq!(os.max_age, Duration::from_secs(7 * 86400));
        assert!(os.users.is_none() && os.exclude_users.is_none());
        assert!(os.regions.is_empty() && os.object_storages.is_empty());
        assert_eq!(os.max_per_run, None);
        assert_eq!(os.on_first_sight, OnFirstSight::Rotate);
        assert_eq!(os.verify, Verify::S3);
        assert_eq!(os.verify_timeout, Duration::from_secs(60));
        assert_eq!(os.verify_requests_per_second, 25.0);
        assert!(s.sinks.is_empty());
        assert!(s.metrics.is_none());
    }

    #[test]
    fn optional_values_have_their_defaults() {
        let text = format!(
            "{MINIMAL}[metrics]\n[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:8080/h\"\n\
             signing_secret = [\"{WHSEC}\", \"whsec_AA==\"]\ninclude_secrets = true\n\
             [[sinks]]\ntype = \"file\"\npath = \"out/creds.json\"\nformat = \"aws-credentials\"\n"
        );
        let s = load_test(&text, &[]).unwrap().settings;
        assert_eq!(s.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
        let SinkSettings::Webhook(hook) = &s.sinks[0] else {
            panic!()
        };
        assert_eq!(hook.timeout, Duration::from_secs(10));
        assert_eq!(hook.signing_secrets.len(), 2);
        assert!(hook.include_secrets, "allowed on loopback");
        let SinkSettings::File(file) = &s.sinks[1] else {
            panic!()
        };
        assert_eq!(
            file.path,
            PathBuf::from("/etc/contabo-rotator/out/creds.json"),
            "relative to the config"
        );
        assert_eq!(file.mode, 0o600);
        assert!(file.select.includes_kind(Kind::ObjectStorage) && file.select.users.is_none());
    }

    #[test]
    fn five_field_cron_is_accepted_and_kept_as_written() {
        let text = format!("{MINIMAL}[schedule]\ncron = \"15 4 * * MON\"\n");
        let s = load_test(&text, &[]).unwrap().settings.schedule;
        assert_eq!(s.cron_expr, "15 4 * * MON");
        assert_eq!(s.six_field_expr(), "0 15 4 * * MON");
        let monday = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let next = s
            .cron
            .find_next_occurrence(&monday.and_hms_opt(0, 0, 0).unwrap().and_utc(), false)
            .unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-30T04:15:00+00:00");
    }

    #[test]
    fn secret_files_lose_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content, want) in [
            ("lf", "s3cret\n", "s3cret"),
            ("crlf", "s3cret\r\n", "s3cret"),
            ("two", "s3cret\n\n", "s3cret\n"),
            ("none", "s3cret", "s3cret"),
            ("spaces", " s3cret \n", " s3cret "),
        ] {
            write_private(dir.path().join(name), content).unwrap();
            let text = MINIMAL.replace(
                "\"pw-plain-0002\"",
                &format!("{{ file = \"{}\" }}", dir.path().join(name).display()),
            );
            let s = load_test(&text, &[]).unwrap().settings;
            assert_eq!(s.api.password.expose_secret(), want, "{name}");
        }
    }

    #[test]
    fn secrets_from_env_and_relative_files() {
        let dir = tempfile::tempdir().unwrap();
        write_private(dir.path().join("pw"), "from-file\n").unwrap();
        let path = dir.path().join("config.toml");
        let text = MINIMAL
            .replace("\"pw-plain-0002\"", "{ file = \"pw\" }")
            .replace("\"cs-plain-0001\"", "{ env = \"CS\" }");
        let var = |name: &str| (name == "CS").then(|| "from-env".to_owned());
        let env = Environment {
            var: &var,
            is_root: false,
            file_mode: None,
        };
        let err = load_with_env(&text, &path, &env).unwrap_err();
        assert!(err.to_string().contains("state.dir: not set"), "{err}");
        let text = format!("{text}[state]\ndir = \"state\"\n");
        let s = load_with_env(&text, &path, &env).unwrap().settings;
        assert_eq!(s.api.password.expose_secret(), "from-file");
        assert_eq!(s.api.client_secret.expose_secret(), "from-env");
        assert_eq!(s.state.dir, dir.path().join("state"));
    }

    /// Replaces `from` in MINIMAL (which must occur) or appends `extra`.
    fn edit(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from}");
        MINIMAL.replace(from, to)
    }

    fn sink(body: &str) -> String {
        format!("{MINIMAL}[[sinks]]\n{body}")
    }

    const FILE_SINK: &str = "type = \"file\"\npath = \"/x/a.json\"\nformat = \"json\"\n";

    #[test]
    fn bad_configs_are_refused_with_file_line_and_key() {
        let hook = |extra: &str| {
            sink(&format!(
                "type = \"webhook\"\nurl = \"https://h.example.com/x\"\nsigning_secret = \"{WHSEC}\"\n{extra}"
            ))
        };
        // One line per case; rustfmt would make this table four times as long.
        #[rustfmt::skip]
        let cases: Vec<(&str, String, &[&str])> = vec![
            // Misspelt keys, in every table.
            ("top level", format!("{MINIMAL}[sink]\n"), &["config.toml:6:2: unknown key `sink` at the top level (expected one of `api`, `schedule`"]),
            ("[api]", format!("{MINIMAL}timout = \"5s\"\n"), &["config.toml:6:1: unknown key `timout` in [api] (expected one of `base_url`, `token_url`"]),
            ("[schedule]", format!("{MINIMAL}[schedule]\ncorn = \"* * * * *\"\n"), &[":7:1: unknown key `corn` in [schedule]"]),
            ("[state]", format!("{MINIMAL}\n[state]\ndirectory = \"/x\"\n"), &[":8:1: unknown key `directory` in [state] (expected `dir`)"]),
            ("[client_secret]", format!("{MINIMAL}[client_secret]\nrotate = true\nmaxage = \"1d\"\n"), &[":8:1: unknown key `maxage` in [client_secret]"]),
            ("[object_storage]", format!("{MINIMAL}[object_storage]\nuser = []\n"), &[":7:1: unknown key `user` in [object_storage]"]),
            ("file sink", sink(&format!("{FILE_SINK}mdoe = \"0600\"\n")), &[":10:1: unknown key `mdoe` in sinks[0]"]),
            ("select", sink(&format!("{FILE_SINK}select = {{ user = [\"a@b\"] }}\n")), &[":10:12: unknown key `user` in sinks[0].select (expected one of `users`, `regions`, `kinds`, `twins`)"]),
            ("webhook sink", hook("signing_secrets = []\n"), &[":10:1: unknown key `signing_secrets` in sinks[0]"]),
            ("second sink", format!("{}[[sinks]]\n{FILE_SINK}formt = \"env\"\n", sink(FILE_SINK)), &[":14:1: unknown key `formt` in sinks[1]"]),
            ("[metrics]", format!("{MINIMAL}[metrics]\nlisten_addr = \"127.0.0.1:1\"\n"), &[":7:1: unknown key `listen_addr` in [metrics]"]),
            ("secret table", edit("\"pw-plain-0002\"", "{ fiel = \"/run/pw\" }"), &[":5:14: unknown key `fiel` in api.password (expected one of `file`, `env`, `credential`)"]),
            ("key of another sink type", sink(&format!("{FILE_SINK}url = \"https://x\"\n")), &[":10:7: sinks[0].url: not a key of `file` sinks (they take `type`, `path`"]),
            // Missing keys.
            ("no [api]", "[schedule]\n".to_owned(), &["config.toml: missing required key `api`"]),
            ("no password", edit("password = \"pw-plain-0002\"\n", ""), &[":1:1: api: missing required key `password`"]),
            ("no sink type", sink("path = \"/x\"\n"), &[":6:1: sinks[0]: missing required key `type`"]),
            ("no file format", sink("type = \"file\"\npath = \"/x\"\n"), &[":6:1: sinks[0].format: missing; a `file` sink needs `format`"]),
            ("no template", sink("type = \"template\"\npath = \"/x\"\n"), &["sinks[0].template: missing"]),
            ("no webhook key", sink("type = \"webhook\"\nurl = \"https://h.example.com\"\n"), &["sinks[0].signing_secret: missing"]),
            // Wrong types.
            ("string for integer", format!("{MINIMAL}concurrency = \"4\"\n"), &[":6:15: api.concurrency: invalid type: string, expected i64"]),
            ("string for bool", format!("{MINIMAL}[schedule]\nrun_on_start = \"yes\"\n"), &["schedule.run_on_start: invalid type: string, expected a boolean"]),
            ("integer duration", format!("{MINIMAL}timeout = 30\n"), &["api.timeout: invalid type: integer, expected a duration such as \"90s\""]),
            ("integer mode", sink(&format!("{FILE_SINK}mode = 600\n")), &[":10:8: sinks[0].mode: invalid type: integer, expected an octal mode in quotes"]),
            ("sinks as a table", format!("{MINIMAL}[sinks]\n"), &["sinks: invalid type: map, expected a sequence"]),
            ("integer secret", edit("\"pw-plain-0002\"", "12345"), &["api.password: invalid type: integer, expected a secret"]),
            // Out of range.
            ("concurrency 0", format!("{MINIMAL}concurrency = 0\n"), &[":6:15: api.concurrency: 0 is out of range: must be between 1 and 64"]),
            ("concurrency 65", format!("{MINIMAL}concurrency = 65\n"), &["api.concurrency: 65 is out of range"]),
            ("max_retries -1", format!("{MINIMAL}max_retries = -1\n"), &["api.max_retries: -1 is out of range: must be between 0 and 20"]),
            ("max_retries 21", format!("{MINIMAL}max_retries = 21\n"), &["api.max_retries: 21 is out of range"]),
            ("rps 0", format!("{MINIMAL}requests_per_second = 0\n"), &["api.requests_per_second: 0 is out of range: must be between 1 and 1000"]),
            ("rps 1001", format!("{MINIMAL}requests_per_second = 1001\n"), &["api.requests_per_second: 1001 is out of range"]),
            ("max_retry_after 0s", format!("{MINIMAL}max_retry_after = \"0s\"\n"), &["api.max_retry_after: `0s` is out of range"]),
            ("breaker 0", format!("{MINIMAL}max_consecutive_failures = 0\n"), &["api.max_consecutive_failures: 0 is out of range"]),
            ("timeout 0s", format!("{MINIMAL}timeout = \"0s\"\n"), &["api.timeout: `0s` is out of range: must be between 1s and 10m"]),
            ("timeout 11m", format!("{MINIMAL}timeout = \"11m\"\n"), &["api.timeout: `11m` is out of range"]),
            ("webhook timeout", hook("timeout = \"1h\"\n"), &["sinks[0].timeout: `1h` is out of range"]),
            ("max_age 30m", format!("{MINIMAL}[object_storage]\nmax_age = \"30m\"\n"), &[":7:11: object_storage.max_age: `30m` is too short: must be at least 1h"]),
            ("client max_age", format!("{MINIMAL}[client_secret]\nmax_age = \"59m\"\n"), &["client_secret.max_age: `59m` is too short"]),
            ("jitter 24h", format!("{MINIMAL}[schedule]\njitter = \"24h\"\n"), &["schedule.jitter: must be less than 24h"]),
            ("max_per_run 0", format!("{MINIMAL}[object_storage]\nmax_per_run = 0\n"), &["object_storage.max_per_run: 0 is out of range: must be at least 1"]),
            // Values that do not parse.
            ("7-field cron", format!("{MINIMAL}[schedule]\ncron = \"0 30 3 * * * 2030\"\n"), &[":7:8: schedule.cron: `0 30 3 * * * 2030` has 7 fields; expected 6"]),
            ("nickname cron", format!("{MINIMAL}[schedule]\ncron = \"@daily\"\n"), &["schedule.cron: `@daily` has 1 field; expected 6"]),
            ("bad cron field", format!("{MINIMAL}[schedule]\ncron = \"61 * * * * *\"\n"), &["schedule.cron: invalid cron expression `61 * * * * *`"]),
            ("cron never fires", format!("{MINIMAL}[schedule]\ncron = \"0 0 0 30 2 *\"\n"), &["schedule.cron: `0 0 0 30 2 *` never fires"]),
            ("timezone", format!("{MINIMAL}[schedule]\ntimezone = \"Mars/Olympus\"\n"), &["schedule.timezone: unknown time zone `Mars/Olympus`"]),
            ("glob", format!("{MINIMAL}[object_storage]\nusers = [\"ok@x\", \"[abc\"]\n"), &[":7:18: object_storage.users[1]: invalid glob `[abc`"]),
            ("empty users", format!("{MINIMAL}[object_storage]\nusers = []\n"), &["object_storage.users: must not be empty (it would select nobody)"]),
            ("select glob", sink(&format!("{FILE_SINK}select = {{ users = [\"\"] }}\n")), &["sinks[0].select.users[0]: pattern must not be empty"]),
            ("duration", format!("{MINIMAL}[object_storage]\nmax_age = \"soon\"\n"), &["object_storage.max_age: `soon` is not a duration"]),
            ("base_url scheme", edit("[api]\n", "[api]\nbase_url = \"ftp://api.contabo.com\"\n"), &[":2:12: api.base_url: scheme `ftp` is not http or https"]),
            ("token_url", edit("[api]\n", "[api]\ntoken_url = \"auth.contabo.com/token\"\n"), &["api.token_url: not a valid URL: relative URL without a base"]),
            ("plain http base_url", edit("[api]\n", "[api]\nbase_url = \"http://api.contabo.com\"\n"), &[":2:12: api.base_url: plain http is only allowed to loopback"]),
            ("plain http token_url", edit("[api]\n", "[api]\ntoken_url = \"http://10.0.0.5:8080/token\"\n"), &[":2:13: api.token_url: plain http is only allowed to loopback"]),
            ("url credentials", edit("[api]\n", "[api]\nbase_url = \"https://u:p@api.contabo.com\"\n"), &["api.base_url: URL must not contain a user name or password"]),
            ("webhook url", sink(&format!("type = \"webhook\"\nurl = \"hooks.example.com/x\"\nsigning_secret = \"{WHSEC}\"\n")), &["sinks[0].url: not a valid URL"]),
            ("metrics listen", format!("{MINIMAL}[metrics]\nlisten = \"localhost:9464\"\n"), &["metrics.listen: `localhost:9464` is not an IP:PORT address"]),
            ("empty client_id", edit("\"INT-12345678\"", "\"  \""), &[":2:13: api.client_id: must not be empty"]),
            ("empty username", edit("\"api-user@example.com\"", "\"\""), &["api.username: must not be empty"]),
            // Policy.
            ("world-readable sink", sink(&format!("{FILE_SINK}mode = \"0644\"\n")), &[":10:8: sinks[0].mode: \"0644\" grants permissions to others"]),
            ("include_secrets over http", hook("include_secrets = true\n").replace("https://h.", "http://h."), &["sinks[0].include_secrets: secrets may only be sent to an https URL or to loopback"]),
            ("unknown sink type", sink("type = \"s3\"\n"), &[":7:8: sinks[0].type: unknown value `s3`, expected one of `file`, `template`, `webhook`"]),
            ("unknown on_first_sight", format!("{MINIMAL}[object_storage]\non_first_sight = \"later\"\n"), &["object_storage.on_first_sight: unknown value `later`, expected `rotate` or `adopt`"]),
            ("unknown verify", format!("{MINIMAL}[object_storage]\nverify = \"sigv4\"\n"), &["object_storage.verify: unknown value `sigv4`, expected one of `s3`, `api`, `off`"]),
            ("verify_timeout too long", format!("{MINIMAL}[object_storage]\nverify_timeout = \"1h\"\n"), &["object_storage.verify_timeout: `1h` is out of range: must be between 1s and 10m"]),
            ("verify rps 0", format!("{MINIMAL}[object_storage]\nverify_requests_per_second = 0\n"), &[":7:30: object_storage.verify_requests_per_second: 0 is out of range: must be a finite number above 0"]),
            ("verify rps negative", format!("{MINIMAL}[object_storage]\nverify_requests_per_second = -2.5\n"), &["object_storage.verify_requests_per_second: -2.5 is out of range"]),
            ("verify rps nan", format!("{MINIMAL}[object_storage]\nverify_requests_per_second = nan\n"), &["object_storage.verify_requests_per_second: NaN is out of range"]),
            ("verify rps inf", format!("{MINIMAL}[object_storage]\nverify_requests_per_second = inf\n"), &["object_storage.verify_requests_per_second: inf is out of range"]),
            ("verify rps string", format!("{MINIMAL}[object_storage]\nverify_requests_per_second = \"25\"\n"), &["object_storage.verify_requests_per_second: invalid type: string, expected f64"]),
            ("unknown format", sink("type = \"file\"\npath = \"/x\"\nformat = \"yaml\"\n"), &["sinks[0].format: unknown value `yaml`"]),
            ("unknown kind", sink(&format!("{FILE_SINK}select = {{ kinds = [\"s3\"] }}\n")), &["sinks[0].select.kinds[0]: unknown value `s3`"]),
            ("same path twice", format!("{}[[sinks]]\ntype = \"template\"\ntemplate = \"t.j2\"\npath = \"/x/./a.json\"\n", sink(FILE_SINK)), &[":13:8: sinks[1].path: /x/./a.json is already written by sinks[0]"]),
            ("template onto itself", sink("type = \"template\"\ntemplate = \"a.j2\"\npath = \"/etc/contabo-rotator/a.j2\"\n"), &["sinks[0].path: would overwrite the sink's own template"]),
            ("empty path", sink("type = \"file\"\npath = \"\"\nformat = \"json\"\n"), &["sinks[0].path: must not be empty"]),
            ("empty on_change", sink(&format!("{FILE_SINK}on_change = []\n")), &["sinks[0].on_change: must not be empty"]),
            ("empty program", sink(&format!("{FILE_SINK}on_change = [\"\", \"x\"]\n")), &["sinks[0].on_change[0]: the program must not be empty"]),
            ("reserved header", hook("headers = { \"Webhook-Signature\" = \"v1,x\" }\n"), &["sinks[0].headers.Webhook-Signature: is set by the webhook sender"]),
            ("bad header name", hook("headers = { \"X Env\" = \"v\" }\n"), &["sinks[0].headers.X Env: not a valid HTTP header name"]),
            ("empty signing list", hook("").replace(&format!("\"{WHSEC}\""), "[]"), &["sinks[0].signing_secret: must hold at least one secret"]),
            ("bad whsec", hook("").replace(WHSEC, "not-a-key"), &[":9:18: sinks[0].signing_secret: a signing secret must look like `whsec_<base64>`"]),
            ("bad whsec in list", hook("").replace(&format!("\"{WHSEC}\""), &format!("[\"{WHSEC}\", \"whsec_!!\"]")), &["sinks[0].signing_secret[1]: the signing secret after `whsec_` is not valid base64"]),
            // Secrets that cannot be read.
            ("missing secret file", edit("\"pw-plain-0002\"", "{ file = \"/nonexistent/pw\" }"), &[":5:12: api.password: cannot read secret file /nonexistent/pw: /nonexistent does not exist"]),
            ("unset env var", edit("\"pw-plain-0002\"", "{ env = \"NOT_SET_ANYWHERE\" }"), &["api.password: environment variable `NOT_SET_ANYWHERE` is not set"]),
            ("empty env var", edit("\"pw-plain-0002\"", "{ env = \"EMPTY\" }"), &["api.password: environment variable `EMPTY` is empty"]),
            ("no credentials dir", edit("\"cs-plain-0001\"", "{ credential = \"cs\" }"), &["api.client_secret: credential `cs`: `CREDENTIALS_DIRECTORY` is not set"]),
            ("empty plain secret", edit("\"pw-plain-0002\"", "\"\""), &["api.password: the secret is empty"]),
            ("missing template", sink("type = \"template\"\ntemplate = \"t.j2\"\npath = \"/x/out\"\n"), &[":8:12: sinks[0].template: cannot read template /etc/contabo-rotator/t.j2: /etc/contabo-rotator", "does not exist"]),
            ("webhook key file", hook("").replace(&format!("\"{WHSEC}\""), "{ file = \"/nonexistent/key\" }"), &["sinks[0].signing_secret: cannot read secret file /nonexistent/key"]),
            ("header file", hook("headers = { Authorization = { file = \"/nonexistent/token\" } }\n"), &[":10:29: sinks[0].headers.Authorization: cannot read secret file /nonexistent/token: /nonexistent does not exist"]),
            ("header env var", hook("headers = { \"X-Api-Key\" = { env = \"NOT_SET_ANYWHERE\" } }\n"), &["sinks[0].headers.X-Api-Key: environment variable `NOT_SET_ANYWHERE` is not set"]),
            ("header credential", hook("headers = { \"X-Api-Key\" = { credential = \"key\" } }\n"), &["sinks[0].headers.X-Api-Key: credential `key`: `CREDENTIALS_DIRECTORY` is not set"]),
            ("header table", hook("headers = { \"X-Api-Key\" = { path = \"/x\" } }\n"), &["unknown key `path` in sinks[0].headers.X-Api-Key (expected one of `file`, `env`, `credential`)"]),
            ("integer header", hook("headers = { \"X-Api-Key\" = 5 }\n"), &["sinks[0].headers.X-Api-Key: invalid type: integer, expected a secret"]),
            ("header line break", hook("headers = { \"X-Api-Key\" = \"a\\nb\" }\n"), &["sinks[0].headers.X-Api-Key: value must be printable ASCII without line breaks"]),
            ("empty header", hook("headers = { \"X-Api-Key\" = \"\" }\n"), &["sinks[0].headers.X-Api-Key: the secret is empty"]),
            // Not TOML at all.
            ("duplicate key", format!("{MINIMAL}client_id = \"again\"\n"), &[":6:1: duplicate key `client_id`"]),
            ("syntax", format!("{MINIMAL}timeout = \n"), &[":6:11: "]),
        ];
        let mut failures = Vec::new();
        for (name, text, wants) in &cases {
            let message = match load_test(text, &[("EMPTY", "")]) {
                Ok(_) => {
                    failures.push(format!("{name}: accepted"));
                    continue;
                }
                Err(e) => e.to_string(),
            };
            if !message.starts_with(PATH) {
                failures.push(format!("{name}: does not name the file: {message}"));
            }
            for want in *wants {
                if !message.contains(want) {
                    failures.push(format!("{name}:\n  got  {message}\n  want {want}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn dotted_keys_load_and_errors_still_name_the_key() {
        // Implicit tables defeat the key locator (see locate.rs): messages
        // keep the key path, or the line, but not always both.
        let dotted = "api.client_id = \"INT-1\"\napi.client_secret = \"cs\"\n\
                      api.username = \"u@example.com\"\napi.password.env = \"PW\"\n";
        let s = load_test(dotted, &[("PW", "pw")]).unwrap().settings;
        assert_eq!(s.api.password.expose_secret(), "pw");
        let err =
            load_test(&format!("{dotted}api.concurrency = 0\n"), &[("PW", "pw")]).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "config.toml: api.concurrency: 0 is out of range: must be between 1 and 64"
            ),
            "{err}"
        );
        let err = load_test(&format!("{dotted}api.clientid = 1\n"), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("config.toml:5:5: unknown key `clientid`"),
            "{err}"
        );
    }

    #[test]
    fn errors_never_contain_secret_values() {
        let secret = "Sup3rS3cretValue";
        let cases = [
            // A misspelt key: toml's own Display would quote this line.
            edit("client_secret =", &format!("clientsecret = \"{secret}\"\nclient_secret =")),
            edit("password = \"pw-plain-0002\"", &format!("pasword = \"{secret}\"")),
            // A secret in a key of another type.
            format!("{MINIMAL}concurrency = \"{secret}\"\n"),
            format!("{MINIMAL}[schedule]\nrun_on_start = \"{secret}\"\n"),
            // Broken syntax on the secret's line.
            edit("\"pw-plain-0002\"", &format!("\"{secret}")),
            edit("\"pw-plain-0002\"", secret),
            // A bad signing secret, a header value.
            sink(&format!("type = \"webhook\"\nurl = \"https://h.example.com\"\nsigning_secret = \"{secret}\"\n")),
            sink(&format!("type = \"webhook\"\nurl = \"https://h.example.com\"\nsigning_secret = \"{WHSEC}\"\nheaders = {{ \"X-Token\" = \"{secret}\\n\" }}\n")),
        ];
        for text in &cases {
            let err = load_test(text, &[]).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(
                !shown.contains("pw-plain-0002") && !shown.contains("cs-plain-0001"),
                "{shown}"
            );
        }
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let s = load_example();
        let shown = format!("{s:?} {s:#?}");
        for secret in [CLIENT_SECRET, PASSWORD, WHSEC, &WHSEC[6..]] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[REDACTED]"));
        // Plain secrets and header values too.
        let text = sink(&format!(
            "type = \"webhook\"\nurl = \"https://h.example.com/tok3n-in-path\"\n\
             signing_secret = \"{WHSEC}\"\nheaders = {{ Authorization = \"Bearer hdr-s3cret\" }}\n"
        ));
        let s = load_test(&text, &[]).unwrap().settings;
        let shown = format!("{s:?} {}", s.sinks[0].describe());
        for secret in [
            "cs-plain-0001",
            "pw-plain-0002",
            WHSEC,
            "hdr-s3cret",
            "tok3n-in-path",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    /// Each webhook header value may be any form of secret; read values
    /// are registered for redaction, and plain ones count as plain secrets.
    #[test]
    fn header_values_take_every_secret_form() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        write_private(&token, "Bearer hdr-from-file-5e1f\n").unwrap();
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).unwrap();
        write_private(credentials.join("hook-key"), "hdr-from-credential-0c2d").unwrap();
        let text = sink(&format!(
            "type = \"webhook\"\nurl = \"https://h.example.com\"\nsigning_secret = \"{WHSEC}\"\n\
             headers = {{ Authorization = {{ file = \"{}\" }}, \"X-Api-Key\" = {{ credential = \"hook-key\" }}, \
             \"X-Env\" = \"hdr-plain-prod-9a7b\", \"X-Tenant\" = {{ env = \"TENANT\" }} }}\n",
            token.display()
        ));
        let env = [
            ("TENANT", "hdr-from-env-33c4"),
            ("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap()),
        ];
        let loaded = load_with_mode(&text, &env, Some(0o100640)).unwrap();
        let SinkSettings::Webhook(hook) = &loaded.settings.sinks[0] else {
            panic!()
        };
        let headers: Vec<(&str, &str)> = hook
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()))
            .collect();
        let want = [
            ("Authorization", "Bearer hdr-from-file-5e1f"),
            ("X-Api-Key", "hdr-from-credential-0c2d"),
            ("X-Env", "hdr-plain-prod-9a7b"),
            ("X-Tenant", "hdr-from-env-33c4"),
        ];
        assert_eq!(headers, want);
        // The plain one is reported like any plain secret in a readable file.
        assert!(loaded
            .exposed_plain_secrets
            .contains(&"sinks[0].headers.X-Env".to_owned()));
        // Never shown, and known to the redaction of outside text.
        let shown = format!("{:?} {:#?}", loaded.settings, loaded.settings);
        let known = crate::known_secrets::all();
        for (name, value) in want {
            assert!(!shown.contains(value), "{name} in {shown}");
            assert!(
                known.iter().any(|k| k.expose_secret() == value),
                "{name} is registered for redaction"
            );
        }
        assert!(shown.contains("X-Tenant"), "{shown}");
    }

    #[test]
    fn templates_are_compiled_at_load_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        let template = dir.path().join("templates/app.env.j2");
        let text =
            sink("type = \"template\"\ntemplate = \"templates/app.env.j2\"\npath = \"out.env\"\n");
        let env = Environment {
            var: &|_| None,
            is_root: true,
            file_mode: None,
        };
        std::fs::write(&template, "A={{ object_storage_credentials | length }}\n").unwrap();
        let s = load_with_env(&text, &path, &env).unwrap().settings;
        let SinkSettings::Template(t) = &s.sinks[0] else {
            panic!()
        };
        assert_eq!(t.compiled.path(), template);
        assert_eq!(t.path, dir.path().join("out.env"));
        assert!(
            !format!("{s:?}").contains("length"),
            "Debug shows no template text"
        );
        for (source, want) in [
            (
                "ok\n{% for c in object_storage_credentials %}\n",
                "templates/app.env.j2:2: syntax error: unexpected end of input",
            ),
            (
                "{{ AWS_KEY }}",
                "templates/app.env.j2: unknown variable `AWS_KEY`",
            ),
        ] {
            std::fs::write(&template, source).unwrap();
            let err = load_with_env(&text, &path, &env).unwrap_err().to_string();
            let want = format!(
                "{}:8:12: sinks[0].template: {}/{want}",
                path.display(),
                dir.path().display()
            );
            assert!(err.starts_with(&want), "got  {err}\nwant {want}");
        }
    }

    #[test]
    fn plain_secrets_are_reported_when_others_can_read_the_file() {
        let exposed = |text: &str, mode| {
            load_with_mode(text, &[("PW", "x")], mode)
                .unwrap()
                .exposed_plain_secrets
        };
        assert_eq!(
            exposed(MINIMAL, Some(0o100644)),
            ["api.client_secret", "api.password"]
        );
        assert_eq!(
            exposed(MINIMAL, Some(0o100640)),
            ["api.client_secret", "api.password"]
        );
        assert!(exposed(MINIMAL, Some(0o100600)).is_empty());
        assert!(
            exposed(MINIMAL, None).is_empty(),
            "no file, nothing to warn about"
        );
        let referenced = edit("\"pw-plain-0002\"", "{ env = \"PW\" }");
        assert_eq!(exposed(&referenced, Some(0o644)), ["api.client_secret"]);
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let err = load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read", path.display())),
            "{err}"
        );
        std::fs::write(&path, MINIMAL.replace("[api]", "[api]\nclientid = \"x\"")).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:1: unknown key `clientid`", path.display())),
            "{err}"
        );
    }
}
