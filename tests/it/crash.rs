//! Crash suite: the real binary killed with SIGKILL at many points of a run,
//! then run again.
//!
//! A run dies at every deliberate point of `rotation::crash` (the binary
//! kills itself there, `CONTABO_ROTATOR_CRASH_AT=NAME[:N]`), at the N-th
//! passage of the points a run passes several times, twice in a row (the
//! second kill during recovery), and at seeded random instants sent from
//! outside with `kill -KILL` while the simulator slows the mutating calls
//! down. After each case, at most two clean reruns bring it to exit 0, and
//! then:
//!
//! - the json, env and template sinks hold exactly the values the simulator
//!   holds now (S3 keys and, where managed, the client secret), and no temp
//!   file is left beside them;
//! - the stored client secret is the API's current one, and a further run
//!   logs in with it, makes no mutating call and sends no webhook event
//!   (nothing is left to do; the journal and the outbox are empty);
//! - the webhook receiver got one `*.rotated` event (by `webhook-id`: re-sends
//!   of one event count once) per rotation the simulator applied.
//!
//! Each account is small (3 or 4 users of 3 credentials) and the cases of
//! one test run one after another; the tests run in parallel.

use crate::util::output_text as text;
use crate::util::{api_keys, json_sink_keys, Receiver, Reply};
use crate::util::{args, options, run_bin, run_bin_env, write_config, write_secret, Setup};
use contabo_rotator::crash;
use contabo_simulator::{Fault, FaultRule, Operation, Simulator};
use rand::{Rng, SeedableRng};
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How the first run (or runs) of a case end early.
#[derive(Clone, Debug)]
enum Kill {
    /// The binary kills itself at this point (`NAME` or `NAME:N`).
    At(String),
    /// `kill -KILL` from outside this long after the start, with the
    /// simulator slowed down by [`slow_calls`]; `seed` drew the instant.
    After { seed: u64, after: Duration },
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::At(point) => write!(f, "at {point}"),
            Kill::After { seed, after } => {
                write!(f, "seed {seed}: kill -KILL after {} ms", after.as_millis())
            }
        }
    }
}

struct Case {
    users: usize,
    /// `[client_secret] rotate = true`.
    client_secret: bool,
    /// Runs killed one after another before the clean reruns.
    kills: Vec<Kill>,
    /// `[api] concurrency`.
    concurrency: usize,
}

impl Case {
    fn at(users: usize, client_secret: bool, points: &[&str]) -> Case {
        Case {
            users,
            client_secret,
            kills: points.iter().map(|p| Kill::At((*p).to_owned())).collect(),
            concurrency: 8,
        }
    }

    /// One request at a time: a kill at the n-th regenerate answer leaves
    /// at most one more regenerate sent (the next one takes the freed
    /// slot), so a rerun still has regenerates of its own to be killed at.
    /// With 8 slots, every regenerate of a small account is sent at once.
    fn one_request_at_a_time(mut self) -> Case {
        self.concurrency = 1;
        self
    }

    fn name(&self) -> String {
        let kills: Vec<String> = self.kills.iter().map(Kill::to_string).collect();
        format!(
            "[{} users{}, killed {}]",
            self.users,
            if self.client_secret {
                " + client secret"
            } else {
                ", S3 only"
            },
            kills.join(", then ")
        )
    }
}

/// What a case saw, for the test's summary line.
#[derive(Default)]
struct Tally {
    cases: usize,
    /// Runs that died of SIGKILL.
    kills: usize,
    /// Random kills that came after the run had already exited.
    late: usize,
    /// Cases that needed the second rerun.
    second_reruns: usize,
}

const TEMPLATE: &str = "\
{% for c in object_storage_credentials %}{{ c.credential_id }} {{ c.access_key }} {{ c.secret_key }}
{% endfor %}{% if client is defined %}client {{ client.client_secret }}
{% endif %}";

