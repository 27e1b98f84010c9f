//! Checks of single values: ranges, durations, URLs, paths, file modes,
//! globs, headers. Each names its key in the error; none quotes a value that
//! could be a secret (URLs and header values may carry tokens).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::error::{ConfigError, Ctx};
use super::raw::{DurationStr, ModeStr};
use super::settings::EmailGlobs;

const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn non_empty(ctx: &Ctx, key: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(ctx.invalid(key, "must not be empty"));
    }
    Ok(value)
}

pub(super) fn optional_name(
    ctx: &Ctx,
    key: &str,
    value: Option<String>,
) -> Result<Option<String>, ConfigError> {
    value.map(|v| non_empty(ctx, key, v)).transpose()
}

pub(super) fn non_empty_items(
    ctx: &Ctx,
    key: &str,
    items: Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    if let Some(i) = items.iter().position(|s| s.trim().is_empty()) {
        return Err(ctx.invalid(format!("{key}[{i}]"), "must not be empty"));
    }
    Ok(items)
}

pub(super) fn in_range<T: TryFrom<i64>>(
    ctx: &Ctx,
    key: &str,
    value: i64,
    lo: i64,
    hi: i64,
) -> Result<T, ConfigError> {
    if value < lo || value > hi {
        let message = if hi == i64::MAX {
            format!("{value} is out of range: must be at least {lo}")
        } else {
            format!("{value} is out of range: must be between {lo} and {hi}")
        };
        return Err(ctx.invalid(key, message));
    }
    T::try_from(value).map_err(|_| ctx.invalid(key, format!("{value} is too large")))
}

/// A rate in requests per second: a finite number above 0.
pub(super) fn rate(ctx: &Ctx, key: &str, value: f64) -> Result<f64, ConfigError> {
    // (Written so that NaN fails too.)
    if !(value > 0.0 && value.is_finite()) {
        return Err(ctx.invalid(
            key,
            format!("{value} is out of range: must be a finite number above 0"),
        ));
    }
    Ok(value)
}

pub(super) fn duration(ctx: &Ctx, key: &str, raw: &DurationStr) -> Result<Duration, ConfigError> {
    humantime::parse_duration(raw.0.trim()).map_err(|e| {
        ctx.invalid(
            key,
            format!(
                "`{}` is not a duration ({e}); write e.g. \"90s\", \"12h\" or \"30d\"",
                raw.0
            ),
        )
    })
}

pub(super) fn timeout(ctx: &Ctx, key: &str, raw: &DurationStr) -> Result<Duration, ConfigError> {
    let value = duration(ctx, key, raw)?;
    if value < Duration::from_secs(1) || value > Duration::from_secs(600) {
        return Err(ctx.invalid(
            key,
            format!("`{}` is out of range: must be between 1s and 10m", raw.0),
        ));
    }
    Ok(value)
}

/// The default `wait` of file and template sinks: with a write of a few
/// milliseconds, a credential's readers hold a dead key for well under a
/// second (README, Performance).
pub const DEFAULT_SINK_WAIT: Duration = Duration::from_millis(250);

/// A sink's `wait`: `0s` to `10s`, default [`DEFAULT_SINK_WAIT`].
pub(super) fn sink_wait(
    ctx: &Ctx,
    key: &str,
    raw: Option<&DurationStr>,
) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_SINK_WAIT);
    };
    let value = duration(ctx, key, raw)?;
    if value > Duration::from_secs(10) {
        return Err(ctx.invalid(
            key,
            format!(
                "`{}` is out of range: must be at most 10s (the sink's readers hold a dead key meanwhile)",
                raw.0
            ),
        ));
    }
    Ok(value)
}

pub(super) fn max_age(ctx: &Ctx, key: &str, raw: &DurationStr) -> Result<Duration, ConfigError> {
    let value = duration(ctx, key, raw)?;
    if value < HOUR {
        return Err(ctx.invalid(
            key,
            format!("`{}` is too short: must be at least 1h", raw.0),
        ));
    }
    Ok(value)
}

/// An absolute http(s) URL with a host and no credentials in it. The URL
/// itself is not quoted in messages: paths and queries may carry tokens.
pub(super) fn http_url(ctx: &Ctx, key: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ctx.invalid(key, format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ctx.invalid(
            key,
            format!("scheme `{}` is not http or https", url.scheme()),
        ));
    }
    if url.host().is_none() {
        return Err(ctx.invalid(key, "URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ctx.invalid(
            key,
            "URL must not contain a user name or password: it would show in logs",
        ));
    }
    Ok(url)
}

/// An API endpoint: [`http_url`], and https unless the host is loopback.
/// The token endpoint is sent the client secret and the API password, and
/// every API call carries a bearer token: over plain http on a network,
/// anyone on the path reads them.
pub(super) fn api_url(ctx: &Ctx, key: &str, raw: &str) -> Result<Url, ConfigError> {
    let url = http_url(ctx, key, raw)?;
    if url.scheme() == "http" && !crate::net::is_loopback(&url) {
        return Err(ctx.invalid(
            key,
            "plain http is only allowed to loopback (127.0.0.1, ::1, localhost): \
             it would send the API password, client secret and tokens unencrypted; use https",
        ));
    }
    Ok(url)
}

