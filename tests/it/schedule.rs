//! The real daemon started inside a daylight-saving change, under a fake
//! wall clock (libfaketime, from `scripts/install-test-tools`): it runs at
//! the next real tick and not before, once. Order and ticks are read from
//! its log and the simulator's request log, never from the test's clock.

use crate::util::{options, write_config};
use contabo_simulator::{Operation, Simulator};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The preloadable libfaketime (the test fails without it).
fn libfaketime() -> PathBuf {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/faketime/lib/libfaketime.so.1");
    assert!(
        lib.exists(),
        "libfaketime is not installed at {}: run scripts/install-test-tools (scripts/test runs it)",
        lib.display()
    );
    lib
}

/// Started at 02:14:55 CET on 2026-10-25 (01:14:55 UTC), in the second
/// pass of Berlin's repeated hour, with `0 */15 * * * *`: the daemon
/// announces 02:15 CET (01:15 UTC) as its next run, runs once at it, then
/// waits for 01:30 UTC. (With croner 3 it computed a tick in the past and
/// started runs back to back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs libfaketime: scripts/test installs it"]
async fn a_daemon_started_inside_the_fall_back_hour_runs_once_at_the_next_real_tick() {
    let lib = libfaketime();
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        // The storage's clock is the real one, 40 days from the daemon's:
        // a SigV4 proof would be refused as skewed, so the API confirms.
        "[object_storage]\nverify = \"api\"\n\n\
         [schedule]\ncron = \"0 */15 * * * *\"\ntimezone = \"Europe/Berlin\"\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{root}/contabo.json\"\nformat = \"json\"\n",
    );
    let log = setup.dir.path().join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .env("TZ", "UTC")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "@2026-10-25 01:14:55")
        // The wall clock only: tokio's timers keep the real monotonic clock.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    while !text().contains("next_run=2026-10-25T01:30:00+00:00") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no run at 01:15 UTC followed by a wait for 01:30:\n{}",
            text()
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited ({status}):\n{}", text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = text();

    // What it announced, in order: 01:15 UTC first (not a tick in the
    // past), then, after exactly one run, 01:30 UTC.
    let announced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Waiting for the next run."))
        .filter_map(|l| l.split("next_run=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(
        announced,
        ["2026-10-25T01:15:00+00:00", "2026-10-25T01:30:00+00:00"],
        "{log}"
    );
    assert_eq!(log.matches("Scheduled run finished.").count(), 1, "{log}");
    let first_run = log.find("Scheduled run finished.").unwrap();
    let second_wait = log.find("next_run=2026-10-25T01:30:00+00:00").unwrap();
    assert!(first_run < second_wait, "{log}");
    assert!(log.contains("failed=0"), "{log}");
    // The simulator saw start-up recovery (it delivers the sink, which was
    // never written: one users list) and one pass (one users list, one
    // regenerate per credential).
    let requests = sim.requests();
    let count = |op: Operation| requests.iter().filter(|r| r.operation == op).count();
    assert_eq!(count(Operation::RetrieveUserList), 2, "{log}");
    assert_eq!(count(Operation::RegenerateObjectStorageCredentials), 3);
}
