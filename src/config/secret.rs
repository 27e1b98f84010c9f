//! Secret references: where a secret comes from, and reading it.
//!
//! In the file a secret is a plain string, or a table with exactly one of
//! `file = "PATH"`, `env = "VAR"` or `credential = "NAME"` (systemd's
//! `$CREDENTIALS_DIRECTORY/NAME`). Parsing keeps only the reference;
//! [`Resolver`] reads it, after validation, into a [`SecretString`].
//!
//! No message built here contains a secret: errors name the key, the source
//! (path, variable name) and the problem.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

use super::error::{ConfigError, Ctx};

/// One secret as written in the configuration.
pub enum SecretRef {
    /// The value itself, written in the configuration file.
    Plain(SecretString),
    /// `{ file = "PATH" }`; relative to the configuration file's directory.
    File(PathBuf),
    /// `{ env = "VAR" }`
    Env(String),
    /// `{ credential = "NAME" }`: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Plain(_) => f.write_str("Plain([REDACTED])"),
            SecretRef::File(path) => f.debug_tuple("File").field(path).finish(),
            SecretRef::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretRef::Credential(name) => f.debug_tuple("Credential").field(name).finish(),
        }
    }
}

const SOURCES: &[&str] = &["file", "env", "credential"];

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretRefVisitor)
    }
}

struct SecretRefVisitor;

impl<'de> Visitor<'de> for SecretRefVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret: a string, or a table with one of `file`, `env` or `credential`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRef, E> {
        Ok(SecretRef::Plain(SecretString::from(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretRef, E> {
        Ok(SecretRef::Plain(SecretString::from(v)))
    }

    // The default implementations quote the value; this one must not.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
        Err(E::invalid_type(Unexpected::Other("boolean"), &self))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
        Err(E::invalid_type(Unexpected::Other("integer"), &self))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
        Err(E::invalid_type(Unexpected::Other("integer"), &self))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
        Err(E::invalid_type(
            Unexpected::Other("floating-point number"),
            &self,
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
        let mut found: Option<SecretRef> = None;
        while let Some(key) = map.next_key::<String>()? {
            if !SOURCES.contains(&key.as_str()) {
                return Err(de::Error::unknown_field(&key, SOURCES));
            }
            let value: String = map.next_value()?;
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes exactly one of `file`, `env` or `credential`",
                ));
            }
            if value.is_empty() {
                return Err(de::Error::custom(format!("`{key}` must not be empty")));
            }
            found = Some(match key.as_str() {
                "file" => SecretRef::File(PathBuf::from(value)),
                "env" => {
                    note_env_name(&value);
                    SecretRef::Env(value)
                }
                _ if value.contains('/') || value == "." || value == ".." => {
                    return Err(de::Error::custom(
                        "`credential` is a file name in $CREDENTIALS_DIRECTORY, not a path",
                    ))
                }
                _ => SecretRef::Credential(value),
            });
        }
        found.ok_or_else(|| {
            de::Error::custom(
                "an empty table is not a secret: give one of `file`, `env` or `credential`",
            )
        })
    }
}

thread_local! {
    /// The variables of the `{ env = "VAR" }` references parsed while
    /// [`env_names_in`] runs on this thread.
    static ENV_NAMES: std::cell::RefCell<Option<Vec<String>>> =
        const { std::cell::RefCell::new(None) };
}

fn note_env_name(name: &str) {
    ENV_NAMES.with(|names| {
        if let Some(names) = names.borrow_mut().as_mut() {
            names.push(name.to_owned());
        }
    });
}

/// The variables that the `{ env = "VAR" }` secrets of a configuration
/// file's text name, wherever the configuration takes a secret: found by
/// the configuration's own parser, so no other table is mistaken for one.
/// A text that does not parse yields the names found before the error.
pub(super) fn env_names_in(text: &str) -> Vec<String> {
    ENV_NAMES.with(|names| *names.borrow_mut() = Some(Vec::new()));
    let _ = toml::from_str::<super::raw::RawConfig>(text);
    let mut found = ENV_NAMES.with(|names| names.borrow_mut().take().unwrap_or_default());
    found.sort();
    found.dedup();
    found
}

/// One secret reference, or an array of them (`signing_secret`).
#[derive(Debug)]
pub struct SecretRefs {
    pub refs: Vec<SecretRef>,
    /// Written as an array: keys are then named `signing_secret[i]`.
    pub is_array: bool,
}

impl SecretRefs {
    /// Each reference with its key path under `key`.
    pub fn into_keyed(self, key: &str) -> Vec<(String, SecretRef)> {
        let is_array = self.is_array;
        self.refs
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let key = if is_array {
                    format!("{key}[{i}]")
                } else {
                    key.to_owned()
                };
                (key, r)
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for SecretRefs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretRefsVisitor)
    }
}

