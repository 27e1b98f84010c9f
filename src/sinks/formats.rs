//! The `env`, `aws-credentials` and `aws-config` file formats, and the
//! quoting rules they share with templates (the `env_quote`, `shell_quote`
//! and `ini_value` filters).
//!
//! # `env`
//!
//! Five variables for exactly one credential of the sink's selection:
//!
//! ```text
//! AWS_ACCESS_KEY_ID='…'
//! AWS_SECRET_ACCESS_KEY='…'
//! AWS_ENDPOINT_URL='https://eu2.contabostorage.com'
//! AWS_REGION='eu'
//! AWS_DEFAULT_REGION='eu'
//! ```
//!
//! Both region variables, because clients read different ones: botocore
//! (aws-cli v1, boto3) reads only `AWS_DEFAULT_REGION`, and without it signs
//! for `us-east-1`; the AWS SDKs for Go, Java, JavaScript and Rust read
//! `AWS_REGION`; aws-cli v2 reads either.
//!
//! The client secret is never part of it (use `json` or a template). A
//! selection holding no credential or several fails the sink, naming them.
//!
//! One file must read the same in systemd's `EnvironmentFile=`, docker
//! compose's `.env`/`env_file:` and POSIX `sh` (`. file`), so values are
//! quoted by [`env_quote`]:
//!
//! * in single quotes (`'…'`), which all three take literally, when the value
//!   holds no `'` and does not end in `\` (compose reads `\'` as an escaped
//!   quote);
//! * otherwise in double quotes with `\`, `"` and `$` escaped by a backslash,
//!   which all three undo; literal line breaks are kept as they are;
//! * a value that needs double quotes *and* holds a backquote is refused: sh
//!   needs `` \` `` there, which compose leaves as two characters, so no
//!   spelling means the same to all three. A NUL byte is refused too.
//!
//! No `export`: systemd would not read the line. For a shell, export the
//! variables with `set -a; . ./file; set +a`.
//!
//! # `aws-credentials`
//!
//! One INI profile per credential, as in `~/.aws/credentials`:
//!
//! ```text
//! [app_example_com-eu-12345]
//! aws_access_key_id = …
//! aws_secret_access_key = …
//! endpoint_url = https://eu2.contabostorage.com
//! region = eu
//! ```
//!
//! The profile name is [`profile_name`]: the user's e-mail in lower case, the
//! region code and the credential id, each character outside
//! `[A-Za-z0-9_-]` replaced by `_`. It stays the same across rotations (a
//! rotation keeps the credential id). Should two credentials still get one
//! name, the later ones (ordered by e-mail, credential id, object-storage
//! id) get `-2`, `-3`, … appended. `endpoint_url` and `region` are read by
//! botocore (aws-cli v1, boto3, since 1.31) and the SDKs that merge the
//! credentials and config files (Go v2, Rust, Java v2). aws-cli v2 takes
//! only the keys from this file: give it an `aws-config` file.
//!
//! # `aws-config`
//!
//! The same profiles, in the shape of `~/.aws/config` (`AWS_CONFIG_FILE`),
//! where AWS documents `endpoint_url` and `region`, and which aws-cli v2
//! (2.13 and later) reads them from:
//!
//! ```text
//! [profile app_example_com-eu-12345]
//! aws_access_key_id = …
//! aws_secret_access_key = …
//! endpoint_url = https://eu2.contabostorage.com
//! region = eu
//! s3 =
//!   addressing_style = path
//! ```
//!
//! Keys in the config file are honoured by every client that reads the
//! file (botocore, aws-cli v1 and v2, the SDKs), so one file is enough.
//! `addressing_style = path` keeps bucket names out of the host name, as
//! Contabo's endpoints expect.
//!
//! INI has no quoting that every AWS SDK and rclone honour, so values are
//! written as they are and [`ini_value`] refuses one that would not read
//! back the same: a control character (line break, tab, …), leading or
//! trailing white space, a leading quote or backquote, or a `#`/`;` after
//! white space.
//!
//! # Region codes
//!
//! S3 clients want a short region string; Contabo's long names are not
//! valid there. [`region_code`] maps `European Union` to `eu`,
//! `United States (Central)` to `us-central`, `Asia (Singapore)` to `sin`
//! (case-insensitively, and the short codes `EU`, `US-central`, `SIN` too)
//! and anything else to `default`. Contabo's endpoints accept any region
//! string; the code only has to be well-formed.

