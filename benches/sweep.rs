//! Sweep benchmark: a full rotation of every S3 credential of a simulated
//! account by the real binary, at several latencies and concurrencies, plus
//! the idle daemon's memory and CPU.
//!
//! ```sh
//! cargo bench --bench sweep                       # 1000 users x 3 credentials, 0/20 ms, concurrency 1/8/32, 60 s idle
//! cargo bench --bench sweep -- --users 100 --latency 20 --concurrency 8,default --idle 0
//! cargo bench --bench sweep -- --users 10000 --latency 0 --concurrency 32 --idle 0 --no-window
//! cargo bench --bench sweep -- --users 1000 --latency 0 --concurrency 8 --idle 0 --io
//! cargo bench --bench sweep -- --users 40 --latency 0 --concurrency 8 --idle 0 --s3-limit 30
//! ```
//!
//! Every sweep configures two file sinks (a `json` and an
//! `aws-credentials` file, each holding every credential) and a webhook
//! sink (a receiver in this process answering 200). `default` as a
//! concurrency runs at the `[api]` defaults: concurrency 4 and 10 requests
//! per second; a number runs at that concurrency and 1000 requests per
//! second.
//!
//! **Dead-key window.** The simulator records the instant each regenerate
//! was applied (the old secret stops working then). Watchers poll both sink
//! files every 2 ms and record when each credential's new access key first
//! appears in each; files are replaced by rename after an fsync, so a file
//! seen is a file on disk. The window of a credential is the time from its
//! regenerate until *every* sink holds its new value; p50, p99 and max are
//! reported (`--no-window` skips the watchers, for the largest accounts).
//!
//! **I/O** (`--io`): the binary runs under `strace -f -y`, and the bytes
//! written to files in the state directory, to the sinks, and the number of
//! fsync/fdatasync calls are summed from its trace (the trace slows the run:
//! its wall time is not comparable).
//!
//! **Verification.** The sweeps run with `[object_storage] verify` at its
//! default, `"s3"`: every new key is proven at the simulator's S3 endpoint
//! beside delivery. `SWEEP_VERIFY=api` (or `off`) runs without the proof.
//! S3 probes are counted apart from the API's requests (`S3 probes`, and
//! per rotated credential), with the share the storage answered `503
//! SlowDown`.
//!
//! **The proof budget.** As a number as concurrency lifts the API's rate
//! limit (1000 requests/s) so that the sweep measures the client, it lifts
//! the proofs' budget too (`verify_requests_per_second = 100000`, beyond
//! what the proofs can send); `default` runs the default budget (25). `--s3-limit N` makes the simulator's
//! storages take at most N S3 requests/s (the account's limit, beyond
//! which they answer `SlowDown`) and runs the default budget, whose
//! politeness is then what is measured. `--verify-rps N` sets the budget
//! of every sweep.
//!
//! **Faults.** `SWEEP_FAULTS=mixed` puts the fault suite's mix on every
//! call (10 % 429, 10 % 5xx, 5 % answers dropped after applying; the token
//! endpoint and the client-secret PUT included) and turns client-secret
//! rotation on: the wall time of such a run, e.g.
//! `SWEEP_FAULTS=mixed cargo bench --bench sweep -- --users 10 --latency 20 --concurrency default --idle 0`.
//!
//! **A remote webhook receiver.** The receiver answers at once unless
//! `SWEEP_HOOK_LATENCY=<ms>` makes it take that long per POST.
//!
//! **A later pass.** `SWEEP_AGAIN=1` measures a second pass: a first one
//! (not measured) rotates every credential, then the measured one runs
//! with `--run-now --force` on the state it left, with the records read
//! from `state.db` as in a daemon's later passes (the first pass of a
//! fresh state directory builds them as it goes). Requests, probes and
//! webhook POSTs are those of the measured pass.
//!
//! **A template sink.** `SWEEP_TEMPLATE=1` makes the second file sink a
//! template sink that writes the same profiles as `aws-credentials`.
//!
//! `SWEEP_WRAPPER="valgrind --tool=massif --massif-out-file=/tmp/m.out"`
//! runs the binary under a profiler (the figures then measure the profiler).
//!
//! **The binary** is the one `cargo build --release` makes: the first run
//! builds it into `<target>/shipped` (a few minutes), because the binary
//! Cargo builds for a benchmark carries the dev-dependencies' features.
//! `SWEEP_BIN=<path>` measures another binary (e.g. a profiling build).
//!
//! Wall time is measured around the child process; CPU time and peak RSS of
//! the child come from GNU time (`/usr/bin/time`, Debian package `time`).
//! Requests are counted by the simulator, token requests included. The
//! latency bound is `requests x latency / concurrency`: no client can do
//! better with that many requests in flight. Reports only; asserts nothing.

