//! Prometheus metrics and health endpoints (`[metrics] listen`), and the
//! same series as a node_exporter textfile (`--run-now --metrics-file`).
//!
//! One process-wide registry. The API client reports each request (count
//! and duration by operation and status), each retry and each call that
//! failed after its retries; the engine reports each run in neutral terms
//! ([`RunTally`]) and the state after it ([`StateFigures`]), so this module
//! knows no engine types. At start the last run's outcome is read back from
//! the state database (its `runs` table), so a restart does not reset
//! `last_success`. The daemon serves `/metrics` (OpenMetrics text),
//! `/healthz` (the process is alive) and `/readyz` (see [`Readiness`]).
//! Labels carry ids, e-mails and storage names, never a secret and never an
//! access key (which would start a new series at every rotation).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// Request duration buckets, in seconds (the API answers in tens of
/// milliseconds; a timeout is 30 s by default).
const DURATION_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The `Content-Type` of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a finished run did, as the metrics count it.
#[derive(Debug, Default)]
pub struct RunTally {
    /// `(kind, result, count)`: kind `object_storage` or
    /// `client_secret`, result `success` or `failure`.
    pub rotations: Vec<(&'static str, &'static str, u64)>,
    /// `(sink, outcome)` per sink: `written`, `unchanged` or `failed`.
    pub deliveries: Vec<(String, &'static str)>,
    /// `(result, count)` of the S3 verifications: `accepted`, `refused`.
    pub verifications: Vec<(&'static str, u64)>,
    /// Requests sent to the storages to verify keys.
    pub s3_probes: u64,
    /// Of them, those a storage answered with `SlowDown`.
    pub s3_slow_downs: u64,
    /// What failed, by kind.
    pub failures: Failures,
    /// How long the run took.
    pub duration: Duration,
}

/// Counts of what failed in a run, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    /// Secrets, users, the login or the state: anything but a sink.
    pub rotation: u32,
    /// File and template sinks: their consumers may hold a dead key.
    pub file_sinks: u32,
    /// Webhook sinks: notifications, kept in the outbox.
    pub webhooks: u32,
}

/// How the last runs ended, as the outcome series show it (read back from
/// the state directory at start, so a restart does not reset them).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcomes {
    pub last_run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_run_duration_ms: Option<u64>,
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_delivery_success_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failures: Failures,
}

/// One secret's rotation times, for the timestamp series.
#[derive(Debug)]
pub struct SecretTimes {
    /// `credential_id`, `user` and `object_storage` labels (none for the
    /// client secret).
    pub labels: Labels,
    /// When contabo-rotator last rotated it (`None`: never).
    pub last: Option<chrono::DateTime<chrono::Utc>>,
    /// When it is due next.
    pub next: Option<chrono::DateTime<chrono::Utc>>,
}

/// The state after a run (or at start), for the gauges.
#[derive(Debug, Default)]
pub struct StateFigures {
    pub credentials: Vec<SecretTimes>,
    pub client_secret: Option<SecretTimes>,
    /// Journal intents not settled yet (interrupted rotations).
    pub pending_intents: u64,
    /// Webhook events waiting in the outbox.
    pub outbox_events: u64,
    pub twins: Vec<TwinFigures>,
}

/// One twin's state, for its gauges.
#[derive(Debug, Clone, Default)]
pub struct TwinFigures {
    pub twin: String,
    pub active_user_email: String,
    pub last_switch: Option<chrono::DateTime<chrono::Utc>>,
    pub retire_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What `/readyz` answers, from the last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No run yet, or the last one failed nothing: 200.
    Ready,
    /// Only webhooks failed (their events wait in the outbox): 200, said
    /// in the body; a notification outage is not a rotation outage.
    WebhooksBehind,
    /// A file or template sink failed: its consumers may hold a dead key.
    SinksFailed,
    /// A secret, a user, the login or the state failed.
    RotationFailed,
}

impl Readiness {
    fn of(failures: &Failures) -> Readiness {
        if failures.rotation > 0 {
            Readiness::RotationFailed
        } else if failures.file_sinks > 0 {
            Readiness::SinksFailed
        } else if failures.webhooks > 0 {
            Readiness::WebhooksBehind
        } else {
            Readiness::Ready
        }
    }

    fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Readiness::Ready => (StatusCode::OK, "ready\n"),
            Readiness::WebhooksBehind => (
                StatusCode::OK,
                "ready; the last run could not deliver every webhook event (they are queued)\n",
            ),
            Readiness::SinksFailed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the last run could not deliver a file or template sink\n",
            ),
            Readiness::RotationFailed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the last run failed to rotate a secret\n",
            ),
        }
    }
}

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    rotations: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    api_request_duration: Family<Labels, Histogram>,
    api_retries: Family<Labels, Counter>,
    api_give_ups: Family<Labels, Counter>,
    verifications: Family<Labels, Counter>,
    s3_probes: Counter,
    s3_slow_downs: Counter,
    credential_last_rotation: Family<Labels, Gauge>,
    credential_next_rotation: Family<Labels, Gauge>,
    twin_active_user: Family<Labels, Gauge>,
    twin_last_switch: Family<Labels, Gauge>,
    twin_retirement_due: Family<Labels, Gauge>,
    client_secret_last_rotation: Gauge,
    client_secret_next_rotation: Gauge,
    pending_intents: Gauge,
    outbox_events: Gauge,
    last_success: Gauge,
    last_delivery_success: Gauge,
    last_run: Gauge,
    last_run_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    next_run: Gauge,
    runs: Family<Labels, Counter>,
    build_info: Family<Labels, Gauge>,
    readiness: Mutex<Readiness>,
}

/// The API client's observer that counts into [`metrics`] (handed to the
/// client by the engine).
pub struct ApiMetrics;

impl crate::contabo::ApiObserver for ApiMetrics {
    fn request(&self, op: &'static str, status: u16, took: Duration) {
        metrics().api_request(op, status, took);
    }

    fn retry(&self, op: &'static str) {
        metrics().api_retry(op);
    }

    fn give_up(&self, op: &'static str) {
        metrics().api_give_up(op);
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("contabo_rotator");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            rotations: Family::default(),
            deliveries: Family::default(),
            api_requests: Family::default(),
            api_request_duration: Family::new_with_constructor(histogram),
            api_retries: Family::default(),
            api_give_ups: Family::default(),
            verifications: Family::default(),
            s3_probes: Counter::default(),
            s3_slow_downs: Counter::default(),
            credential_last_rotation: Family::default(),
            credential_next_rotation: Family::default(),
            twin_active_user: Family::default(),
            twin_last_switch: Family::default(),
            twin_retirement_due: Family::default(),
            client_secret_last_rotation: Gauge::default(),
            client_secret_next_rotation: Gauge::default(),
            pending_intents: Gauge::default(),
            outbox_events: Gauge::default(),
            last_success: Gauge::default(),
            last_delivery_success: Gauge::default(),
            last_run: Gauge::default(),
            last_run_duration: Gauge::default(),
            next_run: Gauge::default(),
            runs: Family::default(),
            build_info: Family::default(),
            readiness: Mutex::new(Readiness::Ready),
        };
        let r = &mut registry;
        r.register(
            "rotations",
            "Secrets rotated or failed, by kind (object_storage, client_secret) and result",
            m.rotations.clone(),
        );
        r.register(
            "sink_deliveries",
            "Sink deliveries by sink and result (written, unchanged, failed)",
            m.deliveries.clone(),
        );
        r.register(
            "api_requests",
            "Contabo API and token requests by operation and HTTP status (0: no answer)",
            m.api_requests.clone(),
        );
        r.register(
            "api_request_duration_seconds",
            "Duration of Contabo API and token requests by operation and HTTP status (0: no answer)",
            m.api_request_duration.clone(),
        );
        r.register(
            "api_retries",
            "Contabo API and token attempts repeated after a failure, by operation",
            m.api_retries.clone(),
        );
        r.register(
            "api_give_ups",
            "Contabo API and token calls that failed after their retries, by operation",
            m.api_give_ups.clone(),
        );
        r.register(
            "verifications",
            "Rotated S3 keys probed at the storage (verify = \"s3\"), by result (accepted, refused)",
            m.verifications.clone(),
        );
        r.register(
            "s3_probes",
            "Signed requests sent to the storages to verify new keys (not counted in api_requests)",
            m.s3_probes.clone(),
        );
        r.register(
            "s3_slow_downs",
            "Of s3_probes, those a storage answered with SlowDown (the proofs then pause and slow down)",
            m.s3_slow_downs.clone(),
        );
        r.register(
            "object_storage_credential_last_rotation_timestamp_seconds",
            "Unix time contabo-rotator last rotated each S3 credential (absent: never)",
            m.credential_last_rotation.clone(),
        );
        r.register(
            "object_storage_credential_next_rotation_timestamp_seconds",
            "Unix time each S3 credential is due (max_age after its last rotation or first sight)",
            m.credential_next_rotation.clone(),
        );
        r.register(
            "twin_active_user",
            "1 for the user whose keys each twin's sinks hold",
            m.twin_active_user.clone(),
        );
        r.register(
            "twin_last_switch_timestamp_seconds",
            "Unix time each twin last handed the standby's keys over (0: never)",
            m.twin_last_switch.clone(),
        );
        r.register(
            "twin_retirement_due_timestamp_seconds",
            "Unix time the keys each twin handed over before are regenerated (0: none to retire)",
            m.twin_retirement_due.clone(),
        );
        r.register(
            "client_secret_last_rotation_timestamp_seconds",
            "Unix time contabo-rotator last rotated the client secret (0: never)",
            m.client_secret_last_rotation.clone(),
        );
        r.register(
            "client_secret_next_rotation_timestamp_seconds",
            "Unix time the client secret is due (0: its rotation is off)",
            m.client_secret_next_rotation.clone(),
        );
        r.register(
            "pending_intents",
            "Rotations started and not settled (journal intents, resolved by the next run)",
            m.pending_intents.clone(),
        );
        r.register(
            "webhook_outbox_events",
            "Webhook events waiting in the outbox",
            m.outbox_events.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the end of the last run in which no secret failed to rotate (sink failures aside)",
            m.last_success.clone(),
        );
        r.register(
            "last_delivery_success_timestamp_seconds",
            "Unix time of the end of the last run after which every sink was delivered",
            m.last_delivery_success.clone(),
        );
        r.register(
            "last_run_timestamp_seconds",
            "Unix time of the end of the last run",
            m.last_run.clone(),
        );
        r.register(
            "last_run_duration_seconds",
            "How long the last run took",
            m.last_run_duration.clone(),
        );
        r.register(
            "next_run_timestamp_seconds",
            "Unix time of the next scheduled run",
            m.next_run.clone(),
        );
        r.register("runs", "Runs by result (success, failure)", m.runs.clone());
        r.register(
            "build_info",
            "Always 1; the version of the running binary in its label",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        *m.registry.lock().expect("not poisoned") = registry;
        m
    }

