//! Upgrading from the JSON state files: a state directory of the previous
//! version (`records.json`, `journal.json`, `outbox.json`, `runs.json`,
//! written as the last JSON build wrote them) is taken over by the daemon of
//! this one, and the runbook's sqlite3 queries (README, "Questions for the
//! database") answer against the database of a real run.
//!
//! The previous version's directory is made by the real binary: a run
//! rotates every credential and the client secret while the webhook
//! receiver answers 503, a forced run is killed with its first intents in
//! the journal, and the database's content is then written out as the JSON
//! files (one credential's last rotation moved 100 days back, so that the
//! next run has exactly one credential due) and the database removed.

use crate::util::{args, edit_config, options, output_text, run_bin, run_bin_env, write_config};
use crate::util::{assert_no_secret, Setup};
use crate::util::{journal_intents, outbox_json, state_db, state_integrity};
use crate::util::{start_daemon, terminate, wait_for_log};
use axum::http::{HeaderMap, Method, StatusCode};
use chrono::{DateTime, Utc};
use contabo_simulator::{Operation, Simulator};
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The previous version's state types (`git show 234cd55:src/state/…`,
/// the last version with JSON files), with its serde attributes, so that
/// the files are what it wrote. Kept
/// apart from the crate's own types: the import must read the old layout
/// even if the crate's types change.
mod previous {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use uuid::Uuid;

    /// A value of `records.json`'s `credentials`.
    #[derive(Serialize)]
    pub struct CredentialRecord {
        pub user_email: String,
        pub first_seen: DateTime<Utc>,
        pub rotated_at: Option<DateTime<Utc>>,
        pub rotation_id: Option<Uuid>,
        pub access_key: String,
        pub secret_fingerprint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub verified: Option<Verification>,
    }

    #[derive(Serialize)]
    pub struct Verification {
        pub at: DateTime<Utc>,
        pub rotation_id: Uuid,
        pub accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
    }

    #[derive(Serialize)]
    pub struct ClientSecretRecord {
        pub first_seen: DateTime<Utc>,
        pub rotated_at: Option<DateTime<Utc>>,
        pub rotation_id: Option<Uuid>,
        pub fingerprint: String,
    }

    #[derive(Serialize)]
    pub struct SinkRecord {
        pub delivered_version: Option<String>,
        pub delivered_at: Option<DateTime<Utc>>,
        pub last_error: Option<String>,
        pub last_attempt: Option<DateTime<Utc>>,
    }

