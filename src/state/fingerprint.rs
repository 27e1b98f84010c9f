//! Secret fingerprints: a keyed hash that tells two secrets apart without
//! revealing either.
//!
//! A plain hash of a short secret could be brute-forced from the records or
//! the audit log, so fingerprints are HMAC-SHA256 under a random key that
//! never leaves the state directory (`fingerprint.key`, mode 0600, created on
//! first open). The same secret always gets the same fingerprint for a given
//! state directory; a different directory (key) gives a different one.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::fs::{read_private, write_atomic};
use super::StateError;
use crate::dirfd::Dir;

/// Length of the key in `fingerprint.key`.
const KEY_LEN: usize = 32;
/// How many bytes of the MAC are kept: 128 bits is ample to tell secrets apart.
const KEPT_LEN: usize = 16;
const PREFIX: &str = "hmac-sha256:";

/// `hmac-sha256:<32 hex digits>`: identifies a secret in records, audit
/// lines and webhooks without revealing it.
///
/// Kept as its 16 bytes and written as that text: the records hold one per
/// credential of the account, and the text would take 44 bytes more, plus
/// an allocation, each.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; KEPT_LEN]);

impl Fingerprint {
    /// The text form, `hmac-sha256:<32 hex digits>`.
    pub fn text(&self) -> String {
        self.to_string()
    }

    /// A fingerprint of `byte` repeated, for tests.
    #[cfg(test)]
    pub(crate) fn repeated(byte: u8) -> Fingerprint {
        Fingerprint([byte; KEPT_LEN])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Text that is not `hmac-sha256:` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is \"hmac-sha256:\" and 32 hex digits")]
pub struct ParseFingerprintError;

impl std::str::FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(text: &str) -> Result<Fingerprint, ParseFingerprintError> {
        let hex = text.strip_prefix(PREFIX).ok_or(ParseFingerprintError)?;
        let mut bytes = [0u8; KEPT_LEN];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| ParseFingerprintError)?;
        Ok(Fingerprint(bytes))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fingerprint, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The HMAC key; its `Debug` is redacted and it is zeroed on drop.
pub(crate) struct FingerprintKey(SecretBox<[u8; KEY_LEN]>);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey([REDACTED])")
    }
}

impl FingerprintKey {
    /// Loads `<dir>/fingerprint.key`, creating it with fresh random bytes if
    /// absent. The caller holds the directory lock, so creation cannot race.
    pub(crate) fn load_or_create(dir: &Dir) -> Result<FingerprintKey, StateError> {
        if let Some(key) = FingerprintKey::load(dir)? {
            return Ok(key);
        }
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        let created = FingerprintKey::from_bytes(key);
        write_atomic(dir, super::KEY_FILE, created.0.expose_secret(), 0o600)?;
        Ok(created)
    }

    /// Loads `<dir>/fingerprint.key` without creating it (no lock needed):
    /// `None` when the directory has none yet.
    pub(crate) fn load(dir: &Dir) -> Result<Option<FingerprintKey>, StateError> {
        let path = dir.shown(super::KEY_FILE.as_ref());
        let Some(bytes) = read_private(dir, super::KEY_FILE)? else {
            return Ok(None);
        };
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            StateError::corrupt(
                &path,
                format!("it holds {} bytes, a key is {KEY_LEN}", bytes.len()),
            )
        })?;
        Ok(Some(FingerprintKey::from_bytes(key)))
    }

    fn from_bytes(key: [u8; KEY_LEN]) -> FingerprintKey {
        FingerprintKey(SecretBox::new(Box::new(key)))
    }

    /// The fingerprint of `secret` under this key.
    pub(crate) fn fingerprint(&self, secret: &impl ExposeSecret<str>) -> Fingerprint {
        fingerprint_with(self.0.expose_secret(), &[secret.expose_secret().as_bytes()])
    }

    /// The fingerprint of the concatenation of `parts`.
    pub(crate) fn fingerprint_parts(&self, parts: &[&[u8]]) -> Fingerprint {
        fingerprint_with(self.0.expose_secret(), parts)
    }

    /// A writer that fingerprints what is written to it, the same as
    /// [`FingerprintKey::fingerprint_parts`] of its concatenation: content
    /// of megabytes is fingerprinted as it is produced, never held.
    pub(crate) fn writer(&self) -> FingerprintWriter {
        FingerprintWriter(
            Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
                .expect("HMAC accepts any key length"),
        )
    }
}

/// See [`FingerprintKey::writer`].
pub struct FingerprintWriter(Hmac<Sha256>);

impl FingerprintWriter {
    /// The fingerprint of everything written, then `last`.
    pub fn finish(mut self, last: &[u8]) -> Fingerprint {
        self.0.update(last);
        text_of(self.0)
    }
}

impl std::io::Write for FingerprintWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fingerprint_with(key: &[u8], parts: &[&[u8]]) -> Fingerprint {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    text_of(mac)
}

fn text_of(mac: Hmac<Sha256>) -> Fingerprint {
    let digest = mac.finalize().into_bytes();
    let mut kept = [0u8; KEPT_LEN];
    kept.copy_from_slice(&digest[..KEPT_LEN]);
    Fingerprint(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn key(byte: u8) -> FingerprintKey {
        FingerprintKey::from_bytes([byte; KEY_LEN])
    }

    #[test]
    fn format_is_truncated_hmac_sha256() {
        // RFC 4231 test case 1: the format must never change, or every
        // recorded fingerprint would stop matching after an upgrade.
        let fp = fingerprint_with(&[0x0b; 20], &[b"Hi There"]);
        assert_eq!(fp.text(), "hmac-sha256:b0344c61d8db38535ca8afceaf0bf12b");
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, "\"hmac-sha256:b0344c61d8db38535ca8afceaf0bf12b\"");
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        for bad in [
            "",
            "hmac-sha256:",
            "hmac-sha256:b0344c61",
            "sha256:b0344c61d8db38535ca8afceaf0bf12b",
            "hmac-sha256:z0344c61d8db38535ca8afceaf0bf12b",
        ] {
            assert_eq!(
                bad.parse::<Fingerprint>(),
                Err(ParseFingerprintError),
                "{bad}"
            );
        }
    }

    #[test]
    fn stable_for_one_key_different_across_keys() {
        let secret = SecretString::from("Q7!zP-9#kX$wLm@R");
        assert_eq!(key(1).fingerprint(&secret), key(1).fingerprint(&secret));
        assert_ne!(key(1).fingerprint(&secret), key(2).fingerprint(&secret));
        let other = SecretString::from("Q7!zP-9#kX$wLm@S");
        assert_ne!(key(1).fingerprint(&secret), key(1).fingerprint(&other));
    }

    #[test]
    fn reveals_no_part_of_the_secret() {
        let text = "Q7!zP-9#kX$wLm@R";
        let fp = key(7).fingerprint(&SecretString::from(text)).text();
        for window in text.as_bytes().windows(3) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!fp.contains(window), "{fp} contains {window}");
        }
        assert!(!format!("{:?}", key(7)).contains('7'));
    }
}