use contabo_simulator::{Fault, FaultRule, Operation, Simulator, SimulatorOptions};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A concurrency to sweep at: a number (at 1000 requests/s), or the
/// `[api]` defaults (4, at 10 requests/s).
#[derive(Clone, Copy)]
enum Concurrency {
    Fixed(usize),
    Defaults,
}

impl Concurrency {
    fn concurrency(self) -> usize {
        match self {
            Concurrency::Fixed(n) => n,
            Concurrency::Defaults => 4,
        }
    }

    fn requests_per_second(self) -> u32 {
        match self {
            Concurrency::Fixed(_) => 1000,
            Concurrency::Defaults => 10,
        }
    }

    fn label(self) -> String {
        match self {
            Concurrency::Fixed(n) => n.to_string(),
            Concurrency::Defaults => "4 (defaults, 10 req/s)".into(),
        }
    }
}

struct Args {
    users: usize,
    latencies: Vec<u64>,
    concurrencies: Vec<Concurrency>,
    idle: u64,
    window: bool,
    io: bool,
    /// The simulator's S3 request limit (`--s3-limit`).
    s3_limit: Option<f64>,
    /// `verify_requests_per_second` (`--verify-rps`); `None`: as the
    /// concurrency and `--s3-limit` say.
    verify_rps: Option<f64>,
}

impl Args {
    /// The proofs' budget of a sweep at `at`: `--verify-rps`, else the
    /// default (25) with a storage limit or at the `[api]` defaults, else
    /// lifted with the API's rate (100,000: no bound in practice).
    fn verify_rps(&self, at: Concurrency) -> f64 {
        match (self.verify_rps, self.s3_limit, at) {
            (Some(rps), _, _) => rps,
            (None, Some(_), _) | (None, None, Concurrency::Defaults) => 25.0,
            (None, None, Concurrency::Fixed(_)) => 100_000.0,
        }
    }
}