/// Four sinks: json (everything), env (one credential), a template
/// (everything) and a webhook, in that order.
fn setup(sim: &Simulator, case: &Case, hooks: &Receiver) -> Setup {
    let client = if case.client_secret {
        "[client_secret]\nrotate = true\n"
    } else {
        ""
    };
    // Proofs at the storage are paced (verify_requests_per_second); these
    // cases are about kills, so the budget does not slow them.
    let extra = format!(
        r#"
{client}
[object_storage]
verify_requests_per_second = 1000

[[sinks]]
type = "file"
path = "{{root}}/out/contabo.json"
format = "json"

[[sinks]]
type = "file"
path = "{{root}}/out/one.env"
format = "env"
select = {{ users = ["user001@example.com"], regions = ["European Union"] }}

[[sinks]]
type = "template"
template = "{{root}}/keys.txt.j2"
path = "{{root}}/out/keys.txt"

[[sinks]]
type = "webhook"
url = "{url}"
signing_secret = "whsec_Y3Jhc2gtc3VpdGUtc2lnbmluZy1rZXktMDEyMzQ1Njc4OQ=="
"#,
        url = hooks.url(),
    );
    let opts = options(case.users);
    let setup = write_config(sim, &opts, &extra);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    std::fs::write(setup.dir.path().join("keys.txt.j2"), TEMPLATE).unwrap();
    // A webhook that never answers must not hold a case for long.
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("max_retries = 10", "max_retries = 2")
        .replace(
            "concurrency = 8",
            &format!("concurrency = {}", case.concurrency),
        );
    write_secret(&setup.config, &text);
    setup
}

/// Latency on the calls a rotation waits for, so that a run lasts long
/// enough for a kill from outside to land anywhere in it.
fn slow_calls() -> Vec<FaultRule> {
    let slow = |op, ms| FaultRule::always(Fault::Latency(Duration::from_millis(ms))).on(op);
    vec![
        slow(Operation::Token, 8),
        slow(Operation::ListObjectStorageCredentials, 5),
        slow(Operation::RegenerateObjectStorageCredentials, 25),
        slow(Operation::GenerateClientSecret, 25),
        slow(Operation::RetrieveUserClient, 8),
    ]
}

/// Runs `--run-now` in a child, sends it SIGKILL after `after` (if given);
/// returns whether the signal killed it, how long it ran, and its output.
async fn run_killed_after(setup: &Setup, after: Option<Duration>) -> (bool, Duration, String) {
    let config = setup.config.clone();
    let log = setup.dir.path().join("killed-run.log");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&log).unwrap();
        let started = Instant::now();
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
            .args(["-c", &config.display().to_string(), "--run-now"])
            .env_remove("RUST_LOG")
            .env_remove("CONTABO_ROTATOR_CONFIG")
            .env_remove("CONTABO_ROTATOR_CRASH_AT")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        if let Some(after) = after {
            std::thread::sleep(after);
            // Until `wait` reaps it, an exited child keeps its pid: this
            // never signals another process.
            let sent = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
        let status = child.wait().unwrap();
        let elapsed = started.elapsed();
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        (status.signal() == Some(9), elapsed, output)
    })
    .await
    .unwrap()
}

fn mutations(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.operation.is_mutating())
        .count()
}

