//! The rotation engine end to end: the real binary against the simulator.

use crate::util::{api_keys, json_sink_keys, Daemon};
use crate::util::{args, assert_no_secret, options, run_bin, run_bin_env, write_config, Setup};
use contabo_simulator::{Fault, FaultRule, Operation, Simulator, SimulatorOptions};
use secrecy::ExposeSecret;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SINK_AND_CLIENT: &str = r#"
[client_secret]
rotate = true

[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#;

fn sink_path(setup: &Setup) -> PathBuf {
    setup.dir.path().join("out/contabo.json")
}

fn setup_with_sink(sim: &Simulator, opts: &SimulatorOptions, extra: &str) -> Setup {
    let setup = write_config(sim, opts, extra);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    setup
}

fn mutating(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.operation.is_mutating())
        .count()
}

/// The json sink holds exactly what the simulator holds now.
fn assert_sink_matches_api(path: &Path, sim: &Simulator, with_client: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let snapshot = sim.snapshot();
    let api = api_keys(sim);
    let sink = json_sink_keys(&json);
    assert_eq!(sink.len(), api.len(), "every credential is in the sink");
    assert!(sink == api, "sink values differ from the API's");
    if with_client {
        assert_eq!(
            json["client"]["client_secret"],
            snapshot.client_secret.expose_secret()
        );
        assert_eq!(json["client"]["client_id"], snapshot.client_id);
    }
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_rotates_everything_then_converges_and_logs_in_with_the_stored_secret() {
    let opts = SimulatorOptions {
        users: 4,
        ..options(4)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let before = sim.snapshot();
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);

    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let regenerations = sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials && r.status == 200)
        .count();
    assert_eq!(regenerations, 12, "every credential rotated once");
    let after = sim.snapshot();
    assert_ne!(
        after.client_secret.expose_secret(),
        before.client_secret.expose_secret(),
        "client secret rotated"
    );
    assert_sink_matches_api(&sink_path(&setup), &sim, true);
    assert!(
        stdout(&out).contains("12 rotated") || stdout(&out).contains("13 rotated"),
        "{}",
        stdout(&out)
    );

    // The second run: nothing due, no mutating call, and the login works
    // although the config still holds the old client secret.
    let mutations = mutating(&sim);
    let sink_mtime = std::fs::metadata(sink_path(&setup))
        .unwrap()
        .modified()
        .unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        mutating(&sim),
        mutations,
        "no mutating call on the second run"
    );
    assert!(!stderr(&out).contains("Login refused"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(sink_path(&setup))
            .unwrap()
            .modified()
            .unwrap(),
        sink_mtime,
        "unchanged sink not rewritten"
    );

    // State: the secret store is 0600; no other state file holds a secret.
    let state = setup.dir.path().join("state");
    let store = state.join("client-secret.json");
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_no_secret(&sim, &crate::util::state_db_text(&state));
    let text = std::fs::read_to_string(state.join("audit.log")).unwrap();
    assert_no_secret(&sim, &text);
    let audit = std::fs::read_to_string(state.join("audit.log")).unwrap();
    assert!(audit
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    assert!(audit.contains("\"rotation\""), "{audit}");

    // status and list tell the story without secrets.
    let status = run_bin(args(&setup.config, &["status", "--json"])).await;
    assert!(status.status.success(), "{}", stderr(&status));
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(value["client_secret"]["rotated_at"].is_string());
    assert_eq!(value["credentials"].as_array().unwrap().len(), 12);
    assert!(value["next_run"].is_string());
    let list = run_bin(args(&setup.config, &["list", "--json"])).await;
    let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(listing["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["last_rotated"].is_string() && c["due"] == false));
    for text in [stdout(&out), stderr(&out), stdout(&status), stdout(&list)] {
        assert_no_secret(&sim, &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_force_changes_nothing_and_prints_the_plan() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);
    let out = run_bin(args(&setup.config, &["--run-now", "--dry-run", "--force"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(mutating(&sim), 0, "no PATCH or PUT");
    assert!(!sink_path(&setup).exists(), "sink untouched");
    let plan = stdout(&out);
    assert!(
        plan.contains("Dry run: 10 of 10 secrets would rotate"),
        "{plan}"
    );
    assert!(plan.contains("forced (--force)"), "{plan}");
    assert_no_secret(&sim, &plan);
    assert_no_secret(&sim, &stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_client_secret_answer_is_recovered_through_get() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_faults(vec![
        FaultRule::always(Fault::DropAfterApply).on(Operation::GenerateClientSecret)
    ]);
    let setup = setup_with_sink(
        &sim,
        &opts,
        &format!("{SINK_AND_CLIENT}\n[object_storage]\nrotate = false\n"),
    );
    // Fewer retries so the dropped answers exhaust them quickly.
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_retries = 10", "max_retries = 1")
        .replace("timeout = \"10s\"", "timeout = \"1s\"");
    crate::util::write_secret(&setup.config, &text);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.operation == Operation::RetrieveUserClient));
    assert_sink_matches_api(&sink_path(&setup), &sim, true);
    sim.set_faults(Vec::new());
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "not locked out: {}",
        stderr(&out)
    );
}

/// Kills the binary at a crash point, reruns it, and checks convergence.
async fn crash_and_recover(point: &str) {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);
    let out = run_bin_env(
        args(&setup.config, &["--run-now"]),
        vec![("CONTABO_ROTATOR_CRASH_AT".into(), point.into())],
    )
    .await;
    assert_eq!(
        out.status.code(),
        None,
        "{point}: killed by a signal: {}",
        stderr(&out)
    );
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{point}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_sink_matches_api(&sink_path(&setup), &sim, true);
    let mutations = mutating(&sim);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{point}: third run: {}",
        stderr(&out)
    );
    assert_eq!(mutating(&sim), mutations, "{point}: nothing left to rotate");
    assert_sink_matches_api(&sink_path(&setup), &sim, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_s3_regenerate_then_rerun_converges() {
    crash_and_recover("s3-after-regenerate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_s3_confirm_then_rerun_converges() {
    crash_and_recover("s3-after-confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_s3_record_then_rerun_converges() {
    crash_and_recover("s3-after-record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_client_secret_store_then_rerun_logs_in_and_converges() {
    crash_and_recover("client-secret-after-store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_client_secret_confirm_then_rerun_converges() {
    crash_and_recover("client-secret-after-confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_delivery_then_rerun_converges() {
    crash_and_recover("before-delivery").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_is_refused_without_rotating_anything() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let db = setup.dir.path().join("state/state.db");
    let bytes = std::fs::read(&db).unwrap();
    let garbage = b"credentials=AKIA hunter2\n".repeat(200);
    for broken in [&bytes[..bytes.len() / 2], &[][..], &garbage[..]] {
        std::fs::write(&db, broken).unwrap();
        let before = mutating(&sim);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(out.status.code(), Some(1));
        let err = stdout(&out) + &stderr(&out);
        assert!(err.contains("state.db"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(mutating(&sim), before, "no re-rotation on corrupt state");
    }
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_rotates_on_a_two_second_cron_and_exits_cleanly_on_sigterm_mid_run() {
    let opts = options(6);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    // Slow regenerations so that SIGTERM lands in the middle of a run.
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(300),
    ))
    .on(Operation::RegenerateObjectStorageCredentials)]);
    let setup = setup_with_sink(
        &sim,
        &opts,
        &format!("{SINK_AND_CLIENT}\n[schedule]\ncron = \"*/2 * * * * *\"\n"),
    );
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("concurrency = 8", "concurrency = 1");
    crate::util::write_secret(&setup.config, &text);
    let mut daemon = Daemon::start(&setup.config, setup.dir.path());

    // A second instance on the same state directory is refused.
    let regenerating = |sim: &Simulator| {
        sim.requests()
            .iter()
            .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
            .count()
    };
    wait_for(Duration::from_secs(30), "the first regenerate", || {
        regenerating(&sim) >= 1
    })
    .await;
    let second = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("in use"), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&daemon.child.id().to_string()),
        "names the holder: {}",
        stderr(&second)
    );

    daemon.signal("TERM");
    let code = tokio::task::spawn_blocking(move || {
        let code = daemon.wait(Duration::from_secs(60));
        (code, daemon)
    })
    .await
    .unwrap();
    let (code, daemon) = code;
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    let total = 6 * 3;
    let rotated = regenerating(&sim);
    assert!(
        rotated < total,
        "SIGTERM stopped the run early ({rotated} of {total})"
    );
    // The credentials in hand were recorded and delivered: the sink equals the API.
    assert_sink_matches_api(&sink_path(&setup), &sim, false);
    assert_no_secret(&sim, &daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_again_on_the_next_tick_and_reloads_on_sighup() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(
        &sim,
        &opts,
        &format!("{SINK_AND_CLIENT}\n[schedule]\ncron = \"*/2 * * * * *\"\n"),
    );
    let mut daemon = Daemon::start(&setup.config, setup.dir.path());
    let sink = sink_path(&setup);
    wait_for(Duration::from_secs(30), "the first delivery", || {
        sink.exists()
    })
    .await;
    let runs = |d: &Daemon| d.log_text().matches("Scheduled run finished").count();
    wait_for(Duration::from_secs(30), "a second run", || {
        runs(&daemon) >= 2
    })
    .await;

    // An invalid config on SIGHUP is refused and the daemon keeps running.
    let good = std::fs::read_to_string(&setup.config).unwrap();
    crate::util::write_secret(&setup.config, &format!("{good}\nbogus_key = 1\n"));
    daemon.signal("HUP");
    wait_for(Duration::from_secs(30), "the reload error", || {
        daemon.log_text().contains("Reload failed")
    })
    .await;
    let before = runs(&daemon);
    wait_for(
        Duration::from_secs(30),
        "a run after the failed reload",
        || runs(&daemon) > before,
    )
    .await;
    crate::util::write_secret(&setup.config, &good);
    daemon.signal("HUP");
    wait_for(Duration::from_secs(30), "the reload", || {
        daemon.log_text().contains("Configuration reloaded")
    })
    .await;

    daemon.signal("TERM");
    let (code, daemon) =
        tokio::task::spawn_blocking(move || (daemon.wait(Duration::from_secs(60)), daemon))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    assert_sink_matches_api(&sink, &sim, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_credential_does_not_stop_the_others_and_is_reported() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_faults(vec![FaultRule::always(Fault::InternalServerError)
        .on(Operation::RegenerateObjectStorageCredentials)
        .times(1)]);
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_retries = 10", "max_retries = 0");
    crate::util::write_secret(&setup.config, &text);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(
        report.matches("FAILED object_storage").count(),
        1,
        "{report}"
    );
    assert!(
        report.contains("6 rotated, 5 verified, 1 failed"),
        "5 credentials and the client secret: {report}"
    );
    // The sink still carries every credential's current value.
    assert_sink_matches_api(&sink_path(&setup), &sim, true);
    // The next run picks up the one that failed.
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1 rotated, 1 verified, 0 failed"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_tells_systemd_it_is_ready_and_when_it_runs_next() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(&sim, &opts, "[schedule]\ncron = \"0 0 4 1 1 *\"\n");
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = setup.dir.path().join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, log };
    let mut messages = String::new();
    let mut buf = [0u8; 4096];
    while !(messages.contains("READY=1") && messages.contains("STATUS=Next run at")) {
        let n = socket.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification ({e}); got {messages:?}\n{}",
                daemon.log_text()
            )
        });
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
        messages.push('\n');
    }
    assert!(
        sim.requests().is_empty(),
        "ready before any run: the first run is on 1 January"
    );
    daemon.signal("TERM");
    let (code, daemon) =
        tokio::task::spawn_blocking(move || (daemon.wait(Duration::from_secs(30)), daemon))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_health_and_readiness_that_change_after_a_run() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(
        &sim,
        &opts,
        &format!("{SINK_AND_CLIENT}\n[schedule]\ncron = \"*/2 * * * * *\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    );
    let mut daemon = Daemon::start(&setup.config, setup.dir.path());
    let base = daemon.metrics_base().await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            match http.get(url).send().await {
                Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
                Err(_) => None,
            }
        }
    };
    let started = Instant::now();
    let first = loop {
        if let Some(answer) = get("/metrics").await {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "metrics never served:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.0, 200);
    assert_eq!(get("/healthz").await.unwrap().0, 200);
    assert_eq!(get("/readyz").await.unwrap().0, 200);
    let runs = |d: &Daemon| d.log_text().matches("Scheduled run finished").count();
    wait_for(Duration::from_secs(30), "a run", || runs(&daemon) >= 1).await;
    let (status, after) = get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        after.contains(
            "contabo_rotator_rotations_total{kind=\"object_storage\",result=\"success\"} 6"
        ),
        "{after}"
    );
    assert!(after.contains("contabo_rotator_api_requests_total{operation=\"regenerateObjectStorageCredentials\",status=\"200\"}"), "{after}");
    assert!(
        after.contains("contabo_rotator_sink_deliveries_total"),
        "{after}"
    );
    assert!(
        after.contains("contabo_rotator_object_storage_credential_last_rotation_timestamp_seconds"),
        "{after}"
    );
    assert!(
        after.contains("contabo_rotator_next_run_timestamp_seconds"),
        "{after}"
    );
    assert!(
        after.contains("contabo_rotator_last_success_timestamp_seconds"),
        "{after}"
    );
    assert_ne!(first.1, after);
    assert_no_secret(&sim, &after);

    // A run with a failure (the sink's directory is gone) makes /readyz answer 503.
    std::fs::remove_dir_all(setup.dir.path().join("out")).unwrap();
    let before = runs(&daemon);
    wait_for(Duration::from_secs(60), "a failing run", || {
        runs(&daemon) > before
    })
    .await;
    assert_eq!(get("/readyz").await.unwrap().0, 503);
    daemon.signal("TERM");
    let (code, daemon) =
        tokio::task::spawn_blocking(move || (daemon.wait(Duration::from_secs(60)), daemon))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
}

/// Every non-empty line is a JSON value.
fn assert_all_json(what: &str, text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{what}: not JSON: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_printed_line_is_json() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup_with_sink(&sim, &opts, SINK_AND_CLIENT);
    let mut printed = 0;
    for command in [
        &["check"][..],
        &["check", "--online"],
        &["list"],
        &["-v", "--run-now", "--dry-run"],
        &["-vv", "--run-now"],
        &["status"],
    ] {
        let mut a = vec!["--log-format", "json"];
        a.extend_from_slice(command);
        let out = run_bin(args(&setup.config, &a)).await;
        assert!(out.status.success(), "{command:?}: {}", stderr(&out));
        assert_all_json(&format!("{command:?} stdout"), &stdout(&out));
        assert_all_json(&format!("{command:?} stderr"), &stderr(&out));
        assert_no_secret(&sim, &(stdout(&out) + &stderr(&out)));
        printed += stdout(&out).lines().count() + stderr(&out).lines().count();
    }
    assert!(
        printed > 20,
        "the commands printed something ({printed} lines)"
    );
    // Errors too: an invalid configuration and a failing run.
    crate::util::write_secret(&setup.config, "[api]\nclient_idd = 1\n");
    let out = run_bin(args(&setup.config, &["--log-format", "json", "--run-now"])).await;
    assert_eq!(out.status.code(), Some(78));
    assert!(!stderr(&out).is_empty());
    assert_all_json("config error", &stderr(&out));
}
