//! Validation: [`RawConfig`] into settings that cannot be invalid.
//!
//! Pure: no file, network or environment access. Secrets stay references
//! here ([`Validated`]); `load` resolves them afterwards, so a bad key is
//! reported before any secret file is touched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use url::Url;

use super::checks::{
    api_url, duration, globs, headers, http_url, in_range, max_age, mode, non_empty,
    non_empty_items, on_change, optional_name, path, rate, sink_wait, timeout, user_globs,
};
use super::error::{ConfigError, Ctx};
use super::raw::{
    RawApi, RawConfig, RawObjectStorage, RawSchedule, RawSelect, RawSink, RawTwin, SinkType,
};
use super::secret::SecretRef;
use super::settings::{
    six_fields, ClientSecretSettings, FileSink, MetricsSettings, ObjectStorageSettings,
    ScheduleSettings, Selection, SinkSettings, TwinSettings,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Everything checked; secrets still to be read.
#[derive(Debug)]
pub(super) struct Validated {
    pub api: PendingApi,
    pub schedule: ScheduleSettings,
    /// `[state] dir` made absolute, if set; the default needs the
    /// environment and is chosen during resolution.
    pub state_dir: Option<PathBuf>,
    pub client_secret: ClientSecretSettings,
    pub object_storage: ObjectStorageSettings,
    pub sinks: Vec<PendingSink>,
    pub metrics: Option<MetricsSettings>,
}

/// `[api]` with its two secrets unread.
#[derive(Debug)]
pub(super) struct PendingApi {
    pub base_url: Url,
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub username: String,
    pub password: SecretRef,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_retries: u32,
    pub requests_per_second: u32,
    pub max_retry_after: Duration,
    pub max_consecutive_failures: u32,
    pub ca: Option<crate::tls::ExtraRoots>,
}

#[derive(Debug)]
pub(super) enum PendingSink {
    Ready(SinkSettings),
    Template(PendingTemplate),
    Webhook(PendingWebhook),
}

/// A template sink whose template is not read yet.
#[derive(Debug)]
pub(super) struct PendingTemplate {
    /// `sinks[N].template`, for errors.
    pub key: String,
    pub template: PathBuf,
    pub path: PathBuf,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub select: Selection,
    pub on_change: Option<Vec<String>>,
    pub wait: Duration,
}

/// A webhook sink with its signing secrets unread.
#[derive(Debug)]
pub(super) struct PendingWebhook {
    pub url: Url,
    /// Key path (`sinks[2].signing_secret[0]`) and reference, never empty.
    pub signing_secrets: Vec<(String, SecretRef)>,
    pub include_secrets: bool,
    pub timeout: Duration,
    /// Sorted by name, values unread.
    pub headers: Vec<PendingHeader>,
    pub ca: Option<crate::tls::ExtraRoots>,
}

/// A webhook header whose value, a secret, is unread.
#[derive(Debug)]
pub(super) struct PendingHeader {
    pub name: String,
    /// `sinks[2].headers.Authorization`, for errors.
    pub key: String,
    pub value: SecretRef,
}

pub(super) fn validate(raw: RawConfig, ctx: &Ctx) -> Result<Validated, ConfigError> {
    // In the order of the file, so the first error reported is the first one.
    let api = validate_api(ctx, raw.api)?;
    let schedule = validate_schedule(ctx, raw.schedule)?;
    let state_dir = match raw.state.dir {
        Some(dir) => Some(path(ctx, "state.dir", &dir)?),
        None => None,
    };
    let client_secret = ClientSecretSettings {
        rotate: raw.client_secret.rotate,
        max_age: max_age(ctx, "client_secret.max_age", &raw.client_secret.max_age)?,
    };
    let object_storage = validate_object_storage(ctx, raw.object_storage)?;
    let mut sinks = Vec::with_capacity(raw.sinks.len());
    for (i, sink) in raw.sinks.into_iter().enumerate() {
        sinks.push(validate_sink(
            ctx,
            &format!("sinks[{i}]"),
            sink,
            &object_storage.twins,
        )?);
    }
    check_distinct_paths(ctx, &sinks)?;
    let metrics = match raw.metrics {
        Some(m) => Some(MetricsSettings {
            listen: SocketAddr::from_str(&m.listen).map_err(|_| {
                ctx.invalid(
                    "metrics.listen",
                    format!(
                        "`{}` is not an IP:PORT address such as \"127.0.0.1:9464\"",
                        m.listen
                    ),
                )
            })?,
        }),
        None => None,
    };
    Ok(Validated {
        api,
        schedule,
        state_dir,
        client_secret,
        object_storage,
        sinks,
        metrics,
    })
}

fn validate_api(ctx: &Ctx, raw: RawApi) -> Result<PendingApi, ConfigError> {
    Ok(PendingApi {
        base_url: api_url(ctx, "api.base_url", &raw.base_url)?,
        token_url: api_url(ctx, "api.token_url", &raw.token_url)?,
        client_id: non_empty(ctx, "api.client_id", raw.client_id)?,
        client_secret: raw.client_secret,
        username: non_empty(ctx, "api.username", raw.username)?,
        password: raw.password,
        timeout: timeout(ctx, "api.timeout", &raw.timeout)?,
        concurrency: in_range(ctx, "api.concurrency", raw.concurrency, 1, 64)?,
        max_retries: in_range(ctx, "api.max_retries", raw.max_retries, 0, 20)?,
        requests_per_second: in_range(
            ctx,
            "api.requests_per_second",
            raw.requests_per_second,
            1,
            1000,
        )?,
        max_retry_after: timeout(ctx, "api.max_retry_after", &raw.max_retry_after)?,
        max_consecutive_failures: in_range(
            ctx,
            "api.max_consecutive_failures",
            raw.max_consecutive_failures,
            1,
            1000,
        )?,
        ca: ca_file(ctx, "api.ca_file", raw.ca_file.as_deref())?,
    })
}

fn validate_schedule(ctx: &Ctx, raw: RawSchedule) -> Result<ScheduleSettings, ConfigError> {
    let key = "schedule.cron";
    let expr = raw.cron;
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(ctx.invalid(
            key,
            format!(
                "`{expr}` has {fields} field{}; expected 6 (second minute hour day-of-month \
                 month day-of-week) or 5 (the same without seconds)",
                if fields == 1 { "" } else { "s" }
            ),
        ));
    }
    // Six fields (five are given seconds `0`), day-of-month AND day-of-week
    // as before; `sloppy_ranges` keeps accepting `5/15` (croner 4 wants
    // `5-59/15`), so configurations written for croner 3 still load.
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .sloppy_ranges(true)
        .build()
        .parse(&six_fields(&expr))
        .map_err(|e| ctx.invalid(key, format!("invalid cron expression `{expr}`: {e}")))?;
    let timezone = chrono_tz::Tz::from_str(&raw.timezone).map_err(|_| {
        ctx.invalid(
            "schedule.timezone",
            format!(
                "unknown time zone `{}`; use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                raw.timezone
            ),
        )
    })?;
    let now = chrono::Utc::now().with_timezone(&timezone);
    if cron.find_next_occurrence(&now, false).is_err() {
        return Err(ctx.invalid(key, format!("`{expr}` never fires")));
    }
    let jitter = duration(ctx, "schedule.jitter", &raw.jitter)?;
    if jitter >= DAY {
        return Err(ctx.invalid("schedule.jitter", "must be less than 24h"));
    }
    Ok(ScheduleSettings {
        cron,
        cron_expr: expr,
        timezone,
        jitter,
        run_on_start: raw.run_on_start,
    })
}

