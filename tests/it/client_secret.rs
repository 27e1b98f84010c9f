//! The client-secret state machine (docs/design.md §4) under faults, with the
//! real binary. Order is read from the simulator's request log: what the
//! run sent after each answer, and how many PUTs it took.

use crate::util::output_text as text;
use crate::util::{args, edit_config, options, run_bin, run_bin_env, write_config, Setup};
use crate::util::{start_daemon, terminate, wait_for_log};
use contabo_simulator::{Fault, FaultRule, Operation, RecordedRequest, Simulator};
use secrecy::ExposeSecret;
use std::time::Duration;

const CLIENT_SINK: &str = r#"
[client_secret]
rotate = true

[object_storage]
rotate = false

[schedule]
cron = "0 30 3 * * *"

[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#;

/// A config with `[api]` lines replaced.
fn configure(sim: &Simulator, replace: &[(&str, &str)]) -> Setup {
    let setup = write_config(sim, &options(1), CLIENT_SINK);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    edit_config(&setup, replace);
    setup
}

/// The client-secret calls and logins of a run, in order.
fn secret_calls(sim: &Simulator) -> Vec<RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| {
            matches!(
                r.operation,
                Operation::Token | Operation::GenerateClientSecret | Operation::RetrieveUserClient
            )
        })
        .collect()
}

fn count(sim: &Simulator, op: Operation) -> usize {
    sim.requests().iter().filter(|r| r.operation == op).count()
}

/// The sink holds the API's client secret, and a further run logs in with
/// the stored one and changes nothing.
async fn assert_converged(sim: &Simulator, setup: &Setup, what: &str) {
    let sink = std::fs::read_to_string(setup.dir.path().join("out/contabo.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&sink).unwrap();
    assert_eq!(
        json["client"]["client_secret"],
        sim.snapshot().client_secret.expose_secret(),
        "{what}: the sink holds the API's client secret"
    );
    let puts = count(sim, Operation::GenerateClientSecret);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: not locked out: {}",
        text(&out)
    );
    assert_eq!(
        count(sim, Operation::GenerateClientSecret),
        puts,
        "{what}: converged"
    );
    let store = std::fs::read_to_string(setup.dir.path().join("state/client-secret.json")).unwrap();
    assert!(
        !store.contains("recovery_token"),
        "{what}: the recovery token is removed once the rotation is settled"
    );
}

/// A 500 or a 503 is an answer: the secret is read back at once (with a
/// 10-minute request timeout, waiting one would outlast the test), and
/// the PUT is repeated only after the read-back showed the old secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_error_on_the_put_is_read_back_at_once_then_put_again() {
    for fault in [Fault::InternalServerError, Fault::ServiceUnavailable] {
        let sim = Simulator::start(options(1)).await.unwrap();
        let setup = configure(&sim, &[("timeout = \"10s\"", "timeout = \"10m\"")]);
        sim.set_faults(vec![FaultRule::always(fault.clone())
            .on(Operation::GenerateClientSecret)
            .times(1)]);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(out.status.code(), Some(0), "{fault:?}: {}", text(&out));
        let calls = secret_calls(&sim);
        let first_put = calls
            .iter()
            .position(|r| r.operation == Operation::GenerateClientSecret)
            .unwrap();
        // A fresh login right before the PUT: its token is the one saved.
        assert_eq!(calls[first_put - 1].operation, Operation::Token);
        // (Logins after it renew the window, which a 10-minute request
        // timeout makes short.)
        let ops: Vec<(Operation, u16)> = calls[first_put..]
            .iter()
            .filter(|r| r.operation != Operation::Token)
            .take(3)
            .map(|r| (r.operation, r.status))
            .collect();
        let first_status = calls[first_put].status;
        assert!(first_status >= 500, "{fault:?}");
        assert_eq!(
            ops,
            vec![
                (Operation::GenerateClientSecret, first_status),
                (Operation::RetrieveUserClient, 200),
                (Operation::GenerateClientSecret, 200),
            ],
            "{fault:?}"
        );
        // The read-back proved the old secret still works; with a 10-minute
        // request timeout the saved token's window (5 minutes) would close
        // during the next try, so it is renewed by a login (with the old
        // secret) between the read-back and the second PUT.
        let read_back = calls
            .iter()
            .position(|r| r.operation == Operation::RetrieveUserClient)
            .unwrap();
        let second_put = first_put
            + 1
            + calls[first_put + 1..]
                .iter()
                .position(|r| r.operation == Operation::GenerateClientSecret)
                .unwrap();
        assert!(
            calls[read_back..second_put]
                .iter()
                .any(|r| r.operation == Operation::Token && r.status == 200),
            "{fault:?}: the window is renewed before the second PUT"
        );
        assert_eq!(count(&sim, Operation::GenerateClientSecret), 2, "{fault:?}");
        assert_converged(&sim, &setup, &format!("{fault:?}")).await;
    }
}

