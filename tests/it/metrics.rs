//! Metrics that survive a restart, tell a rotation failure from a delivery
//! failure, and reach a host's node_exporter from a one-shot run.

use crate::util::Daemon;
use crate::util::{args, options, run_bin, write_config};
use contabo_simulator::Simulator;
use std::path::Path;
use std::time::Duration;

use crate::util::free_port;
use crate::util::output_text as shown;

/// `(status, content type, body)` of a GET, once the daemon answers.
async fn get(url: &str, daemon: &Daemon) -> (u16, String, String) {
    let started = std::time::Instant::now();
    loop {
        if let Ok(r) = reqwest::get(url).await {
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            return (status, kind, r.text().await.unwrap_or_default());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never answered:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name` (with its labels, if any) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn runs_json(dir: &Path) -> serde_json::Value {
    crate::util::runs_json(&dir.join("state"))
}

fn unix(value: &serde_json::Value) -> f64 {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .timestamp() as f64
}

/// A daemon restarted after a successful `--run-now` shows that success,
/// and every credential's rotation times, before its own first run (its
/// schedule is a year away), served as OpenMetrics, with no access key in
/// any label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_shows_the_last_success_before_its_first_run() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[schedule]\ncron = \"0 0 4 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{root}/contabo.json\"\nformat = \"json\"\n",
    );
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let runs = runs_json(setup.dir.path());
    let success = unix(&runs["last_success_at"]);
    assert_eq!(runs["last_delivery_success_at"], runs["last_success_at"]);
    let requests = sim.requests().len();

    let daemon = Daemon::start(&setup.config, setup.dir.path());
    let base = daemon.metrics_base().await;
    let (status, kind, body) = get(&format!("{base}/metrics"), &daemon).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(
        sample(&body, "contabo_rotator_last_success_timestamp_seconds"),
        Some(success),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "contabo_rotator_last_delivery_success_timestamp_seconds"
        ),
        Some(success)
    );
    assert_eq!(
        sample(&body, "contabo_rotator_last_run_timestamp_seconds"),
        Some(unix(&runs["last_run_at"]))
    );
    // Per credential: last and next rotation, labelled by id, user and
    // storage; next = last + max_age (7 days).
    let snapshot = sim.snapshot();
    for user in &snapshot.users {
        for c in &user.credentials {
            let labels = format!(
                "{{credential_id=\"{}\",user=\"{}\",object_storage=\"{}\"}}",
                c.credential_id, user.email, c.object_storage_id
            );
            let last = sample(
                &body,
                &format!("contabo_rotator_object_storage_credential_last_rotation_timestamp_seconds{labels}"),
            )
            .unwrap_or_else(|| panic!("no last rotation for {labels}:\n{body}"));
            let next = sample(
                &body,
                &format!("contabo_rotator_object_storage_credential_next_rotation_timestamp_seconds{labels}"),
            )
            .unwrap();
            assert_eq!(next - last, 7.0 * 86400.0);
            assert!(
                !body.contains(&c.access_key),
                "an access key in the metrics"
            );
        }
    }
    assert!(!body.contains("access_key"), "{body}");
    assert!(
        body.contains("contabo_rotator_build_info{version=\""),
        "{body}"
    );
    assert_eq!(sample(&body, "contabo_rotator_pending_intents"), Some(0.0));
    assert_eq!(
        sample(&body, "contabo_rotator_webhook_outbox_events"),
        Some(0.0)
    );
    let (status, _, text) = get(&format!("{base}/readyz"), &daemon).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    assert_eq!(sim.requests().len(), requests, "no run yet");
    crate::util::assert_no_secret(&sim, &body);
}

/// A webhook that is down fails the run (exit 1) but not its rotations:
/// `last_success` moves, `last_delivery_success` does not, and `/readyz`
/// stays 200 and says why. A file sink that fails makes it 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_outage_is_not_a_rotation_outage() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let closed = free_port();
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            "[schedule]\ncron = \"0 0 4 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/contabo.json\"\nformat = \"json\"\n\n\
             [[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/hook\"\n\
             signing_secret = \"whsec_dGVzdC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\ntimeout = \"1s\"\n"
        ),
    );
    crate::util::edit_config(&setup, &[("max_retries = 10", "max_retries = 0")]);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let runs = runs_json(setup.dir.path());
    assert!(runs["last_success_at"].is_string(), "{runs}");
    assert!(runs["last_delivery_success_at"].is_null(), "{runs}");
    assert_eq!(runs["last_failures"]["webhooks"], 1, "{runs}");
    assert_eq!(runs["last_failures"]["rotation"], 0, "{runs}");

    let mut daemon = Daemon::start(&setup.config, setup.dir.path());
    let base = daemon.metrics_base().await;
    let (_, _, body) = get(&format!("{base}/metrics"), &daemon).await;
    assert_eq!(
        sample(&body, "contabo_rotator_last_success_timestamp_seconds"),
        Some(unix(&runs["last_success_at"]))
    );
    assert_eq!(
        sample(
            &body,
            "contabo_rotator_last_delivery_success_timestamp_seconds"
        ),
        Some(0.0)
    );
    // The rotation events wait in the outbox (the daemon's start-up resend
    // could not deliver them either).
    assert!(
        sample(&body, "contabo_rotator_webhook_outbox_events").unwrap() >= 3.0,
        "{body}"
    );
    let (status, _, text) = get(&format!("{base}/readyz"), &daemon).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("webhook"), "{text}");
    daemon.signal("TERM");
    let code = tokio::task::spawn_blocking(move || daemon.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    // A file sink that cannot be written: 503. (Its credentials are held
    // back too, so the run also counts as a rotation failure.)
    std::fs::remove_dir_all(setup.dir.path().join("out")).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now", "--force"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let before = runs;
    let runs = runs_json(setup.dir.path());
    assert_eq!(
        runs["last_success_at"], before["last_success_at"],
        "not moved"
    );
    assert_ne!(runs["last_run_at"], before["last_run_at"]);
    assert_eq!(runs["last_failures"]["file_sinks"], 1, "{runs}");
    let daemon = Daemon::start(&setup.config, setup.dir.path());
    let base = daemon.metrics_base().await;
    let (status, _, text) = get(&format!("{base}/readyz"), &daemon).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.starts_with("the last run failed to rotate"), "{text}");
    let (_, _, body) = get(&format!("{base}/metrics"), &daemon).await;
    assert_eq!(
        sample(&body, "contabo_rotator_last_success_timestamp_seconds"),
        Some(unix(&runs["last_success_at"]))
    );
}

/// `--run-now --metrics-file` writes the run's series atomically, and
/// node_exporter's textfile collector (the real one, from Debian) serves
/// them without a parse error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node_exporter: scripts/test installs it"]
async fn a_one_shot_run_writes_a_textfile_that_node_exporter_serves() {
    let exporter = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/node-exporter/usr/bin/prometheus-node-exporter");
    assert!(
        exporter.exists(),
        "node_exporter is not installed at {}: run scripts/install-test-tools",
        exporter.display()
    );
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[[sinks]]\ntype = \"file\"\npath = \"{root}/contabo.json\"\nformat = \"json\"\n",
    );
    let textfiles = setup.dir.path().join("textfiles");
    std::fs::create_dir_all(&textfiles).unwrap();
    let file = textfiles.join("contabo-rotator.prom");
    let out = run_bin(args(
        &setup.config,
        &["--run-now", "--metrics-file", &file.display().to_string()],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<String> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["contabo-rotator.prom"], "no temp file left");
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE contabo_rotator_runs_total counter"),
        "{text}"
    );
    crate::util::assert_no_secret(&sim, &text);

    let port = free_port();
    let mut child = std::process::Command::new(&exporter)
        .args([
            "--collector.disable-defaults",
            "--collector.textfile",
            &format!("--collector.textfile.directory={}", textfiles.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let started = std::time::Instant::now();
    let scraped = loop {
        if let Ok(r) = reqwest::get(&url).await {
            break r.text().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node_exporter never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        sample(&scraped, "node_textfile_scrape_error"),
        Some(0.0),
        "{scraped}"
    );
    assert_eq!(
        sample(
            &scraped,
            "contabo_rotator_rotations_total{kind=\"object_storage\",result=\"success\"}"
        ),
        Some(6.0),
        "{scraped}"
    );
    for series in [
        "contabo_rotator_last_success_timestamp_seconds ",
        "contabo_rotator_api_request_duration_seconds_bucket{",
        "contabo_rotator_api_requests_total{",
        "contabo_rotator_object_storage_credential_next_rotation_timestamp_seconds{",
        "contabo_rotator_last_run_duration_seconds ",
    ] {
        assert!(scraped.contains(series), "{series} in {scraped}");
    }
}
