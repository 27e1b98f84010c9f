//! The webhook sink end to end: the real binary against the simulator, POSTing
//! to a receiver on 127.0.0.1 that captures every request. Signatures are
//! checked with the reference Python implementation of Standard Webhooks
//! (`standardwebhooks` from PyPI, installed by `scripts/install-test-tools`),
//! not only with our own signer.

use crate::util::output_text as text;
use crate::util::{
    args, assert_no_secret, options, run_bin, run_bin_env, write_config, write_secret, Setup,
};
use crate::util::{free_port, Captured, Receiver, Reply};
use base64::Engine;
use contabo_simulator::{Operation, Simulator, SimulatorOptions};
use secrecy::ExposeSecret;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Two Standard Webhooks keys, and one that signs nothing.
fn key(seed: &str) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("test-signing-key-{seed}-0123456789"))
    )
}

/// The result of `tests/webhook/verify.py` for each message under `secret`.
fn verify_with_python(secret: &str, posts: &[Captured]) -> Vec<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python: PathBuf = root.join("tests/webhook/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-tools (scripts/test does) to install \
         the reference Standard Webhooks implementation",
        python.display()
    );
    let input = serde_json::json!({
        "secret": secret,
        "messages": posts.iter().map(|p| serde_json::json!({
            "headers": p.headers,
            "body": p.body,
        })).collect::<Vec<_>>(),
    });
    let mut verify = Command::new(python);
    verify.arg(root.join("tests/webhook/verify.py"));
    let out = crate::util::output_with_stdin(verify, &input.to_string());
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("verify.py failed: {}", String::from_utf8_lossy(&out.stderr)))
}

fn assert_all_verify(secret: &str, posts: &[Captured]) {
    let results = verify_with_python(secret, posts);
    assert_eq!(results.len(), posts.len());
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
    }
}

/// A config with the client secret rotated and one webhook sink.
fn webhook_setup(sim: &Simulator, opts: &SimulatorOptions, url: &str, extra: &str) -> Setup {
    // These tests count the delivery of rotation events; the follow-up
    // `verified` events of `verify = "s3"` are tested in `verify`.
    let hook = format!(
        "[client_secret]\nrotate = true\n\n[object_storage]\nverify = \"api\"\n\n[[sinks]]\ntype = \"webhook\"\nurl = \"{url}\"\n\
         signing_secret = [\"{}\", \"{}\"]\ntimeout = \"2s\"\nheaders = {{ \"X-Env\" = \"test\" }}\n{extra}",
        key("one"),
        key("two"),
    );
    let setup = write_config(sim, opts, &hook);
    // A down webhook should not hold a test for a minute.
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_retries = 10", "max_retries = 1");
    write_secret(&setup.config, &text);
    setup
}

fn outbox(setup: &Setup) -> String {
    crate::util::outbox_json(&setup.dir.path().join("state")).to_string()
}

