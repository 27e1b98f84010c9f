//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod artifacts;
mod bin;
mod daemon;
pub mod prometheus;
mod receiver;
pub use bin::*;
pub(crate) use daemon::*;
pub(crate) use receiver::*;

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
    sim: &contabo_simulator::Simulator,
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

/// The state database of the state directory `state`, opened to read
/// (and, for tests that put a state behind the daemon's back, to write).
pub fn state_db(state: &std::path::Path) -> rusqlite::Connection {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(state.join("state.db"), flags)
        .unwrap_or_else(|e| panic!("{}: {e}", state.display()));
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// A time column as RFC 3339 (`null` when empty).
const ISO: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', {})";

fn iso(column: &str) -> String {
    ISO.replace("{}", column)
}

/// The run outcomes, with the field names of `RunHistory`.
pub fn runs_json(state: &std::path::Path) -> serde_json::Value {
    let sql = format!(
        "SELECT {}, last_run_duration_ms, {}, {}, failed_rotations, failed_file_sinks,
                failed_webhooks FROM runs",
        iso("last_run_at"),
        iso("last_success_at"),
        iso("last_delivery_success_at")
    );
    state_db(state)
        .query_row(&sql, [], |r| {
            Ok(serde_json::json!({
                "last_run_at": r.get::<_, Option<String>>(0)?,
                "last_run_duration_ms": r.get::<_, Option<i64>>(1)?,
                "last_success_at": r.get::<_, Option<String>>(2)?,
                "last_delivery_success_at": r.get::<_, Option<String>>(3)?,
                "last_failures": {
                    "rotation": r.get::<_, i64>(4)?,
                    "file_sinks": r.get::<_, i64>(5)?,
                    "webhooks": r.get::<_, i64>(6)?,
                },
            }))
        })
        .unwrap()
}

/// The intents in the journal, as JSON.
pub fn journal_intents(state: &std::path::Path) -> Vec<serde_json::Value> {
    let conn = state_db(state);
    let mut stmt = conn
        .prepare("SELECT intent FROM journal ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| serde_json::from_str(&t.unwrap()).unwrap());
    rows.collect()
}

/// The webhook outbox in the shape of `Outbox`: queues by sink id, each
/// with `since`, `removed_since`, `announced` and `events`. Empty (`{}`)
/// before the first run.
pub fn outbox_json(state: &std::path::Path) -> serde_json::Value {
    if !state.join("state.db").exists() {
        return serde_json::json!({});
    }
    let conn = state_db(state);
    let mut queues = serde_json::Map::new();
    let sql = format!(
        "SELECT sink_id, {}, {} FROM outbox_queues",
        iso("since"),
        iso("removed_since")
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let rows: Vec<(String, String, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (sink, since, removed_since) in rows {
        let column = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            let values = stmt.query_map([&sink], |r| r.get(0)).unwrap();
            values.map(Result::unwrap).collect()
        };
        let announced = column("SELECT rotation_id FROM outbox_announced WHERE sink_id = ?1");
        let events: Vec<serde_json::Value> =
            column("SELECT event FROM outbox_events WHERE sink_id = ?1 ORDER BY seq")
                .iter()
                .map(|t| serde_json::from_str(t).unwrap())
                .collect();
        let mut queue = serde_json::json!({
            "since": since,
            "announced": announced,
            "events": events,
        });
        if let Some(at) = removed_since {
            queue["removed_since"] = at.into();
        }
        queues.insert(sink, queue);
    }
    serde_json::json!({ "queues": queues })
}

/// Everything the state database holds, for checks that no secret is in
/// it: every row of every table as text, then the bytes of the database
/// and its log (free pages and old versions of rows included).
pub fn state_db_text(state: &std::path::Path) -> String {
    let mut text = String::new();
    if !state.join("state.db").exists() {
        return text;
    }
    let conn = state_db(state);
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.map(Result::unwrap).collect()
    };
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let value: rusqlite::types::Value = row.get(i).unwrap();
                text.push_str(&format!("{value:?}\t"));
            }
            text.push('\n');
        }
    }
    for name in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(state.join(name)).unwrap_or_default();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

/// `PRAGMA integrity_check` of the state database: "ok" when it is sound.
pub fn state_integrity(state: &std::path::Path) -> String {
    state_db(state)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The id of the simulator's user `email`.
pub fn user_id(sim: &contabo_simulator::Simulator, email: &str) -> String {
    sim.snapshot()
        .users
        .iter()
        .find(|u| u.email == email)
        .unwrap()
        .user_id
        .clone()
}
