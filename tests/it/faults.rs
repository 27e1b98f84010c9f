//! Fault suite: each kind of fault on each kind of call, the client-secret
//! PUT and the regenerate PATCH included. After at most three runs the sink
//! equals the API, and a further run logs in and changes nothing.

use crate::util::{api_keys, json_sink_keys};
use crate::util::{args, options, run_bin, write_config, write_secret};
use contabo_simulator::{mixed_faults, Fault, FaultRule, Operation, Simulator};
use secrecy::ExposeSecret;
use std::time::Duration;

const EXTRA: &str = r#"
[client_secret]
rotate = true

[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#;

fn faults() -> Vec<(&'static str, Fault)> {
    vec![
        (
            "429 with Retry-After",
            Fault::TooManyRequests {
                retry_after: Some(1),
            },
        ),
        (
            "429 without Retry-After",
            Fault::TooManyRequests { retry_after: None },
        ),
        ("500", Fault::InternalServerError),
        ("503", Fault::ServiceUnavailable),
        ("dropped before applying", Fault::DropBeforeApply),
        ("dropped after applying", Fault::DropAfterApply),
        (
            "latency above the timeout",
            Fault::Latency(Duration::from_millis(1500)),
        ),
    ]
}

fn mutations(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.operation.is_mutating())
        .count()
}

fn sink_equals_api(path: &std::path::Path, sim: &Simulator) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let snapshot = sim.snapshot();
    let api = api_keys(sim);
    let sink = json_sink_keys(&json);
    if sink != api {
        return Err("S3 credentials differ".into());
    }
    if json["client"]["client_secret"] != snapshot.client_secret.expose_secret() {
        return Err("client secret differs".into());
    }
    Ok(())
}

