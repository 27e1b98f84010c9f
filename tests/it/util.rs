//! Helpers shared by the integration tests.

#![allow(dead_code)]

use base64::Engine;
use contabo_rotator::contabo::{ClientConfig, ContaboClient, LoginCredentials};
use contabo_rotator::retry::RetryPolicy;
use secrecy::SecretString;
use std::time::Duration;
use url::Url;

pub const CLIENT_SECRET: &str = "client-secret-9f8e7d6c";
pub const PASSWORD: &str = "api-password-#&=+ü";
pub const USER_ID: &str = "6cdf5968-f9fe-4192-97c2-f349e813c5e8";

/// A JWT-shaped token whose payload carries `sub`.
pub fn jwt(sub: &str, nonce: &str) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#.into()),
        b64(format!(r#"{{"sub":"{sub}","jti":"{nonce}"}}"#)),
        b64(format!("signature-{nonce}"))
    )
}

/// A Keycloak-style token response.
pub fn token_body(nonce: &str, expires_in: u64) -> serde_json::Value {
    serde_json::json!({
        "access_token": jwt(USER_ID, nonce),
        "expires_in": expires_in,
        "refresh_expires_in": 1800,
        "refresh_token": format!("refresh-{nonce}"),
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": "s",
        "scope": "profile email"
    })
}

pub fn credentials() -> LoginCredentials {
    LoginCredentials {
        client_id: "INT-12345678".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        username: "api-user@example.com".into(),
        password: SecretString::from(PASSWORD),
    }
}

/// A client with fast retries, for tests.
pub fn fast_config(base_url: &str, token_url: &str) -> ClientConfig {
    let mut config = ClientConfig::new(
        Url::parse(base_url).unwrap(),
        Url::parse(token_url).unwrap(),
        credentials(),
    );
    config.timeout = Duration::from_secs(5);
    config.requests_per_second = 1000;
    config.retry = RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(50),
        deadline: Duration::from_secs(30),
    };
    config
}

pub fn client(config: ClientConfig) -> ContaboClient {
    ContaboClient::new(config).unwrap()
}

/// The x-request-id pattern of the vendor spec, checked by hand (v4 in practice).
pub fn is_spec_request_id(id: &str) -> bool {
    let parsed = match uuid::Uuid::parse_str(id) {
        Ok(u) => u,
        Err(_) => return false,
    };
    id.len() == 36
        && parsed.get_version_num() == 4
        && matches!(parsed.get_variant(), uuid::Variant::RFC4122)
}

/// Credential id → (access key, secret key), as the simulator holds them now.
pub fn api_keys(
    sim: &contabo_rotator::simulator::Simulator,
) -> std::collections::BTreeMap<i64, (String, String)> {
    use secrecy::ExposeSecret;
    sim.snapshot()
        .users
        .iter()
        .flat_map(|u| u.credentials.iter())
        .map(|c| {
            let keys = (
                c.access_key.clone(),
                c.secret_key.expose_secret().to_owned(),
            );
            (c.credential_id, keys)
        })
        .collect()
}

/// Credential id → (access key, secret key), as a json sink holds them.
pub fn json_sink_keys(
    json: &serde_json::Value,
) -> std::collections::BTreeMap<i64, (String, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    json["object_storage_credentials"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    let id = c["credential_id"].as_i64().unwrap_or_default();
                    (id, (text(&c["access_key"]), text(&c["secret_key"])))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tool the project's scripts install is missing: under CI (`CI=true`)
/// that fails the test; elsewhere the test says so loudly (and the caller
/// stops there).
pub fn tool_missing(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n!!!! NOT TESTED: {message} !!!!\n");
}