/// Waits until the simulator has answered every request the killed process
/// sent (it applies a request whose client is gone), for at most 500 ms.
///
/// A restart normally takes longer than the calls in flight; a call the
/// server applies after the restarted daemon has read the credential back
/// is beyond what any client can know about, and would make the rotated
/// events differ from what the simulator applied.
async fn quiesce(sim: &Simulator) {
    let started = Instant::now();
    while sim.requests().iter().any(|r| r.status == 0)
        && started.elapsed() < Duration::from_millis(500)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs one case and checks every promise of the module doc.
/// The state database after a kill passes SQLite's integrity check (a
/// kill before the database was created leaves none).
fn assert_db_sound(name: &str, setup: &Setup) {
    let state = setup.dir.path().join("state");
    if state.join("state.db").exists() {
        assert_eq!(crate::util::state_integrity(&state), "ok", "{name}");
    }
}

async fn run_case(case: &Case, tally: &mut Tally) {
    let name = case.name();
    let sim = Simulator::start(options(case.users)).await.unwrap();
    let initial_client_secret = sim.snapshot().client_secret.expose_secret().to_owned();
    let hooks = Receiver::start(Reply::status(200)).await;
    let setup = setup(&sim, case, &hooks);
    tally.cases += 1;

    for kill in &case.kills {
        match kill {
            Kill::At(point) => {
                let out = run_bin_env(
                    args(&setup.config, &["--run-now"]),
                    vec![("CONTABO_ROTATOR_CRASH_AT".into(), point.clone())],
                )
                .await;
                let shown = text(&out);
                let base = point.split(':').next().unwrap();
                assert_eq!(
                    out.status.signal(),
                    Some(9),
                    "{name}: the run was not killed at {point} (exit {:?}):\n{shown}",
                    out.status.code()
                );
                assert!(
                    shown.contains(&format!("crash point {base}: sending SIGKILL")),
                    "{name}: {shown}"
                );
                quiesce(&sim).await;
                tally.kills += 1;
                assert_db_sound(&name, &setup);
            }
            Kill::After { after, .. } => {
                sim.set_faults(slow_calls());
                let (killed, _, shown) = run_killed_after(&setup, Some(*after)).await;
                quiesce(&sim).await;
                sim.set_faults(Vec::new());
                assert!(!shown.contains("panicked"), "{name}: {shown}");
                if killed {
                    tally.kills += 1;
                    assert_db_sound(&name, &setup);
                } else {
                    tally.late += 1;
                }
            }
        }
    }

    // At most two clean reruns.
    let mut reruns = Vec::new();
    loop {
        let out = run_bin(args(&setup.config, &["--run-now"])).await;
        let ok = out.status.code() == Some(0);
        reruns.push(out);
        if ok {
            break;
        }
        let shown: Vec<String> = reruns.iter().map(text).collect();
        assert!(
            reruns.len() < 2,
            "{name}: no clean exit after two reruns:\n{}",
            shown.join("\n---\n")
        );
    }
    if reruns.len() == 2 {
        tally.second_reruns += 1;
    }
    let last = text(reruns.last().unwrap());
    assert!(!last.contains("panicked"), "{name}: {last}");

    // The sinks hold what the API holds.
    let root = setup.dir.path();
    check_sinks(&name, root, &sim, case.client_secret, &last);

    // The daemon holds the API's client secret.
    let current = sim.snapshot().client_secret.expose_secret().to_owned();
    if case.client_secret {
        assert_ne!(
            current, initial_client_secret,
            "{name}: client secret rotated"
        );
        let stored: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("state/client-secret.json"))
                .unwrap_or_else(|e| panic!("{name}: no stored client secret: {e}")),
        )
        .unwrap();
        assert!(
            stored["secret"] == current.as_str(),
            "{name}: the stored client secret is not the API's"
        );
    } else {
        assert_eq!(current, initial_client_secret, "{name}: S3 only");
    }

    // A further run logs in with it and has nothing left to do.
    let before = (mutations(&sim), hooks.posts().len());
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{name}: further run:\n{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("Login refused"),
        "{name}: logged in with the stored secret at once:\n{}",
        text(&out)
    );
    assert_eq!(
        (mutations(&sim), hooks.posts().len()),
        before,
        "{name}: the further run rotated or announced something:\n{}",
        text(&out)
    );
    check_state_settled(&name, root);

    check_events(&name, &sim, &hooks, case.client_secret);
}

fn check_sinks(name: &str, root: &Path, sim: &Simulator, with_client: bool, last: &str) {
    let out = root.join("out");
    let api = api_keys(sim);
    let client_secret = sim.snapshot().client_secret.expose_secret().to_owned();

    // json: every credential, and the client when managed.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("contabo.json"))
            .unwrap_or_else(|e| panic!("{name}: json sink: {e}\n{last}")),
    )
    .unwrap();
    let in_json = json_sink_keys(&json);
    assert!(in_json == api, "{name}: json sink differs from the API");
    if with_client {
        assert!(
            json["client"]["client_secret"] == client_secret.as_str(),
            "{name}: json sink's client secret differs from the API's"
        );
    } else {
        assert!(json.get("client").is_none(), "{name}");
    }

    // template: one line per credential, then the client.
    let keys = std::fs::read_to_string(out.join("keys.txt")).unwrap();
    let mut in_template = BTreeMap::new();
    let mut template_client = None;
    for line in keys.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["client", secret] => template_client = Some((*secret).to_owned()),
            [id, access, secret] => {
                in_template.insert(
                    id.parse::<i64>().unwrap(),
                    ((*access).to_owned(), (*secret).to_owned()),
                );
            }
            _ => panic!("{name}: template sink line {line:?}"),
        }
    }
    assert!(
        in_template == api,
        "{name}: template sink differs from the API"
    );
    assert!(
        template_client == with_client.then(|| client_secret.clone()),
        "{name}: template sink's client secret differs from the API's"
    );

    // env: user001's credential in the EU, as sh reads it.
    let snapshot = sim.snapshot();
    let user = snapshot
        .users
        .iter()
        .find(|u| u.email == "user001@example.com")
        .unwrap();
    let eu = user
        .credentials
        .iter()
        .find(|c| c.region == "European Union")
        .unwrap();
    let sourced = Command::new("sh")
        .args([
            "-c",
            ". \"$1\" && printf '%s %s' \"$AWS_ACCESS_KEY_ID\" \"$AWS_SECRET_ACCESS_KEY\"",
            "sh",
        ])
        .arg(out.join("one.env"))
        .env_clear()
        .output()
        .unwrap();
    assert!(sourced.status.success(), "{name}: {}", text(&sourced));
    assert!(
        String::from_utf8_lossy(&sourced.stdout)
            == format!("{} {}", eu.access_key, eu.secret_key.expose_secret()),
        "{name}: env sink differs from the API"
    );

    // Nothing but the sinks' files: no temp file left by a killed write.
    let names: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ["contabo.json", "keys.txt", "one.env"]
        .map(String::from)
        .into();
    assert_eq!(names, want, "{name}: files in the sinks' directory");
}