struct SecretRefsVisitor;

impl SecretRefsVisitor {
    fn one(r: SecretRef) -> SecretRefs {
        SecretRefs {
            refs: vec![r],
            is_array: false,
        }
    }
}

impl<'de> Visitor<'de> for SecretRefsVisitor {
    type Value = SecretRefs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret, or an array of secrets")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_str(v).map(Self::one)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_string(v).map(Self::one)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_bool(v).map(Self::one)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_i64(v).map(Self::one)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_u64(v).map(Self::one)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SecretRefs, E> {
        SecretRefVisitor.visit_f64(v).map(Self::one)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SecretRefs, A::Error> {
        SecretRefVisitor.visit_map(map).map(Self::one)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SecretRefs, A::Error> {
        let mut refs = Vec::new();
        while let Some(r) = seq.next_element::<SecretRef>()? {
            refs.push(r);
        }
        Ok(SecretRefs {
            refs,
            is_array: true,
        })
    }
}

/// Reads secret references; remembers which keys held plain secrets.
pub(super) struct Resolver<'a> {
    pub ctx: &'a Ctx<'a>,
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// Keys whose secret was written in the configuration file itself.
    pub plain_keys: Vec<String>,
    /// Environment variables a secret was read from.
    pub env_vars: Vec<String>,
}

impl Resolver<'_> {
    /// The secret `r` refers to, for the error messages named `key`.
    pub(super) fn resolve(
        &mut self,
        key: &str,
        r: &SecretRef,
    ) -> Result<SecretString, ConfigError> {
        let fail = |message: String| self.ctx.secret(key, message);
        let secret = match r {
            SecretRef::Plain(secret) => {
                self.plain_keys.push(key.to_owned());
                secret.clone()
            }
            SecretRef::File(path) => {
                read_secret_file(&self.ctx.base_dir.join(path)).map_err(|e| fail(e.to_string()))?
            }
            SecretRef::Env(name) => match (self.var)(name) {
                None => return Err(fail(format!("environment variable `{name}` is not set"))),
                Some(value) => {
                    self.env_vars.push(name.clone());
                    SecretString::from(value)
                }
            },
            SecretRef::Credential(name) => {
                let dir = (self.var)("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| {
                        fail(format!(
                            "credential `{name}`: `CREDENTIALS_DIRECTORY` is not set \
                             (systemd sets it for units with LoadCredential= or SetCredential=)"
                        ))
                    })?;
                read_secret_file(&Path::new(&dir).join(name)).map_err(|e| fail(e.to_string()))?
            }
        };
        if secret.expose_secret().is_empty() {
            let what = match r {
                SecretRef::Plain(_) => "the secret is empty".to_owned(),
                SecretRef::File(path) => format!("secret file {} is empty", path.display()),
                SecretRef::Env(name) => format!("environment variable `{name}` is empty"),
                SecretRef::Credential(name) => format!("credential `{name}` is empty"),
            };
            return Err(self.ctx.secret(key, what));
        }
        crate::known_secrets::register(&secret);
        Ok(secret)
    }
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
enum SecretFileError {
    #[error("cannot read secret file {}: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "secret file {} is readable by others (mode {mode:04o}); restrict it, e.g. chmod 600 {}",
        .path.display(),
        .path.display()
    )]
    Readable { path: std::path::PathBuf, mode: u32 },
    #[error("cannot read secret file {}: it is not UTF-8 text", .0.display())]
    NotText(std::path::PathBuf),
}