/// A 504 whose request the server applies later: the read-back is polled
/// until the secret changes, and the PUT is never sent twice (a second
/// PUT would rotate the secret again and lose the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_timeout_is_polled_until_the_late_put_lands_and_never_put_twice() {
    let faults = [
        Fault::ApplyLater(Duration::from_millis(1200)),
        Fault::GatewayTimeoutAfterApply,
        Fault::DropAfterApply,
    ];
    for fault in faults {
        let sim = Simulator::start(options(1)).await.unwrap();
        let setup = configure(&sim, &[("timeout = \"10s\"", "timeout = \"5s\"")]);
        sim.set_faults(vec![FaultRule::always(fault.clone())
            .on(Operation::GenerateClientSecret)
            .times(1)]);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(out.status.code(), Some(0), "{fault:?}: {}", text(&out));
        assert_eq!(count(&sim, Operation::GenerateClientSecret), 1, "{fault:?}");
        if matches!(fault, Fault::ApplyLater(_)) {
            let calls = secret_calls(&sim);
            let put = calls
                .iter()
                .position(|r| r.operation == Operation::GenerateClientSecret)
                .unwrap();
            let reads = calls[put + 1..]
                .iter()
                .take_while(|r| r.operation == Operation::RetrieveUserClient)
                .count();
            assert!(
                reads >= 2,
                "polled until the late PUT landed: {reads} reads"
            );
        }
        assert_converged(&sim, &setup, &format!("{fault:?}")).await;
    }
}

/// Two PUTs, the first answered `first_status` (0: no answer), with the
/// read-back polled (at least twice) between them.
fn assert_polled_then_put_again(sim: &Simulator, first_status: u16) {
    let calls = secret_calls(sim);
    let puts: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, r)| r.operation == Operation::GenerateClientSecret)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        puts.len(),
        2,
        "PUT again once proven not applied: {calls:?}"
    );
    assert_eq!(calls[puts[0]].status, first_status);
    let reads = calls[puts[0] + 1..puts[1]]
        .iter()
        .filter(|r| r.operation == Operation::RetrieveUserClient)
        .count();
    assert!(reads >= 2, "polled, not read once: {reads} reads");
}

/// A 502 (a proxy that may or may not have passed the PUT on) is polled
/// like a 504: the read-back is repeated with backoff for one request
/// timeout; it keeps showing the old secret, which proves the PUT was not
/// applied, and only then is the PUT sent again. A PUT without an answer
/// within the timeout is polled the same way. (A PUT applied after a 504
/// or a dropped answer: `a_gateway_timeout_is_polled…`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_gateway_or_a_timeout_on_the_put_is_polled_before_a_second_put() {
    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, &[("timeout = \"10s\"", "timeout = \"2s\"")]);
    sim.set_faults(vec![FaultRule::always(Fault::BadGateway)
        .on(Operation::GenerateClientSecret)
        .times(1)]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "502: {}", text(&out));
    assert_polled_then_put_again(&sim, 502);
    assert_converged(&sim, &setup, "502").await;

    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, &[("timeout = \"10s\"", "timeout = \"1s\"")]);
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(1500),
    ))
    .on(Operation::GenerateClientSecret)
    .times(1)]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "timeout: {}", text(&out));
    // The client gave up on the first PUT (the simulator then dropped it
    // unapplied); the read-back was polled before the PUT was sent again,
    // and exactly one PUT was applied.
    assert_polled_then_put_again(&sim, 0);
    let applied = secret_calls(&sim)
        .iter()
        .filter(|r| r.applied_at.is_some())
        .count();
    assert_eq!(applied, 1, "one PUT applied");
    assert_converged(&sim, &setup, "a PUT that timed out").await;
}