/// No intent left in the journal, no event left in the outbox.
fn check_state_settled(name: &str, root: &Path) {
    let state = root.join("state");
    let journal = crate::util::journal_intents(&state);
    assert!(journal.is_empty(), "{name}: journal {journal:?}");
    assert_eq!(crate::util::state_integrity(&state), "ok", "{name}");
    let outbox = crate::util::outbox_json(&state);
    for (sink, queue) in outbox["queues"].as_object().unwrap() {
        assert_eq!(
            queue["events"].as_array().map(Vec::len),
            Some(0),
            "{name}: events left for {sink}: {queue}"
        );
    }
}

/// One rotated event (by webhook-id) per rotation the simulator applied.
fn check_events(name: &str, sim: &Simulator, hooks: &Receiver, with_client: bool) {
    // A request the simulator answered 200 was applied; one whose client
    // died before the answer was sent may still have been (status 200 is
    // recorded as the handler finishes, whether or not anyone reads it).
    let mut applied: BTreeMap<i64, usize> = BTreeMap::new();
    let mut client_applied = 0;
    for r in sim.requests() {
        if r.status != 200 {
            continue;
        }
        match r.operation {
            Operation::RegenerateObjectStorageCredentials => {
                let id = r.path.rsplit('/').next().unwrap().parse().unwrap();
                *applied.entry(id).or_default() += 1;
            }
            Operation::GenerateClientSecret => client_applied += 1,
            _ => {}
        }
    }
    let mut announced: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut client_announced = BTreeSet::new();
    for post in hooks.posts() {
        let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
        match body["type"].as_str().unwrap() {
            "object_storage_credential.rotated" => {
                announced
                    .entry(body["data"]["credential_id"].as_i64().unwrap())
                    .or_default()
                    .insert(post.webhook_id());
            }
            "client_secret.rotated" => {
                client_announced.insert(post.webhook_id());
            }
            // A proof's follow-up (`verify = "s3"`); a kill may cut it off.
            "object_storage_credential.verified" => {}
            other => panic!("{name}: unexpected event {other}: {}", post.body),
        }
    }
    let announced: BTreeMap<i64, usize> = announced
        .into_iter()
        .map(|(id, ids)| (id, ids.len()))
        .collect();
    assert_eq!(
        announced, applied,
        "{name}: rotated events per credential vs. regenerations applied"
    );
    assert_eq!(
        applied.len(),
        api_keys(sim).len(),
        "{name}: every credential rotated"
    );
    assert_eq!(
        (client_announced.len(), client_applied),
        (usize::from(with_client), usize::from(with_client)),
        "{name}: client_secret.rotated events vs. client-secret PUTs applied"
    );
}

fn summary(test: &str, tally: &Tally) {
    println!(
        "{test}: {} cases, {} runs killed, {} random kills after the run ended, {} cases needed a second rerun",
        tally.cases, tally.kills, tally.late, tally.second_reruns
    );
}

/// Every deliberate point once, with the client secret rotated (a point
/// only a resumed run passes is reached by killing the run before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_then_rerun_converges() {
    let mut tally = Tally::default();
    for point in crash::POINTS {
        let kills: Vec<&str> = if point.starts_with("resume-") {
            vec!["s3-after-confirm", point]
        } else {
            vec![point]
        };
        run_case(&Case::at(3, true, &kills), &mut tally).await;
    }
    assert!(tally.kills > crash::POINTS.len());
    summary("every crash point", &tally);
}