    /// Counts one HTTP request to the API or the token endpoint, and how
    /// long it took (until its answer's headers, or until it failed).
    pub fn api_request(&self, operation: &str, status: u16, took: Duration) {
        let labels = vec![
            ("operation", operation.to_owned()),
            ("status", status.to_string()),
        ];
        self.api_requests.get_or_create(&labels).inc();
        self.api_request_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts an attempt about to be repeated.
    pub fn api_retry(&self, operation: &str) {
        self.api_retries
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }

    /// Counts a call that failed after its retries.
    pub fn api_give_up(&self, operation: &str) {
        self.api_give_ups
            .get_or_create(&vec![("operation", operation.to_owned())])
            .inc();
    }

    /// Sets the outcome series (at start, from the state directory, so a
    /// restart does not reset them; and after each run).
    pub fn restore(&self, runs: &Outcomes) {
        let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or(0, |t| t.timestamp());
        self.last_run.set(ts(runs.last_run_at));
        self.last_success.set(ts(runs.last_success_at));
        self.last_delivery_success
            .set(ts(runs.last_delivery_success_at));
        self.last_run_duration
            .set(runs.last_run_duration_ms.unwrap_or(0) as f64 / 1000.0);
        *self.readiness.lock().expect("not poisoned") = Readiness::of(&runs.last_failures);
    }

    /// Folds a finished run into the counters, and sets the outcome series
    /// from `outcomes` (the run history the engine keeps, this run
    /// included). The engine reports what it did in these neutral terms, so
    /// this module knows no engine or state types.
    pub fn record_run(&self, run: &RunTally, outcomes: &Outcomes) {
        for (kind, result, n) in &run.rotations {
            self.rotations
                .get_or_create(&vec![
                    ("kind", (*kind).to_owned()),
                    ("result", (*result).into()),
                ])
                .inc_by(*n);
        }
        for (result, n) in &run.verifications {
            self.verifications
                .get_or_create(&vec![("result", (*result).to_owned())])
                .inc_by(*n);
        }
        self.s3_probes.inc_by(run.s3_probes);
        self.s3_slow_downs.inc_by(run.s3_slow_downs);
        for (sink, outcome) in &run.deliveries {
            self.deliveries
                .get_or_create(&vec![
                    ("sink", sink.clone()),
                    ("result", (*outcome).to_owned()),
                ])
                .inc();
        }
        let ok = run.failures == Failures::default();
        self.runs
            .get_or_create(&vec![(
                "result",
                if ok { "success" } else { "failure" }.into(),
            )])
            .inc();
        self.restore(outcomes);
    }

    /// Sets the gauges that describe the state: rotation timestamps,
    /// pending intents and the outbox depth.
    pub fn record_state(&self, state: &StateFigures) {
        let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp());
        self.credential_last_rotation.clear();
        self.credential_next_rotation.clear();
        for c in &state.credentials {
            if let Some(last) = ts(c.last) {
                self.credential_last_rotation
                    .get_or_create(&c.labels)
                    .set(last);
            }
            if let Some(next) = ts(c.next) {
                self.credential_next_rotation
                    .get_or_create(&c.labels)
                    .set(next);
            }
        }
        let client = state.client_secret.as_ref();
        self.client_secret_last_rotation
            .set(client.and_then(|c| ts(c.last)).unwrap_or(0));
        self.client_secret_next_rotation
            .set(client.and_then(|c| ts(c.next)).unwrap_or(0));
        self.pending_intents
            .set(i64::try_from(state.pending_intents).unwrap_or(i64::MAX));
        self.outbox_events
            .set(i64::try_from(state.outbox_events).unwrap_or(i64::MAX));
        self.twin_active_user.clear();
        self.twin_last_switch.clear();
        self.twin_retirement_due.clear();
        for t in &state.twins {
            let twin = vec![("twin", t.twin.clone())];
            let mut user = twin.clone();
            user.push(("user_email", t.active_user_email.clone()));
            self.twin_active_user.get_or_create(&user).set(1);
            self.twin_last_switch
                .get_or_create(&twin)
                .set(ts(t.last_switch).unwrap_or(0));
            self.twin_retirement_due
                .get_or_create(&twin)
                .set(ts(t.retire_at).unwrap_or(0));
        }
    }

