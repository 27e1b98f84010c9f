//! The streaming pass (docs/design.md §1.7, §4), driven through the real binary
//! against the simulator: per-user delivery while the pass goes on, no key
//! regenerated while a sink selecting it cannot take the new value, and the
//! daemon's start finishing a killed run before its first tick.
//!
//! Order is asserted through the simulator's request log (a sink's
//! `on_change` POSTs a marker to it), never by wall-clock time.

use crate::util::output_text as text;
use crate::util::{api_keys, json_sink_keys, start_daemon, terminate, user_id, wait_for_log};
use crate::util::{args, options, run_bin, run_bin_env, write_config, write_secret, Setup};
use contabo_simulator::{Fault, FaultRule, Operation, RecordedRequest, Simulator, MARK_PATH};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A json sink's keys, empty when the file does not exist.
fn sink_keys(path: &Path) -> BTreeMap<i64, (String, String)> {
    match std::fs::read_to_string(path) {
        Ok(text) => json_sink_keys(&serde_json::from_str(&text).unwrap()),
        Err(_) => BTreeMap::new(),
    }
}

/// Credential id → user e-mail, as the simulator holds them.
fn owners(sim: &Simulator) -> BTreeMap<i64, String> {
    sim.snapshot()
        .users
        .iter()
        .flat_map(|u| {
            u.credentials
                .iter()
                .map(|c| (c.credential_id, u.email.clone()))
        })
        .collect()
}

/// Credential ids whose regenerate the simulator applied, in `requests`.
fn regenerated(requests: &[RecordedRequest]) -> BTreeSet<i64> {
    requests
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .filter(|r| r.applied_at.is_some())
        .filter_map(|r| r.path.rsplit('/').next()?.parse().ok())
        .collect()
}

/// A simulator with `users` users, and a configuration whose one sink is a
/// json file holding every credential (`{root}/out/all.json`).
async fn with_one_json_sink(users: usize) -> (Simulator, Setup) {
    let opts = options(users);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[[sinks]]\ntype = \"file\"\npath = \"{root}/out/all.json\"\nformat = \"json\"\n",
    );
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    (sim, setup)
}

const DAILY: &str = "\n[schedule]\ncron = \"0 30 3 * * *\"\n";

/// An aggregate json sink, a json sink holding one user, and an env sink
/// holding one credential.
const THREE_SINKS: &str = r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"

[[sinks]]
type = "file"
path = "{root}/out/user001.json"
format = "json"
select = { users = ["user001@example.com"] }

[[sinks]]
type = "file"
path = "{root}/out/one.env"
format = "env"
select = { users = ["user002@example.com"], regions = ["European Union"] }
"#;

/// Every sink holds what the API holds now.
fn assert_sinks_current(sim: &Simulator, root: &Path, context: &str) {
    let api = api_keys(sim);
    let owners = owners(sim);
    assert_eq!(
        sink_keys(&root.join("out/all.json")),
        api,
        "{context}: all.json"
    );
    let user001: BTreeMap<_, _> = api
        .iter()
        .filter(|(id, _)| owners[id] == "user001@example.com")
        .map(|(id, keys)| (*id, keys.clone()))
        .collect();
    assert_eq!(
        sink_keys(&root.join("out/user001.json")),
        user001,
        "{context}: user001.json"
    );
    let env = std::fs::read_to_string(root.join("out/one.env")).unwrap();
    let snapshot = sim.snapshot();
    let eu = snapshot
        .users
        .iter()
        .find(|u| u.email == "user002@example.com")
        .unwrap()
        .credentials
        .iter()
        .find(|c| c.region == "European Union")
        .unwrap();
    assert!(
        env.contains(&format!("AWS_ACCESS_KEY_ID='{}'", eu.access_key)),
        "{context}: one.env holds {}:\n{env}",
        eu.access_key
    );
}

