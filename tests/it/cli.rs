//! The real binary against the simulator: exit codes, output, and what it
//! sends to the API.

use crate::util::*;
use contabo_simulator::{Fault, FaultRule, Simulator, SimulatorOptions};
use std::collections::HashSet;
/// A server whose lists have no stable default order (pages overlap and
/// skip between requests): every list is requested with `orderBy`, so a
/// walk of many pages still sees every credential exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_walked_in_a_stable_order_on_a_server_without_one() {
    let opts = SimulatorOptions {
        credentials_per_user: 3,
        page_size_cap: 4,
        unstable_order: true,
        ..options(23)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let out = run_bin(args(&setup.config, &["list", "--json"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<i64> = listing["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_i64().unwrap())
        .collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 23 * 3, "no credential twice");
    assert_eq!(unique.len(), 23 * 3, "none missing");
    assert_eq!(listing["users_seen"], 23);
    for r in sim.requests() {
        if r.method == "GET" && r.path.ends_with("credentials") || r.path == "/v1/users" {
            assert!(
                r.query.as_deref().unwrap_or("").contains("orderBy="),
                "{} {:?}",
                r.path,
                r.query
            );
        }
    }
}

/// A list whose walk never adds up to its `totalElements` is read twice,
/// then refused with an error naming the counts, not taken as complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_does_not_add_up_to_its_total_is_read_again_then_refused() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_faults(vec![
        FaultRule::always(Fault::WrongTotal).on(contabo_simulator::Operation::RetrieveUserList)
    ]);
    let setup = write_config(&sim, &opts, "");
    let out = run_bin(args(&setup.config, &["list", "--json"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the list has 3 items but totalElements says 4"),
        "{stderr}"
    );
    let walks = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/users")
        .count();
    assert_eq!(walks, 2, "read again once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_json_shows_every_credential_under_faults_and_no_secret() {
    let opts = SimulatorOptions {
        users: 57,
        credentials_per_user: 3,
        page_size_cap: 10,
        ..options(57)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    sim.set_faults(vec![
        FaultRule {
            operation: None,
            fault: Fault::TooManyRequests { retry_after: None },
            probability: 0.05,
            remaining: None,
            path_contains: None,
        },
        FaultRule {
            operation: None,
            fault: Fault::ServiceUnavailable,
            probability: 0.05,
            remaining: None,
            path_contains: None,
        },
    ]);
    let setup = write_config(&sim, &opts, "");
    let out = run_bin(args(&setup.config, &["-v", "list", "--json"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);

    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let listed: HashSet<i64> = listing["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_i64().unwrap())
        .collect();
    let expected: HashSet<i64> = sim
        .snapshot()
        .users
        .iter()
        .flat_map(|u| u.credentials.iter().map(|c| c.credential_id))
        .collect();
    assert_eq!(expected.len(), 57 * 3);
    assert_eq!(listed, expected);
    assert_eq!(listing["users_seen"], 57);
    assert!(listing["credentials"][0]["last_rotated"].is_null());

    let requests = sim.requests();
    let faulted = requests.iter().filter(|r| r.fault.is_some()).count();
    assert!(faulted > 0, "the fault rules fired");
    let api: Vec<_> = requests
        .iter()
        .filter(|r| r.operation != contabo_simulator::Operation::Token)
        .collect();
    let ids: HashSet<&str> = api
        .iter()
        .map(|r| r.request_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids.len(), api.len(), "x-request-id unique per request");
    assert!(ids.iter().all(|id| is_spec_request_id(id)));
    let traces: HashSet<_> = api.iter().map(|r| r.trace_id.clone()).collect();
    assert_eq!(traces.len(), 1, "one x-trace-id for the run");
    assert_no_secret(&sim, &stdout);
    assert_no_secret(&sim, &stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_key_exits_78_names_the_key_and_makes_no_request() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "[object_storage]\nmax_agee = \"7d\"\n");
    for command in [&["list"][..], &["check"], &["check", "--online"]] {
        let out = run_bin(args(&setup.config, command)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command:?}: {stderr}");
        assert!(stderr.contains("max_agee"), "{stderr}");
        assert!(stderr.contains("config.toml"), "{stderr}");
    }
    assert!(
        sim.requests().is_empty(),
        "no request before the config is valid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_api_urls_off_loopback_exit_78_naming_the_key() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    for (key, from, to) in [
        (
            "api.base_url",
            sim.base_url().to_string(),
            "http://api.contabo.com".to_owned(),
        ),
        (
            "api.token_url",
            sim.token_url().to_string(),
            "http://10.1.2.3:8080/token".to_owned(),
        ),
    ] {
        std::fs::write(&setup.config, text.replace(&from, &to)).unwrap();
        for command in [&["check"][..], &["--run-now"]] {
            let out = run_bin(args(&setup.config, command)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{key} {command:?}: {stderr}");
            assert!(stderr.contains(key), "{stderr}");
            assert!(
                stderr.contains("plain http is only allowed to loopback"),
                "{stderr}"
            );
        }
    }
    assert!(sim.requests().is_empty(), "no request with a refused URL");
    assert!(!setup.dir.path().join("state/state.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_secret_file_exits_78_without_a_request() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    std::fs::remove_file(setup.dir.path().join("api-password")).unwrap();
    let out = run_bin(args(&setup.config, &["list"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("api.password"), "{stderr}");
    assert!(sim.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reports_the_api_user_and_client_id() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let offline = run_bin(args(&setup.config, &["check"])).await;
    assert!(offline.status.success());
    assert!(
        sim.requests().is_empty(),
        "check without --online stays offline"
    );
    let out = run_bin(args(&setup.config, &["check", "--online"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&sim.api_user_id()), "{stdout}");
    assert!(stdout.contains(&opts.client_id), "{stdout}");
    assert_no_secret(&sim, &stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_with_a_wrong_password_fails_clearly() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    write_secret(&setup.dir.path().join("api-password"), "wrong-password-1");
    let out = run_bin(args(&setup.config, &["check", "--online"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    assert!(!stderr.contains("wrong-password-1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_selects_users_by_glob_and_region() {
    let opts = options(6);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[object_storage]\nusers = [\"user00*\"]\nexclude_users = [\"user002@*\"]\nregions = [\"European Union\"]\n",
    );
    let out = run_bin(args(&setup.config, &["list", "--json"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = listing["credentials"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let email = row["user_email"].as_str().unwrap();
        assert!(
            email.starts_with("user00") && !email.starts_with("user002"),
            "{email}"
        );
        assert_eq!(row["region"], "European Union");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_on_a_fresh_machine_and_prints_no_secret() {
    let out = run_bin(vec!["demo".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Started the Contabo simulator"), "{stdout}");
    assert!(stdout.contains("credentials of"), "{stdout}");
    // The proof at the storage: 15 credentials, each new key accepted and
    // each old key refused.
    assert!(
        stdout.contains("16 rotated, 15 verified, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("30 signed requests: 15 accepted (each new key proven), 15 refused"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let out = run_bin(vec!["list".into(), "--bogus".into()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run_bin(vec!["--dry-run".into()]).await;
    assert_eq!(out.status.code(), Some(2), "--dry-run needs --run-now");
    let out = run_bin(vec!["--run-now".into(), "check".into()]).await;
    assert_eq!(out.status.code(), Some(2), "--run-now with a command");
}

/// `completions` and `man` need no configuration: a bash script that bash
/// parses and that offers the commands and flags, and a roff page that
/// groff renders, with every exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_man_page_need_no_configuration() {
    let missing = ["-c", "/nonexistent/config.toml"];
    let with = |rest: &[&str]| -> Vec<String> {
        missing.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run_bin(with(&["completions", shell])).await;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["run-now", "dry-run", "completions", "status"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
        if shell == "bash" {
            let path = dir.path().join("completion.bash");
            std::fs::write(&path, &script).unwrap();
            let parsed = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(parsed.status.success(), "bash -n: {parsed:?}");
        }
    }
    let out = run_bin(with(&["completions", "tcsh"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );

    let out = run_bin(with(&["man"])).await;
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH contabo-rotator 1"), "{page}");
    let path = dir.path().join("contabo-rotator.1");
    std::fs::write(&path, &page).unwrap();
    let rendered = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-Wall"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(rendered.status.success(), "{rendered:?}");
    // groff justifies lines, so spacing is compared collapsed.
    let text = String::from_utf8_lossy(&rendered.stdout);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for code in ["0 success", "1 a failure", "2 usage error", "78 invalid"] {
        assert!(text.contains(code), "{code:?} in the man page");
    }
    assert!(text.contains("--run-now"));
}

/// Every string under a key that names a time is RFC 3339, UTC, whole
/// seconds, `Z`; returns how many were checked.
fn check_timestamps(value: &serde_json::Value, path: &str) -> usize {
    let is_time_key = |k: &str| {
        k == "at"
            || k.ends_with("_at")
            || ["first_seen", "next_run", "last_attempt", "last_rotated"].contains(&k)
    };
    let shape = |s: &str| {
        let b = s.as_bytes();
        b.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    };
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let here = format!("{path}.{k}");
                match v {
                    serde_json::Value::String(s) if is_time_key(k) => {
                        assert!(
                            shape(s),
                            "{here}: {s:?} is not RFC 3339 whole seconds in UTC"
                        );
                        1
                    }
                    _ => check_timestamps(v, &here),
                }
            })
            .sum(),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| check_timestamps(v, &format!("{path}[{i}]")))
            .sum(),
        _ => 0,
    }
}

fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// The `--run-now` JSON report: every line carries `schema_version` and a
/// `type`, the shapes are as documented, the summary is last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_shape_of_the_run_report() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[client_secret]\nrotate = true\n[[sinks]]\ntype = \"file\"\npath = \"{root}/c.json\"\nformat = \"json\"\n",
    );
    let out = run_bin(args(&setup.config, &["--log-format", "json", "--run-now"])).await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut times = 0;
    let mut seen = std::collections::BTreeSet::new();
    for line in &lines {
        assert_eq!(line["schema_version"], 1, "{line}");
        let kind = line["type"].as_str().unwrap();
        seen.insert(kind.to_owned());
        let expected: &[&str] = match kind {
            "plan" => &[
                "access_key",
                "kind",
                "reason",
                "rotate",
                "schema_version",
                "subject",
                "type",
            ],
            "rotated" => &[
                "at",
                "credential",
                "kind",
                "new_access_key",
                "new_fingerprint",
                "old_access_key",
                "old_fingerprint",
                "recovered",
                "rotation_id",
                "schema_version",
                "subject",
                "type",
            ],
            "verified" => &[
                "access_key",
                "at",
                "attempts",
                "credential",
                "elapsed_ms",
                "kind",
                "method",
                "old_key_refused",
                "rotation_id",
                "schema_version",
                "subject",
                "type",
            ],
            "delivery" => &["outcome", "schema_version", "sink", "type"],
            "summary" => &[
                "dry_run",
                "due",
                "failed",
                "interrupted",
                "planned",
                "rotated",
                "s3_probes",
                "s3_slow_downs",
                "schema_version",
                "sinks_written",
                "trace_id",
                "type",
                "verified",
            ],
            other => panic!("unexpected line type {other}: {line}"),
        };
        assert_eq!(keys(line), expected, "{kind}");
        times += check_timestamps(line, kind);
    }
    assert_eq!(lines.last().unwrap()["type"], "summary");
    for kind in ["plan", "rotated", "verified", "delivery", "summary"] {
        assert!(seen.contains(kind), "no {kind} line");
    }
    assert_eq!(times, 7 + 6, "6 S3 rotations, the client secret, 6 proofs");
}

/// `list --json`: versioned, documented keys, whole-second timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_shape_of_list() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0));
    let out = run_bin(args(&setup.config, &["list", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["schema_version"], 1);
    assert_eq!(
        keys(&list),
        [
            "api_user_id",
            "credentials",
            "failures",
            "schema_version",
            "users_seen",
            "users_selected"
        ]
    );
    let rows = list["credentials"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        keys(&rows[0]),
        [
            "access_key",
            "credential_id",
            "due",
            "due_reason",
            "last_rotated",
            "object_storage_id",
            "object_storage_name",
            "region",
            "s3_url",
            "user_email",
            "user_id",
        ]
    );
    assert_eq!(check_timestamps(&list, "list"), 6);
}

/// `status --json`: versioned, documented keys, whole-second timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_shape_of_status() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[client_secret]\nrotate = true\n[[sinks]]\ntype = \"file\"\npath = \"{root}/c.json\"\nformat = \"json\"\n",
    );
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0));
    let out = run_bin(args(&setup.config, &["status", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["schema_version"], 1);
    assert_eq!(
        keys(&status),
        [
            "client_secret",
            "credentials",
            "initialised",
            "last_run",
            "next_run",
            "pending_rotations",
            "removed_webhook_queues",
            "schedule",
            "schema_version",
            "sinks",
            "state_dir",
            "timezone",
            "twins",
        ]
    );
    assert_eq!(
        keys(&status["last_run"]),
        [
            "at",
            "duration_ms",
            "failures",
            "last_delivery_success_at",
            "last_success_at"
        ]
    );
    assert_eq!(
        keys(&status["credentials"][0]),
        [
            "access_key",
            "due_at",
            "fingerprint",
            "first_seen",
            "key",
            "rotated_at",
            "rotation_id",
            "user_email",
            "verified",
        ]
    );
    assert_eq!(
        keys(&status["sinks"][0]),
        [
            "delivered_at",
            "last_attempt",
            "last_error",
            "pending_events",
            "sink"
        ]
    );
    // next_run, last_run (3), client secret (2), 3 credentials x (first
    // seen, rotated, due, verified), the sink (2).
    assert_eq!(check_timestamps(&status, "status"), 1 + 3 + 2 + 3 * 4 + 2);
}