use std::collections::HashMap;
use std::fmt::Write as _;

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::snapshot::{Snapshot, SnapshotCredential};
use super::write::RenderError;

/// The short S3 region string for a Contabo region name.
pub fn region_code(region: &str) -> &'static str {
    const CODES: [(&str, &str, &str); 3] = [
        ("European Union", "EU", "eu"),
        ("United States (Central)", "US-central", "us-central"),
        ("Asia (Singapore)", "SIN", "sin"),
    ];
    let region = region.trim();
    CODES
        .iter()
        .find(|(long, short, _)| {
            region.eq_ignore_ascii_case(long) || region.eq_ignore_ascii_case(short)
        })
        .map_or("default", |(_, _, code)| code)
}

/// The profile name of a twin's credentials in `region` (docs/design.md §3):
/// `<twin>-<region code>`, plus `-<storage name>` (sanitised) when the
/// twin holds two storages in the region, so that the name is the same
/// whichever of the two users is active.
pub fn twin_profile_name(twin: &str, region: &str, storage_name: Option<&str>) -> String {
    let mut name = format!("{twin}-{}", region_code(region));
    if let Some(storage) = storage_name {
        name.push('-');
        name.extend(storage.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        }));
    }
    name
}

/// The `aws-credentials` profile name of a credential, before any `-2`
/// suffix: `<e-mail>-<region code>-<credential id>`, characters outside
/// `[A-Za-z0-9_-]` replaced by `_`.
pub fn profile_name(user_email: &str, region: &str, credential_id: i64) -> String {
    let mut name = String::new();
    push_profile_name(&mut name, user_email, region_code(region), credential_id);
    name
}

/// [`profile_name`] appended to `out`. A render names every profile twice
/// (for the duplicates, then to write it); through one buffer this costs no
/// allocation, where building each name took three (a third of all the
/// allocations of a 30,000-credential pass).
fn push_profile_name(out: &mut String, user_email: &str, code: &str, credential_id: i64) {
    let safe = |c: char| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    };
    if user_email.is_ascii() {
        // The usual e-mail, a byte at a time: lower-casing it as Unicode
        // was 6-7% of the time of a render of `aws-credentials`.
        let lower = |b: u8| char::from(b.to_ascii_lowercase());
        out.extend(user_email.bytes().map(lower).map(safe));
    } else {
        // Lower case one character at a time: it differs from the string's
        // only for a final sigma, which is not ASCII and becomes `_` either
        // way.
        out.extend(user_email.chars().flat_map(char::to_lowercase).map(safe));
    }
    out.push('-');
    // Every region code is made of safe characters.
    out.push_str(code);
    write!(out, "-{credential_id}").expect("writing to a String");
}

/// Why a value cannot be written in a format. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unquotable(pub &'static str);

/// A value quoted for an env file read by systemd, docker compose and sh
/// alike (see the module documentation for the rule).
pub fn env_quote(value: &str) -> Result<String, Unquotable> {
    if value.contains('\0') {
        return Err(Unquotable("it contains a NUL byte"));
    }
    if !value.contains('\'') && !value.ends_with('\\') {
        return Ok(format!("'{value}'"));
    }
    if value.contains('`') {
        return Err(Unquotable(
            "it contains a backquote and also a single quote or a trailing backslash; \
             no quoting reads the same in sh, systemd and docker compose",
        ));
    }
    let mut quoted = String::with_capacity(value.len() + 8);
    quoted.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

/// A value quoted for POSIX sh: `'…'`, each `'` written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `value` unchanged if an INI reader (botocore, the AWS SDKs, rclone)
/// reads it back the same; otherwise why not.
pub fn ini_value(value: &str) -> Result<&str, Unquotable> {
    if value.chars().any(char::is_control) {
        return Err(Unquotable(
            "it contains a line break or another control character",
        ));
    }
    if value.trim() != value {
        return Err(Unquotable("it starts or ends with white space"));
    }
    if value.starts_with(['"', '\'', '`']) {
        return Err(Unquotable("it starts with a quote"));
    }
    let bytes = value.as_bytes();
    if bytes
        .windows(2)
        .any(|w| w[0].is_ascii_whitespace() && matches!(w[1], b'#' | b';'))
    {
        return Err(Unquotable(
            "it contains `#` or `;` after white space, which some readers take for a comment",
        ));
    }
    Ok(value)
}

/// A one-line, comment-safe description of a credential (no secret).
fn describe(c: &SnapshotCredential) -> Described<'_> {
    Described(c)
}

