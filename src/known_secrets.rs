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
//!
//! The old S3 secrets this process rotated away are dead keys, but a hook
//! printing a copy of an old file must not show them either. They are kept
//! apart, as keyed 64-bit hashes with their lengths, never as values (an
//! account may rotate tens of thousands in a pass, and a dead secret has
//! no business staying in memory): [`redact_retired`] hashes every window
//! of those lengths in a text and replaces the ones that match.

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

/// The old secrets rotated away, by length, as keyed hashes.
static RETIRED: Mutex<Option<Retired>> = Mutex::new(None);

struct Retired {
    keys: std::collections::hash_map::RandomState,
    /// A sorted set per length: 8 bytes per retired secret (a hash set
    /// took 20 at 30,000 of them).
    by_length: std::collections::BTreeMap<usize, crate::sorted_set::SortedSet<u64>>,
}

fn retired_hash(keys: &std::collections::hash_map::RandomState, value: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    keys.hash_one(value)
}

/// Remembers a secret that was rotated away (an old S3 secret), as a hash.
pub fn register_retired(secret: &SecretString) {
    let value = secret.expose_secret().as_bytes();
    if value.len() < MIN_LEN {
        return;
    }
    let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    let retired = retired.get_or_insert_with(|| Retired {
        keys: std::collections::hash_map::RandomState::new(),
        by_length: std::collections::BTreeMap::new(),
    });
    let hash = retired_hash(&retired.keys, value);
    retired
        .by_length
        .entry(value.len())
        .or_default()
        .insert(hash);
}

/// `text` with every occurrence of a retired secret replaced by
/// `[REDACTED]`.
pub fn redact_retired(text: &str) -> String {
    let retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(retired) = retired.as_ref() else {
        return text.to_owned();
    };
    let bytes = text.as_bytes();
    // Matches as (start, end), longest lengths first, non-overlapping.
    let mut matches: Vec<(usize, usize)> = Vec::new();
    for (&len, hashes) in retired.by_length.iter().rev() {
        let mut start = 0;
        while start + len <= bytes.len() {
            let end = start + len;
            let free = !matches.iter().any(|&(s, e)| start < e && s < end);
            if free
                && text.is_char_boundary(start)
                && text.is_char_boundary(end)
                && hashes.contains(&retired_hash(&retired.keys, &bytes[start..end]))
            {
                matches.push((start, end));
                start = end;
            } else {
                start += 1;
            }
        }
    }
    if matches.is_empty() {
        return text.to_owned();
    }
    matches.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in matches {
        out.push_str(&text[at..start]);
        out.push_str("[REDACTED]");
        at = end;
    }
    out.push_str(&text[at..]);
    out
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

    #[test]
    fn retired_secrets_are_redacted_from_their_hashes() {
        register_retired(&SecretString::from("OLD-retired-Secret-0123456789abcd"));
        register_retired(&SecretString::from("another-retired-key"));
        let text = "a=OLD-retired-Secret-0123456789abcd\nb=another-retired-keyX ünï OLD-retired-Secret-0123456789abcd";
        assert_eq!(
            redact_retired(text),
            "a=[REDACTED]\nb=[REDACTED]X ünï [REDACTED]"
        );
        assert_eq!(redact_retired("nothing here"), "nothing here");
    }
}
