//! The secrets this process knows besides the values a sink holds: the
//! configured API password, client secret and webhook signing keys, the
//! client secret in use (after a rotation) and the latest access tokens.
//! Text about to be logged from outside (`on_change` output, template
//! errors) is redacted against these as well as against the sink's own
//! values ([`crate::sinks::snapshot::Redactor`]).
//!
//! A small process-wide list rather than a value passed down: the secrets
//! are learnt in `config` and `contabo`, and used in `sinks`, which
//! import neither. Bounded: configuration secrets are few, and only the
//! last [`TOKENS_KEPT`] access tokens are kept.

use secrecy::{ExposeSecret, SecretString};
use std::sync::Mutex;

/// Tokens remembered: the current access and refresh tokens and the pair before.
const TOKENS_KEPT: usize = 4;
/// More long-lived secrets than this (configuration reloads, rotations)
/// drop the oldest.
const SECRETS_KEPT: usize = 64;

struct Known {
    secrets: Vec<SecretString>,
    tokens: Vec<SecretString>,
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    secrets: Vec::new(),
    tokens: Vec::new(),
});

/// Shorter values are not remembered: redacting every `p` or `abc` in a
/// hook's output would garble it, and no real key is that short.
const MIN_LEN: usize = 8;

fn remember(list: &mut Vec<SecretString>, secret: &SecretString, keep: usize) {
    let value = secret.expose_secret();
    if value.len() < MIN_LEN || list.iter().any(|s| s.expose_secret() == value) {
        return;
    }
    if list.len() >= keep {
        list.remove(0);
    }
    list.push(secret.clone());
}

/// Remembers a long-lived secret (configuration, client secret).
pub fn register(secret: &SecretString) {
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    remember(&mut known.secrets, secret, SECRETS_KEPT);
}

/// Remembers an access token (the oldest beyond [`TOKENS_KEPT`] is dropped).
pub fn register_token(token: &SecretString) {
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    remember(&mut known.tokens, token, TOKENS_KEPT);
}

/// Every secret known now.
pub fn all() -> Vec<SecretString> {
    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    known.secrets.iter().chain(&known.tokens).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bounded_and_secrets_deduplicated() {
        for i in 0..=TOKENS_KEPT {
            register_token(&SecretString::from(format!("known-test-token-{i}")));
        }
        register(&SecretString::from("known-test-secret"));
        register(&SecretString::from("known-test-secret"));
        let all: Vec<String> = all().iter().map(|s| s.expose_secret().to_owned()).collect();
        assert_eq!(all.iter().filter(|s| *s == "known-test-secret").count(), 1);
        assert!(
            !all.iter().any(|s| s == "known-test-token-0"),
            "the oldest is dropped"
        );
        let newest = format!("known-test-token-{TOKENS_KEPT}");
        assert!(all.contains(&newest));
        register(&SecretString::from("short"));
        assert!(!super::all().iter().any(|s| s.expose_secret() == "short"));
    }
}