fn validate_object_storage(
    ctx: &Ctx,
    raw: RawObjectStorage,
) -> Result<ObjectStorageSettings, ConfigError> {
    let max_per_run = match raw.max_per_run {
        Some(n) => Some(in_range(ctx, "object_storage.max_per_run", n, 1, i64::MAX)?),
        None => None,
    };
    let exclude_users = match raw.exclude_users {
        Some(patterns) if patterns.is_empty() => None,
        Some(patterns) => Some(globs(ctx, "object_storage.exclude_users", &patterns)?),
        None => None,
    };
    Ok(ObjectStorageSettings {
        rotate: raw.rotate,
        max_age: max_age(ctx, "object_storage.max_age", &raw.max_age)?,
        users: user_globs(ctx, "object_storage.users", raw.users)?,
        exclude_users,
        regions: non_empty_items(ctx, "object_storage.regions", raw.regions)?,
        object_storages: non_empty_items(
            ctx,
            "object_storage.object_storages",
            raw.object_storages,
        )?,
        max_per_run,
        on_first_sight: raw.on_first_sight,
        verify: raw.verify,
        verify_timeout: timeout(ctx, "object_storage.verify_timeout", &raw.verify_timeout)?,
        verify_requests_per_second: rate(
            ctx,
            "object_storage.verify_requests_per_second",
            raw.verify_requests_per_second,
        )?,
        twins: twins(ctx, raw.twins)?,
    })
}