/// [`describe`], written where it is formatted: a render describes every
/// credential, and a `String` each took two allocations.
struct Described<'a>(&'a SnapshotCredential);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Control characters (a line break in a storage's name) as spaces.
        // Written a run at a time, not a character at a time: fewer calls
        // through the render's writers.
        let text = |f: &mut std::fmt::Formatter<'_>, text: &str| {
            for (i, run) in text.split(char::is_control).enumerate() {
                if i > 0 {
                    f.write_char(' ')?;
                }
                f.write_str(run)?;
            }
            Ok(())
        };
        let c = self.0;
        write!(f, "credential {} of ", c.credential_id)?;
        text(f, &c.user_email)?;
        f.write_str(" (")?;
        text(f, &c.storage.name)?;
        f.write_str(", ")?;
        text(f, &c.storage.region)?;
        f.write_str(")")
    }
}

/// The `env` format. Fails unless the snapshot holds exactly one credential.
pub fn env(snapshot: &Snapshot) -> Result<SecretString, RenderError> {
    let mut all = snapshot.credentials();
    let c = match (all.next(), all.next()) {
        (Some(one), None) => one,
        _ => {
            let count = snapshot.count();
            let mut listed: Vec<String> = snapshot
                .credentials()
                .take(5)
                .map(|c| describe(c).to_string())
                .collect();
            if count > 5 {
                listed.push(format!("and {} more", count - 5));
            }
            let which = if count == 0 {
                String::new()
            } else {
                format!(": {}", listed.join("; "))
            };
            return Err(RenderError::Content(format!(
                "format \"env\" needs exactly one credential, but the sink's selection holds {count}{which}; \
                 narrow `select` (users, regions) or use \"aws-credentials\" or \"json\""
            )));
        }
    };
    let secret = c.keys.expose_secret();
    let quote = |name: &str, value: &str| {
        env_quote(value).map_err(|Unquotable(why)| {
            RenderError::Content(format!(
                "{name} of {} cannot be written: {why}",
                describe(c)
            ))
        })
    };
    let mut text = format!(
        "# Written by contabo-rotator; replaced on every change.\n# S3 {}\n",
        describe(c)
    );
    for (name, value) in [
        ("AWS_ACCESS_KEY_ID", c.access_key()),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_ENDPOINT_URL", &*c.storage.s3_url),
        ("AWS_REGION", c.storage.region_code),
        ("AWS_DEFAULT_REGION", c.storage.region_code),
    ] {
        let _ = writeln!(text, "{name}={}", quote(name, value)?);
    }
    Ok(SecretString::from(text))
}

/// The `aws-credentials` format: one profile per credential.
pub fn aws_credentials(snapshot: &Snapshot) -> Result<SecretString, RenderError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(64 + 320 * snapshot.count()));
    write_aws_credentials(snapshot, &mut *bytes)?;
    let text = std::str::from_utf8(&bytes).expect("the format writes UTF-8");
    Ok(SecretString::from(text.to_owned()))
}

/// [`aws_credentials`] written into `out` as it is produced; a value INI
/// cannot carry fails it (before anything of that profile's value is
/// written).
pub fn write_aws_credentials(
    snapshot: &Snapshot,
    out: &mut dyn std::io::Write,
) -> Result<(), RenderError> {
    write_profiles(snapshot, out, Profiles::Credentials)
}

/// The `aws-config` format written into `out`: the `aws-credentials`
/// profiles as `[profile NAME]` sections of a config file, with path-style
/// addressing.
pub fn write_aws_config(
    snapshot: &Snapshot,
    out: &mut dyn std::io::Write,
) -> Result<(), RenderError> {
    write_profiles(snapshot, out, Profiles::Config)
}

