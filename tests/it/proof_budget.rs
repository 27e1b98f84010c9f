//! The proof budget (docs/design.md invariant 11, `[object_storage]
//! verify_requests_per_second`): the real binary proves every rotated key
//! at the simulator's S3 endpoint within its budget, and a storage that
//! answers `503 SlowDown` slows every proof down and fails no key.
//!
//! Rates are read from the storage's log (requests per second as the
//! simulator received them), never from the rotator's own timing.

use crate::util::output_text as shown;
use crate::util::{api_keys, args, json_sink_keys, options, run_bin, write_config, Setup};
use contabo_simulator::{S3Request, Simulator, SimulatorOptions};
use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

fn opts(users: usize) -> SimulatorOptions {
    SimulatorOptions {
        credentials_per_user: 3,
        ..options(users)
    }
}

/// A config with a json sink and `object_storage` lines `extra`.
fn config(sim: &Simulator, opts: &SimulatorOptions, extra: &str) -> Setup {
    let text = format!(
        "[object_storage]\nverify = \"s3\"\n{extra}\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/contabo.json\"\nformat = \"json\"\n"
    );
    let setup = write_config(sim, opts, &text);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    setup
}

/// The `--log-format json` report lines of type `kind`.
fn items(out: &Output, kind: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == kind)
        .collect()
}

/// Runs a forced pass and checks that every credential was rotated and
/// its new key proven: exit 0, one `verified` per credential naming its
/// current key, no failure, and the sink holds the API's values.
async fn run_and_prove_every_key(sim: &Simulator, setup: &Setup) -> Output {
    let out = run_bin(args(
        &setup.config,
        &["--log-format", "json", "--run-now", "--force"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(items(&out, "failed").is_empty(), "{}", shown(&out));
    let keys = api_keys(sim);
    let verified: BTreeMap<i64, String> = items(&out, "verified")
        .iter()
        .map(|v| {
            (
                v["credential"]["credential_id"].as_i64().unwrap(),
                v["access_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<i64, String> = keys
        .iter()
        .map(|(id, (access, _))| (*id, access.clone()))
        .collect();
    assert_eq!(verified, expected, "every current key proven");
    let sink = std::fs::read_to_string(setup.dir.path().join("out/contabo.json")).unwrap();
    assert_eq!(json_sink_keys(&serde_json::from_str(&sink).unwrap()), keys);
    out
}

/// The most requests the storage received within any one second.
fn busiest_second(log: &[S3Request]) -> usize {
    let mut times: Vec<_> = log.iter().map(|r| r.received_at).collect();
    times.sort();
    let mut most = 0;
    let mut first = 0;
    for (last, t) in times.iter().enumerate() {
        while t.duration_since(times[first]) >= Duration::from_secs(1) {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}

fn slow_downs(log: &[S3Request]) -> usize {
    log.iter().filter(|r| r.code == Some("SlowDown")).count()
}

/// A budget of 5 requests/s: however many proofs are under way (9
/// credentials, 16 proof slots), the storage never gets more than 5
/// requests within a second, plus the first one of the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_paces_every_proof_request() {
    let opts = opts(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = config(&sim, &opts, "verify_requests_per_second = 5");
    run_and_prove_every_key(&sim, &setup).await;
    let log = sim.s3_requests();
    assert_eq!(log.len(), 18, "a new-key and an old-key probe each");
    let most = busiest_second(&log);
    assert!(most <= 6, "{most} requests within a second");
    assert_eq!(slow_downs(&log), 0);
}

/// A storage taking 30 requests/s and the default budget (25): the
/// proofs stay under the limit, and at most 2% of their requests get
/// `SlowDown` (none, with the pacing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_stay_under_a_storage_limit_above_the_budget() {
    let opts = opts(14);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_s3_request_limit(Some(30.0));
    let setup = config(&sim, &opts, "");
    run_and_prove_every_key(&sim, &setup).await;
    let log = sim.s3_requests();
    assert!(log.len() >= 84, "{} requests", log.len());
    let most = busiest_second(&log);
    assert!(most <= 26, "{most} requests within a second");
    let slowed = slow_downs(&log);
    assert!(
        slowed * 50 <= log.len(),
        "{slowed} of {} requests got SlowDown",
        log.len()
    );
}

/// A storage taking 8 requests/s, under the default budget (25): it
/// answers `SlowDown`, every proof slows down (at most 20% of the
/// requests get `SlowDown`), and no key fails for it: every key is
/// proven by an accepted request signed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_limit_below_the_budget_slows_the_proofs_and_fails_no_key() {
    let opts = opts(8);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_s3_request_limit(Some(8.0));
    let setup = config(&sim, &opts, "");
    let out = run_and_prove_every_key(&sim, &setup).await;
    let log = sim.s3_requests();
    let slowed = slow_downs(&log);
    assert!(
        slowed >= 1,
        "the budget is above the limit: {}",
        shown(&out)
    );
    assert!(
        slowed * 5 <= log.len(),
        "{slowed} of {} requests got SlowDown",
        log.len()
    );
    // The run's summary counts what the storage's log shows.
    let summary = &items(&out, "summary")[0];
    assert_eq!(summary["s3_slow_downs"], slowed, "{summary}");
    assert_eq!(summary["s3_probes"], log.len(), "{summary}");
    for (id, (access, _)) in api_keys(&sim) {
        let signed: Vec<&S3Request> = log
            .iter()
            .filter(|r| r.access_key.as_deref() == Some(access.as_str()))
            .collect();
        assert!(
            signed
                .iter()
                .all(|r| r.status == 200 || r.code == Some("SlowDown")),
            "credential {id}: {signed:?}"
        );
        assert_eq!(
            signed.last().map(|r| r.status),
            Some(200),
            "credential {id}: proven after its SlowDowns"
        );
    }
}

/// A bad `verify_requests_per_second` is a config error naming the key
/// (exit 78), before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_verify_requests_per_second_exits_78_naming_the_key() {
    let opts = opts(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    for (value, says) in [
        ("0", "0 is out of range: must be a finite number above 0"),
        ("-1.5", "-1.5 is out of range"),
        ("inf", "inf is out of range"),
        ("nan", "NaN is out of range"),
        ("\"25\"", "invalid type: string"),
    ] {
        let setup = config(
            &sim,
            &opts,
            &format!("verify_requests_per_second = {value}"),
        );
        for command in [&["check"][..], &["--run-now"]] {
            let out = run_bin(args(&setup.config, command)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{value}: {stderr}");
            assert!(
                stderr.contains("object_storage.verify_requests_per_second")
                    && stderr.contains(says),
                "{value}: {stderr}"
            );
        }
    }
    assert!(sim.requests().is_empty() && sim.s3_requests().is_empty());
}