/// `[[object_storage.twins]]`: named like a profile, two distinct users
/// each in one twin, a bounded grace period.
fn twins(ctx: &Ctx, raw: Vec<RawTwin>) -> Result<Vec<TwinSettings>, ConfigError> {
    let mut twins: Vec<TwinSettings> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("object_storage.twins[{i}].{k}");
        let name = t.name.trim().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ctx.invalid(
                key("name"),
                format!("`{name}` is not a twin name: use letters, digits, `_` and `-` (it starts the profile names)"),
            ));
        }
        if twins.iter().any(|o| o.name == name) {
            return Err(ctx.invalid(key("name"), format!("`{name}` names another twin already")));
        }
        let users: [String; 2] = match <[String; 2]>::try_from(t.users) {
            Ok([a, b]) if !a.trim().is_empty() && !b.trim().is_empty() => {
                [a.trim().to_owned(), b.trim().to_owned()]
            }
            Ok(_) => return Err(ctx.invalid(key("users"), "must not hold an empty e-mail")),
            Err(users) => {
                return Err(ctx.invalid(
                    key("users"),
                    format!("holds {} e-mails; a twin is exactly two users", users.len()),
                ))
            }
        };
        if users[0].eq_ignore_ascii_case(&users[1]) {
            return Err(ctx.invalid(
                key("users"),
                format!("names {} twice; a twin is two different users", users[0]),
            ));
        }
        for user in &users {
            if let Some(other) = twins
                .iter()
                .find(|o| o.users.iter().any(|u| u.eq_ignore_ascii_case(user)))
            {
                return Err(ctx.invalid(
                    key("users"),
                    format!(
                        "{user} is in twin `{}` already; a user is in at most one twin",
                        other.name
                    ),
                ));
            }
        }
        let retire_after = duration(ctx, &key("retire_after"), &t.retire_after)?;
        if retire_after < Duration::from_secs(1) || retire_after > 30 * DAY {
            return Err(ctx.invalid(
                key("retire_after"),
                format!(
                    "`{}` is out of range: must be between 1s and 30d",
                    t.retire_after.0
                ),
            ));
        }
        twins.push(TwinSettings {
            name,
            users,
            retire_after,
            probe_buckets: non_empty_items(ctx, &key("probe_buckets"), t.probe_buckets)?,
        });
    }
    Ok(twins)
}

