//! Verification (`[object_storage] verify`, docs/design.md §4): the real binary
//! proves every regenerated key at the simulator's S3 endpoint with a
//! SigV4-signed request, and the simulator's S3 log shows what it sent.
//! Order is read from that log, never from the clock.

use crate::util::{api_keys, json_sink_keys};
use crate::util::{args, options, run_bin, write_config, Setup};
use crate::util::{Receiver, Reply};
use contabo_simulator::{Operation, S3Fault, S3Request, Simulator, SimulatorOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

fn opts() -> SimulatorOptions {
    SimulatorOptions {
        credentials_per_user: 3,
        ..options(2)
    }
}

/// A config with a json sink, `verify` and `verify_timeout`, plus `extra`.
fn config(sim: &Simulator, opts: &SimulatorOptions, verify: &str, extra: &str) -> Setup {
    let text = format!(
        "[object_storage]\nverify = \"{verify}\"\nverify_timeout = \"5s\"\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/contabo.json\"\nformat = \"json\"\n{extra}"
    );
    let setup = write_config(sim, opts, &text);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    setup
}

/// The `--log-format json` report lines of `out`.
fn report(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn items<'a>(lines: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

use crate::util::output_text as shown;

/// Access key → credential id, as the API holds them now.
fn current_keys(sim: &Simulator) -> BTreeMap<String, i64> {
    api_keys(sim)
        .into_iter()
        .map(|(id, (access, _))| (access, id))
        .collect()
}

fn json_sink(setup: &Setup) -> serde_json::Value {
    let text = std::fs::read_to_string(setup.dir.path().join("out/contabo.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The S3 requests signed with `access_key`, in arrival order.
fn signed_with<'a>(log: &'a [S3Request], access_key: &str) -> Vec<&'a S3Request> {
    log.iter()
        .filter(|r| r.access_key.as_deref() == Some(access_key))
        .collect()
}

async fn run_json(setup: &Setup) -> Output {
    run_bin(args(&setup.config, &["--log-format", "json", "--run-now"])).await
}

/// Every regenerated key is proven by a request signed with it that the
/// storage accepted; the old key is then refused. The Contabo API sees
/// exactly the requests a run with `verify = "off"` sends (the proof adds
/// S3 requests only), and `"off"` sends no S3 request at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_key_is_proven_at_the_storage_and_off_sends_no_s3_request() {
    let opts = opts();
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let old = current_keys(&sim);
    let setup = config(&sim, &opts, "s3", "");
    let out = run_json(&setup).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let lines = report(&out);
    let new = current_keys(&sim);
    assert_eq!(new.len(), 6);
    assert!(new.keys().all(|k| !old.contains_key(k)), "all rotated");

    // One `verified` item per rotated credential, naming its new key.
    let verified: BTreeMap<i64, &serde_json::Value> = items(&lines, "verified")
        .into_iter()
        .map(|v| (v["credential"]["credential_id"].as_i64().unwrap(), v))
        .collect();
    assert_eq!(verified.len(), 6, "{}", shown(&out));
    for (access, id) in &new {
        let v = verified[id];
        assert_eq!(v["access_key"], access.as_str());
        assert_eq!(v["method"], "s3");
        assert_eq!(v["old_key_refused"], true);
    }
    let summary = items(&lines, "summary");
    assert_eq!(summary.len(), 1, "{}", shown(&out));
    assert_eq!(summary[0]["verified"], 6, "{}", summary[0]);
    assert_eq!(summary[0]["s3_probes"], 12, "{}", summary[0]);

    // The storage's log: each new key signed an accepted ListBuckets, and
    // the old key's probe came after it and was refused.
    let log = sim.s3_requests();
    for (access, id) in &new {
        let with_new = signed_with(&log, access);
        assert!(
            with_new
                .iter()
                .any(|r| r.status == 200 && r.method == "GET" && r.path == "/"),
            "credential {id}: no accepted ListBuckets signed with its new key: {with_new:?}"
        );
    }
    for (access, id) in &old {
        let with_old = signed_with(&log, access);
        assert_eq!(with_old.len(), 1, "credential {id}: one old-key probe");
        assert_eq!(with_old[0].status, 403);
        assert_eq!(with_old[0].code, Some("InvalidAccessKeyId"));
    }
    // The sink holds the new values.
    assert_eq!(json_sink_keys(&json_sink(&setup)), api_keys(&sim));
    let s3_probes = log.len();
    assert_eq!(s3_probes, 12, "one probe per new key and one per old key");
    let api_requests = sim.requests().len();

    // The same account (same seed), verify = "off".
    let sim_off = Simulator::start(opts.clone()).await.unwrap();
    let setup_off = config(&sim_off, &opts, "off", "");
    let out = run_json(&setup_off).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(items(&report(&out), "verified").is_empty());
    assert!(sim_off.s3_requests().is_empty(), "off makes no S3 request");
    assert_eq!(
        sim_off.requests().len(),
        api_requests,
        "verification adds no request to the Contabo API"
    );

    // `status` shows the proof of each credential.
    let out = run_bin(args(&setup.config, &["status", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = status.to_string();
    assert_eq!(text.matches("\"accepted\":true").count(), 6, "{text}");
}

/// A storage that takes a while to accept new keys: the proof retries
/// (the log shows refusals of the new key before the accepted request),
/// and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_propagation_delay_within_verify_timeout_is_waited_out() {
    let opts = opts();
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_s3_fault(S3Fault::Propagation(Duration::from_millis(700)));
    let setup = config(&sim, &opts, "s3", "");
    let out = run_json(&setup).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let lines = report(&out);
    assert_eq!(items(&lines, "verified").len(), 6, "{}", shown(&out));
    assert!(items(&lines, "failed").is_empty());
    let log = sim.s3_requests();
    for (access, id) in current_keys(&sim) {
        let with_new = signed_with(&log, &access);
        let accepted = with_new
            .iter()
            .position(|r| r.status == 200)
            .unwrap_or_else(|| panic!("credential {id}: never accepted: {with_new:?}"));
        assert!(
            accepted >= 1,
            "credential {id}: refused first: {with_new:?}"
        );
        assert!(with_new[..accepted]
            .iter()
            .all(|r| r.status == 403 && r.code == Some("InvalidAccessKeyId")));
        assert!(
            with_new[accepted + 1..].is_empty(),
            "no probe after the proof"
        );
    }
    assert_eq!(json_sink_keys(&json_sink(&setup)), api_keys(&sim));
}

/// A storage that never accepts a regenerated key (one region): those
/// credentials fail (exit 1, named with the S3 code, a `rotation.failed`
/// event each), the sink still holds the new values (the old ones are dead
/// already), and the other regions' credentials are proven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_that_never_accepts_fails_its_credentials_only() {
    let opts = opts();
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_s3_fault_in("eu", S3Fault::NeverAccept);
    let receiver = Receiver::start(Reply::status(200)).await;
    let hook = format!(
        "\n[[sinks]]\ntype = \"webhook\"\nurl = \"{}\"\nsigning_secret = \"whsec_{}\"\n",
        receiver.url(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]),
    );
    let setup = config(&sim, &opts, "s3", &hook);
    crate::util::edit_config(
        &setup,
        &[("verify_timeout = \"5s\"", "verify_timeout = \"2s\"")],
    );
    let out = run_json(&setup).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let lines = report(&out);

    let snapshot = sim.snapshot();
    let eu: BTreeSet<i64> = snapshot
        .users
        .iter()
        .flat_map(|u| &u.credentials)
        .filter(|c| c.region == "European Union")
        .map(|c| c.credential_id)
        .collect();
    assert_eq!(eu.len(), 2, "one EU credential per user");
    let failed: BTreeMap<i64, String> = items(&lines, "failed")
        .into_iter()
        .map(|f| {
            (
                f["credential"]["credential_id"].as_i64().unwrap(),
                f["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(failed.keys().copied().collect::<BTreeSet<_>>(), eu);
    for error in failed.values() {
        assert!(error.contains("InvalidAccessKeyId"), "{error}");
        assert!(error.contains("verify_timeout"), "{error}");
    }
    assert_eq!(items(&lines, "verified").len(), 4, "{}", shown(&out));

    // Delivery was not held up: the sink holds the API's (new) values.
    assert_eq!(json_sink_keys(&json_sink(&setup)), api_keys(&sim));

    // One `rotation.failed` per refused key, and a `verified` follow-up for
    // each of the others.
    let mut failed_events = BTreeSet::new();
    let mut verified_events = BTreeSet::new();
    for post in receiver.posts() {
        let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
        let id = body["data"]["credential_id"].as_i64();
        match body["type"].as_str().unwrap() {
            "rotation.failed" => {
                failed_events.insert(id.unwrap());
            }
            "object_storage_credential.verified" => {
                verified_events.insert(id.unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(failed_events, eu);
    assert_eq!(verified_events.len(), 4);
    assert!(verified_events.is_disjoint(&eu));

    // The refused keys were probed in the EU region only, and never got a 200.
    let log = sim.s3_requests();
    for c in snapshot.users.iter().flat_map(|u| &u.credentials) {
        let with_new = signed_with(&log, &c.access_key);
        assert!(!with_new.is_empty());
        let accepted = with_new.iter().any(|r| r.status == 200);
        assert_eq!(accepted, !eu.contains(&c.credential_id), "{with_new:?}");
    }
    // Verification adds nothing to the API: one regenerate per credential.
    let regenerates = sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .count();
    assert_eq!(regenerates, 6);
}