/// A run killed after regenerating and before delivering: a daemon started
/// afterwards (daily cron, no `run_on_start`) brings every sink to the
/// API's values before it waits for its first tick, and rotates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_after_a_kill_delivers_every_sink_before_its_first_tick() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &format!("{DAILY}{THREE_SINKS}"));
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("out")).unwrap();
    // A first pass writes every sink; the second is killed mid-way.
    let first = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_sinks_current(&sim, root, "after the first run");
    let killed = run_bin_env(
        args(&setup.config, &["--run-now", "--force"]),
        vec![(
            "CONTABO_ROTATOR_CRASH_AT".into(),
            "s3-after-regenerate:5".into(),
        )],
    )
    .await;
    assert_eq!(killed.status.code(), None, "{}", text(&killed));
    assert_ne!(
        sink_keys(&root.join("out/all.json")),
        api_keys(&sim),
        "the kill left the aggregate sink on dead keys"
    );
    let before = sim.requests().len();

    let log = root.join("daemon.log");
    let mut daemon = start_daemon(&setup, &log, &[]);
    let shown = wait_for_log(&mut daemon, &log, "Waiting for the next run.").await;
    assert!(shown.contains("Waiting for the next run."), "{shown}");
    assert!(
        shown.contains("Finishing the work an earlier run left"),
        "{shown}"
    );
    assert_sinks_current(&sim, root, "at the daemon's first wait");
    let later = &sim.requests()[before..];
    assert!(
        !later.iter().any(|r| r.operation.is_mutating()),
        "start-up recovery rotates nothing"
    );
    terminate(daemon, &log).await;
}

/// Killed again during start-up recovery (after the journal is resolved,
/// before the sinks are written): the next start finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_start_up_recovery_is_finished_by_the_next_start() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &format!("{DAILY}{THREE_SINKS}"));
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("out")).unwrap();
    for point in ["after-user-sink", "s3-after-confirm:2"] {
        let killed = run_bin_env(
            args(&setup.config, &["--run-now", "--force"]),
            vec![("CONTABO_ROTATOR_CRASH_AT".into(), point.into())],
        )
        .await;
        assert_eq!(killed.status.code(), None, "{point}: {}", text(&killed));
        let log = root.join("daemon-killed.log");
        let mut daemon = start_daemon(
            &setup,
            &log,
            &[("CONTABO_ROTATOR_CRASH_AT", "startup-after-resume")],
        );
        let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(
            status.code(),
            None,
            "{point}: killed during recovery: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        let log = root.join("daemon.log");
        let mut daemon = start_daemon(&setup, &log, &[]);
        let shown = wait_for_log(&mut daemon, &log, "Waiting for the next run.").await;
        assert!(
            shown.contains("Waiting for the next run."),
            "{point}: {shown}"
        );
        assert_sinks_current(&sim, root, point);
        terminate(daemon, &log).await;
        let journal = crate::util::journal_intents(&root.join("state"));
        assert!(journal.is_empty(), "{point}: {journal:?}");
    }
}

/// One user's listing fails on every attempt: no credential ends the pass
/// regenerated while a sink that selects it holds its old value. A sink
/// holding that user cannot be rendered completely, so the credentials it
/// selects are held back; everything else rotates and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_cannot_be_listed_leaves_no_sink_on_a_dead_key() {
    let opts = options(4);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let sinks = r#"
[[sinks]]
type = "file"
path = "{root}/out/a.json"
format = "json"
select = { users = ["user001@example.com", "user002@example.com"] }

[[sinks]]
type = "file"
path = "{root}/out/b.json"
format = "json"
select = { users = ["api-user@example.com", "user003@example.com"] }

