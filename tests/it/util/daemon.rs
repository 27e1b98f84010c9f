//! The real daemon as a child process with its output in a file: start
//! it, wait for a line of its log, stop it with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Setup;

/// Starts the daemon with its log in `log`.
pub(crate) fn start_daemon(setup: &Setup, log: &Path, env: &[(&str, &str)]) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `log` contains `line`, or the daemon exits, or 30 s pass.
pub(crate) async fn wait_for_log(daemon: &mut Child, log: &Path, line: &str) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(line) {
            return text;
        }
        if daemon.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(30) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn terminate(mut daemon: Child, log: &Path) {
    let sent = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A daemon process with its output in files.
pub(crate) struct Daemon {
    pub(crate) child: std::process::Child,
    pub(crate) log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(config: &Path, dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
            .args(["-c", &config.display().to_string()])
            .env_remove("RUST_LOG")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < limit,
                "daemon did not exit:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://ADDRESS` of the metrics endpoint, from the start-up line
    /// naming the address bound (configured as port 0), once it is logged.
    pub(crate) async fn metrics_base(&self) -> String {
        metrics_base_in(&self.log).await
    }
}

/// The metrics address a daemon logging to `log` bound (see
/// [`Daemon::metrics_base`]).
pub(crate) async fn metrics_base_in(log: &Path) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let bound = text
            .lines()
            .filter(|l| l.contains("Serving /metrics"))
            .find_map(|l| l.split_once("listen=").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(address) = bound {
            return format!("http://{address}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon never served metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