fn validate_sink(
    ctx: &Ctx,
    key: &str,
    raw: RawSink,
    twins: &[TwinSettings],
) -> Result<PendingSink, ConfigError> {
    let kind = raw.kind;
    let allowed = kind.keys();
    for present in raw.present_keys() {
        if !allowed.contains(&present) {
            let expected = allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>();
            return Err(ctx.invalid(
                format!("{key}.{present}"),
                format!(
                    "not a key of `{}` sinks (they take {})",
                    kind.as_str(),
                    expected.join(", ")
                ),
            ));
        }
    }
    let missing = |name: &str| {
        ctx.invalid(
            format!("{key}.{name}"),
            format!("missing; a `{}` sink needs `{name}`", kind.as_str()),
        )
    };
    let sub = |name: &str| format!("{key}.{name}");
    // A sink's own validation hook names the key under `sinks[N]`.
    let hook = |p: crate::sinks::ConfigProblem| ctx.invalid(sub(p.key), p.problem);
    let select =
        |raw: Option<RawSelect>| selection(ctx, &sub("select"), raw.unwrap_or_default(), twins);
    match kind {
        SinkType::File => Ok(PendingSink::Ready(SinkSettings::File(FileSink {
            path: path(ctx, &sub("path"), &raw.path.ok_or_else(|| missing("path"))?)?,
            format: raw.format.ok_or_else(|| missing("format"))?,
            mode: mode(ctx, &sub("mode"), raw.mode)?,
            owner: optional_name(ctx, &sub("owner"), raw.owner)?,
            group: optional_name(ctx, &sub("group"), raw.group)?,
            select: select(raw.select)?,
            on_change: on_change(ctx, &sub("on_change"), raw.on_change)?,
            wait: sink_wait(ctx, &sub("wait"), raw.wait.as_ref())?,
        }))),
        SinkType::Template => {
            let template = raw.template.ok_or_else(|| missing("template"))?;
            let template = path(ctx, &sub("template"), &template)?;
            let target = path(ctx, &sub("path"), &raw.path.ok_or_else(|| missing("path"))?)?;
            crate::sinks::template::check(&template, &target).map_err(hook)?;
            Ok(PendingSink::Template(PendingTemplate {
                key: sub("template"),
                template,
                path: target,
                mode: mode(ctx, &sub("mode"), raw.mode)?,
                owner: optional_name(ctx, &sub("owner"), raw.owner)?,
                group: optional_name(ctx, &sub("group"), raw.group)?,
                select: select(raw.select)?,
                on_change: on_change(ctx, &sub("on_change"), raw.on_change)?,
                wait: sink_wait(ctx, &sub("wait"), raw.wait.as_ref())?,
            }))
        }
        SinkType::Webhook => {
            let url = raw.url.ok_or_else(|| missing("url"))?;
            let url = http_url(ctx, &sub("url"), &url)?;
            let include_secrets = raw.include_secrets.unwrap_or(false);
            crate::sinks::webhook::check(&url, include_secrets).map_err(hook)?;
            let refs = raw
                .signing_secret
                .ok_or_else(|| missing("signing_secret"))?;
            if refs.refs.is_empty() {
                return Err(ctx.invalid(sub("signing_secret"), "must hold at least one secret"));
            }
            let signing_secrets = refs.into_keyed(&sub("signing_secret"));
            let timeout = match raw.timeout {
                Some(t) => timeout(ctx, &sub("timeout"), &t)?,
                None => Duration::from_secs(10),
            };
            let headers = headers(ctx, &sub("headers"), raw.headers.unwrap_or_default())?
                .into_iter()
                .map(|(name, value)| PendingHeader {
                    key: format!("{}.{name}", sub("headers")),
                    name,
                    value,
                })
                .collect();
            Ok(PendingSink::Webhook(PendingWebhook {
                url,
                signing_secrets,
                include_secrets,
                timeout,
                headers,
                ca: ca_file(ctx, &sub("ca_file"), raw.ca_file.as_deref())?,
            }))
        }
    }
}

/// A `ca_file`: relative to the configuration's directory, read now (a
/// missing or certificate-less file is a configuration error).
fn ca_file(
    ctx: &Ctx,
    key: &str,
    raw: Option<&Path>,
) -> Result<Option<crate::tls::ExtraRoots>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let file = path(ctx, key, raw)?;
    crate::tls::ExtraRoots::load(&file)
        .map(Some)
        .map_err(|err| ctx.invalid(key, err.to_string()))
}