[[sinks]]
type = "file"
path = "{root}/out/c.json"
format = "json"
select = { users = ["user003@example.com"] }
"#;
    let setup = write_config(&sim, &opts, sinks);
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("out")).unwrap();
    // The failing listing is retried twice, not ten times.
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_retries = 10", "max_retries = 2");
    write_secret(&setup.config, &config);
    let unlisted = user_id(&sim, "user002@example.com");
    sim.set_faults(vec![FaultRule::always(Fault::InternalServerError)
        .on(Operation::ListObjectStorageCredentials)
        .on_path(format!("/users/{unlisted}/"))]);
    let initial = api_keys(&sim);
    let selections: [(&str, &[&str]); 3] = [
        ("a.json", &["user001@example.com", "user002@example.com"]),
        ("b.json", &["api-user@example.com", "user003@example.com"]),
        ("c.json", &["user003@example.com"]),
    ];
    for run in 1..=2 {
        let before = sim.requests().len();
        let out = run_bin(args(&setup.config, &["--run-now", "--force"])).await;
        assert_eq!(out.status.code(), Some(1), "run {run}: {}", text(&out));
        let shown = text(&out);
        assert!(
            shown.contains("FAILED user user002@example.com"),
            "run {run}: {shown}"
        );
        assert!(
            shown.contains("the credentials of user002@example.com could not be listed"),
            "run {run}: {shown}"
        );
        let rotated = regenerated(&sim.requests()[before..]);
        let owners = owners(&sim);
        let api = api_keys(&sim);
        // What rotated: the users that no incomplete sink holds.
        let rotated_users: BTreeSet<&str> = rotated.iter().map(|id| owners[id].as_str()).collect();
        assert_eq!(
            rotated_users,
            BTreeSet::from(["api-user@example.com", "user003@example.com"]),
            "run {run}"
        );
        // No dead key: every sink selecting a rotated credential holds its
        // new value.
        for id in &rotated {
            for (file, users) in &selections {
                if users.contains(&owners[id].as_str()) {
                    assert_eq!(
                        sink_keys(&root.join("out").join(file)).get(id),
                        Some(&api[id]),
                        "run {run}: {file} holds credential {id}'s current value"
                    );
                }
            }
        }
        // Held back: user001's keys are still the first ones, and the sink
        // that could not be rendered completely was not written.
        for (id, keys) in &api {
            if owners[id] == "user001@example.com" {
                assert_eq!(&initial[id], keys, "run {run}: user001 held back");
            }
        }
        assert!(!root.join("out/a.json").exists(), "run {run}");
    }
}

/// A sink holding one user's credentials is written as soon as that user
/// is done (or a regenerate of it answered): its `on_change` marker reaches
/// the simulator before the pass regenerates the last user's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_user_sink_is_written_before_the_last_user_is_rotated() {
    let opts = options(4);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let users = [
        "api-user@example.com",
        "user001@example.com",
        "user002@example.com",
        "user003@example.com",
    ];
    let mark = |label: &str| {
        format!(
            "{}{MARK_PATH}{label}",
            sim.base_url().as_str().trim_end_matches('/')
        )
    };
    let mut sinks = String::new();
    for (i, user) in users.iter().enumerate() {
        sinks.push_str(&format!(
            r#"
[[sinks]]
type = "file"
path = "{{root}}/out/user{i}.json"
format = "json"
select = {{ users = ["{user}"] }}
on_change = ["curl", "-fsS", "-X", "POST", "{url}"]
"#,
            url = mark(&format!("user{i}"))
        ));
    }
    let setup = write_config(&sim, &opts, &sinks);
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("out")).unwrap();
    // One user at a time, each regenerate a little slow: the pass is long
    // against a file write and a curl.
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("concurrency = 8", "concurrency = 1");
    write_secret(&setup.config, &config);
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(20),
    ))
    .on(Operation::RegenerateObjectStorageCredentials)]);

    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = sim.requests();
    let first_mark = log
        .iter()
        .position(|r| r.operation == Operation::Mark && r.path.ends_with("/user0"))
        .expect("the first user's sink ran its on_change");
    let last_user = user_id(&sim, users[3]);
    let last_regenerates: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.operation == Operation::RegenerateObjectStorageCredentials
                && r.path.contains(&last_user)
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(last_regenerates.len(), 3);
    assert!(
        first_mark < last_regenerates[0],
        "the first user's sink (request {first_mark}) is written before the last user's first regenerate (request {})",
        last_regenerates[0]
    );
    // Each user's sink was written after that user's own regenerates.
    for (i, user) in users.iter().enumerate() {
        let id = user_id(&sim, user);
        // The last write of the user's sink (a regenerate's answer is
        // delivered at once; the confirm may write again).
        let mark_at = log
            .iter()
            .rposition(|r| r.operation == Operation::Mark && r.path.ends_with(&format!("/user{i}")))
            .unwrap();
        let last_own = log
            .iter()
            .rposition(|r| {
                r.operation == Operation::RegenerateObjectStorageCredentials && r.path.contains(&id)
            })
            .unwrap();
        assert!(last_own < mark_at, "{user}");
        let api = api_keys(&sim);
        let owners = owners(&sim);
        let held = sink_keys(&root.join(format!("out/user{i}.json")));
        let expected: BTreeMap<_, _> = api
            .into_iter()
            .filter(|(c, _)| owners[c] == *user)
            .collect();
        assert_eq!(held, expected, "{user}");
    }
}