/// A 2xx answer without a usable secret is not "not applied": the secret
/// is read back and adopted, with one PUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_answer_without_a_secret_is_read_back_not_settled() {
    let bodies = [
        r#"{"data":[],"_links":{"self":"/v1/users/client/secret"}}"#,
        r#"{"data":[{"tenantId":"DE","customerId":"10000001","secret":null}]}"#,
        r#"{"data":[{"tenantId":"DE","customerId":"10000001"}]}"#,
    ];
    for body in bodies {
        let sim = Simulator::start(options(1)).await.unwrap();
        let setup = configure(&sim, &[]);
        sim.set_faults(vec![FaultRule::always(Fault::AppliedWithBody(body))
            .on(Operation::GenerateClientSecret)
            .times(1)]);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(out.status.code(), Some(0), "{body}: {}", text(&out));
        assert_eq!(count(&sim, Operation::GenerateClientSecret), 1, "{body}");
        assert_converged(&sim, &setup, body).await;
    }
}

/// A 2xx answer without a secret for a PUT that was *not* applied: the
/// read-back shows the old secret, which still works, so nothing is lost;
/// the outcome stays unknown (the intent is kept, the run exits 1, no second
/// PUT), and the next run settles it and rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_answer_for_a_put_that_was_not_applied_is_never_settled_in_that_run() {
    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, &[]);
    let before = sim.snapshot().client_secret.expose_secret().to_owned();
    sim.set_faults(vec![FaultRule::always(Fault::NotAppliedWithBody(
        r#"{"data":[]}"#,
    ))
    .on(Operation::GenerateClientSecret)
    .times(1)]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        count(&sim, Operation::GenerateClientSecret),
        1,
        "no second PUT"
    );
    assert_eq!(sim.snapshot().client_secret.expose_secret(), before);
    // Read back after the answer, before anything else about the secret.
    let calls = secret_calls(&sim);
    let put = calls
        .iter()
        .position(|r| r.operation == Operation::GenerateClientSecret)
        .unwrap();
    assert_eq!(
        calls[put + 1].operation,
        Operation::RetrieveUserClient,
        "{calls:?}"
    );
    let status = run_bin(args(&setup.config, &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["pending_rotations"][0]["kind"], "client_secret",
        "the intent is kept: {status}"
    );
    // The secret in use still logs in.
    let check = run_bin(args(&setup.config, &["check", "--online"])).await;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    // The next run settles it and rotates.
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(sim.snapshot().client_secret.expose_secret(), before);
    assert_converged(&sim, &setup, "after the unknown PUT").await;
}

/// Killed between the PUT and storing its answer, and restarted as a daemon
/// after the token of the run's first login has expired: the token saved
/// before the PUT comes from a login right before it, so it is still
/// valid, and the daemon reads the new secret back before its first tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_the_put_is_recovered_after_the_runs_first_token_expired() {
    let mut opts = options(1);
    opts.access_token_ttl = Duration::from_secs(6);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = configure(&sim, &[]);
    // Three seconds between the run's first login and the PUT.
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_secs(3),
    ))
    .on(Operation::RetrieveObjectStorageList)
    .times(1)]);
    let killed = run_bin_env(
        args(&setup.config, &["--run-now"]),
        vec![(
            "CONTABO_ROTATOR_CRASH_AT".into(),
            "client-secret-after-put".into(),
        )],
    )
    .await;
    assert_eq!(killed.status.code(), None, "{}", text(&killed));
    let first_login = sim
        .requests()
        .into_iter()
        .find(|r| r.operation == Operation::Token)
        .unwrap()
        .received_at;
    // Past the first token's life (6 s), within the saved one's.
    let expired = first_login + Duration::from_millis(6500);
    tokio::time::sleep(expired.saturating_duration_since(std::time::Instant::now())).await;
    let log = setup.dir.path().join("daemon.log");
    let mut daemon = start_daemon(&setup, &log, &[]);
    let shown = wait_for_log(&mut daemon, &log, "Waiting for the next run.").await;
    assert!(shown.contains("Waiting for the next run."), "{shown}");
    assert!(
        shown.contains("Read back the client secret an interrupted rotation generated"),
        "{shown}"
    );
    terminate(daemon, &log).await;
    assert_converged(&sim, &setup, "after the kill").await;
}

