//! Zero downtime with twin users, measured the way a consumer meets it.
//!
//! ```sh
//! cargo bench --bench twins -- --rounds 3 --reread-ms 1000
//! ```
//!
//! An application signs a ListBuckets every 25 ms at the simulator's S3
//! endpoint with the key it last read from a json sink, and re-reads the
//! sink every `--reread-ms` (a long-running process or a connection pool
//! reads its key now and then). Two scenarios, each `--rounds` forced
//! rotations of the same sink:
//!
//! - **in place**: the sink selects one ordinary user; every `--force`
//!   regenerates its key, which dies at the PATCH;
//! - **twins**: the sink selects a twin of two users (`retire_after = 2s`);
//!   every `--force` switches to the standby, and the run after the grace
//!   period retires the keys handed over before.
//!
//! It prints, per scenario, the requests the application sent and how many
//! the storage refused. The binary is the one Cargo builds for this
//! benchmark (`CARGO_BIN_EXE_contabo-rotator`), or `SWEEP_BIN`: what is
//! measured is refusals, not memory, so the dev-dependencies' features do
//! not matter here.

use contabo_simulator::{Simulator, SimulatorOptions};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RETIRE_AFTER: Duration = Duration::from_secs(2);
const A: &str = "user001@example.com";
const B: &str = "user002@example.com";

fn binary() -> PathBuf {
    std::env::var_os("SWEEP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_contabo-rotator")))
}

fn options() -> SimulatorOptions {
    SimulatorOptions {
        client_secret: SecretString::from("bench-client-secret-4b1d"),
        password: SecretString::from("bench-api-password-77"),
        users: 3,
        credentials_per_user: 1,
        ..SimulatorOptions::default()
    }
}

/// Writes a config for `sim` whose one json sink selects `select`, with
/// `extra` in `[object_storage]`.
fn config(
    dir: &Path,
    sim: &Simulator,
    opts: &SimulatorOptions,
    extra: &str,
    select: &str,
) -> PathBuf {
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let cs = secret("client-secret", opts.client_secret.expose_secret());
    let pw = secret("api-password", opts.password.expose_secret());
    let text = format!(
        "[api]\nbase_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = {{ file = \"{}\" }}\nusername = \"{}\"\npassword = {{ file = \"{}\" }}\n\
         requests_per_second = 1000\n\n[state]\ndir = \"{}/state\"\n\n\
         [object_storage]\nusers = [\"{A}\"]\n{extra}\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{}/app.json\"\nformat = \"json\"\nwait = \"0s\"\nselect = {select}\n",
        sim.base_url(),
        sim.token_url(),
        opts.client_id,
        cs.display(),
        opts.username,
        pw.display(),
        dir.display(),
        dir.display(),
    );
    secret("config.toml", &text)
}

fn run(config: &Path, force: bool) {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["-c", &config.display().to_string(), "--run-now"]);
    if force {
        cmd.arg("--force");
    }
    let out = cmd
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The key the sink holds now: (access key, secret, s3 url, region code).
fn read_key(sink: &Path) -> (String, SecretString, String, &'static str) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sink).unwrap()).unwrap();
    let c = &json["object_storage_credentials"][0];
    let text = |k: &str| c[k].as_str().unwrap().to_owned();
    (
        text("access_key"),
        SecretString::from(text("secret_key")),
        text("s3_url"),
        contabo_rotator::sinks::formats::region_code(&text("region")),
    )
}

/// The application: a signed ListBuckets every 25 ms with the key read
/// last, the sink re-read every `reread`. Returns (sent, refused).
fn application(
    sink: PathBuf,
    reread: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    let (sent, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    tokio::spawn(async move {
        let http = contabo_rotator::net::client_builder().build().unwrap();
        let mut key = read_key(&sink);
        let mut read_at = tokio::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if read_at.elapsed() >= reread {
                key = read_key(&sink);
                read_at = tokio::time::Instant::now();
            }
            let url = format!("{}/", key.2);
            let headers = contabo_rotator::rotation::signed_headers(
                "GET",
                &url,
                &[],
                &[],
                key.3,
                (&key.0, &key.1),
                std::time::SystemTime::now(),
            )
            .unwrap();
            let mut request = http.get(&url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            sent.fetch_add(1, Ordering::SeqCst);
            if !ok {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (sent.load(Ordering::SeqCst), refused.load(Ordering::SeqCst))
    })
}

/// One scenario: a first run, then `rounds` forced runs, each followed by
/// the grace period; then one run more (the twins' last retirement).
async fn scenario(twins: bool, rounds: usize, reread: Duration) -> (usize, usize) {
    let opts = options();
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (extra, select) = if twins {
        (
            format!(
                "\n[[object_storage.twins]]\nname = \"app\"\nusers = [\"{A}\", \"{B}\"]\nretire_after = \"{}s\"",
                RETIRE_AFTER.as_secs()
            ),
            "{ twins = [\"app\"] }".to_owned(),
        )
    } else {
        (String::new(), format!("{{ users = [\"{A}\"] }}"))
    };
    let config = config(dir.path(), &sim, &opts, &extra, &select);
    let blocking =
        |config: PathBuf, force: bool| tokio::task::spawn_blocking(move || run(&config, force));
    blocking(config.clone(), false).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let app = application(dir.path().join("app.json"), reread, stop.clone());
    for _ in 0..rounds {
        blocking(config.clone(), true).await.unwrap();
        tokio::time::sleep(RETIRE_AFTER + Duration::from_millis(500)).await;
    }
    blocking(config.clone(), false).await.unwrap();
    tokio::time::sleep(reread + Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    app.await.unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut rounds = 3;
    let mut reread_ms = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok()).expect("a number");
        match arg.as_str() {
            "--rounds" => rounds = value(),
            "--reread-ms" => reread_ms = value() as u64,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let reread = Duration::from_millis(reread_ms);
    println!("| scenario | forced rotations | requests | refused |");
    println!("| --- | --- | --- | --- |");
    for (name, twins) in [("in place", false), ("twins", true)] {
        let (sent, refused) = scenario(twins, rounds, reread).await;
        println!("| {name} | {rounds} | {sent} | {refused} |");
    }
}