/// Ids of the events queued in the outbox, in order.
fn queued_ids(setup: &Setup) -> Vec<String> {
    let text = outbox(setup);
    if text.is_empty() {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["queues"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|q| q["events"].as_array().unwrap().clone())
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn body(post: &Captured) -> serde_json::Value {
    serde_json::from_str(&post.body).unwrap()
}

/// Every state file and the run's output: no secret the simulator issued.
fn assert_no_secret_anywhere(sim: &Simulator, setup: &Setup, outputs: &[&Output]) {
    for out in outputs {
        assert_no_secret(sim, &text(out));
    }
    let state = setup.dir.path().join("state");
    assert_no_secret(sim, &crate::util::state_db_text(&state));
    let audit = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
    assert_no_secret(sim, &audit);
}

/// A receiver slower than the pass holds the pass back instead of making
/// the process keep the account's events: while the receiver holds its
/// first request, the pass regenerates no more than the webhook worker's
/// batch and backlog (512 events each, one per credential here) and the
/// users in flight. Once it answers, every event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_holds_the_pass_back_not_its_events_in_memory() {
    // 1,200 credentials: more than the bound below, fewer than would make
    // a loaded machine time out.
    let opts = options(400);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    let held = receiver.hold().await;
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            "[object_storage]\nverify = \"off\"\n\n[[sinks]]\ntype = \"webhook\"\nurl = \"{}\"\n\
             signing_secret = \"{}\"\ntimeout = \"120s\"\n",
            receiver.url(),
            key("a")
        ),
    );
    crate::util::edit_config(&setup, &[("timeout = \"10s\"", "timeout = \"60s\"")]);
    let run = tokio::spawn(run_bin(args(&setup.config, &["--run-now"])));
    let regenerates = || {
        sim.requests()
            .iter()
            .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
            .count()
    };
    // Until the pass has stood still for 2 s (or 60 s went by).
    let mut last = (0, Instant::now());
    let started = Instant::now();
    while receiver.posts().is_empty() || last.1.elapsed() < Duration::from_secs(2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pass never stood still"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = regenerates();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let while_held = regenerates();
    assert_eq!(receiver.posts().len(), 1, "one request at a time");
    drop(held);
    let out = run.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let credentials: usize = sim
        .snapshot()
        .users
        .iter()
        .map(|u| u.credentials.len())
        .sum();
    assert_eq!(credentials, 1200);
    assert_eq!(regenerates(), credentials);
    // The batch being sent and the backlog: 512 + 3 and 512 events, plus
    // the users in flight when the backlog filled (12 at concurrency 8).
    assert!(
        while_held <= 515 + 512 + 12 * 3,
        "{while_held} credentials regenerated while the receiver held its first request"
    );
    let ids: HashSet<String> = receiver
        .posts()
        .iter()
        .map(|p| p.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), credentials, "every event delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference webhook verifier: scripts/test installs it"]
