//! `client-secret.json`: the daemon's own copy of the rotated OAuth client
//! secret, the only state file that holds a secret.
//!
//! After a client-secret rotation the secret in the config is dead, so the
//! new one is written here (mode 0600 from creation, fsync'd) before anything
//! else happens, and the daemon authenticates with it from then on. The
//! secret is exposed in exactly one place: [`encode`], which builds the
//! file's bytes. There is deliberately no `Serialize` impl, so no other code
//! path can turn a [`StoredClientSecret`] into text.
//!
//! While a client-secret PUT is in flight the file also holds the access
//! token obtained before it (`recovery_token`): if the process dies after
//! the API switched secrets and before the new one is stored here, that
//! token (valid for minutes) is the only way left to read the new secret
//! back. The next store drops it.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fingerprint::FingerprintKey;
use super::fs::{check_version, parse_json, read_private, write_atomic};
use super::{Fingerprint, StateDir, StateError};
use crate::dirfd::Dir;
use std::path::Path;

/// The `version` this build writes and reads.
const STORE_VERSION: u32 = 1;

/// The current client secret and where it came from.
#[derive(Clone)]
pub struct StoredClientSecret {
    pub secret: SecretString,
    pub rotated_at: DateTime<Utc>,
    pub rotation_id: Uuid,
    /// Fingerprint of the secret this one replaced.
    pub superseded: Fingerprint,
    /// The access token of a client-secret PUT in flight, if any.
    pub recovery_token: Option<SecretString>,
}

impl fmt::Debug for StoredClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredClientSecret")
            .field("secret", &format_args!("[REDACTED]"))
            .field("rotated_at", &self.rotated_at)
            .field("rotation_id", &self.rotation_id)
            .field("superseded", &self.superseded)
            .field(
                "recovery_token",
                &self.recovery_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// The file layout, borrowing the exposed secret for the length of one write.
#[derive(Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    secret: &'a str,
    rotated_at: DateTime<Utc>,
    rotation_id: Uuid,
    superseded: &'a Fingerprint,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_token: Option<&'a str>,
}

/// The file layout as read back; the secret goes straight into a `SecretString`.
#[derive(Deserialize)]
struct OnDisk {
    version: u32,
    secret: SecretString,
    rotated_at: DateTime<Utc>,
    rotation_id: Uuid,
    superseded: Fingerprint,
    #[serde(default)]
    recovery_token: Option<SecretString>,
}

/// The client secrets to log in with, in order, read without taking the
/// lock (so `list` and `check --online` work next to a running daemon).
///
/// The stored secret goes first while the configuration still holds the
/// secret it replaced; if the operator has since put a different secret into
/// the configuration, that one is tried first and the stored one kept as the
/// fallback. Without a store, only the configured secret.
pub fn login_secrets(
    dir: &Path,
    configured: &SecretString,
) -> Result<Vec<SecretString>, StateError> {
    let Some(dir) = StateDir::open_existing(dir)? else {
        return Ok(vec![configured.clone()]);
    };
    let Some(stored) = load_client_secret_at(&dir)? else {
        return Ok(vec![configured.clone()]);
    };
    let Some(key) = FingerprintKey::load(&dir)? else {
        return Ok(vec![configured.clone(), stored.secret]);
    };
    let configured_fp = key.fingerprint(configured);
    Ok(if key.fingerprint(&stored.secret) == configured_fp {
        vec![configured.clone()]
    } else if stored.superseded == configured_fp {
        vec![stored.secret, configured.clone()]
    } else {
        vec![configured.clone(), stored.secret]
    })
}

fn load_client_secret_at(dir: &Dir) -> Result<Option<StoredClientSecret>, StateError> {
    let path = dir.shown(super::CLIENT_SECRET_FILE.as_ref());
    let Some(bytes) = read_private(dir, super::CLIENT_SECRET_FILE)? else {
        return Ok(None);
    };
    let stored: OnDisk = parse_json(&path, &bytes)?;
    check_version(&path, stored.version, STORE_VERSION)?;
    Ok(Some(StoredClientSecret {
        secret: stored.secret,
        rotated_at: stored.rotated_at,
        rotation_id: stored.rotation_id,
        superseded: stored.superseded,
        recovery_token: stored.recovery_token,
    }))
}

impl StateDir {
    /// Reads the stored client secret; `None` if the daemon never rotated it.
    /// A file accessible to group or others is refused.
    pub fn load_client_secret(&self) -> Result<Option<StoredClientSecret>, StateError> {
        load_client_secret_at(self.handle())
    }

    /// Atomically replaces the stored client secret (mode 0600 from
    /// creation); durable on disk when this returns.
    pub fn store_client_secret(&self, stored: &StoredClientSecret) -> Result<(), StateError> {
        let path = self.handle().shown(super::CLIENT_SECRET_FILE.as_ref());
        if crate::crash::fails("client-secret-store") {
            let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
            return Err(StateError::io("write", &path, full));
        }
        let bytes = encode(stored).map_err(|e| StateError::io("encode", &path, e.into()))?;
        write_atomic(self.handle(), super::CLIENT_SECRET_FILE, &bytes, 0o600)
    }
}

/// The file's bytes, in a buffer zeroed on drop and sized so that it never
/// reallocates (which would leave an unzeroed copy behind).
fn encode(stored: &StoredClientSecret) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
    let secret = stored.secret.expose_secret();
    let recovery_token = stored.recovery_token.as_ref().map(|t| t.expose_secret());
    // JSON escaping at most sextuples a byte (`\u00XX`); the rest is < 256 bytes.
    let secrets_len = secret.len() + recovery_token.map_or(0, str::len);
    let mut bytes = Zeroizing::new(Vec::with_capacity(6 * secrets_len + 256));
    serde_json::to_writer_pretty(
        &mut *bytes,
        &OnDiskRef {
            version: STORE_VERSION,
            secret,
            rotated_at: stored.rotated_at,
            rotation_id: stored.rotation_id,
            superseded: &stored.superseded,
            recovery_token,
        },
    )?;
    bytes.push(b'\n');
    Ok(bytes)
}