/// `--run-now --log-format json` streams its report: one JSON object per
/// line, each rotation as it is recorded, and a summary last whose totals
/// match the lines. When the first `rotated` line reaches the test, the
/// test POSTs a marker to the simulator: it lands before the last user's
/// regenerates, so the line was printed while the pass was still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_now_report_streams_one_line_per_rotation_and_ends_with_totals() {
    use std::io::BufRead;
    let (sim, setup) = with_one_json_sink(4).await;
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("concurrency = 8", "concurrency = 1");
    write_secret(&setup.config, &config);
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(100),
    ))
    .on(Operation::RegenerateObjectStorageCredentials)]);

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(args(&setup.config, &["--log-format", "json", "--run-now"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mark = format!(
        "{}{MARK_PATH}report",
        sim.base_url().as_str().trim_end_matches('/')
    );
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines: Vec<serde_json::Value> = Vec::new();
        let mut marked = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
            if value["type"] == "rotated" && !marked {
                marked = true;
                let sent = Command::new("curl")
                    .args(["-fsS", "-X", "POST", &mark])
                    .output()
                    .unwrap();
                assert!(sent.status.success(), "the marker POST");
            }
            lines.push(value);
        }
        lines
    })
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let count = |kind: &str| lines.iter().filter(|l| l["type"] == kind).count();
    let summary = lines.last().expect("the report printed something");
    assert_eq!(summary["type"], "summary", "the summary comes last");
    assert_eq!(count("summary"), 1);
    assert_eq!(count("rotated"), 12, "one line per rotated credential");
    assert_eq!(summary["rotated"], 12);
    assert_eq!(summary["planned"], count("plan"));
    assert_eq!(summary["due"], 12);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["sinks_written"], 1);
    assert_eq!(count("delivery"), 1);
    for line in lines.iter().filter(|l| l["type"] == "rotated") {
        assert!(line["subject"].is_string() && line["new_fingerprint"].is_string());
    }
    let log = sim.requests();
    let marked_at = log
        .iter()
        .position(|r| r.operation == Operation::Mark && r.path.ends_with("/report"))
        .expect("the marker reached the simulator");
    let last_regenerate = log
        .iter()
        .rposition(|r| r.operation == Operation::RegenerateObjectStorageCredentials)
        .unwrap();
    assert!(
        marked_at < last_regenerate,
        "the first rotated line (marker at request {marked_at}) was printed before the last regenerate (request {last_regenerate})"
    );
    crate::util::assert_no_secret(&sim, &serde_json::to_string(&lines).unwrap());
}

/// A slow `on_change` (and a webhook that never answers) holds up no other
/// sink: while the hook of the sink holding every credential sleeps after
/// its first write, the one-user sinks of the users rotated meanwhile are
/// written. Order from the simulator's log, where the hooks POST markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_on_change_or_a_hanging_webhook_holds_up_no_other_sink() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    // Each user takes about a second, so the pass outlasts the first write.
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(300),
    ))
    .on(Operation::RegenerateObjectStorageCredentials)]);
    let mark = |label: &str| {
        format!(
            "{}{MARK_PATH}{label}",
            sim.base_url().as_str().trim_end_matches('/')
        )
    };
    // Accepts connections and never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hanging.local_addr().unwrap().port();
    let mut sinks = format!(
        r#"
[[sinks]]
type = "file"
path = "{{root}}/out/all.json"
format = "json"
wait = "100ms"
on_change = ["sh", "-c", "curl -fsS -X POST {start}; sleep 8; curl -fsS -X POST {end}"]

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
signing_secret = "whsec_dGVzdC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5YWJjZGVm"
timeout = "3s"
"#,
        start = mark("slow-start"),
        end = mark("slow-end"),
    );
    for (i, user) in [
        "api-user@example.com",
        "user001@example.com",
        "user002@example.com",
    ]
    .iter()
    .enumerate()
    {
        sinks.push_str(&format!(
            "\n[[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/user{i}.json\"\nformat = \"json\"\n\
             select = {{ users = [\"{user}\"] }}\non_change = [\"curl\", \"-fsS\", \"-X\", \"POST\", \"{}\"]\n",
            mark(&format!("user{i}"))
        ));
    }
    let setup = write_config(&sim, &opts, &sinks);
    crate::util::edit_config(
        &setup,
        &[
            ("concurrency = 8", "concurrency = 1"),
            ("max_retries = 10", "max_retries = 0"),
        ],
    );
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let shown = crate::util::output_text(&out);
    assert_eq!(out.status.code(), Some(1), "the webhook failed: {shown}");
    let marks: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(MARK_PATH))
        .map(|r| r.path[MARK_PATH.len()..].to_owned())
        .collect();
    let at = |label: &str| {
        marks
            .iter()
            .position(|m| m == label)
            .unwrap_or_else(|| panic!("no {label} marker in {marks:?}: {shown}"))
    };
    let (start, end) = (at("slow-start"), at("slow-end"));
    let meanwhile = marks[start..end]
        .iter()
        .filter(|m| m.starts_with("user"))
        .count();
    assert!(
        meanwhile >= 1,
        "one-user sinks were written while the slow hook slept: {marks:?}"
    );
    drop(hanging);
}

