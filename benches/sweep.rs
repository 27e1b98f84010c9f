//! Sweep benchmark: a full rotation of every S3 credential of a simulated
//! account by the real binary, at several latencies and concurrencies, plus
//! the idle daemon's memory and CPU.
//!
//! ```sh
//! cargo bench --bench sweep                       # 1000 users x 3 credentials, 0/20 ms, concurrency 1/8/32, 60 s idle
//! cargo bench --bench sweep -- --users 100 --latency 20 --concurrency 8 --idle 10
//! ```
//!
//! `SWEEP_WRAPPER="valgrind --tool=massif --massif-out-file=/tmp/m.out"`
//! runs the binary under a profiler (the figures then measure the profiler).
//!
//! Wall time is measured around the child process; CPU time and peak RSS of
//! the child come from GNU time (`/usr/bin/time`, Debian package `time`).
//! Requests are counted by the simulator, token requests included. The
//! latency bound is `requests x latency / concurrency`: no client can do
//! better with that many requests in flight. Reports only; asserts nothing.

use contabo_rotator::simulator::{Fault, FaultRule, Operation, Simulator, SimulatorOptions};
use secrecy::{ExposeSecret, SecretString};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Args {
    users: usize,
    latencies: Vec<u64>,
    concurrencies: Vec<usize>,
    idle: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        users: 1000,
        latencies: vec![0, 20],
        concurrencies: vec![1, 8, 32],
        idle: 60,
    };
    let list = |v: &str| {
        v.split(',')
            .map(|x| x.trim().parse().expect("a number"))
            .collect()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--users" => args.users = it.next().expect("--users N").parse().expect("a number"),
            "--latency" => args.latencies = list(&it.next().expect("--latency MS[,MS]")),
            "--concurrency" => {
                args.concurrencies = list(&it.next().expect("--concurrency N[,N]"))
                    .into_iter()
                    .map(|x: u64| x as usize)
                    .collect()
            }
            "--idle" => {
                args.idle = it
                    .next()
                    .expect("--idle SECONDS")
                    .parse()
                    .expect("a number")
            }
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
    concurrency: usize,
    cron: &str,
) -> std::path::PathBuf {
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
requests_per_second = 1000
max_retries = 5

[schedule]
cron = "{cron}"

[state]
dir = "{root}/state"

[object_storage]
max_age = "7d"

[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#,
        sim.base_url(),
        sim.token_url(),
        opts.client_id,
        opts.username,
        root = dir.display()
    );
    let path = dir.join("config.toml");
    write_private(&path, &text);
    path
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

struct Sweep {
    wall: Duration,
    cpu: f64,
    max_rss_kib: u64,
    requests: usize,
    rotated: usize,
    exit: Option<i32>,
}

async fn sweep(users: usize, latency_ms: u64, concurrency: usize) -> Sweep {
    let opts = options(users);
    let sim = Simulator::start(opts.clone()).await.expect("simulator");
    if latency_ms > 0 {
        sim.set_faults(vec![FaultRule::always(Fault::Latency(
            Duration::from_millis(latency_ms),
        ))]);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sim, &opts, concurrency, "0 0 4 1 1 *");
    let bin = env!("CARGO_BIN_EXE_contabo-rotator");
    let usage = dir.path().join("usage");
    let started = Instant::now();
    let out = tokio::task::spawn_blocking({
        let usage = usage.clone();
        let config = config.clone();
        move || {
            // SWEEP_WRAPPER (e.g. "valgrind --tool=massif") goes between
            // `time` and the binary, for profiling a sweep.
            let wrapper = std::env::var("SWEEP_WRAPPER").unwrap_or_default();
            Command::new("/usr/bin/time")
                .args(["-f", "%U %S %M", "-o"])
                .arg(&usage)
                .args(wrapper.split_whitespace())
                .arg(bin)
                .args(["-q", "-c"])
                .arg(&config)
                .arg("--run-now")
                .output()
                .expect("/usr/bin/time is needed (Debian package `time`)")
        }
    })
    .await
    .unwrap();
    let wall = started.elapsed();
    let text = std::fs::read_to_string(&usage).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let n = fields.len();
    let requests = sim.requests();
    let rotated = requests
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials && r.status == 200)
        .count();
    Sweep {
        wall,
        cpu: fields[n - 3].parse::<f64>().unwrap() + fields[n - 2].parse::<f64>().unwrap(),
        max_rss_kib: fields[n - 1].parse().unwrap(),
        requests: requests.len(),
        rotated,
        exit: out.status.code(),
    }
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
    let config = config(dir.path(), &sim, &opts, 4, "0 0 4 1 1 *");
    let mut child = Command::new(env!("CARGO_BIN_EXE_contabo-rotator"))
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    println!(
        "Sweep: {} users x 3 credentials = {} credentials, real binary (--run-now) against the simulator.\n",
        args.users,
        args.users * 3
    );
    println!("| latency | concurrency | wall | requests | rotated | requests/rotated | latency bound | wall/bound | CPU | peak RSS | exit |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &latency in &args.latencies {
        for &concurrency in &args.concurrencies {
            let s = sweep(args.users, latency, concurrency).await;
            let bound = s.requests as f64 * latency as f64 / 1000.0 / concurrency as f64;
            println!(
                "| {latency} ms | {concurrency} | {:.2} s | {} | {} | {:.2} | {} | {} | {:.2} s | {:.1} MiB | {:?} |",
                s.wall.as_secs_f64(),
                s.requests,
                s.rotated,
                s.requests as f64 / s.rotated.max(1) as f64,
                if latency == 0 { "-".to_string() } else { format!("{bound:.2} s") },
                if latency == 0 { "-".to_string() } else { format!("{:.2}", s.wall.as_secs_f64() / bound) },
                s.cpu,
                s.max_rss_kib as f64 / 1024.0,
                s.exit,
            );
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
