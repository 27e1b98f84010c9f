//! Bounded runs (docs/design.md §1.6), with the real binary: the circuit breaker
//! ends a pass against a failing API and says what it did not attempt, and
//! a `Retry-After` beyond `[api] max_retry_after` fails the call at once.

use crate::util::output_text as output;
use crate::util::{args, edit_config, options, run_bin, write_config};
use contabo_simulator::{Fault, FaultRule, Operation, Simulator};
use std::time::Duration;

fn count(sim: &Simulator, op: Operation) -> usize {
    sim.requests().iter().filter(|r| r.operation == op).count()
}

/// A config for `sim` with `[api]` lines replaced.
fn configure(
    sim: &Simulator,
    users: usize,
    extra: &str,
    api: &[(&str, &str)],
) -> crate::util::Setup {
    let setup = write_config(sim, &options(users), extra);
    edit_config(&setup, api);
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_api_trips_the_breaker_and_the_pass_names_what_it_did_not_attempt() {
    let faults = [
        ("500", Fault::InternalServerError),
        ("dropped connection", Fault::DropBeforeApply),
        ("timeout", Fault::Latency(Duration::from_millis(1500))),
    ];
    for (name, fault) in faults {
        let users = 30;
        let sim = Simulator::start(options(users)).await.unwrap();
        let setup = configure(
            &sim,
            users,
            "",
            &[
                (
                    "concurrency = 8",
                    "concurrency = 2\nmax_consecutive_failures = 4",
                ),
                ("timeout = \"10s\"", "timeout = \"1s\""),
            ],
        );
        sim.set_faults(vec![
            FaultRule::always(fault).on(Operation::ListObjectStorageCredentials)
        ]);
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        let text = output(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}");
        assert!(
            text.contains("max_consecutive_failures") && text.contains("not attempted"),
            "{name}: {text}"
        );
        // Four failures open the breaker; at most the other slot's request
        // was already on the wire. Without it: 30 users × 11 attempts.
        let listed = count(&sim, Operation::ListObjectStorageCredentials);
        assert!(listed <= 4 + 1, "{name}: {listed} listings sent");
        assert_eq!(
            count(&sim, Operation::RegenerateObjectStorageCredentials),
            0
        );
        // The next pass starts with the breaker closed and converges.
        sim.set_faults(Vec::new());
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        assert_eq!(out.status.code(), Some(0), "{name}: {}", output(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_cap_fails_the_call_without_waiting_or_retrying() {
    let sim = Simulator::start(options(2)).await.unwrap();
    let setup = configure(
        &sim,
        2,
        "",
        &[(
            "concurrency = 8",
            "concurrency = 8\nmax_retry_after = \"30s\"",
        )],
    );
    sim.set_faults(vec![FaultRule::always(Fault::TooManyRequests {
        retry_after: Some(3600),
    })
    .on(Operation::RetrieveUserList)]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let text = output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Retry-After 3600s") && text.contains("max_retry_after (30s)"),
        "{text}"
    );
    assert_eq!(count(&sim, Operation::RetrieveUserList), 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_on_the_token_endpoint_beyond_the_cap_is_refused_too() {
    let sim = Simulator::start(options(1)).await.unwrap();
    let setup = configure(&sim, 1, "", &[]);
    sim.set_faults(vec![FaultRule::always(Fault::TooManyRequests {
        retry_after: Some(600),
    })
    .on(Operation::Token)]);
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let text = output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("token: HTTP 429") && text.contains("max_retry_after (60s)"),
        "{text}"
    );
    assert_eq!(count(&sim, Operation::Token), 1);
}