fn selection(
    ctx: &Ctx,
    key: &str,
    raw: RawSelect,
    twins: &[TwinSettings],
) -> Result<Selection, ConfigError> {
    for (i, name) in raw.twins.iter().enumerate() {
        if !twins.iter().any(|t| t.name == *name) {
            return Err(ctx.invalid(
                format!("{key}.twins[{i}]"),
                format!("`{name}` is not the name of an [[object_storage.twins]]"),
            ));
        }
    }
    Ok(Selection {
        users: user_globs(ctx, &format!("{key}.users"), raw.users)?,
        regions: non_empty_items(ctx, &format!("{key}.regions"), raw.regions)?,
        kinds: raw.kinds,
        twins: raw.twins,
    })
}

/// Two sinks writing one file would fight over it.
fn check_distinct_paths(ctx: &Ctx, sinks: &[PendingSink]) -> Result<(), ConfigError> {
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for (i, sink) in sinks.iter().enumerate() {
        let path = match sink {
            PendingSink::Ready(SinkSettings::File(s)) => &s.path,
            PendingSink::Ready(SinkSettings::Template(s)) => &s.path,
            PendingSink::Template(s) => &s.path,
            _ => continue,
        };
        if let Some(first) = seen.insert(normalized(path), i) {
            return Err(ctx.invalid(
                format!("sinks[{i}].path"),
                format!("{} is already written by sinks[{first}]", path.display()),
            ));
        }
    }
    Ok(())
}

/// `path` without `.` components and repeated separators.
fn normalized(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The state directory to use when `[state] dir` is not set, from the
/// environment (`var`) and whether the daemon runs as root; `None` when no
/// writable default can be chosen (not root, no `$HOME`).
pub fn default_state_dir(var: &dyn Fn(&str) -> Option<String>, is_root: bool) -> Option<PathBuf> {
    let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dirs) = var("STATE_DIRECTORY") {
        // systemd lists one entry per StateDirectory=, separated by ':'.
        if let Some(first) = dirs.split(':').find(|d| !d.is_empty()) {
            return Some(PathBuf::from(first));
        }
    }
    if is_root {
        return Some(PathBuf::from("/var/lib/contabo-rotator"));
    }
    if let Some(state_home) = absolute("XDG_STATE_HOME") {
        return Some(state_home.join("contabo-rotator"));
    }
    absolute("HOME").map(|home| home.join(".local/state/contabo-rotator"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_defaults() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, Option<&'a str>);
        let cases: &[Case] = &[
            (
                "systemd StateDirectory= wins, first entry",
                &[
                    ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b"),
                    ("HOME", "/home/u"),
                ],
                true,
                Some("/var/lib/a"),
            ),
            (
                "root",
                &[("HOME", "/root")],
                true,
                Some("/var/lib/contabo-rotator"),
            ),
            (
                "root ignores XDG",
                &[("XDG_STATE_HOME", "/root/.st")],
                true,
                Some("/var/lib/contabo-rotator"),
            ),
            (
                "user with XDG_STATE_HOME",
                &[("XDG_STATE_HOME", "/home/u/.st"), ("HOME", "/home/u")],
                false,
                Some("/home/u/.st/contabo-rotator"),
            ),
            (
                "user with relative XDG_STATE_HOME falls back to HOME",
                &[("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")],
                false,
                Some("/home/u/.local/state/contabo-rotator"),
            ),
            (
                "user with HOME",
                &[("HOME", "/home/u")],
                false,
                Some("/home/u/.local/state/contabo-rotator"),
            ),
            (
                "empty STATE_DIRECTORY is ignored",
                &[("STATE_DIRECTORY", "")],
                false,
                None,
            ),
            ("user without HOME", &[], false, None),
        ];
        for (name, env, is_root, want) in cases {
            let var = |k: &str| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            assert_eq!(
                default_state_dir(&var, *is_root),
                want.map(PathBuf::from),
                "{name}"
            );
        }
    }
}