    /// `journal.json`'s snapshot.
    #[derive(Serialize)]
    pub struct Journal {
        pub version: u32,
        pub intents: Vec<Intent>,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Intent {
        pub rotation_id: Uuid,
        pub started_at: DateTime<Utc>,
        #[serde(flatten)]
        pub kind: IntentKind,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum IntentKind {
        ObjectStorage {
            key: String,
            user_email: String,
            old_access_key: String,
            old_fingerprint: String,
        },
        ClientSecret {
            old_fingerprint: String,
        },
    }

    /// An appended line of `journal.json`.
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum JournalOp {
        Begin(Intent),
    }

    #[derive(Serialize)]
    pub struct Outbox {
        pub version: u32,
        pub queues: BTreeMap<String, OutboxQueue>,
    }

    #[derive(Serialize)]
    pub struct OutboxQueue {
        pub since: DateTime<Utc>,
        /// A `SortedSet<Uuid>`: ascending.
        pub announced: Vec<Uuid>,
        pub events: Vec<OutboxEvent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub removed_since: Option<DateTime<Utc>>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct OutboxEvent {
        pub id: String,
        #[serde(rename = "type")]
        pub kind: String,
        pub timestamp: DateTime<Utc>,
        /// `EventData`: the compact JSON text, written as it is.
        pub data: Box<serde_json::value::RawValue>,
        pub secret: Option<SecretSource>,
        pub enqueued_at: DateTime<Utc>,
        #[serde(default)]
        pub attempts: u32,
        pub last_attempt: Option<DateTime<Utc>>,
        pub last_error: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum SecretSource {
        ObjectStorage { key: String },
        ClientSecret,
    }

    #[derive(Serialize)]
    pub struct RunHistory {
        pub version: u32,
        pub last_run_at: Option<DateTime<Utc>>,
        pub last_run_duration_ms: Option<u64>,
        pub last_success_at: Option<DateTime<Utc>>,
        pub last_delivery_success_at: Option<DateTime<Utc>>,
        pub last_failures: LastFailures,
    }

    #[derive(Serialize)]
    pub struct LastFailures {
        pub rotation: u32,
        pub file_sinks: u32,
        pub webhooks: u32,
    }
}

/// The files of the previous version, as the import names them.
const FILES: [&str; 4] = ["records.json", "journal.json", "outbox.json", "runs.json"];

/// What [`export_previous_version`] wrote that the test checks later.
struct Exported {
    /// The intents of `journal.json`, in start order.
    intents: Vec<previous::Intent>,
    /// The `webhook-id`s of the events in `outbox.json`, oldest first.
    events: Vec<String>,
    /// The one credential made due, and its last rotation in the files.
    aged: (i64, DateTime<Utc>),
}

/// Writes the content of the database in `state` as the previous
/// version's four JSON files, in its layouts: `records.json` one credential
/// per line in key order, `journal.json` an empty snapshot followed by one
/// appended `begin` line per intent (a pass killed after its first
/// intents), `outbox.json` and `runs.json` pretty JSON. The credential
/// `aged` is written as last rotated 100 days earlier than it was.
fn export_previous_version(state: &Path, aged: i64) -> Exported {
    use previous::*;
    let conn = state_db(state);
    let days_100 = chrono::Duration::days(100);
    let mut aged_at = None;

    let mut stmt = conn
        .prepare(
            "SELECT user_id, object_storage_id, credential_id, user_email, first_seen,
                    rotated_at, rotation_id, access_key, secret_fingerprint, verified_at,
                    verified_rotation_id, verified_accepted, verified_error
             FROM credentials ORDER BY user_id, object_storage_id, credential_id",
        )
        .unwrap();
    let credentials: Vec<(String, CredentialRecord)> = stmt
        .query_map([], |r| {
            let id: i64 = r.get(2)?;
            let key = format!("{}/{}/{id}", r.get::<_, String>(0)?, r.get::<_, String>(1)?);
            let verified = match r.get::<_, Option<DateTime<Utc>>>(9)? {
                None => None,
                Some(at) => Some(Verification {
                    at,
                    rotation_id: uuid(r.get(10)?),
                    accepted: r.get(11)?,
                    error: r.get(12)?,
                }),
            };
            let record = CredentialRecord {
                user_email: r.get(3)?,
                first_seen: r.get(4)?,
                rotated_at: r.get(5)?,
                rotation_id: r.get::<_, Option<String>>(6)?.map(uuid),
                access_key: r.get(7)?,
                secret_fingerprint: r.get(8)?,
                verified,
            };
            Ok((key, record))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(stmt);
    let mut text = String::from("{\n  \"version\": 1,\n  \"credentials\": {");
    let written = credentials.len();
    for (n, (key, mut record)) in credentials.into_iter().enumerate() {
        if key.ends_with(&format!("/{aged}")) {
            let at = record.rotated_at.expect("the aged credential was rotated") - days_100;
            record.rotated_at = Some(at);
            aged_at = Some(at);
        }
        text.push_str(if n == 0 { "\n    " } else { ",\n    " });
        text.push_str(&serde_json::to_string(&key).unwrap());
        text.push_str(": ");
        text.push_str(&serde_json::to_string(&record).unwrap());
    }
    text.push_str(if written > 0 { "\n  }" } else { "}" });
    let client_secret = conn
        .query_row(
            "SELECT first_seen, rotated_at, rotation_id, fingerprint FROM client_secret",
            [],
            |r| {
                Ok(ClientSecretRecord {
                    first_seen: r.get(0)?,
                    rotated_at: r.get(1)?,
                    rotation_id: r.get::<_, Option<String>>(2)?.map(uuid),
                    fingerprint: r.get(3)?,
                })
            },
        )
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT sink_id, delivered_version, delivered_at, last_error, last_attempt FROM sinks",
        )
        .unwrap();
    let sinks: BTreeMap<String, SinkRecord> = stmt
        .query_map([], |r| {
            let record = SinkRecord {
                delivered_version: r.get(1)?,
                delivered_at: r.get(2)?,
                last_error: r.get(3)?,
                last_attempt: r.get(4)?,
            };
            Ok((r.get(0)?, record))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(stmt);
    text.push_str(",\n  \"client_secret\": ");
    text.push_str(&serde_json::to_string(&Some(client_secret)).unwrap());
    text.push_str(",\n  \"sinks\": ");
    text.push_str(&serde_json::to_string(&sinks).unwrap());
    text.push_str("\n}\n");
    write_state_file(state, "records.json", &text);

    let intents: Vec<Intent> = journal_intents(state)
        .into_iter()
        .map(|value| serde_json::from_value(value).unwrap())
        .collect();
    let mut text = pretty(&Journal {
        version: 1,
        intents: Vec::new(),
    });
    for intent in &intents {
        text.push_str(&serde_json::to_string(&JournalOp::Begin(intent.clone())).unwrap());
        text.push('\n');
    }
    write_state_file(state, "journal.json", &text);

    let mut queues = BTreeMap::new();
    let mut event_ids = Vec::new();
    let mut stmt = conn
        .prepare("SELECT sink_id, since, removed_since FROM outbox_queues ORDER BY sink_id")
        .unwrap();
    let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(stmt);
    for (sink, since, removed_since) in rows {
        let column = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            let values = stmt.query_map([&sink], |r| r.get(0)).unwrap();
            values.map(Result::unwrap).collect()
        };
        let announced: BTreeSet<uuid::Uuid> =
            column("SELECT rotation_id FROM outbox_announced WHERE sink_id = ?1")
                .into_iter()
                .map(uuid)
                .collect();
        let events: Vec<OutboxEvent> =
            column("SELECT event FROM outbox_events WHERE sink_id = ?1 ORDER BY seq")
                .iter()
                .map(|text| serde_json::from_str(text).unwrap())
                .collect();
        event_ids.extend(events.iter().map(|e| e.id.clone()));
        let queue = OutboxQueue {
            since,
            announced: announced.into_iter().collect(),
            events,
            removed_since,
        };
        queues.insert(sink, queue);
    }
    let outbox = Outbox { version: 1, queues };
    write_state_file(state, "outbox.json", &pretty(&outbox));

    let runs = conn
        .query_row(
            "SELECT last_run_at, last_run_duration_ms, last_success_at, last_delivery_success_at,
                    failed_rotations, failed_file_sinks, failed_webhooks FROM runs",
            [],
            |r| {
                Ok(RunHistory {
                    version: 1,
                    last_run_at: r.get(0)?,
                    last_run_duration_ms: r.get(1)?,
                    last_success_at: r.get(2)?,
                    last_delivery_success_at: r.get(3)?,
                    last_failures: LastFailures {
                        rotation: r.get(4)?,
                        file_sinks: r.get(5)?,
                        webhooks: r.get(6)?,
                    },
                })
            },
        )
        .unwrap();
    write_state_file(state, "runs.json", &pretty(&runs));
    Exported {
        intents,
        events: event_ids,
        aged: (
            aged,
            aged_at.expect("the aged credential is in the records"),
        ),
    }
}

/// A rotation id as stored (text).
fn uuid(text: String) -> uuid::Uuid {
    text.parse().unwrap()
}

/// `value` as the previous version's `write_json_atomic` wrote it.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

/// Writes `<state>/<name>` with mode 0600, as every state file was.
fn write_state_file(state: &Path, name: &str, text: &str) {
    crate::util::write_secret(&state.join(name), text);
}

/// The runbook's statements: the ```sql block after the marker in
/// docs/operations.md, `--` comment lines dropped, split on `;`.
fn runbook_statements() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let marker = "<!-- runbook-queries: tests/it/upgrade.rs runs every statement below -->";
    let (_, after) = readme.split_once(marker).expect("the runbook marker");
    let mut lines = after.lines().map(str::trim).skip_while(|l| l.is_empty());
    assert_eq!(
        lines.next(),
        Some("```sql"),
        "a sql block follows the marker"
    );
    let body: Vec<&str> = lines
        .take_while(|l| *l != "```")
        .filter(|l| !l.starts_with("--"))
        .collect();
    body.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One statement's rows, every column as text (`None` for NULL).
type Rows = Vec<Vec<Option<String>>>;

/// Runs every runbook statement against the database in `state`, opened
/// read-only as the runbook says (`sqlite3 -readonly`), with the example
/// credential id 12345 replaced by `credential_id`. Each must prepare and
/// run; returns the rows of each, by statement.
fn run_runbook(state: &Path, credential_id: i64) -> Vec<(String, Rows)> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(state.join("state.db"), flags).unwrap();
    let statements = runbook_statements();
    assert!(
        statements.len() >= 3,
        "the runbook's statements: {statements:#?}"
    );
    let mut results = Vec::new();
    for statement in statements {
        let sql = statement.replace("12345", &credential_id.to_string());
        let mut stmt = conn
            .prepare(&sql)
            .unwrap_or_else(|e| panic!("the runbook's statement does not prepare: {e}\n{sql}"));
        let columns = stmt.column_count();
        let rows: Rows = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                            rusqlite::types::Value::Null => None,
                            rusqlite::types::Value::Integer(n) => Some(n.to_string()),
                            rusqlite::types::Value::Real(x) => Some(x.to_string()),
                            rusqlite::types::Value::Text(t) => Some(t),
                            rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|e| panic!("the runbook's statement does not run: {e}\n{sql}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("the runbook's statement fails: {e}\n{sql}"));
        results.push((statement, rows));
    }
    results
}

/// The rows of the one runbook statement that contains `part`.
fn rows_of<'a>(results: &'a [(String, Rows)], part: &str) -> &'a Rows {
    let found: Vec<&Rows> = results
        .iter()
        .filter(|(sql, _)| sql.contains(part))
        .map(|(_, rows)| rows)
        .collect();
    assert_eq!(found.len(), 1, "one runbook statement has {part:?}");
    found[0]
}

/// A webhook receiver on 127.0.0.1 that answers 503 until [`Receiver::up`]
/// and 200 after, noting each POST's `webhook-id` and answer.
struct Receiver {
    url: String,
    up: Arc<AtomicBool>,
    posts: Arc<Mutex<Vec<(String, u16)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts the receiver, down.
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hooks/upgrade",
            listener.local_addr().unwrap().port()
        );
        let up = Arc::new(AtomicBool::new(false));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (up_in, posts_in) = (up.clone(), posts.clone());
        let app = axum::Router::new().fallback(move |method: Method, headers: HeaderMap| {
            let (up, posts) = (up_in.clone(), posts_in.clone());
            async move {
                let status = if up.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                if method == Method::POST {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    posts.lock().unwrap().push((id, status.as_u16()));
                }
                status
            }
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            up,
            posts,
            server,
        }
    }

    /// From now on every POST is answered 200.
    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The `webhook-id`s of the POSTs answered 200, in arrival order.
    fn delivered(&self) -> Vec<String> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .filter(|(_, status)| *status == 200)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many POSTs were answered 503.
    fn refused(&self) -> usize {
        let posts = self.posts.lock().unwrap();
        posts.iter().filter(|(_, status)| *status == 503).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Every credential's last rotation as `list --json` shows it, by id.
async fn listed_rotations(setup: &Setup) -> BTreeMap<i64, Option<String>> {
    let out = run_bin(args(&setup.config, &["list", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    listing["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let at = c["last_rotated"].as_str().map(str::to_owned);
            (c["credential_id"].as_i64().unwrap(), at)
        })
        .collect()
}

/// `status --json`.
async fn status(setup: &Setup) -> serde_json::Value {
    let out = run_bin(args(&setup.config, &["status", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `status --json`'s last rotation of each credential, by key.
fn status_rotations(status: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    status["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["rotated_at"].clone(),
            )
        })
        .collect()
}

/// Every credential's `rotated_at` as the database holds it (SQLite text),
/// by credential id.
fn stored_rotations(state: &Path) -> BTreeMap<i64, Option<String>> {
    let conn = state_db(state);
    let mut stmt = conn
        .prepare("SELECT credential_id, rotated_at FROM credentials")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// `t` as `list` and `status` show times (RFC 3339, whole seconds, `Z`).
fn shown(t: DateTime<Utc>) -> String {
    contabo_rotator::json_time::format(t)
}

/// The requests of `sim` from the `from`-th on.
fn requests_since(sim: &Simulator, from: usize) -> Vec<contabo_simulator::RecordedRequest> {
    sim.requests().into_iter().skip(from).collect()
}

/// A yearly schedule (the daemon started here only recovers), the client
/// secret rotated, and the webhook sink (`{url}`).
const CONFIG: &str = r#"
[schedule]
cron = "0 0 0 1 1 *"

[client_secret]
rotate = true

[[sinks]]
type = "webhook"
url = "{url}"
signing_secret = "whsec_dXBncmFkZS1zdWl0ZS1zaWduaW5nLWtleS0wMTIzNDU2Nzg5"
"#;

/// The done-when of the move to SQLite: a state directory of the previous
/// version is taken over. The daemon imports it, logs in with the stored
/// (rotated) client secret although the configuration holds the dead
/// original, resolves the pending intent without a mutating call, delivers
/// the pending webhook events with their ids, and `list` and `status` show
/// the same last rotations; the next run rotates the one credential that
/// is due and nothing else. The runbook's queries run against the
/// database before the export (pending rows) and after the import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_directory_of_the_previous_version_is_taken_over() {
    let opts = options(4);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let hooks = Receiver::start().await;
    let setup = write_config(&sim, &opts, &CONFIG.replace("{url}", &hooks.url));
    // One retry: a receiver that is down must not hold a run for long.
    edit_config(&setup, &[("max_retries = 10", "max_retries = 1")]);
    let state = setup.dir.path().join("state");

    // The previous version's life: everything rotated with the receiver
    // down, then a forced run killed with its first intents written.
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    let mutations = |from: usize| -> Vec<(Operation, String)> {
        requests_since(&sim, from)
            .into_iter()
            .filter(|r| r.operation.is_mutating())
            .map(|r| (r.operation, r.path))
            .collect()
    };
    let rotated = mutations(0);
    assert_eq!(rotated.len(), 13, "{rotated:?}\n{}", output_text(&first));
    assert!(hooks.refused() > 0, "{}", output_text(&first));
    let killed = run_bin_env(
        args(&setup.config, &["--run-now", "--force"]),
        vec![("CONTABO_ROTATOR_CRASH_AT".into(), "s3-after-journal".into())],
    )
    .await;
    assert_eq!(killed.status.signal(), Some(9), "{}", output_text(&killed));
    assert_eq!(mutations(0).len(), 13, "killed before any regenerate");
    let configured = opts.client_secret.expose_secret();
    assert!(
        sim.snapshot().client_secret.expose_secret() != configured,
        "the configured client secret is dead"
    );

    // What the state says before the export.
    let intents = journal_intents(&state);
    assert!(!intents.is_empty(), "the killed run left intents");
    let pending_users: BTreeSet<String> = intents
        .iter()
        .map(|i| {
            i["key"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let listed = listed_rotations(&setup).await;
    assert_eq!(listed.len(), 12);
    assert!(listed.values().all(Option::is_some), "{listed:?}");
    let status_before = status(&setup).await;
    let stored = stored_rotations(&state);
    // The credential made due (an intent on it is resolved as not applied
    // and leaves its record alone), and the one the runbook asks about.
    let aged = *listed.keys().next_back().unwrap();
    let asked = *listed.keys().next().unwrap();

    // The runbook against the database of the real runs: the pending
    // intents and events are what it shows.
    let outbox = outbox_json(&state);
    let queue_events: BTreeMap<String, usize> = outbox["queues"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(sink, q)| (sink.clone(), q["events"].as_array().unwrap().len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(!queue_events.is_empty(), "events wait in the outbox");
    let results = run_runbook(&state, asked);
    let credential = rows_of(&results, "WHERE credential_id = 12345");
    assert_eq!(credential.len(), 1, "{credential:?}");
    let at: DateTime<Utc> = credential[0][2].as_deref().unwrap().parse().unwrap();
    assert_eq!(Some(shown(at)), listed[&asked], "as `list` shows it");
    let journal = rows_of(&results, "FROM journal");
    let expected: Vec<Vec<Option<String>>> = intents
        .iter()
        .map(|i| {
            let at: DateTime<Utc> = i["started_at"].as_str().unwrap().parse().unwrap();
            vec![
                Some("object_storage".to_owned()),
                Some(at.format("%F %T%.f%:z").to_string()),
                i["user_email"].as_str().map(str::to_owned),
            ]
        })
        .collect();
    assert_eq!(journal, &expected, "the pending rotations");
    let events = rows_of(&results, "FROM outbox_events");
    let counted: BTreeMap<String, usize> = events
        .iter()
        .map(|row| {
            let count = row[1].as_deref().unwrap().parse().unwrap();
            (row[0].clone().unwrap(), count)
        })
        .collect();
    assert_eq!(counted, queue_events, "the pending events per sink");
    for row in events {
        let sink = row[0].as_deref().unwrap();
        let oldest = outbox["queues"][sink]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["enqueued_at"].as_str().unwrap())
            .min_by_key(|t| t.parse::<DateTime<Utc>>().unwrap())
            .unwrap();
        // To the millisecond, as SQLite shows a time.
        let expected: String = state_db(&state)
            .query_row("SELECT strftime('%Y-%m-%d %H:%M:%f', ?1)", [oldest], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            row[2],
            Some(expected),
            "the oldest event of {sink}: {oldest}"
        );
    }
    let failed_sinks = rows_of(&results, "last_error IS NOT NULL");
    assert!(
        failed_sinks
            .iter()
            .any(|row| row[0].as_deref().is_some_and(|s| s.starts_with("webhook:"))),
        "the webhook's failed delivery: {failed_sinks:?}"
    );
    assert!(
        rows_of(&results, "-90 days").is_empty(),
        "everything was rotated just now"
    );

    // The previous version's files in place of the database.
    let exported = export_previous_version(&state, aged);
    assert_eq!(exported.intents.len(), intents.len());
    assert!(!exported.events.is_empty());
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        match std::fs::remove_file(state.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    for name in ["fingerprint.key", "client-secret.json", "audit.log"] {
        assert!(state.join(name).exists(), "{name} is kept");
    }
    let mut expected_times = status_rotations(&status_before);
    let aged_key = expected_times
        .keys()
        .find(|k| k.ends_with(&format!("/{aged}")))
        .unwrap()
        .clone();
    expected_times.insert(aged_key, shown(exported.aged.1).into());

    // Until the daemon starts, `status` reads the files, importing nothing.
    let view = status(&setup).await;
    assert!(!state.join("state.db").exists(), "status wrote no database");
    assert_eq!(status_rotations(&view), expected_times);
    assert_eq!(
        view["pending_rotations"].as_array().unwrap().len(),
        intents.len()
    );
    assert_eq!(view["last_run"], status_before["last_run"]);
    assert_eq!(view["client_secret"], status_before["client_secret"]);

    // The daemon of this version takes the directory over.
    hooks.up();
    let from = sim.requests().len();
    let log = setup.dir.path().join("daemon.log");
    let mut daemon = start_daemon(&setup, &log, &[]);
    let text = wait_for_log(&mut daemon, &log, "Waiting for the next run.").await;
    assert!(text.contains("Waiting for the next run."), "{text}");
    for line in [
        "Resuming rotations an earlier run left unfinished.",
        "The interrupted regenerate was not applied.",
        "Sent pending webhook events.",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(!text.contains("Login refused"), "{text}");
    assert_no_secret(&sim, &text);
    let during = requests_since(&sim, from);
    assert!(
        !during.iter().any(|r| r.operation.is_mutating()),
        "start-up rotates nothing: {:?}",
        mutations(from)
    );
    let logins: Vec<u16> = during
        .iter()
        .filter(|r| r.operation == Operation::Token)
        .map(|r| r.status)
        .collect();
    assert!(
        !logins.is_empty() && logins.iter().all(|s| *s == 200),
        "logged in at the first attempt, with the stored secret: {logins:?}"
    );
    for user in &pending_users {
        assert!(
            during
                .iter()
                .any(|r| r.operation == Operation::ListObjectStorageCredentials
                    && r.path.contains(user.as_str())),
            "the intents of {user} were read back"
        );
    }
    assert_eq!(
        hooks.delivered(),
        exported.events,
        "the pending events, with their ids, oldest first"
    );
    terminate(daemon, &log).await;

    // The directory now: the database, the files set aside, nothing pending.
    for name in FILES {
        assert!(!state.join(name).exists(), "{name}");
        assert!(state.join(format!("{name}.imported")).exists(), "{name}");
    }
    assert_eq!(state_integrity(&state), "ok");
    assert_eq!(journal_intents(&state), Vec::<serde_json::Value>::new());
    let stored_after = stored_rotations(&state);
    for (id, at) in &stored {
        if *id != aged {
            assert_eq!(&stored_after[id], at, "credential {id}, exactly");
        }
    }
    let after = status(&setup).await;
    assert_eq!(status_rotations(&after), expected_times);
    assert_eq!(after["last_run"], status_before["last_run"]);
    assert_eq!(after["client_secret"], status_before["client_secret"]);
    let mut expected_listed = listed.clone();
    expected_listed.insert(aged, Some(shown(exported.aged.1)));
    assert_eq!(listed_rotations(&setup).await, expected_listed);

    // The runbook against the imported database.
    let results = run_runbook(&state, asked);
    let credential = rows_of(&results, "WHERE credential_id = 12345");
    assert_eq!(credential.len(), 1, "{credential:?}");
    assert_eq!(credential[0][2], stored[&asked], "the rotation time stored");
    assert!(rows_of(&results, "FROM journal").is_empty());
    assert!(rows_of(&results, "FROM outbox_events").is_empty());
    let old: Vec<Option<String>> = rows_of(&results, "-90 days")
        .iter()
        .map(|row| row[1].clone())
        .collect();
    assert_eq!(
        old,
        [Some(aged.to_string())],
        "the one credential 100 days old"
    );

    // The next run rotates the one credential that is due, and nothing else.
    let from = sim.requests().len();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let rotated = mutations(from);
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotated[0].0, Operation::RegenerateObjectStorageCredentials);
    assert!(
        rotated[0].1.ends_with(&format!("/credentials/{aged}")),
        "{rotated:?}"
    );
    assert!(
        hooks.delivered().len() > exported.events.len(),
        "its events"
    );
    let results = run_runbook(&state, aged);
    let credential = rows_of(&results, "WHERE credential_id = 12345");
    let at: DateTime<Utc> = credential[0][2].as_deref().unwrap().parse().unwrap();
    assert!(at > exported.aged.1 + chrono::Duration::days(99), "{at}");
    for part in [
        "FROM journal",
        "FROM outbox_events",
        "-90 days",
        "last_error IS NOT NULL",
    ] {
        assert!(rows_of(&results, part).is_empty(), "{part}: {results:?}");
    }
}