fn parse_args() -> Args {
    let mut args = Args {
        users: 1000,
        latencies: vec![0, 20],
        concurrencies: vec![1, 8, 32].into_iter().map(Concurrency::Fixed).collect(),
        idle: 60,
        window: true,
        io: false,
        s3_limit: None,
        verify_rps: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--users" => args.users = it.next().expect("--users N").parse().expect("a number"),
            "--latency" => {
                args.latencies = it
                    .next()
                    .expect("--latency MS[,MS]")
                    .split(',')
                    .map(|x| x.trim().parse().expect("a number"))
                    .collect()
            }
            "--concurrency" => {
                args.concurrencies = it
                    .next()
                    .expect("--concurrency N|default[,...]")
                    .split(',')
                    .map(|x| match x.trim() {
                        "default" | "defaults" => Concurrency::Defaults,
                        n => Concurrency::Fixed(n.parse().expect("a number or `default`")),
                    })
                    .collect()
            }
            "--idle" => {
                args.idle = it
                    .next()
                    .expect("--idle SECONDS")
                    .parse()
                    .expect("a number")
            }
            "--s3-limit" => {
                args.s3_limit = Some(
                    it.next()
                        .expect("--s3-limit REQUESTS_PER_SECOND")
                        .parse()
                        .expect("a number"),
                )
            }
            "--verify-rps" => {
                args.verify_rps = Some(
                    it.next()
                        .expect("--verify-rps REQUESTS_PER_SECOND")
                        .parse()
                        .expect("a number"),
                )
            }
            "--no-window" => args.window = false,
            "--io" => args.io = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn config(
    dir: &Path,
    sim: &Simulator,
    opts: &SimulatorOptions,
    at: Concurrency,
    verify_rps: f64,
    cron: &str,
    webhook: &str,
) -> PathBuf {
    write_private(
        &dir.join("client-secret"),
        opts.client_secret.expose_secret(),
    );
    write_private(&dir.join("api-password"), opts.password.expose_secret());
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let text = format!(
        r#"[api]
base_url = "{}"
token_url = "{}"
client_id = "{}"
client_secret = {{ file = "{root}/client-secret" }}
username = "{}"
password = {{ file = "{root}/api-password" }}
timeout = "30s"
concurrency = {concurrency}
requests_per_second = {rps}
max_retries = 5

[schedule]
cron = "{cron}"

[state]
dir = "{root}/state"

[object_storage]
max_age = "7d"
verify = "{verify}"
verify_requests_per_second = {verify_rps}
{client_secret}
[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"

{credentials_sink}

[[sinks]]
type = "webhook"
url = "{webhook}"
signing_secret = "whsec_c3dlZXAtYmVuY2htYXJrLXNpZ25pbmcta2V5LTAxMjM0NTY3"
"#,
        sim.base_url(),
        sim.token_url(),
        opts.client_id,
        opts.username,
        concurrency = at.concurrency(),
        rps = at.requests_per_second(),
        root = dir.display(),
        verify = std::env::var("SWEEP_VERIFY").unwrap_or_else(|_| "s3".to_owned()),
        verify_rps = verify_rps,
        credentials_sink = credentials_sink(dir),
        client_secret = if mixed_faults_on() {
            "\n[client_secret]\nrotate = true\n"
        } else {
            ""
        },
    );
    let path = dir.join("config.toml");
    write_private(&path, &text);
    path
}

/// The second file sink: the `aws-credentials` format, or with
/// `SWEEP_TEMPLATE=1` a template sink that writes the same profiles (its
/// template is written beside the configuration).
fn credentials_sink(dir: &Path) -> String {
    if std::env::var_os("SWEEP_TEMPLATE").is_none() {
        return format!(
            "[[sinks]]\ntype = \"file\"\npath = \"{}/out/credentials\"\nformat = \"aws-credentials\"\n",
            dir.display()
        );
    }
    let template = dir.join("credentials.j2");
    write_private(
        &template,
        "{% for c in object_storage_credentials %}\n\
         [{{ c | aws_profile }}]\n\
         aws_access_key_id = {{ c.access_key | ini_value }}\n\
         aws_secret_access_key = {{ c.secret_key | ini_value }}\n\n\
         {% endfor %}\n",
    );
    format!(
        "[[sinks]]\ntype = \"template\"\ntemplate = \"{}\"\npath = \"{}/out/credentials\"\n",
        template.display(),
        dir.display()
    )
}

/// `SWEEP_FAULTS=mixed`: the fault suite's mix on every call (the
/// simulator's `mixed_faults`: 10 % 429, 10 % 5xx, 5 % drops after
/// applying), with client-secret rotation on.
fn mixed_faults_on() -> bool {
    std::env::var("SWEEP_FAULTS").is_ok_and(|v| v == "mixed")
}

fn options(users: usize) -> SimulatorOptions {
    SimulatorOptions {
        client_secret: SecretString::from("bench-client-secret"),
        password: SecretString::from("bench-password"),
        users,
        credentials_per_user: 3,
        page_size_cap: 100,
        ..SimulatorOptions::default()
    }
}

/// A webhook receiver on 127.0.0.1 that answers 200 and counts POSTs.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    // `SWEEP_HOOK_LATENCY=<ms>`: a receiver that takes that long to answer
    // each POST, as one across a network does.
    let latency = Duration::from_millis(
        std::env::var("SWEEP_HOOK_LATENCY")
            .ok()
            .map(|v| v.parse().expect("SWEEP_HOOK_LATENCY is a number of ms"))
            .unwrap_or(0),
    );
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            // (A zero sleep still waits for the timer's next millisecond.)
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            seen.fetch_add(1, Ordering::Relaxed);
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

/// When each (credential id, access key) first appeared in a sink file.
type Seen = Arc<Mutex<HashMap<(i64, String), Instant>>>;

/// Polls `path` every 2 ms until `stop`; on every new file (a new inode:
/// sinks are replaced by rename), records the keys it holds.
fn watch(
    path: PathBuf,
    parse: fn(&str) -> Vec<(i64, String)>,
    stop: Arc<AtomicBool>,
) -> (Seen, std::thread::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let out = seen.clone();
    let handle = std::thread::spawn(move || {
        let mut last_inode = None;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(meta) = std::fs::metadata(&path) {
                if last_inode != Some(meta.ino()) {
                    let at = Instant::now();
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        last_inode = Some(meta.ino());
                        let mut seen = out.lock().unwrap();
                        for key in parse(&text) {
                            seen.entry(key).or_insert(at);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (seen, handle)
}

/// The json sink's credential ids and access keys. Typed, so that the
/// other fields (secrets included) are skipped rather than built into a
/// `serde_json::Value`: at 30,000 credentials the watcher reads a 10 MB
/// file several times a second on the machine the measured binary runs on.
fn parse_json(text: &str) -> Vec<(i64, String)> {
    #[derive(serde::Deserialize)]
    struct File {
        object_storage_credentials: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        credential_id: i64,
        access_key: String,
    }
    serde_json::from_str::<File>(text)
        .map(|f| {
            f.object_storage_credentials
                .into_iter()
                .map(|c| (c.credential_id, c.access_key))
                .collect()
        })
        .unwrap_or_default()
}

/// `[name-<credential id>]` then `aws_access_key_id = KEY`.
fn parse_ini(text: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut id = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            id = name.rsplit('-').next().and_then(|n| n.parse::<i64>().ok());
        } else if let Some(key) = line.strip_prefix("aws_access_key_id = ") {
            if let Some(id) = id {
                out.push((id, key.trim().to_owned()));
            }
        }
    }
    out
}

struct Sweep {
    wall: Duration,
    cpu: f64,
    max_rss_kib: u64,
    requests: usize,
    /// Requests at the simulator's S3 endpoints (the proofs).
    s3_probes: usize,
    /// Of `s3_probes`, those answered `503 SlowDown`.
    slow_downs: usize,
    rotated: usize,
    posts: usize,
    exit: Option<i32>,
    /// Per rotated credential, until every sink held it (ms); `None`s are
    /// credentials a sink never showed.
    windows: Vec<Option<f64>>,
    io: Option<Io>,
}

/// What the trace of a run wrote.
#[derive(Default)]
struct Io {
    /// Bytes per state file (temp-file suffixes stripped).
    per_file: std::collections::BTreeMap<String, u64>,
    state_bytes: u64,
    state_writes: u64,
    sink_bytes: u64,
    fsyncs: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn sweep(args: &Args, latency_ms: u64, at: Concurrency) -> Sweep {
    let (users, window, io) = (args.users, args.window, args.io);
    let opts = options(users);
    let sim = Simulator::start(opts.clone()).await.expect("simulator");
    sim.set_s3_request_limit(args.s3_limit);
    let mut faults = if mixed_faults_on() {
        contabo_simulator::mixed_faults()
    } else {
        Vec::new()
    };
    if latency_ms > 0 {
        faults.push(FaultRule::always(Fault::Latency(Duration::from_millis(
            latency_ms,
        ))));
    }
    sim.set_faults(faults);
    let (hook, posts) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &sim,
        &opts,
        at,
        args.verify_rps(at),
        "0 0 4 1 1 *",
        &hook,
    );
    let again = std::env::var_os("SWEEP_AGAIN").is_some();
    // (requests, S3 probes, webhook POSTs) of the unmeasured first pass.
    let mut before = (0, 0, 0);
    if again {
        let first = Command::new(shipped())
            .args(["-q", "-c"])
            .arg(&config)
            .arg("--run-now")
            .output()
            .unwrap();
        assert!(first.status.success(), "the first pass failed");
        before = (
            sim.requests().len(),
            sim.s3_requests().len(),
            posts.load(Ordering::Relaxed),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = if window {
        vec![
            watch(
                dir.path().join("out/contabo.json"),
                parse_json,
                stop.clone(),
            ),
            watch(dir.path().join("out/credentials"), parse_ini, stop.clone()),
        ]
    } else {
        Vec::new()
    };
    let bin = shipped();
    let usage = dir.path().join("usage");
    let trace = dir.path().join("trace");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let usage = usage.clone();
        let config = config.clone();
        let trace = trace.clone();
        move || {
            // SWEEP_WRAPPER (e.g. "valgrind --tool=massif") goes between
            // `time` and the binary, for profiling a sweep.
            let mut wrapper: Vec<String> = std::env::var("SWEEP_WRAPPER")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if io {
                wrapper = [
                    "strace",
                    "-f",
                    "-y",
                    "-qq",
                    "-e",
                    "trace=write,pwrite64,writev,fsync,fdatasync",
                    "-o",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([trace.display().to_string()])
                .collect();
            }
            Command::new("/usr/bin/time")
                .args(["-f", "%U %S %M", "-o"])
                .arg(&usage)
                .args(&wrapper)
                .arg(bin)
                .args(["-q", "-c"])
                .arg(&config)
                .arg("--run-now")
                .args(again.then_some("--force"))
                .output()
                .expect("/usr/bin/time is needed (Debian package `time`)")
        }
    })
    .await
    .unwrap();
    let wall = started.elapsed();
    // Let the watchers see the last write.
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = watchers
        .into_iter()
        .map(|(seen, handle)| {
            handle.join().unwrap();
            seen
        })
        .collect();
    let text = std::fs::read_to_string(&usage).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let n = fields.len();
    let requests: Vec<_> = sim.requests().into_iter().skip(before.0).collect();
    let snapshot = sim.snapshot();
    let current: HashMap<i64, &str> = snapshot
        .users
        .iter()
        .flat_map(|u| u.credentials.iter())
        .map(|c| (c.credential_id, c.access_key.as_str()))
        .collect();
    let applied: Vec<(i64, Instant)> = requests
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .filter_map(|r| Some((r.path.rsplit('/').next()?.parse().ok()?, r.applied_at?)))
        .collect();
    let windows = if window {
        let seen: Vec<_> = seen.iter().map(|s| s.lock().unwrap()).collect();
        applied
            .iter()
            .map(|(id, at)| {
                let key = (*id, current[id].to_owned());
                let mut worst = 0.0f64;
                for sink in &seen {
                    let shown = sink.get(&key)?;
                    worst = worst.max(shown.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                }
                Some(worst)
            })
            .collect()
    } else {
        Vec::new()
    };
    if std::env::var_os("SWEEP_PHASES").is_some() {
        // Where the wall time goes: offsets from the start, in ms.
        let ms = |at: Instant| at.saturating_duration_since(started).as_secs_f64() * 1000.0;
        let first = requests.first().map(|r| ms(r.received_at));
        let first_list = requests
            .iter()
            .find(|r| r.operation == Operation::ListObjectStorageCredentials)
            .map(|r| ms(r.received_at));
        let first_regen = requests
            .iter()
            .find(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
            .map(|r| ms(r.received_at));
        let last = requests
            .iter()
            .filter(|r| r.operation != Operation::Mark)
            .map(|r| ms(r.received_at))
            .fold(0.0, f64::max);
        eprintln!(
            "phases (ms): first request {first:?}, first credential list {first_list:?}, first regenerate {first_regen:?}, last request {last:.0}, exit {:.0}",
            wall.as_secs_f64() * 1000.0
        );
        // How full the concurrency was: requests received per 100 ms
        // slice, times the latency, over what the concurrency allows.
        let slice = 100.0;
        let mut received = vec![0usize; (wall.as_secs_f64() * 1000.0 / slice) as usize + 1];
        for r in requests.iter().filter(|r| r.operation != Operation::Mark) {
            if let Some(n) = received.get_mut((ms(r.received_at) / slice) as usize) {
                *n += 1;
            }
        }
        let full: Vec<String> = received
            .iter()
            .map(|n| {
                let used = *n as f64 * latency_ms as f64;
                format!("{:.0}", 100.0 * used / (slice * at.concurrency() as f64))
            })
            .collect();
        eprintln!("concurrency used per 100 ms (%): {}", full.join(" "));
    }
    let io = io.then(|| read_trace(&trace, dir.path()));
    if out.status.code() != Some(0) {
        eprintln!(
            "{}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Sweep {
        wall,
        cpu: fields[n - 3].parse::<f64>().unwrap() + fields[n - 2].parse::<f64>().unwrap(),
        max_rss_kib: fields[n - 1].parse().unwrap(),
        requests: requests
            .iter()
            .filter(|r| r.operation != Operation::Mark)
            .count(),
        s3_probes: sim.s3_requests().len() - before.1,
        slow_downs: sim
            .s3_requests()
            .iter()
            .skip(before.1)
            .filter(|r| r.code == Some("SlowDown"))
            .count(),
        rotated: applied.len(),
        posts: posts.load(Ordering::Relaxed) - before.2,
        exit: out.status.code(),
        windows,
        io,
    }
}

/// Sums an `strace -f -y` trace: bytes written to the state directory and
/// to the sinks, and fsync calls.
fn read_trace(trace: &Path, root: &Path) -> Io {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let state = format!("<{}/state/", root.display());
    let sinks = format!("<{}/out/", root.display());
    let mut io = Io::default();
    for line in text.lines() {
        let Some((call, rest)) = line
            .split_once('(')
            .map(|(head, rest)| (head.rsplit(' ').next().unwrap_or(head), rest))
        else {
            continue;
        };
        let bytes = || -> u64 {
            rest.rsplit("= ")
                .next()
                .and_then(|n| n.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        match call {
            "fsync" | "fdatasync" => io.fsyncs += 1,
            "write" | "pwrite64" | "writev" if rest.contains(&state) => {
                let n = bytes();
                io.state_bytes += n;
                io.state_writes += 1;
                let after = &rest[rest.find(&state).unwrap() + state.len()..];
                let name: String = after
                    .trim_start_matches('.')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                *io.per_file.entry(name).or_default() += n;
            }
            "write" | "pwrite64" | "writev" if rest.contains(&sinks) => io.sink_bytes += bytes(),
            _ => {}
        }
    }
    io
}

/// (RSS in KiB, CPU seconds) of a process, from /proc.
fn sample(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    (rss, ticks / 100.0)
}

async fn idle(seconds: u64) -> (u64, u64, f64) {
    let opts = options(10);
    let sim = Simulator::start(opts.clone()).await.expect("simulator");
    let dir = tempfile::tempdir().unwrap();
    // A schedule that does not fire during the measurement.
    let (hook, _) = receiver().await;
    let config = config(
        dir.path(),
        &sim,
        &opts,
        Concurrency::Defaults,
        25.0,
        "0 0 4 1 1 *",
        &hook,
    );
    let mut child = Command::new(shipped())
        .args(["-q", "-c"])
        .arg(&config)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_start, cpu_start) = sample(child.id());
    let mut peak = rss_start;
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(sample(child.id()).0);
    }
    let (_, cpu_end) = sample(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (rss_start, peak, cpu_end - cpu_start)
}

/// The binary measured: the one `cargo build --release` makes, built apart
/// from the one Cargo builds for this benchmark.
///
/// The benchmark's own build unifies the dev-dependencies' features into
/// the binary's dependencies (tokio's `test-util`, hyper's HTTP/2 through
/// wiremock, ...): that binary is not what ships, and it peaked 0.8 MiB
/// higher on a pass of 3,000 credentials. `SWEEP_BIN` names a binary to
/// measure instead (no build then).
fn shipped() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SWEEP_BIN") {
            return PathBuf::from(bin);
        }
        // <target>/release/contabo-rotator: the shipped build goes to
        // <target>/shipped, so that neither build undoes the other.
        let target = Path::new(env!("CARGO_BIN_EXE_contabo-rotator"))
            .ancestors()
            .nth(2)
            .expect("the binary is under <target>/<profile>")
            .join("shipped");
        eprintln!(
            "Building the binary as shipped: cargo build --release --target-dir {}",
            target.display()
        );
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--locked", "--bin", "contabo-rotator"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --release failed");
        target.join("release/contabo-rotator")
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    shipped();
    println!(
        "Sweep: {} users x 3 credentials = {} credentials, real binary (--run-now{}) against the simulator; two file sinks and a webhook.{}\n",
        args.users,
        args.users * 3,
        if std::env::var_os("SWEEP_AGAIN").is_some() {
            " --force, a second pass on the first one's state"
        } else {
            ""
        },
        match args.s3_limit {
            Some(limit) => format!(" The storages take {limit} S3 requests/s."),
            None => String::new(),
        }
    );
    println!("| latency | concurrency | proof budget | wall | requests | rotated | requests/rotated | S3 probes | S3/rotated | SlowDown | latency bound | bound/wall | dead-key window p50 / p99 / max | CPU | peak RSS | webhook POSTs | exit |");
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &latency in &args.latencies {
        for &at in &args.concurrencies {
            let s = sweep(&args, latency, at).await;
            // Requests are also bounded by the rate limit.
            let by_latency = s.requests as f64 * latency as f64 / 1000.0 / at.concurrency() as f64;
            let by_rate = s.requests as f64 / f64::from(at.requests_per_second());
            let bound = by_latency.max(by_rate);
            let mut windows: Vec<f64> = s.windows.iter().flatten().copied().collect();
            windows.sort_by(f64::total_cmp);
            let missing = s.windows.iter().filter(|w| w.is_none()).count();
            let window = if !args.window {
                "-".to_string()
            } else if missing > 0 {
                format!("{missing} never delivered")
            } else {
                format!(
                    "{:.0} / {:.0} / {:.0} ms",
                    percentile(&windows, 0.5),
                    percentile(&windows, 0.99),
                    percentile(&windows, 1.0)
                )
            };
            println!(
                "| {latency} ms | {} | {}/s | {:.2} s | {} | {} | {:.2} | {} | {:.2} | {} ({:.1}%) | {} | {} | {window} | {:.2} s | {:.1} MiB | {} | {:?} |",
                at.label(),
                args.verify_rps(at),
                s.wall.as_secs_f64(),
                s.requests,
                s.rotated,
                s.requests as f64 / s.rotated.max(1) as f64,
                s.s3_probes,
                s.s3_probes as f64 / s.rotated.max(1) as f64,
                s.slow_downs,
                100.0 * s.slow_downs as f64 / s.s3_probes.max(1) as f64,
                if bound == 0.0 { "-".to_string() } else { format!("{bound:.2} s") },
                if bound == 0.0 { "-".to_string() } else { format!("{:.0}%", 100.0 * bound / s.wall.as_secs_f64()) },
                s.cpu,
                s.max_rss_kib as f64 / 1024.0,
                s.posts,
                s.exit,
            );
            if let Some(io) = &s.io {
                println!(
                    "|   I/O under strace: state directory {:.2} MiB in {} writes, sinks {:.2} MiB, {} fsync/fdatasync calls |",
                    io.state_bytes as f64 / 1048576.0,
                    io.state_writes,
                    io.sink_bytes as f64 / 1048576.0,
                    io.fsyncs
                );
                let files: Vec<String> = io
                    .per_file
                    .iter()
                    .map(|(f, b)| format!("{f} {:.2} MiB", *b as f64 / 1048576.0))
                    .collect();
                println!("|   by state file: {} |", files.join(", "));
            }
        }
    }
    if args.idle > 0 {
        let (start, peak, cpu) = idle(args.idle).await;
        println!(
            "\nIdle daemon over {} s: RSS {:.1} MiB at start, {:.1} MiB peak; CPU used {:.2} s.",
            args.idle,
            start as f64 / 1024.0,
            peak as f64 / 1024.0,
            cpu
        );
    }
}
