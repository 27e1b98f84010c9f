//! Prometheus metrics and health endpoints (`[metrics] listen`).
//!
//! One process-wide registry, filled by the API client (requests by
//! operation and status) and after every run (rotations, deliveries, ages,
//! last success, next run). The daemon serves it over HTTP:
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (the configuration is valid and the last run succeeded).
//! Labels carry ids, names and access keys, never a secret.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

type Labels = Vec<(&'static str, String)>;

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
    /// Nothing failed.
    pub ok: bool,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    rotations: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    verifications: Family<Labels, Counter>,
    s3_probes: Counter,
    credential_age: Family<Labels, Gauge>,
    last_success: Gauge,
    last_run: Gauge,
    next_run: Gauge,
    runs: Family<Labels, Counter>,
    /// `/readyz`: false after a run with failures, true again after a clean one.
    ready: AtomicBool,
    runs_seen: AtomicU64,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("contabo_rotator");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            rotations: Family::default(),
            deliveries: Family::default(),
            api_requests: Family::default(),
            verifications: Family::default(),
            s3_probes: Counter::default(),
            credential_age: Family::default(),
            last_success: Gauge::default(),
            last_run: Gauge::default(),
            next_run: Gauge::default(),
            runs: Family::default(),
            ready: AtomicBool::new(true),
            runs_seen: AtomicU64::new(0),
        };
        registry.register(
            "rotations",
            "Secrets rotated or failed, by kind (object_storage, client_secret) and result",
            m.rotations.clone(),
        );
        registry.register(
            "sink_deliveries",
            "Sink deliveries by sink and result (written, unchanged, failed)",
            m.deliveries.clone(),
        );
        registry.register(
            "api_requests",
            "Contabo API and token requests by operation and HTTP status (0: no answer)",
            m.api_requests.clone(),
        );
        registry.register(
            "verifications",
            "Rotated S3 keys probed at the storage (verify = \"s3\"), by result (accepted, refused)",
            m.verifications.clone(),
        );
        registry.register(
            "s3_probes",
            "Signed requests sent to the storages to verify new keys (not counted in api_requests)",
            m.s3_probes.clone(),
        );
        registry.register(
            "credential_age_seconds",
            "Seconds since contabo-rotator last rotated each S3 credential (or first saw it)",
            m.credential_age.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the end of the last run without failures",
            m.last_success.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "Unix time of the end of the last run",
            m.last_run.clone(),
        );
        registry.register(
            "next_run_timestamp_seconds",
            "Unix time of the next scheduled run",
            m.next_run.clone(),
        );
        registry.register("runs", "Runs by result (success, failure)", m.runs.clone());
        *m.registry.lock().expect("not poisoned") = registry;
        m
    }

    /// Counts one HTTP request to the API or the token endpoint.
    pub fn api_request(&self, operation: &str, status: u16) {
        self.api_requests
            .get_or_create(&vec![
                ("operation", operation.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Folds a finished run into the metrics. The engine reports what it
    /// did in these neutral terms, so this module knows no engine types.
    pub fn record_run(&self, run: &RunTally) {
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
        for (sink, outcome) in &run.deliveries {
            self.deliveries
                .get_or_create(&vec![
                    ("sink", sink.clone()),
                    ("result", (*outcome).to_owned()),
                ])
                .inc();
        }
        let now = chrono::Utc::now().timestamp();
        self.last_run.set(now);
        let ok = run.ok;
        if ok {
            self.last_success.set(now);
        }
        self.runs
            .get_or_create(&vec![(
                "result",
                if ok { "success" } else { "failure" }.into(),
            )])
            .inc();
        self.ready.store(ok, Ordering::SeqCst);
        self.runs_seen.fetch_add(1, Ordering::SeqCst);
    }

    /// Sets the age of every known credential from the state records.
    pub fn record_ages(&self, records: &crate::state::Records) {
        let now = chrono::Utc::now();
        self.credential_age.clear();
        for (key, r) in &records.credentials {
            let since = r.rotated_at.unwrap_or(r.first_seen);
            self.credential_age
                .get_or_create(&vec![
                    ("credential", key.clone()),
                    ("user", r.user_email.clone()),
                    ("access_key", r.access_key.clone()),
                ])
                .set((now - since).num_seconds());
        }
    }

    /// The next scheduled run.
    pub fn set_next_run(&self, at: chrono::DateTime<chrono::Utc>) {
        self.next_run.set(at.timestamp());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().expect("not poisoned"))
            .expect("writing to a String cannot fail");
        out
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Binds `listen` and serves the endpoints until the task is dropped.
pub async fn serve(listen: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                if metrics().is_ready() {
                    (StatusCode::OK, "ready\n").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "last run failed\n").into_response()
                }
            }),
        );
    tracing::info!(%listen, "Serving /metrics, /healthz and /readyz.");
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "The metrics server stopped.");
        }
    }))
}
