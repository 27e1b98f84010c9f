//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256>` of
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, one per signing key.
//!
//! The key is the base64 after `whsec_`. With several keys configured, the
//! `webhook-signature` header carries one space-separated `v1,` signature per
//! key, so a receiver can switch to a new key while the old one still signs.

use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::fmt;

const PREFIX: &str = "whsec_";

/// Signs event bodies with every configured key.
pub struct Signer {
    /// Decoded keys, zeroed on drop.
    keys: Vec<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// Decodes `whsec_<base64>` keys. The configuration has checked them
    /// already; the error (which never holds the value) is for callers that
    /// did not go through it.
    pub fn new(secrets: &[SecretString]) -> Result<Signer, &'static str> {
        if secrets.is_empty() {
            return Err("no signing secret");
        }
        let keys = secrets
            .iter()
            .map(|secret| {
                let encoded = secret
                    .expose_secret()
                    .strip_prefix(PREFIX)
                    .ok_or("a signing secret must look like `whsec_<base64>`")?;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| "the signing secret after `whsec_` is not valid base64")?;
                if key.is_empty() {
                    return Err("the signing secret's key after `whsec_` is empty");
                }
                Ok(Zeroizing::new(key))
            })
            .collect::<Result<_, _>>()?;
        Ok(Signer { keys })
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        self.keys
            .iter()
            .map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                let tag = mac.finalize().into_bytes();
                format!(
                    "v1,{}",
                    base64::engine::general_purpose::STANDARD.encode(tag)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vector of the Standard Webhooks libraries.
    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_reference_vector() {
        let signer = Signer::new(&[SecretString::from(KEY)]).unwrap();
        assert_eq!(signer.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn signs_once_per_key_space_separated() {
        let signer =
            Signer::new(&[SecretString::from("whsec_AA=="), SecretString::from(KEY)]).unwrap();
        let header = signer.sign(ID, TIMESTAMP, BODY.as_bytes());
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert!(parts[0].starts_with("v1,") && parts[0] != SIGNATURE);
        assert_eq!(parts[1], SIGNATURE);
    }

    #[test]
    fn bad_keys_are_refused_without_their_value() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!not-base64"] {
            let err = Signer::new(&[SecretString::from(bad)]).unwrap_err();
            assert!(!err.contains(bad), "{err}");
        }
        assert!(Signer::new(&[SecretString::from("whsec_")]).is_err());
        assert!(Signer::new(&[]).is_err());
        let signer = Signer::new(&[SecretString::from(KEY)]).unwrap();
        let debug = format!("{signer:?}");
        assert!(!debug.contains("MfKQ"), "{debug}");
    }
}