async fn one_thin_event_per_rotation_signed_with_both_keys() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let out = run_bin(args(&setup.config, &["-v", "--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let posts = receiver.posts();
    let types: Vec<String> = posts
        .iter()
        .map(|p| body(p)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "object_storage_credential.rotated")
            .count(),
        6,
        "{types:?}"
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "client_secret.rotated")
            .count(),
        1
    );
    assert_eq!(posts.len(), 7);
    let ids: HashSet<&str> = posts
        .iter()
        .map(|p| p.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 7, "one id per event");

    // Thin: identifiers and the new access key, never a secret.
    let snapshot = sim.snapshot();
    let access_keys: HashMap<i64, &str> = snapshot
        .users
        .iter()
        .flat_map(|u| u.credentials.iter())
        .map(|c| (c.credential_id, c.access_key.as_str()))
        .collect();
    for post in &posts {
        assert_no_secret(&sim, &post.body);
        assert_eq!(post.path, "/hooks/tok3n");
        assert_eq!(post.headers["content-type"], "application/json");
        assert_eq!(post.headers["x-env"], "test");
        assert_eq!(post.headers["webhook-signature"].split(' ').count(), 2);
        let value = body(post);
        let data = &value["data"];
        assert!(data.get("secret_key").is_none() && data.get("client_secret").is_none());
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(data["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"));
        assert!(data["rotation_id"].is_string());
        if value["type"] == "object_storage_credential.rotated" {
            let id = data["credential_id"].as_i64().unwrap();
            assert_eq!(data["access_key"], access_keys[&id]);
            for field in [
                "user_id",
                "user_email",
                "object_storage_id",
                "object_storage_name",
                "region",
            ] {
                assert!(data[field].is_string(), "{field}: {data}");
            }
        } else {
            assert_eq!(data["client_id"], snapshot.client_id);
        }
    }

    // The reference implementation accepts every signature under either key,
    // and refuses them under a key that did not sign.
    assert_all_verify(&key("one"), &posts);
    assert_all_verify(&key("two"), &posts);
    let wrong = verify_with_python(&key("three"), &posts);
    assert!(wrong.iter().all(|r| r["ok"] == false), "{wrong:?}");

    // Delivered: the queue is empty, and a second run sends nothing.
    assert!(queued_ids(&setup).is_empty(), "{}", outbox(&setup));
    let again = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(receiver.posts().len(), 7);
    assert_no_secret_anywhere(&sim, &setup, &[&out, &again]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference webhook verifier: scripts/test installs it"]
async fn include_secrets_on_loopback_sends_the_current_values() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "include_secrets = true\n");
    let out = run_bin(args(&setup.config, &["-v", "--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let snapshot = sim.snapshot();
    let current: HashMap<i64, (&str, &str)> = snapshot
        .users
        .iter()
        .flat_map(|u| u.credentials.iter())
        .map(|c| {
            (
                c.credential_id,
                (c.access_key.as_str(), c.secret_key.expose_secret()),
            )
        })
        .collect();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 4, "3 credentials and the client secret");
    for post in &posts {
        let value = body(post);
        let data = &value["data"];
        if value["type"] == "object_storage_credential.rotated" {
            let (access_key, secret_key) = current[&data["credential_id"].as_i64().unwrap()];
            assert_eq!(data["access_key"], access_key);
            assert_eq!(data["secret_key"], secret_key);
            assert!(data["s3_url"].as_str().unwrap().starts_with("http"));
        } else {
            assert_eq!(
                data["client_secret"],
                snapshot.client_secret.expose_secret()
            );
        }
    }
    assert_all_verify(&key("one"), &posts);
    assert_all_verify(&key("two"), &posts);
    // The secrets went to the receiver only: not to the logs or the state.
    assert_no_secret_anywhere(&sim, &setup, &[&out]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference webhook verifier: scripts/test installs it"]
async fn a_webhook_not_listening_fails_the_run_and_the_next_run_resends_the_same_ids() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/tok3n");
    let setup = webhook_setup(&sim, &opts, &url, "");
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        report.contains("FAILED sink webhook http://127.0.0.1"),
        "{report}"
    );
    assert!(report.contains("4 events not delivered"), "{report}");
    assert!(
        !text(&first).contains("tok3n"),
        "the URL path stays out of the output"
    );
    let queued = queued_ids(&setup);
    assert_eq!(queued.len(), 4, "{}", outbox(&setup));
    let status = run_bin(args(&setup.config, &["status", "--json"])).await;
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let sink = &value["sinks"][0];
    assert_eq!(sink["pending_events"], 4, "{value}");
    assert!(
        sink["last_error"]
            .as_str()
            .unwrap()
            .contains("connection failed"),
        "{sink}"
    );
    let content = crate::util::state_db_text(&setup.dir.path().join("state"));
    assert!(
        !content.contains("tok3n"),
        "the URL path stays out of the state"
    );
    assert!(!text(&status).contains("tok3n"));

    let receiver = Receiver::start_on(port, Reply::status(200)).await;
    let mutations = sim
        .requests()
        .iter()
        .filter(|r| r.operation.is_mutating())
        .count();
    let second = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let sent: Vec<String> = receiver
        .posts()
        .iter()
        .map(|p| p.headers["webhook-id"].clone())
        .collect();
    assert_eq!(sent, queued, "the same events, same ids, same order");
    assert!(queued_ids(&setup).is_empty());
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.operation.is_mutating())
            .count(),
        mutations,
        "nothing rotated again"
    );
    assert_all_verify(&key("one"), &receiver.posts());
    assert_no_secret_anywhere(&sim, &setup, &[&first, &second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference webhook verifier: scripts/test installs it"]
async fn a_webhook_answering_503_fails_the_run_and_the_next_run_resends_the_same_ids() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(503)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(text(&first).contains("HTTP 503"), "{}", text(&first));
    let queued = queued_ids(&setup);
    assert_eq!(queued.len(), 4);
    let tried = receiver.posts();
    assert_eq!(
        tried.len(),
        2,
        "the first event, retried once; the rest wait"
    );
    assert!(tried.iter().all(|p| p.headers["webhook-id"] == queued[0]));

    receiver.answer(Reply::status(200));
    let second = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let sent: Vec<String> = receiver.posts()[2..]
        .iter()
        .map(|p| p.headers["webhook-id"].clone())
        .collect();
    assert_eq!(sent, queued);
    assert!(queued_ids(&setup).is_empty());
    assert_all_verify(&key("two"), &receiver.posts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference webhook verifier: scripts/test installs it"]
async fn retry_after_on_429_is_honoured() {
    let opts = SimulatorOptions {
        credentials_per_user: 1,
        ..options(1)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    receiver.then(&[Reply {
        status: 429,
        retry_after: Some(2),
        echo: false,
        delay: None,
    }]);
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 3, "one retried event and one more");
    assert_eq!(
        posts[0].headers["webhook-id"],
        posts[1].headers["webhook-id"]
    );
    let waited = posts[1].at - posts[0].at;
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
    assert_all_verify(&key("one"), &posts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_drops_the_event() {
    let opts = SimulatorOptions {
        credentials_per_user: 1,
        ..options(1)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    receiver.then(&[Reply::status(410)]);
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("410 Gone"), "logged: {}", text(&out));
    assert_eq!(receiver.posts().len(), 2, "the 410 is not retried");
    assert!(queued_ids(&setup).is_empty());
    let audit = std::fs::read_to_string(setup.dir.path().join("state/audit.log")).unwrap();
    assert!(audit.contains("\"dropped\":true"), "{audit}");
    let again = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(
        receiver.posts().len(),
        2,
        "the dropped event is not re-sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_echoing_the_payload_leaks_no_secret() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let echo = |status| Reply {
        status,
        retry_after: None,
        echo: true,
        delay: None,
    };
    let receiver = Receiver::start(echo(400)).await;
    receiver.then(&[echo(500), echo(500)]);
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "include_secrets = true\n");
    let out = run_bin(args(
        &setup.config,
        &["-vv", "--log-format", "json", "--run-now"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 2, "one event, retried once; the rest wait");
    let data = &body(&posts[0])["data"];
    assert!(
        data.get("secret_key")
            .or(data.get("client_secret"))
            .is_some(),
        "a secret was sent, and echoed back"
    );
    let status = run_bin(args(&setup.config, &["status", "--json"])).await;
    assert_no_secret_anywhere(&sim, &setup, &[&out, &status]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_probes_the_webhook() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(405)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let out = run_bin(args(&setup.config, &["check", "--online"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("is reachable"), "{}", text(&out));
    let methods: Vec<String> = receiver
        .shared
        .captured
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.method.clone())
        .collect();
    assert_eq!(methods, ["HEAD"]);
    assert!(sim.requests().iter().all(|r| !r.operation.is_mutating()
        && r.operation != Operation::RegenerateObjectStorageCredentials));

    let down = webhook_setup(
        &sim,
        &opts,
        &format!("http://127.0.0.1:{}/hooks/tok3n", free_port()),
        "",
    );
    let out = run_bin(args(&down.config, &["check", "--online"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not reachable"), "{}", text(&out));
    assert!(!text(&out).contains("tok3n"), "{}", text(&out));
}

/// A header value read from a file (`{ file = ... }`, relative to the
/// configuration) goes with every request, the HEAD probe included, and
/// nowhere else: not in the output of `check` or of a run at trace level.
/// A file that cannot be read is a configuration error naming the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_read_from_a_file_reaches_the_receiver_only() {
    const TOKEN: &str = "Bearer hook-token-from-file-5c0ffee1";
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    crate::util::edit_config(
        &setup,
        &[(
            r#"headers = { "X-Env" = "test" }"#,
            r#"headers = { "X-Env" = "test", Authorization = { file = "hook-token" } }"#,
        )],
    );
    let token_file = setup.dir.path().join("hook-token");
    write_secret(&token_file, &format!("{TOKEN}\n"));

    let check = run_bin(args(&setup.config, &["-vv", "check", "--online"])).await;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = run_bin(args(&setup.config, &["-vv", "--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let captured = receiver.shared.captured.lock().unwrap().clone();
    let methods: HashSet<&str> = captured.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, HashSet::from(["HEAD", "POST"]));
    assert_eq!(
        captured.len(),
        1 + 4,
        "a probe, 3 credentials and the client secret"
    );
    for request in &captured {
        assert_eq!(
            request.headers["authorization"], TOKEN,
            "{}",
            request.method
        );
        assert_eq!(request.headers["x-env"], "test");
    }
    assert!(text(&out).contains("DEBUG"), "the run logs verbosely");
    for output in [&check, &out] {
        assert!(
            !text(output).contains("hook-token-from-file-5c0ffee1"),
            "the header's value leaked into the output"
        );
    }

    std::fs::remove_file(&token_file).unwrap();
    let out = run_bin(args(&setup.config, &["check"])).await;
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let want = format!(
        "sinks[0].headers.Authorization: cannot read secret file {}: {} does not exist",
        token_file.display(),
        token_file.display()
    );
    assert!(text(&out).contains(&want), "{}", text(&out));
}

/// The process dies at `point` in its first run; the next run announces
/// every rotation exactly once, with the values the API holds.
async fn crash_then_announce(point: &str) {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(200)).await;
    let setup = webhook_setup(&sim, &opts, &receiver.url(), "");
    let crashed = run_bin_env(
        args(&setup.config, &["--run-now"]),
        vec![("CONTABO_ROTATOR_CRASH_AT".into(), point.into())],
    )
    .await;
    assert_eq!(crashed.status.code(), None, "{point}: {}", text(&crashed));
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{point}: {}", text(&out));
    let again = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(again.status.code(), Some(0), "{point}: {}", text(&again));

    let posts = receiver.posts();
    let snapshot = sim.snapshot();
    let access_keys: HashMap<i64, &str> = snapshot
        .users
        .iter()
        .flat_map(|u| u.credentials.iter())
        .map(|c| (c.credential_id, c.access_key.as_str()))
        .collect();
    let mut announced = HashSet::new();
    let mut client_events = 0;
    // Delivery is at least once: an event POSTed just before the kill, whose
    // removal from the outbox was not saved, is sent again with its id.
    let mut seen = HashSet::new();
    for post in &posts {
        if !seen.insert(post.headers["webhook-id"].clone()) {
            continue;
        }
        let value = body(post);
        let data = &value["data"];
        match value["type"].as_str().unwrap() {
            "object_storage_credential.rotated" => {
                let id = data["credential_id"].as_i64().unwrap();
                assert!(
                    announced.insert(id),
                    "{point}: credential {id} announced twice"
                );
                assert_eq!(data["access_key"], access_keys[&id], "{point}");
            }
            "client_secret.rotated" => client_events += 1,
            other => panic!("{point}: unexpected event {other}"),
        }
    }
    assert_eq!(announced.len(), 3, "{point}: {posts:?}");
    assert_eq!(client_events, 1, "{point}");
    assert_all_verify(&key("one"), &posts);
    assert_no_secret_anywhere(&sim, &setup, &[&crashed, &out, &again]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_delivery_is_announced_by_the_next_run() {
    crash_then_announce("before-delivery").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_recording_s3_rotations_is_announced_by_the_next_run() {
    crash_then_announce("s3-after-record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sends_pending_events_at_start() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(503)).await;
    // Once a year: the only delivery while the test runs is the start-up one.
    let setup = webhook_setup(
        &sim,
        &opts,
        &receiver.url(),
        "\n[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let queued = queued_ids(&setup);
    assert_eq!(queued.len(), 4);
    receiver.answer(Reply::status(200));

    let log = setup.dir.path().join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut daemon = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while receiver.posts().len() < 2 + queued.len() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    let sent: Vec<String> = receiver.posts()[2..]
        .iter()
        .map(|p| p.headers["webhook-id"].clone())
        .collect();
    assert_eq!(sent, queued, "{log}");
    assert!(queued_ids(&setup).is_empty());
    assert!(log.contains("Sent pending webhook events"), "{log}");
    assert_no_secret(&sim, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_signal_cuts_the_start_up_resend_short() {
    let opts = SimulatorOptions {
        credentials_per_user: 1,
        ..options(1)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let receiver = Receiver::start(Reply::status(503)).await;
    let setup = webhook_setup(
        &sim,
        &opts,
        &receiver.url(),
        "\n[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    // Now the receiver hangs: each attempt waits for the 2 s timeout.
    receiver.answer(Reply {
        status: 200,
        retry_after: None,
        echo: false,
        delay: Some(Duration::from_secs(30)),
    });
    let tried = receiver.posts().len();
    let mut daemon = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while receiver.shared.captured.lock().unwrap().len() == tried
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "exited {:?} after the signal",
        signalled.elapsed()
    );
    assert_eq!(queued_ids(&setup).len(), 2, "the events stay queued");
}

/// The queue of a webhook sink removed from the configuration: `status`
/// shows it with the date it will be dropped; a sink that comes back keeps
/// its queue; after the grace period (7 days, simulated by dating the mark
/// back in the outbox) the next run drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_webhook_sinks_queue_is_shown_then_dropped_after_the_grace_period() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!(
        "\n[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/gone\"\n\
         signing_secret = \"{}\"\ntimeout = \"1s\"\n",
        key("one")
    );
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            "[[sinks]]\ntype = \"file\"\npath = \"{{root}}/c.json\"\nformat = \"json\"\n{hook}"
        ),
    );
    crate::util::edit_config(&setup, &[("max_retries = 10", "max_retries = 0")]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let queued = queued_ids(&setup).len();
    assert!(queued >= 3, "{queued} events queued");

    let status = |setup: &Setup| {
        let setup_config = setup.config.clone();
        async move {
            let out = run_bin(args(&setup_config, &["status", "--json"])).await;
            assert_eq!(out.status.code(), Some(0));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let removed = |s: &serde_json::Value| s["removed_webhook_queues"].as_array().unwrap().clone();

    // Removed: kept and shown, with its drop date.
    crate::util::edit_config(&setup, &[(hook.as_str(), "")]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("is no longer configured"),
        "{}",
        text(&out)
    );
    assert_eq!(queued_ids(&setup).len(), queued, "nothing dropped yet");
    let s = status(&setup).await;
    let shown = removed(&s);
    assert_eq!(shown.len(), 1, "{s}");
    assert_eq!(shown[0]["events"], queued);
    let at =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        at(&shown[0]["drop_at"]) - at(&shown[0]["removed_at"]),
        chrono::Duration::days(7)
    );
    let out = run_bin(args(&setup.config, &["status"])).await;
    assert!(
        text(&out).contains(&format!(
            "no longer configured, webhook:http://127.0.0.1:{closed}#"
        )),
        "{}",
        text(&out)
    );

    // Back in the configuration: the mark goes.
    let config = std::fs::read_to_string(&setup.config).unwrap() + &hook;
    crate::util::write_secret(&setup.config, &config);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(1), "still down: {}", text(&out));
    assert!(removed(&status(&setup).await).is_empty());
    assert!(!outbox(&setup).contains("removed_since"));

    // Removed again, and the grace period over.
    crate::util::edit_config(&setup, &[(hook.as_str(), "")]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let outbox_json: serde_json::Value = serde_json::from_str(&outbox(&setup)).unwrap();
    for queue in outbox_json["queues"].as_object().unwrap().values() {
        assert!(queue["removed_since"].is_string(), "{queue}");
    }
    crate::util::state_db(&setup.dir.path().join("state"))
        .execute(
            "UPDATE outbox_queues SET removed_since = datetime('now', '-8 days')",
            [],
        )
        .unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Dropped the queue"), "{}", text(&out));
    assert!(queued_ids(&setup).is_empty());
    assert!(removed(&status(&setup).await).is_empty());
}