/// Which AWS shared file the profiles are written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Profiles {
    /// `~/.aws/credentials`: `[NAME]`.
    Credentials,
    /// `~/.aws/config`: `[profile NAME]`, plus the S3 addressing style.
    Config,
}

fn write_profiles(
    snapshot: &Snapshot,
    out: &mut dyn std::io::Write,
    shape: Profiles,
) -> Result<(), RenderError> {
    fn order(c: &SnapshotCredential) -> (&str, i64, &str) {
        (&c.user_email, c.credential_id, &c.storage.id)
    }
    // The pass hands its values in this order already; only another order
    // is sorted (a copy of 8 bytes per credential).
    let sorted: Vec<&SnapshotCredential>;
    let credentials: &mut dyn Iterator<Item = &SnapshotCredential> = if snapshot
        .credentials()
        .is_sorted_by(|a, b| order(a) <= order(b))
    {
        &mut snapshot.credentials()
    } else {
        sorted = {
            let mut v: Vec<&SnapshotCredential> = snapshot.credentials().collect();
            v.sort_by(|a, b| order(a).cmp(&order(b)));
            v
        };
        &mut sorted.iter().copied()
    };
    out.write_all(b"# Written by contabo-rotator; replaced on every change.\n")?;
    // A name taken before gets `-2`, `-3`, … in this order. Only names
    // whose hash occurs twice are kept as text: a map of every name would
    // cost tens of bytes per credential, on every render of a large file.
    // The hashes are a sorted list, 8 bytes each: a hash map of them took
    // 0.85 MB at 30,000 credentials, the list 0.24. A map of every name
    // instead (tried again, for simplicity) raised the peak RSS of a
    // 30,000-credential pass from 29.8 to 34.7 MiB, over its 32 MiB target.
    let mut base = String::new();
    let base_of = |c: &SnapshotCredential, base: &mut String| {
        base.clear();
        match &c.twin {
            Some(twin) => base.push_str(&twin.profile),
            None => push_profile_name(base, &c.user_email, c.storage.region_code, c.credential_id),
        }
    };
    let hash_of = |name: &str| {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(name, &mut h);
        std::hash::Hasher::finish(&h)
    };
    let mut hashes: Vec<u64> = snapshot
        .credentials()
        .map(|c| {
            base_of(c, &mut base);
            hash_of(&base)
        })
        .collect();
    hashes.sort_unstable();
    let shared = |hash: u64| {
        let at = hashes.partition_point(|h| *h < hash);
        hashes.get(at + 1) == Some(&hash)
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let prefix = match shape {
        Profiles::Credentials => "",
        Profiles::Config => "profile ",
    };
    for c in credentials {
        base_of(c, &mut base);
        write!(out, "\n[{prefix}{base}")?;
        if shared(hash_of(&base)) {
            let count = seen.entry(base.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                write!(out, "-{count}")?;
            }
        }
        write!(out, "]\n# S3 {}\n", describe(c))?;
        for (key, value) in [
            ("aws_access_key_id", c.access_key()),
            ("aws_secret_access_key", c.keys.expose_secret()),
            ("endpoint_url", &*c.storage.s3_url),
            ("region", c.storage.region_code),
        ] {
            let value = ini_value(value).map_err(|Unquotable(why)| {
                RenderError::Content(format!("{key} of {} cannot be written: {why}", describe(c)))
            })?;
            writeln!(out, "{key} = {value}")?;
        }
        if shape == Profiles::Config {
            out.write_all(b"s3 =\n  addressing_style = path\n")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::snapshot::tests::credential;

    /// Values that break naive quoting.
    pub(crate) const HOSTILE: &[&str] = &[
        "",
        "plain",
        "abc/def+ghi=",
        "with space",
        " leading and trailing ",
        "it's",
        "'",
        "''",
        "\"double\"",
        "back\\slash",
        "ends with\\",
        "\\",
        "\\\\",
        "$HOME ${HOME} $(id) $$",
        "`id`",
        "`",
        "multi\nline\n",
        "\n",
        "cr\r\nlf",
        "tab\there",
        "# not a comment",
        "a #b ;c",
        "it's $HOME \"q\" \\n end\\",
        "=;:&|<>*?[]{}!~%^",
        "ünïcödé ✓",
        "\\'",
        "\\\"",
        "\\$x",
    ];

    /// Values env_quote must refuse.
    const REFUSED: &[&str] = &["it's `id`", "`ends with\\", "nul\0byte"];

    /// POSIX sh, run for real: `. file; printf %s "$VAR"`.
    fn sh_reads(file_text: &str, var: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, file_text).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". '{}'; printf %s \"${var}\"", path.display()))
            .env_clear()
            .env("HOME", "/nonexistent-home")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// systemd's `parse_env_file_internal` (src/basic/env-file.c), the
    /// parser of `EnvironmentFile=`, transcribed state for state.
    pub(crate) fn systemd_reads(text: &str) -> HashMap<String, String> {
        #[derive(PartialEq)]
        enum S {
            PreKey,
            Key,
            PreValue,
            Value,
            ValueEscape,
            Single,
            Double,
            DoubleEscape,
            Comment,
            CommentEscape,
        }
        const NEWLINE: &str = "\n\r";
        const WHITESPACE: &str = " \t\n\r";
        let mut out = HashMap::new();
        let (mut key, mut value) = (String::new(), String::new());
        let mut value_ws: Option<usize> = None;
        let mut state = S::PreKey;
        let push = |out: &mut HashMap<String, String>, key: &mut String, value: &mut String| {
            out.insert(key.trim_end().to_owned(), std::mem::take(value));
            key.clear();
        };
        for c in text.chars() {
            state = match state {
                S::PreKey if "#;".contains(c) => S::Comment,
                S::PreKey if !WHITESPACE.contains(c) => {
                    key.push(c);
                    S::Key
                }
                S::PreKey => S::PreKey,
                S::Key if NEWLINE.contains(c) => {
                    key.clear();
                    S::PreKey
                }
                S::Key if c == '=' => {
                    value_ws = None;
                    S::PreValue
                }
                S::Key => {
                    key.push(c);
                    S::Key
                }
                S::PreValue if NEWLINE.contains(c) => {
                    push(&mut out, &mut key, &mut value);
                    S::PreKey
                }
                S::PreValue if c == '\'' => S::Single,
                S::PreValue if c == '"' => S::Double,
                S::PreValue if c == '\\' => S::ValueEscape,
                S::PreValue if !WHITESPACE.contains(c) => {
                    value.push(c);
                    S::Value
                }
                S::PreValue => S::PreValue,
                S::Value if NEWLINE.contains(c) => {
                    if let Some(at) = value_ws {
                        value.truncate(at);
                    }
                    push(&mut out, &mut key, &mut value);
                    S::PreKey
                }
                S::Value if c == '\\' => {
                    value_ws = None;
                    S::ValueEscape
                }
                S::Value => {
                    if !WHITESPACE.contains(c) {
                        value_ws = None;
                    } else if value_ws.is_none() {
                        value_ws = Some(value.len());
                    }
                    value.push(c);
                    S::Value
                }
                S::ValueEscape => {
                    if !NEWLINE.contains(c) {
                        value.push(c);
                    }
                    S::Value
                }
                S::Single if c == '\'' => S::PreValue,
                S::Single => {
                    value.push(c);
                    S::Single
                }
                S::Double if c == '"' => S::PreValue,
                S::Double if c == '\\' => S::DoubleEscape,
                S::Double => {
                    value.push(c);
                    S::Double
                }
                S::DoubleEscape => {
                    if "\"\\`$".contains(c) {
                        value.push(c);
                    } else if c != '\n' {
                        value.push('\\');
                        value.push(c);
                    }
                    S::Double
                }
                S::Comment if c == '\\' => S::CommentEscape,
                S::Comment if NEWLINE.contains(c) => S::PreKey,
                S::Comment => S::Comment,
                S::CommentEscape => S::Comment,
            };
        }
        if !matches!(state, S::PreKey | S::Key | S::Comment | S::CommentEscape) {
            if state == S::Value {
                if let Some(at) = value_ws {
                    value.truncate(at);
                }
            }
            push(&mut out, &mut key, &mut value);
        }
        out
    }

    /// docker compose's `.env` reader (compose-go v2 `dotenv/parser.go`)
    /// for the two quoted forms `env_quote` writes; `None` for anything
    /// else, so a test fails rather than guess.
    pub(crate) fn compose_reads(line_value: &str) -> Option<String> {
        let quote = line_value.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        // extractQuotedValue: up to the first unescaped quote; an escaped
        // quote drops its backslash, any other escape keeps it.
        let mut chars = String::new();
        let mut escaped = false;
        let mut rest = None;
        for (i, c) in line_value.char_indices().skip(1) {
            if escaped {
                escaped = false;
                if c != quote {
                    chars.push('\\');
                }
                chars.push(c);
            } else if c == '\\' {
                escaped = true;
            } else if c == quote {
                rest = Some(&line_value[i + 1..]);
                break;
            } else {
                chars.push(c);
            }
        }
        if rest?.trim() != "" {
            return None;
        }
        if quote == '\'' {
            return Some(chars);
        }
        // expandEscapes (`\\(?:[abcfnrtv$"\\]|0\d{0,3})`, leftmost first),
        // then expandVariables, where only `$$` may occur and means `$`.
        let mut out = String::new();
        let mut it = chars.chars().peekable();
        while let Some(c) = it.next() {
            if c != '\\' {
                if c == '$' {
                    // A bare `$` would be interpolated.
                    it.next_if_eq(&'$')?;
                }
                out.push(c);
                continue;
            }
            match it.peek().copied() {
                Some('\\') | Some('"') => out.push(it.next().unwrap()),
                Some('$') => {
                    it.next();
                    out.push('$');
                }
                Some('n') => {
                    it.next();
                    out.push('\n');
                }
                Some(e) if "abcfrtv0".contains(e) => return None,
                _ => out.push('\\'),
            }
        }
        Some(out)
    }

    #[test]
    fn env_quote_round_trips_through_sh_systemd_and_compose() {
        for value in HOSTILE {
            let quoted = env_quote(value).unwrap_or_else(|e| panic!("{value:?}: {e:?}"));
            let file = format!("# comment\nOTHER=x\nVAR={quoted}\nAFTER='y'\n");
            assert_eq!(sh_reads(&file, "VAR"), *value, "sh: {quoted}");
            assert_eq!(sh_reads(&file, "AFTER"), "y", "sh: {quoted}");
            let systemd = systemd_reads(&file);
            assert_eq!(
                systemd.get("VAR").map(String::as_str),
                Some(*value),
                "systemd: {quoted}"
            );
            assert_eq!(systemd.get("AFTER").map(String::as_str), Some("y"));
            assert_eq!(
                compose_reads(&quoted).as_deref(),
                Some(*value),
                "compose: {quoted}"
            );
        }
        for value in REFUSED {
            assert!(env_quote(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn env_quote_prefers_single_quotes() {
        assert_eq!(env_quote("a/b+c").unwrap(), "'a/b+c'");
        assert_eq!(env_quote("$x").unwrap(), "'$x'");
        assert_eq!(env_quote("it's $x").unwrap(), r#""it's \$x""#);
        assert_eq!(env_quote("a\\").unwrap(), r#""a\\""#);
    }

    #[test]
    fn shell_quote_round_trips_through_sh() {
        for value in HOSTILE.iter().chain(&REFUSED[..2]) {
            let file = format!("VAR={}\n", shell_quote(value));
            assert_eq!(sh_reads(&file, "VAR"), *value);
        }
    }

    #[test]
    fn ini_value_accepts_s3_keys_and_refuses_what_ini_cannot_carry() {
        for ok in [
            "AKIA0123456789ABCDEF",
            "abc/def+ghi=",
            "a#b;c",
            "it's",
            "x\"y",
        ] {
            assert_eq!(ini_value(ok), Ok(ok));
        }
        for bad in [
            "multi\nline",
            "tab\t",
            " lead",
            "trail ",
            "\"quoted\"",
            "'q",
            "`b",
            "a #comment",
            "a ;c",
        ] {
            assert!(ini_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn region_codes() {
        for (name, code) in [
            ("European Union", "eu"),
            ("european union", "eu"),
            ("EU", "eu"),
            ("United States (Central)", "us-central"),
            ("Asia (Singapore)", "sin"),
            ("SIN", "sin"),
            ("United Kingdom", "default"),
            ("", "default"),
        ] {
            assert_eq!(region_code(name), code, "{name}");
        }
    }

    #[test]
    fn profile_names_match_their_definition_whatever_the_text() {
        // The definition: e-mail in lower case, region code and id joined
        // by `-`, then every character outside [A-Za-z0-9_-] as `_`.
        let defined = |email: &str, region: &str, id: i64| -> String {
            format!("{}-{}-{id}", email.to_lowercase(), region_code(region))
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let odd = [
            "ΣΑΣ@Example.COM",
            "İstanbul@X.org",
            "ǅ@Ⅻ.com",
            "Straße@x",
            "KELVIN\u{212A}@x",
        ];
        for email in HOSTILE.iter().copied().chain(odd) {
            for region in ["EU", "United States (Central)", "Mars"] {
                for id in [0, 12345, -7] {
                    assert_eq!(profile_name(email, region, id), defined(email, region, id));
                }
            }
        }
    }

    #[test]
    fn a_description_has_no_line_break_whatever_the_names() {
        let mut c = credential("a\nb@example.com", "EU\r", 7, "s");
        c.storage = crate::sinks::snapshot::Storage::new("os-1", "Name\twith\nbreaks", "EU\r", "");
        assert_eq!(
            describe(&c).to_string(),
            "credential 7 of a b@example.com (Name with breaks, EU )"
        );
    }

    #[test]
    fn profile_names_are_sanitised() {
        assert_eq!(
            profile_name("App.Ops+ci@Example.com", "European Union", 12345),
            "app_ops_ci_example_com-eu-12345"
        );
        assert_eq!(profile_name("x@y", "Mars (Olympus)", 1), "x_y-default-1");
    }

    #[test]
    fn env_needs_exactly_one_credential_and_quotes_every_value() {
        let one = Snapshot::new(
            None,
            &[credential(
                "app@example.com",
                "European Union",
                7,
                "s/e+c'r$t",
            )],
        );
        let text = env(&one).unwrap();
        let text = text.expose_secret();
        let vars = systemd_reads(text);
        assert_eq!(vars["AWS_SECRET_ACCESS_KEY"], "s/e+c'r$t");
        assert_eq!(vars["AWS_ACCESS_KEY_ID"], "AK7");
        assert_eq!(vars["AWS_ENDPOINT_URL"], "https://eu2.contabostorage.com");
        assert_eq!(vars["AWS_REGION"], "eu");
        assert_eq!(vars["AWS_DEFAULT_REGION"], "eu");
        assert_eq!(vars.len(), 5, "{text}");
        assert_eq!(sh_reads(text, "AWS_SECRET_ACCESS_KEY"), "s/e+c'r$t");

        let mut two = one.clone();
        two.groups.push(crate::sinks::snapshot::group([&credential(
            "b@example.com",
            "Asia (Singapore)",
            9,
            "x",
        )]));
        let err = env(&two).unwrap_err().to_string();
        assert!(err.contains("holds 2"), "{err}");
        assert!(err.contains("credential 9 of b@example.com"), "{err}");
        assert!(!err.contains("s/e+c'r$t"));
        let err = env(&Snapshot::default()).unwrap_err().to_string();
        assert!(err.contains("holds 0;"), "{err}");
    }

    #[test]
    fn a_hostile_display_name_cannot_inject_a_line() {
        let mut c = credential("app@example.com", "European Union", 7, "s");
        let storage = &c.storage;
        let hostile = crate::sinks::Storage::new(
            &storage.id,
            "x\nAWS_REGION=evil",
            &storage.region,
            &storage.s3_url,
        );
        c.storage = hostile;
        let snapshot = Snapshot::new(None, &[c]);
        let text = env(&snapshot).unwrap();
        assert_eq!(systemd_reads(text.expose_secret())["AWS_REGION"], "eu");
        let text = aws_credentials(&snapshot).unwrap();
        assert_eq!(text.expose_secret().matches("region =").count(), 1);
    }

    #[test]
    fn aws_config_has_the_same_profiles_as_config_sections_with_path_style() {
        let snapshot = Snapshot::new(
            None,
            &[
                credential("b@example.com", "Asia (Singapore)", 9, "s9"),
                credential("app@example.com", "European Union", 7, "s7"),
            ],
        );
        let mut out = Vec::new();
        write_aws_config(&snapshot, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            headers,
            [
                "[profile app_example_com-eu-7]",
                "[profile b_example_com-sin-9]"
            ]
        );
        let first = text.split("[profile ").nth(1).expect("a first profile");
        for line in [
            "aws_access_key_id = AK7\n",
            "aws_secret_access_key = s7\n",
            "endpoint_url = https://eu2.contabostorage.com\n",
            "region = eu\n",
            "s3 =\n  addressing_style = path\n",
        ] {
            assert!(first.contains(line), "{line:?} in {text}");
        }
        // Python's configparser (which botocore uses) reads it back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, &text).unwrap();
        let read = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import configparser,sys; c=configparser.RawConfigParser(); c.read(sys.argv[1]); \
                 p=c['profile app_example_com-eu-7']; \
                 print(p['aws_secret_access_key'], p['region'], p['s3'].strip())",
            )
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&read.stdout),
            "s7 eu addressing_style = path\n",
            "{}",
            String::from_utf8_lossy(&read.stderr)
        );
    }

    #[test]
    fn aws_credentials_has_one_unique_profile_per_credential() {
        let mut shared = credential("app@example.com", "European Union", 7, "s1");
        let storage = &shared.storage;
        let other = crate::sinks::Storage::new(
            "storage-b",
            &storage.name,
            &storage.region,
            &storage.s3_url,
        );
        shared.storage = other;
        let snapshot = Snapshot::new(
            None,
            &[
                credential("b@example.com", "Asia (Singapore)", 9, "s3"),
                shared,
                credential("app@example.com", "European Union", 7, "s2"),
            ],
        );
        let text = aws_credentials(&snapshot).unwrap();
        let text = text.expose_secret();
        let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            headers,
            [
                "[app_example_com-eu-7]",
                "[app_example_com-eu-7-2]",
                "[b_example_com-sin-9]"
            ]
        );
        assert!(text.contains("aws_secret_access_key = s2\n"), "{text}");
        let mut first = snapshot.credentials().next().unwrap().clone();
        first.keys = crate::sinks::Keys::new(first.access_key(), "two\nlines");
        let rest: Vec<_> = snapshot.credentials().skip(1).cloned().collect();
        let mut bad = Snapshot::new(None, &[first]);
        bad.groups.push(crate::sinks::snapshot::group(&rest));
        let err = aws_credentials(&bad).unwrap_err().to_string();
        assert!(
            err.contains("aws_secret_access_key of credential 9"),
            "{err}"
        );
        assert!(!err.contains("two"), "{err}");
    }

    #[test]
    fn profile_names_that_sanitise_alike_stay_unique() {
        // Two e-mails, one sanitised name; the second in order gets `-2`.
        let snapshot = Snapshot::new(
            None,
            &[
                credential("a_b@example.com", "European Union", 7, "s1"),
                credential("a.b@example.com", "European Union", 7, "s2"),
                credential("c@example.com", "European Union", 7, "s3"),
            ],
        );
        let text = aws_credentials(&snapshot).unwrap();
        let headers: Vec<&str> = text
            .expose_secret()
            .lines()
            .filter(|l| l.starts_with('['))
            .collect();
        assert_eq!(
            headers,
            [
                "[a_b_example_com-eu-7]",
                "[a_b_example_com-eu-7-2]",
                "[c_example_com-eu-7]"
            ]
        );
    }

    #[test]
    fn profiles_in_order_or_not_are_named_and_written_alike() {
        let mut credentials = vec![
            credential("a.b@example.com", "European Union", 7, "s2"),
            credential("a_b@example.com", "European Union", 7, "s1"),
            credential("a_b@example.com", "European Union", 8, "s4"),
            credential("c@example.com", "European Union", 7, "s3"),
        ];
        let sorted = Snapshot::new(None, &credentials);
        credentials.reverse();
        let reversed = Snapshot::new(None, &credentials);
        let text = aws_credentials(&sorted).unwrap();
        assert_eq!(
            text.expose_secret(),
            aws_credentials(&reversed).unwrap().expose_secret()
        );
        assert!(
            text.expose_secret().contains("[a_b_example_com-eu-7-2]"),
            "{}",
            text.expose_secret()
        );
    }
}