    /// The next scheduled run.
    pub fn set_next_run(&self, at: chrono::DateTime<chrono::Utc>) {
        self.next_run.set(at.timestamp());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().expect("not poisoned"))
            .expect("writing to a String cannot fail");
        out
    }

    /// The same series in the Prometheus text format that node_exporter's
    /// textfile collector reads (format 0.0.4): no `# EOF` and `# UNIT`
    /// lines, and a counter's `# HELP`/`# TYPE` name its `_total` samples.
    /// Written here rather than by a crate: prometheus-client encodes
    /// OpenMetrics only, and these three rules are the whole difference
    /// for the metric types used here (counters, gauges, histograms).
    pub fn encode_textfile(&self) -> String {
        let open = self.encode();
        let mut counters = std::collections::HashSet::new();
        for line in open.lines() {
            if let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.strip_suffix(" counter"))
            {
                counters.insert(name.to_owned());
            }
        }
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
            match meta {
                Some((prefix, rest)) => {
                    let name = rest.split(' ').next().unwrap_or_default();
                    if counters.contains(name) {
                        out.push_str(&format!("{prefix}{name}_total{}", &rest[name.len()..]));
                    } else {
                        out.push_str(line);
                    }
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// Writes [`Metrics::encode_textfile`] to `path` atomically (a
    /// textfile collector never reads half a file), mode 0644: the series
    /// hold no secret.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        use crate::dirfd::{Dir, Perms, Trusted};
        let text = self.encode_textfile();
        Dir::walk_parent(path, &Trusted::with_owner(None))
            .and_then(|(dir, name)| {
                // A run killed mid-write left a temp file beside it.
                dir.remove_temps_where(None, |t| t == name)?;
                dir.replace(name, Perms::mode(0o644), |file| {
                    std::io::Write::write_all(file, text.as_bytes())
                })
            })
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })
    }

    /// What `/readyz` answers.
    pub fn readiness(&self) -> Readiness {
        *self.readiness.lock().expect("not poisoned")
    }
}

/// Binds `listen` and serves the endpoints until the task is dropped. The
/// log line names the address bound, so port 0 (any free port) can be found.
pub async fn serve(listen: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let listen = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    metrics().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async { metrics().readiness().answer().into_response() }),
        );
    tracing::info!(%listen, "Serving /metrics, /healthz and /readyz.");
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "The metrics server stopped.");
        }
    }))
}