/// A store that fails (a full disk, injected: the tests run as root, whom
/// a read-only directory does not stop) is retried; one that keeps failing
/// keeps the rotation pending: the run fails loudly, the sink still gets
/// the new secret (the old one is dead), and the next run reads the secret
/// back with the saved token, stores it and logs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_is_retried_and_else_kept_pending_for_the_next_run() {
    // Passage 1 is the recovery token's store; the new secret's five
    // attempts are passages 2 to 6.
    let fail = |range: &str| {
        vec![(
            "CONTABO_ROTATOR_FAIL_AT".to_owned(),
            format!("client-secret-store:{range}"),
        )]
    };
    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, &[]);
    let out = run_bin_env(args(&setup.config, &["--run-now"]), fail("2-5")).await;
    assert_eq!(out.status.code(), Some(0), "retried: {}", text(&out));
    assert_converged(&sim, &setup, "stored on the fifth attempt").await;

    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, &[]);
    let out = run_bin_env(args(&setup.config, &["--run-now"]), fail("2-6")).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("NOT stored") && shown.contains("stays pending"),
        "{shown}"
    );
    let journal = serde_json::to_string(&crate::util::journal_intents(
        &setup.dir.path().join("state"),
    ))
    .unwrap();
    assert!(
        journal.contains("client_secret"),
        "the intent stays: {journal}"
    );
    let sink = std::fs::read_to_string(setup.dir.path().join("out/contabo.json")).unwrap();
    assert!(
        sink.contains(sim.snapshot().client_secret.expose_secret()),
        "the sink holds the new secret although it is not stored yet"
    );
    let puts = count(&sim, Operation::GenerateClientSecret);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "recovered: {}", text(&out));
    assert_eq!(
        count(&sim, Operation::GenerateClientSecret),
        puts,
        "not rotated again"
    );
    assert_converged(&sim, &setup, "stored by the next run").await;
}

/// A daemon whose new client secret could not be stored keeps it in
/// memory, and a SIGHUP reload (whose configuration still names the old,
/// now dead, secret) keeps it too: every login after the reload succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_secret_that_could_not_be_stored() {
    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(
        &sim,
        &[("cron = \"0 30 3 * * *\"", "cron = \"*/2 * * * * *\"")],
    );
    let log = setup.dir.path().join("daemon.log");
    let before = sim.snapshot().client_secret.expose_secret().to_owned();
    // Every store of this process fails (passage 1 is the recovery token's).
    let mut daemon = start_daemon(
        &setup,
        &log,
        &[("CONTABO_ROTATOR_FAIL_AT", "client-secret-store:2-1000")],
    );
    let text = wait_for_log(&mut daemon, &log, "NOT stored").await;
    assert!(text.contains("NOT stored"), "{text}");
    wait_for_log(&mut daemon, &log, "Scheduled run finished").await;
    assert_ne!(
        sim.snapshot().client_secret.expose_secret(),
        before,
        "rotated"
    );

    let reloaded_at = sim.requests().len();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let text = wait_for_log(&mut daemon, &log, "Configuration reloaded.").await;
    assert!(text.contains("Configuration reloaded."), "{text}");
    // Two more runs after the reload.
    let runs = |t: &str| t.matches("Scheduled run finished").count();
    let after_reload = runs(&text);
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if runs(&text) >= after_reload + 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no runs after the reload: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tokens: Vec<u16> = sim.requests()[reloaded_at..]
        .iter()
        .filter(|r| r.operation == Operation::Token)
        .map(|r| r.status)
        .collect();
    assert!(!tokens.is_empty(), "the runs after the reload logged in");
    assert!(
        tokens.iter().all(|s| *s == 200),
        "every login after the reload succeeded: {tokens:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    terminate(daemon, &log).await;
}