/// Joins a relative `raw` to the configuration file's directory.
pub(super) fn path(ctx: &Ctx, key: &str, raw: &Path) -> Result<PathBuf, ConfigError> {
    if raw.as_os_str().is_empty() {
        return Err(ctx.invalid(key, "must not be empty"));
    }
    Ok(ctx.base_dir.join(raw))
}

/// An octal mode string with no permission for others.
pub(super) fn mode(ctx: &Ctx, key: &str, raw: Option<ModeStr>) -> Result<u32, ConfigError> {
    let Some(ModeStr(text)) = raw else {
        return Ok(0o600);
    };
    parse_mode(&text).map_err(|m| ctx.invalid(key, m.to_string()))
}

/// Why a sink's `mode` is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ModeError {
    #[error("\"{0}\" is not an octal mode such as \"0600\"")]
    NotOctal(String),
    #[error("\"{0}\" sets setuid, setgid or sticky bits; give permission bits only")]
    SpecialBits(String),
    #[error(
        "\"{0}\" grants permissions to others, but the file holds secrets; \
         use e.g. \"0600\" or \"0640\""
    )]
    Others(String),
}

fn parse_mode(text: &str) -> Result<u32, ModeError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let octal = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|_| octal)
        .ok_or_else(|| ModeError::NotOctal(text.to_owned()))?;
    if mode > 0o777 {
        return Err(ModeError::SpecialBits(text.to_owned()));
    }
    if mode & 0o007 != 0 {
        return Err(ModeError::Others(text.to_owned()));
    }
    Ok(mode)
}

pub(super) fn on_change(
    ctx: &Ctx,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, ConfigError> {
    match raw {
        Some(argv) if argv.is_empty() => Err(ctx.invalid(
            key,
            "must not be empty: give the command and its arguments, \
             e.g. [\"systemctl\", \"reload\", \"myapp\"]",
        )),
        Some(argv) if argv[0].trim().is_empty() => {
            Err(ctx.invalid(format!("{key}[0]"), "the program must not be empty"))
        }
        other => Ok(other),
    }
}

/// `users`: `None` is everyone; an empty list would select nobody.
pub(super) fn user_globs(
    ctx: &Ctx,
    key: &str,
    raw: Option<Vec<String>>,
) -> Result<Option<EmailGlobs>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(patterns) if patterns.is_empty() => Err(ctx.invalid(
            key,
            "must not be empty (it would select nobody); leave it out to select every user",
        )),
        Some(patterns) => globs(ctx, key, &patterns).map(Some),
    }
}

pub(super) fn globs(ctx: &Ctx, key: &str, patterns: &[String]) -> Result<EmailGlobs, ConfigError> {
    EmailGlobs::new(patterns).map_err(|(i, message)| ctx.invalid(format!("{key}[{i}]"), message))
}

/// Headers the webhook sender sets itself, which must not be overridden.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Valid, distinct names, sorted; the values are secrets, checked once
/// read ([`header_value`]).
pub(super) fn headers<V>(
    ctx: &Ctx,
    key: &str,
    raw: BTreeMap<String, V>,
) -> Result<Vec<(String, V)>, ConfigError> {
    let mut seen = HashMap::new();
    for name in raw.keys() {
        let name_key = format!("{key}.{name}");
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(ctx.invalid(name_key, "not a valid HTTP header name"));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(ctx.invalid(
                name_key,
                "is set by the webhook sender and cannot be overridden",
            ));
        }
        if let Some(first) = seen.insert(lower, name) {
            return Err(ctx.invalid(
                name_key,
                format!("same header as `{first}` (names ignore case)"),
            ));
        }
    }
    Ok(raw.into_iter().collect())
}

/// A header's value, once read: printable ASCII and tabs. The message
/// never quotes it; it may be a token.
pub(super) fn header_value(value: &secrecy::SecretString) -> Result<(), &'static str> {
    use secrecy::ExposeSecret;
    if value
        .expose_secret()
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Ok(())
    } else {
        Err("value must be printable ASCII without line breaks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        for (text, want) in [
            ("0600", Ok(0o600)),
            ("600", Ok(0o600)),
            ("0o640", Ok(0o640)),
            ("0660", Ok(0o660)),
            ("0400", Ok(0o400)),
            ("0644", Err("grants permissions to others")),
            ("0601", Err("grants permissions to others")),
            ("4600", Err("setuid")),
            ("0800", Err("not an octal mode")),
            ("", Err("not an octal mode")),
            ("00600", Err("not an octal mode")),
            ("rw-------", Err("not an octal mode")),
        ] {
            match (parse_mode(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => {
                    assert!(got.to_string().contains(want), "{text}: {got}")
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