/// N-th passages of the points a run passes several times; S3-only runs;
/// a second kill while the first one is being recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nth_passages_s3_only_runs_and_double_kills_converge() {
    let mut tally = Tally::default();
    let cases = [
        // 12 credentials, regenerated by 4 users concurrently.
        Case::at(4, true, &["s3-after-regenerate:1"]),
        Case::at(4, true, &["s3-after-regenerate:2"]),
        Case::at(4, true, &["s3-after-regenerate:5"]),
        Case::at(4, true, &["s3-after-regenerate:10"]),
        Case::at(4, true, &["s3-after-regenerate:12"]),
        Case::at(4, true, &["s3-after-confirm:2"]),
        Case::at(4, true, &["s3-after-confirm:4"]),
        // json, env, template, webhook.
        Case::at(3, true, &["after-sink:1"]),
        Case::at(3, true, &["after-sink:2"]),
        Case::at(3, true, &["after-sink:3"]),
        Case::at(3, true, &["sink-temp-created:2"]),
        Case::at(3, true, &["sink-temp-created:3"]),
        // 9 credentials and the client secret: 10 events.
        Case::at(3, true, &["webhook-after-post:3"]),
        Case::at(3, true, &["webhook-after-post:10"]),
        // A one-user sink written, its record not saved.
        Case::at(3, true, &["after-user-sink"]),
        Case::at(3, false, &["after-user-sink"]),
        // S3 only.
        Case::at(3, false, &["s3-after-journal"]),
        Case::at(3, false, &["s3-after-regenerate:4"]),
        Case::at(3, false, &["s3-after-record"]),
        Case::at(3, false, &["before-delivery"]),
        Case::at(3, false, &["after-sink:2"]),
        Case::at(3, false, &["after-delivery"]),
        // Killed again while recovering.
        Case::at(3, true, &["s3-after-regenerate:3", "s3-after-regenerate:2"])
            .one_request_at_a_time(),
        Case::at(3, true, &["s3-after-confirm:2", "resume-after-record"]),
        Case::at(
            3,
            true,
            &["client-secret-after-store", "resume-after-record"],
        ),
        Case::at(3, true, &["client-secret-after-confirm", "before-delivery"]),
        // One request at a time: the first kill comes at the first user's
        // record, so the second run has several events to post.
        Case::at(3, true, &["s3-after-record", "webhook-after-post:2"]).one_request_at_a_time(),
        Case::at(3, true, &["client-secret-after-journal", "after-sink:1"]),
    ];
    for case in &cases {
        run_case(case, &mut tally).await;
    }
    summary("nth passages and double kills", &tally);
}

/// Seeded kills from outside, each at a seeded fraction of how long the
/// same run takes uninterrupted (measured once per test). The seeds are
/// fixed so CI draws the same instants; a kill that comes after the run has
/// exited is counted, and the case is checked all the same.
async fn seeded_kills(test: &str, seeds: std::ops::Range<u64>, users: usize) {
    // The length of an uninterrupted run under the same latency: the
    // shorter of two, the better estimate when other tests load the machine.
    let calibration = Case {
        users,
        client_secret: true,
        kills: Vec::new(),
        concurrency: 8,
    };
    let mut full = Duration::MAX;
    for _ in 0..2 {
        let sim = Simulator::start(options(users)).await.unwrap();
        let hooks = Receiver::start(Reply::status(200)).await;
        let probe = setup(&sim, &calibration, &hooks);
        sim.set_faults(slow_calls());
        let (_, took, output) = run_killed_after(&probe, None).await;
        assert!(output.contains("rotated"), "calibration run: {output}");
        full = full.min(took);
    }

    let mut tally = Tally::default();
    for seed in seeds.clone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let after = full.mul_f64(rng.random_range(0.0..1.0));
        let case = Case {
            users,
            client_secret: seed % 8 != 0,
            kills: vec![Kill::After { seed, after }],
            concurrency: 8,
        };
        run_case(&case, &mut tally).await;
    }
    assert!(
        tally.kills * 3 >= seeds.count(),
        "{test}: the seeded kills landed inside the run ({} ms long)",
        full.as_millis()
    );
    println!("{test}: an uninterrupted run took {} ms", full.as_millis());
    summary(test, &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_kills_from_outside_with_three_users_converge() {
    seeded_kills("seeded kills, 3 users", 1..13, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_kills_from_outside_with_four_users_converge() {
    seeded_kills("seeded kills, 4 users", 101..113, 4).await;
}