/// The file's content without one trailing `\n` or `\r\n`. A file that
/// others may read is refused: whoever can read it holds the account.
fn read_secret_file(path: &Path) -> Result<SecretString, SecretFileError> {
    let (mut bytes, mode) =
        crate::dirfd::read_trusted(path, crate::dirfd::READ_LIMIT).map_err(|source| {
            SecretFileError::Read {
                path: path.to_owned(),
                source,
            }
        })?;
    if mode & 0o004 != 0 {
        return Err(SecretFileError::Readable {
            path: path.to_owned(),
            mode,
        });
    }
    let len = bytes.len();
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(len - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(len - 1);
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| SecretFileError::NotText(path.to_owned()))?;
    Ok(SecretString::from(text))
}

/// Checks that `secret` is a Standard Webhooks key, `whsec_<base64>` with
/// a non-empty decoded key. The message never includes the value.
pub(super) fn check_signing_secret(secret: &SecretString) -> Result<(), &'static str> {
    let Some(encoded) = secret.expose_secret().strip_prefix("whsec_") else {
        return Err("a signing secret must look like `whsec_<base64>` (Standard Webhooks)");
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(()),
        Ok(_) => Err("the signing secret's key after `whsec_` is empty"),
        Err(_) => Err("the signing secret after `whsec_` is not valid base64"),
    }
}

/// Whether a file with `mode` can be read by its group or by others.
pub(super) fn readable_by_group_or_others(mode: u32) -> bool {
    mode & 0o044 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct One {
        #[allow(dead_code)]
        s: SecretRef,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Many {
        s: SecretRefs,
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            (r#"s = "hunter2""#, "Plain([REDACTED])"),
            (r#"s = { file = "/run/x" }"#, "File(\"/run/x\")"),
            (r#"s = { env = "PW" }"#, "Env(\"PW\")"),
            (r#"s = { credential = "pw" }"#, "Credential(\"pw\")"),
        ];
        for (text, want) in cases {
            let one: One = toml::from_str(text).unwrap();
            assert_eq!(format!("{:?}", one.s), want, "{text}");
        }
    }

    #[test]
    fn refuses_bad_forms_without_echoing_values() {
        let cases = [
            (
                r#"s = { fil = "/x" }"#,
                "unknown field `fil`, expected one of `file`, `env`, `credential`",
            ),
            (r#"s = { file = "/x", env = "Y" }"#, "exactly one of"),
            ("s = {}", "an empty table is not a secret"),
            (r#"s = { env = "" }"#, "`env` must not be empty"),
            (r#"s = { credential = "../pw" }"#, "not a path"),
            ("s = 987654321", "invalid type: integer, expected a secret"),
            ("s = true", "invalid type: boolean, expected a secret"),
        ];
        for (text, want) in cases {
            let err = toml::from_str::<One>(text).unwrap_err();
            assert!(err.message().contains(want), "{text}: {}", err.message());
            assert!(!err.message().contains("987654321"), "{}", err.message());
        }
    }

    #[test]
    fn one_or_many() {
        let one: Many = toml::from_str(r#"s = "whsec_AA==""#).unwrap();
        assert!(!one.s.is_array);
        let keys = |s: SecretRefs| {
            s.into_keyed("k")
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(one.s), ["k"]);
        let many: Many = toml::from_str(r#"s = ["whsec_AA==", { env = "K" }]"#).unwrap();
        assert_eq!(keys(many.s), ["k[0]", "k[1]"]);
    }

    #[test]
    fn signing_secret_format() {
        for (value, ok) in [
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true),
            ("whsec_AA==", true),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false),
            ("whsec_", false),
            ("whsec_not base64!", false),
        ] {
            let result = check_signing_secret(&SecretString::from(value));
            assert_eq!(result.is_ok(), ok, "{value}");
            if let Err(message) = result {
                // ("whsec_" alone is the prefix the message names.)
                assert!(value == "whsec_" || !message.contains(value), "{message}");
            }
        }
    }

    #[test]
    fn permission_check() {
        for (mode, exposed) in [
            (0o100600, false),
            (0o600, false),
            (0o640, true),
            (0o604, true),
            (0o644, true),
            (0o620, false),
        ] {
            assert_eq!(readable_by_group_or_others(mode), exposed, "{mode:o}");
        }
    }
}