/// Resuming a killed pass reads its intents back with one list per user
/// (not one GET per intent), before the new pass starts listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reads_intents_back_with_one_list_per_user() {
    let (sim, setup) = with_one_json_sink(4).await;
    // Killed when the third user's intents are journaled: every user
    // started so far has unsettled intents.
    let killed = run_bin_env(
        args(&setup.config, &["--run-now"]),
        vec![(
            "CONTABO_ROTATOR_CRASH_AT".into(),
            "s3-after-journal:3".into(),
        )],
    )
    .await;
    assert_eq!(killed.status.code(), None, "{}", text(&killed));
    // The users with unsettled intents, from `status --json`.
    let status = run_bin(args(&setup.config, &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let users: BTreeSet<String> = status["pending_rotations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["kind"].as_str()?.strip_prefix("object_storage "))
        .map(|key| key.split('/').next().unwrap().to_owned())
        .collect();
    assert!(users.len() >= 2, "intents of several users: {status}");
    let before = sim.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await; // calls left in flight end
    let before = before.max(sim.requests().len());
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let resumed: Vec<RecordedRequest> = sim.requests()[before..]
        .iter()
        .take_while(|r| r.operation != Operation::RetrieveUserList)
        .cloned()
        .collect();
    let lists = resumed
        .iter()
        .filter(|r| r.operation == Operation::ListObjectStorageCredentials)
        .count();
    let gets = resumed
        .iter()
        .filter(|r| r.operation == Operation::GetObjectStorageCredentials)
        .count();
    assert_eq!(gets, 0, "no GET per intent");
    assert_eq!(
        lists,
        users.len(),
        "one list per user with intents: {status}"
    );
    assert_eq!(
        json_sink_keys(
            &serde_json::from_str(
                &std::fs::read_to_string(setup.dir.path().join("out/all.json")).unwrap()
            )
            .unwrap()
        ),
        api_keys(&sim)
    );
}

/// A user's regenerates wait for their request slots together rather than
/// one after another: with slots to spare, each user's three PATCHes all
/// reach the API before the first of them is applied (the simulator holds
/// each one first), so the last users of a pass leave no slot idle. Every
/// sink still ends on the API's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_regenerates_are_sent_together_when_slots_are_free() {
    let (sim, setup) = with_one_json_sink(2).await;
    sim.set_faults(vec![FaultRule::always(Fault::Latency(
        Duration::from_millis(200),
    ))
    .on(Operation::RegenerateObjectStorageCredentials)]);

    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = sim.requests();
    for email in ["api-user@example.com", "user001@example.com"] {
        let id = user_id(&sim, email);
        let patches: Vec<&RecordedRequest> = log
            .iter()
            .filter(|r| {
                r.operation == Operation::RegenerateObjectStorageCredentials && r.path.contains(&id)
            })
            .collect();
        assert_eq!(patches.len(), 3, "{email}");
        let last_sent = patches.iter().map(|r| r.received_at).max().unwrap();
        let first_applied = patches.iter().filter_map(|r| r.applied_at).min().unwrap();
        assert!(
            last_sent < first_applied,
            "{email}: every regenerate was sent before the first was applied"
        );
    }
    assert_eq!(
        sink_keys(&setup.dir.path().join("out/all.json")),
        api_keys(&sim)
    );
}