/// Every fault kind on one operation, each in a fresh account.
async fn faults_on(operation: Operation) {
    for (name, fault) in faults() {
        let opts = options(2);
        let sim = Simulator::start(opts.clone()).await.unwrap();
        // Three faults in a row: more than one run's retries absorb.
        sim.set_faults(vec![FaultRule::always(fault).on(operation).times(3)]);
        let setup = write_config(&sim, &opts, EXTRA);
        std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
        let text = std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace("max_retries = 10", "max_retries = 1")
            .replace("timeout = \"10s\"", "timeout = \"1s\"");
        write_secret(&setup.config, &text);
        let sink = setup.dir.path().join("out/contabo.json");
        let mut runs = 0;
        let mut last = String::new();
        while runs < 3 {
            runs += 1;
            let out = run_bin(args(&setup.config, &["--run-now"])).await;
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!last.contains("panicked"), "{operation:?} / {name}: {last}");
            if out.status.code() == Some(0) && sink_equals_api(&sink, &sim).is_ok() {
                break;
            }
        }
        sink_equals_api(&sink, &sim)
            .unwrap_or_else(|e| panic!("{operation:?} / {name}: after {runs} runs: {e}\n{last}"));
        let before = mutations(&sim);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{operation:?} / {name}: the daemon can log in: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(mutations(&sim), before, "{operation:?} / {name}: converged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_the_token_endpoint() {
    faults_on(Operation::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_listing_users() {
    faults_on(Operation::RetrieveUserList).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_listing_object_storages() {
    faults_on(Operation::RetrieveObjectStorageList).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_listing_credentials() {
    faults_on(Operation::ListObjectStorageCredentials).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_regenerating_credentials() {
    faults_on(Operation::RegenerateObjectStorageCredentials).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_generating_the_client_secret() {
    faults_on(Operation::GenerateClientSecret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_reading_the_client() {
    faults_on(Operation::RetrieveUserClient).await;
}

/// A regenerate whose first attempt was applied without an answer and whose
/// retry got a 429 (or a 500): the outcome stays unknown, the re-read
/// decides, and it finds the new keys, which the sink gets in this run. A
/// "failed" here would leave the sink on the dead key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_regenerate_stays_unknown_whatever_its_retries_answer() {
    for (name, retry_fault) in [
        ("429", Fault::TooManyRequests { retry_after: None }),
        ("500", Fault::InternalServerError),
    ] {
        let mut opts = options(1);
        opts.credentials_per_user = 1;
        let sim = Simulator::start(opts.clone()).await.unwrap();
        let setup = write_config(&sim, &opts, SINK_ONLY);
        std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
        let text = std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace("max_retries = 10", "max_retries = 1");
        write_secret(&setup.config, &text);
        sim.set_faults(vec![
            FaultRule::always(Fault::DropAfterApply)
                .on(Operation::RegenerateObjectStorageCredentials)
                .times(1),
            FaultRule::always(retry_fault).on(Operation::RegenerateObjectStorageCredentials),
        ]);
        let out = run_bin(args(&setup.config, &["--run-now", "--force"])).await;
        let shown = crate::util::output_text(&out);
        let sink = setup.dir.path().join("out/contabo.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sink).unwrap()).unwrap();
        let applied = sim
            .requests()
            .iter()
            .filter(|r| r.applied_at.is_some())
            .count();
        assert_eq!(applied, 1, "{name}: only the first attempt was applied");
        assert_eq!(
            json_sink_keys(&json),
            api_keys(&sim),
            "{name}: the sink holds the applied keys: {shown}"
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {shown}");
        assert!(
            shown.contains("1 rotated, 1 verified, 0 failed"),
            "{name}: {shown}"
        );
    }
}

const SINK_ONLY: &str = r#"
[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#;

/// 30 credentials and the client secret under the simulator's
/// [`mixed_faults`] (10 % 429, 10 % 5xx, 5 % drops after applying, on every
/// call): the sinks
/// converge within three runs, and after each run the daemon can log in
/// with what it stored. The request timeout is 10 minutes, so a run that
/// waited out a timeout after an HTTP answer (instead of reading back at
/// once) would outlast the binary's 2-minute limit in this test; and in the
/// simulator's log every client-secret PUT answered with a 5xx is followed
/// by a read-back before any further PUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_faults_on_every_call_converge_within_three_runs_and_never_lock_out() {
    for seed in [1u64, 2, 3] {
        let opts = contabo_simulator::SimulatorOptions {
            credentials_per_user: 3,
            seed,
            ..options(10)
        };
        let sim = Simulator::start(opts.clone()).await.unwrap();
        let setup = write_config(&sim, &opts, EXTRA);
        std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
        crate::util::edit_config(&setup, &[("timeout = \"10s\"", "timeout = \"10m\"")]);
        let sink = setup.dir.path().join("out/contabo.json");
        let mut runs = 0;
        loop {
            runs += 1;
            sim.set_faults(mixed_faults());
            let out = run_bin(args(&setup.config, &["--run-now"])).await;
            let last = crate::util::output_text(&out);
            assert!(!last.contains("panicked"), "seed {seed}: {last}");
            assert!(
                out.status.code().is_some(),
                "seed {seed}: the run did not end: {last}"
            );
            // The daemon can log in with what it stored, after every run.
            sim.set_faults(Vec::new());
            let check = run_bin(args(&setup.config, &["check", "--online"])).await;
            assert_eq!(
                check.status.code(),
                Some(0),
                "seed {seed}, run {runs}: no login: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            if out.status.code() == Some(0) && sink_equals_api(&sink, &sim).is_ok() {
                break;
            }
            assert!(runs < 3, "seed {seed}: not converged after 3 runs: {last}");
        }
        // Every PUT answered with a 5xx is read back before any other PUT.
        let requests = sim.requests();
        for (i, r) in requests.iter().enumerate() {
            if r.operation != Operation::GenerateClientSecret || !(500..600).contains(&r.status) {
                continue;
            }
            let next = requests[i + 1..]
                .iter()
                .find(|n| {
                    matches!(
                        n.operation,
                        Operation::GenerateClientSecret | Operation::RetrieveUserClient
                    )
                })
                .unwrap_or_else(|| panic!("seed {seed}: nothing after a {} PUT", r.status));
            assert_eq!(
                next.operation,
                Operation::RetrieveUserClient,
                "seed {seed}: a PUT answered {} is read back first",
                r.status
            );
        }
        // The PUT itself draws a fault in about one run of four here; the
        // client_secret tests take each of its paths deterministically.
        let faults = requests.iter().filter(|r| r.fault.is_some()).count();
        assert!(faults >= 10, "seed {seed}: only {faults} faults fired");
    }
}

/// A re-read that disagrees with a good PATCH answer (a lagging replica
/// still shows the old pair) is read again after a short delay, and does
/// not override the answer: one PATCH per credential, the sink gets the new
/// pairs, the run succeeds. Order from the simulator's log: PATCH, the
/// stale list, then a fresh list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_re_read_is_read_again_and_does_not_override_a_good_answer() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    // The first list is the inventory's (nothing regenerated yet, so not
    // stale); the second is the re-read after the first PATCH.
    sim.set_faults(vec![FaultRule::always(Fault::StaleRead)
        .on(Operation::ListObjectStorageCredentials)
        .times(2)]);
    let setup = write_config(&sim, &opts, EXTRA);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let shown = crate::util::output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    sink_equals_api(&setup.dir.path().join("out/contabo.json"), &sim).unwrap();
    let requests = sim.requests();
    let patches = requests
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .count();
    assert_eq!(patches, 3, "one PATCH per credential");
    // The last stale answer is the re-read after a PATCH.
    let stale = requests
        .iter()
        .rposition(|r| r.fault.as_deref() == Some("StaleRead"))
        .unwrap();
    assert!(
        requests[..stale]
            .iter()
            .any(|r| r.operation == Operation::RegenerateObjectStorageCredentials),
        "the stale read followed a PATCH"
    );
    assert!(
        requests[stale + 1..]
            .iter()
            .any(|r| r.operation == Operation::ListObjectStorageCredentials && r.fault.is_none()),
        "and was read again"
    );
}

/// A PATCH answered 2xx without usable keys (an empty `data`, a pair
/// without its secret) was applied all the same: the re-read finds the new
/// pair, which reaches the sink; no second PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_patch_without_keys_is_confirmed_by_the_re_read() {
    for body in [
        r#"{"data":[]}"#,
        r#"{"data":[{"accessKey":"AKNOSECRET00000000","secretKey":null}]}"#,
    ] {
        let opts = options(1);
        let sim = Simulator::start(opts.clone()).await.unwrap();
        sim.set_faults(vec![FaultRule::always(Fault::AppliedWithBody(body))
            .on(Operation::RegenerateObjectStorageCredentials)
            .times(1)]);
        let setup = write_config(&sim, &opts, EXTRA);
        std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        let shown = crate::util::output_text(&out);
        assert_eq!(out.status.code(), Some(0), "{body}: {shown}");
        sink_equals_api(&setup.dir.path().join("out/contabo.json"), &sim)
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let patches = sim
            .requests()
            .iter()
            .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
            .count();
        assert_eq!(patches, 3, "{body}: one PATCH per credential");
        assert!(
            !shown.contains("AKNOSECRET"),
            "{body}: the bogus key is not taken"
        );
    }
}
