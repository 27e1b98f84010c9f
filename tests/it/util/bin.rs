//! Running the real binary against the simulator: the configuration a
//! test writes, the binary's runs and what they print.

use contabo_simulator::{Simulator, SimulatorOptions};
use secrecy::{ExposeSecret, SecretString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A temporary directory with secret files and a config pointing at `sim`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub fn options(users: usize) -> SimulatorOptions {
    SimulatorOptions {
        client_secret: SecretString::from("sim-client-secret-4b1d"),
        password: SecretString::from("sim-api-password-77"),
        users,
        ..SimulatorOptions::default()
    }
}

pub fn write_config(sim: &Simulator, opts: &SimulatorOptions, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_secret(
        &root.join("client-secret"),
        opts.client_secret.expose_secret(),
    );
    write_secret(&root.join("api-password"), opts.password.expose_secret());
    let text = format!(
        r#"[api]
base_url = "{}"
token_url = "{}"
client_id = "{}"
client_secret = {{ file = "{root}/client-secret" }}
username = "{}"
password = {{ file = "{root}/api-password" }}
timeout = "10s"
concurrency = 8
requests_per_second = 1000
max_retries = 10

[state]
dir = "{root}/state"
{extra}
"#,
        sim.base_url(),
        sim.token_url(),
        opts.client_id,
        opts.username,
        root = root.display(),
        extra = extra.replace("{root}", &root.display().to_string()),
    );
    let config = root.join("config.toml");
    write_secret(&config, &text);
    Setup { dir, config }
}

/// Replaces lines of `setup`'s config (each must be there).
pub fn edit_config(setup: &Setup, replace: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(&setup.config).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    write_secret(&setup.config, &text);
}

pub fn write_secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs the binary off the async runtime so the in-process simulator keeps serving.
pub async fn run_bin(args: Vec<String>) -> Output {
    run_bin_env(args, Vec::new()).await
}

/// Like [`run_bin`], with extra environment variables for the child.
pub async fn run_bin_env(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("contabo-rotator")
            .unwrap()
            .args(&args)
            .envs(env)
            .env_remove("RUST_LOG")
            .env_remove("CONTABO_ROTATOR_CONFIG")
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub fn args(config: &Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["-c".to_string(), config.display().to_string()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

/// A run's stdout and stderr, joined, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every secret the simulator ever issued, checked against a text.
pub fn assert_no_secret(sim: &Simulator, text: &str) {
    for secret in sim.issued_secrets() {
        let s = secret.expose_secret();
        assert!(!s.is_empty());
        assert!(!text.contains(s), "a secret leaked into the output");
    }
}

/// Runs `cmd` with `stdin` as its input.
pub fn output_with_stdin(mut cmd: std::process::Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A free port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
