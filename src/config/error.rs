//! [`ConfigError`], and the translation of toml's errors into it.
//!
//! toml's own `Display` (and `Debug`) of a parse error quotes the offending
//! source line, which may hold a secret. Nothing here uses them: messages
//! are rebuilt from `message()` and `span()`, and the values serde quotes in
//! "invalid type" messages are dropped.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{parent, Location, Locator};

/// Why the configuration could not be loaded.
///
/// Every message names the file, where known the line and column, the key
/// path (`sinks[2].path`; array indices start at 0) and the problem, e.g.
/// `config.toml:12:8: sinks[0].mode: "0644" lets others read the file`.
/// No message contains a secret value or a line of the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read. The OS error is part of the
    /// message (not a `source()`), so it is printed exactly once.
    #[error("{}: cannot read the configuration file: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },

    /// Not valid TOML, or not the shape the configuration expects: an
    /// unknown key, a missing key, a value of the wrong type.
    #[error("{}: {message}", At(file, *location))]
    Parse {
        file: PathBuf,
        location: Option<Location>,
        message: String,
    },

    /// A value has the right type but is not acceptable (out of range, bad
    /// cron, bad URL, unsafe file mode, ...).
    #[error("{}: {key}: {message}", At(file, *location))]
    Invalid {
        file: PathBuf,
        location: Option<Location>,
        key: String,
        message: String,
    },

    /// The configuration file is not safe to use: anyone may write it.
    #[error("{}: {message}", file.display())]
    Unsafe { file: PathBuf, message: String },

    /// A secret could not be read, or is not what the key needs.
    #[error("{}: {key}: {message}", At(file, *location))]
    Secret {
        file: PathBuf,
        location: Option<Location>,
        key: String,
        message: String,
    },
}

/// `file:line:column`, or just `file`.
struct At<'a>(&'a Path, Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(location) => write!(f, "{}:{location}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// What validation and secret resolution need to build errors and paths.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub locator: &'a Locator,
    /// Relative paths in the configuration are relative to this directory.
    pub base_dir: &'a Path,
}

impl Ctx<'_> {
    fn location_of(&self, key: &str) -> Option<Location> {
        let offset = self.locator.value_start(key)?;
        Some(Location::of(self.text, offset))
    }

    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = key.into();
        ConfigError::Invalid {
            file: self.file.to_owned(),
            location: self.location_of(&key),
            key,
            message: message.into(),
        }
    }

    pub(super) fn secret(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError::Secret {
            file: self.file.to_owned(),
            location: self.location_of(&key),
            key,
            message: message.into(),
        }
    }

    /// A [`ConfigError::Parse`] from toml's error, named by key path.
    pub(super) fn parse_error(&self, err: &toml::de::Error) -> ConfigError {
        let raw = err.message().lines().collect::<Vec<_>>().join("; ");
        let mut offset = err.span().map(|s| s.start);
        let found = offset.and_then(|o| self.locator.path_at(o));
        let message = if let Some((name, expected)) = unknown_field(&raw) {
            // The span is the key itself, or (for secrets and values serde
            // buffers) the enclosing value: then look the key up inside it.
            let table = match found {
                Some((path, true)) if path.rsplit('.').next() == Some(name) => {
                    parent(path).unwrap_or("")
                }
                Some((path, _)) => {
                    offset = self.locator.key_start(&format!("{path}.{name}")).or(offset);
                    path
                }
                None => "",
            };
            format!(
                "unknown key `{name}` {} ({expected})",
                describe_table(table, found.is_some())
            )
        } else if let Some(name) = between(&raw, "missing field `", "`") {
            // The span is the table missing the key; none for the top level.
            let table = err.span().and_then(|s| self.locator.path_of_value(&s));
            match table {
                Some(path) => format!("{path}: missing required key `{name}`"),
                None => {
                    offset = None;
                    format!("missing required key `{name}`")
                }
            }
        } else {
            let message = scrub(&raw).replace("unknown variant", "unknown value");
            match found {
                Some((path, _)) => format!("{path}: {message}"),
                None => message,
            }
        };
        ConfigError::Parse {
            file: self.file.to_owned(),
            location: offset.map(|o| Location::of(self.text, o)),
            message,
        }
    }
}

/// `in [api]`, `in sinks[0].select`, `at the top level`.
fn describe_table(path: &str, mapped: bool) -> String {
    if path.is_empty() {
        if mapped { "at the top level" } else { "here" }.to_owned()
    } else if path.contains(['.', '[']) {
        format!("in {path}")
    } else {
        format!("in [{path}]")
    }
}

/// serde's `unknown field `x`, expected ...` as (`x`, `expected ...`).
fn unknown_field(message: &str) -> Option<(&str, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, tail) = rest.split_once('`')?;
    let tail = tail.trim_start_matches(',').trim();
    let expected = if tail == "there are no fields" {
        "no keys are allowed here".to_owned()
    } else {
        tail.to_owned()
    };
    Some((name, expected))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    Some(rest.split_once(end)?.0)
}

/// Drops the value from serde's `invalid type: string "hunter2", expected
/// a boolean`: a value in the wrong place may be a secret.
fn scrub(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some(cut) = rest.rfind(", expected ") else {
            continue;
        };
        let (unexpected, expected) = rest.split_at(cut);
        let kind = match unexpected.split([' ', '`', '"']).next().unwrap_or("") {
            "string" => "string",
            "integer" => "integer",
            "floating" => "floating-point number",
            "boolean" => "boolean",
            "character" => "character",
            _ if !unexpected.contains(['`', '"']) => unexpected,
            _ => "value",
        };
        return format!("{prefix}{kind}{expected}");
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_quoted_values() {
        for (input, want) in [
            (
                "invalid type: string \"hunter2\", expected a boolean",
                "invalid type: string, expected a boolean",
            ),
            (
                "invalid type: integer `1234`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                "invalid type: floating-point number, expected i64",
            ),
            (
                "invalid type: sequence, expected a string",
                "invalid type: sequence, expected a string",
            ),
            (
                "invalid value: string \"a, expected b\", expected c",
                "invalid value: string, expected c",
            ),
            ("duplicate key `x`", "duplicate key `x`"),
        ] {
            assert_eq!(scrub(input), want);
        }
    }

    #[test]
    fn unknown_field_splits_name_and_expectation() {
        assert_eq!(
            unknown_field("unknown field `clientid`, expected one of `a`, `b`"),
            Some(("clientid", "expected one of `a`, `b`".to_owned()))
        );
        assert_eq!(
            unknown_field("unknown field `x`, there are no fields"),
            Some(("x", "no keys are allowed here".to_owned()))
        );
        assert_eq!(unknown_field("missing field `x`"), None);
    }

    #[test]
    fn display_names_file_location_and_key() {
        let err = ConfigError::Invalid {
            file: "config.toml".into(),
            location: Some(Location { line: 3, column: 8 }),
            key: "sinks[2].path".into(),
            message: "must not be empty".into(),
        };
        assert_eq!(
            err.to_string(),
            "config.toml:3:8: sinks[2].path: must not be empty"
        );
        let err = ConfigError::Secret {
            file: "config.toml".into(),
            location: None,
            key: "api.password".into(),
            message: "environment variable `X` is not set".into(),
        };
        assert_eq!(
            err.to_string(),
            "config.toml: api.password: environment variable `X` is not set"
        );
    }
}
