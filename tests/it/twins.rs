//! Twin users (docs/design.md §1.10, §4 "Twin users"): the real binary against
//! the simulator. A switch regenerates the standby, proves its keys and
//! hands them over while the keys handed over before stay valid; they are
//! retired (regenerated, discarded) only after `retire_after`. Order is
//! read from the simulator's logs.

use crate::util::{args, options, output_text, run_bin, run_bin_env, user_id, write_config, Setup};
use contabo_simulator::{Operation, RecordedRequest, Simulator, SimulatorOptions};
use secrecy::SecretString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const A: &str = "user001@example.com";
const B: &str = "user002@example.com";
const RETIRE_AFTER: Duration = Duration::from_secs(3);

fn opts() -> SimulatorOptions {
    SimulatorOptions {
        credentials_per_user: 2,
        ..options(4)
    }
}

/// A twin `app` of users 1 and 2 (user 3 is an ordinary user), held by a
/// json and an aws-credentials sink, plus `extra`.
fn config(sim: &Simulator, extra: &str) -> Setup {
    let text = format!(
        "[object_storage]\nverify_timeout = \"5s\"\n\n\
         [[object_storage.twins]]\nname = \"app\"\nusers = [\"{A}\", \"{B}\"]\n\
         retire_after = \"{}s\"\n{extra}\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/app.json\"\nformat = \"json\"\n\
         select = {{ twins = [\"app\"] }}\n\n\
         [[sinks]]\ntype = \"file\"\npath = \"{{root}}/out/credentials\"\nformat = \"aws-credentials\"\n\
         select = {{ twins = [\"app\"] }}\n",
        RETIRE_AFTER.as_secs()
    );
    let setup = write_config(sim, &opts(), &text);
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    setup
}

async fn start() -> Simulator {
    Simulator::start(opts()).await.unwrap()
}

fn sink(setup: &Setup) -> serde_json::Value {
    let text = std::fs::read_to_string(setup.dir.path().join("out/app.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The user e-mail and access keys the json sink holds.
fn sink_keys(setup: &Setup) -> (String, Vec<String>) {
    let json = sink(setup);
    let list = json["object_storage_credentials"].as_array().unwrap();
    let emails: Vec<&str> = list
        .iter()
        .map(|c| c["user_email"].as_str().unwrap())
        .collect();
    assert!(
        emails.windows(2).all(|w| w[0] == w[1]),
        "one user: {emails:?}"
    );
    let keys = list
        .iter()
        .map(|c| c["access_key"].as_str().unwrap().to_owned())
        .collect();
    (emails[0].to_owned(), keys)
}

/// A user's access keys as the API holds them now.
fn api_keys_of(sim: &Simulator, email: &str) -> Vec<String> {
    let snapshot = sim.snapshot();
    let user = snapshot.users.iter().find(|u| u.email == email).unwrap();
    user.credentials
        .iter()
        .map(|c| c.access_key.clone())
        .collect()
}

/// The regenerates of `email`'s credentials, in arrival order.
fn regenerates<'a>(
    requests: &'a [RecordedRequest],
    sim: &Simulator,
    email: &str,
) -> Vec<&'a RecordedRequest> {
    let id = user_id(sim, email);
    requests
        .iter()
        .filter(|r| r.operation == Operation::RegenerateObjectStorageCredentials && r.status == 200)
        .filter(|r| r.path.contains(&format!("/users/{id}/")))
        .collect()
}

/// The twin's active user and the user a switch under way goes to, as
/// the state database holds them.
fn twin_row(setup: &Setup) -> (String, Option<String>) {
    crate::util::state_db(&setup.dir.path().join("state"))
        .query_row("SELECT active_email, switch_email FROM twins", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
}

async fn run(setup: &Setup, rest: &[&str]) -> std::process::Output {
    let mut all = vec!["--run-now", "--log-format", "json"];
    all.extend_from_slice(rest);
    run_bin(args(&setup.config, &all)).await
}

/// The report lines of one type.
fn lines(out: &std::process::Output, kind: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["type"] == kind)
        .collect()
}

/// An application that signs a ListBuckets every 25 ms with the keys it
/// reads from the json sink (re-read each time), counting refusals.
struct Reader {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(setup: &Setup) -> Reader {
        let path = setup.dir.path().join("out/app.json");
        let (stop, sent, refused) = (Arc::default(), Arc::default(), Arc::default());
        let (s, n, r): (Arc<AtomicBool>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&refused));
        let task = tokio::spawn(async move {
            let http = contabo_rotator::net::client_builder().build().unwrap();
            while !s.load(Ordering::SeqCst) {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let c = &json["object_storage_credentials"][0];
                let url = format!("{}/", c["s3_url"].as_str().unwrap());
                let region =
                    contabo_rotator::sinks::formats::region_code(c["region"].as_str().unwrap());
                let secret = SecretString::from(c["secret_key"].as_str().unwrap().to_owned());
                let headers = contabo_rotator::rotation::signed_headers(
                    "GET",
                    &url,
                    &[],
                    &[],
                    region,
                    (c["access_key"].as_str().unwrap(), &secret),
                    std::time::SystemTime::now(),
                )
                .unwrap();
                let mut request = http.get(&url);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let status = request.send().await.unwrap().status();
                n.fetch_add(1, Ordering::SeqCst);
                if !status.is_success() {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        Reader {
            stop,
            sent,
            refused,
            task,
        }
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.sent.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sight_hands_over_the_first_users_keys_as_they_are() {
    let sim = start().await;
    let setup = config(&sim, "");
    let before = api_keys_of(&sim, A);
    let out = run(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    // Neither twin user regenerated; the ordinary user 3 was.
    let requests = sim.requests();
    assert!(regenerates(&requests, &sim, A).is_empty());
    assert!(regenerates(&requests, &sim, B).is_empty());
    assert!(!regenerates(&requests, &sim, "user003@example.com").is_empty());
    assert_eq!(sink_keys(&setup), (A.to_owned(), before));
    let json = sink(&setup);
    let first = &json["object_storage_credentials"][0];
    assert_eq!(first["twin"], "app");
    let profiles = std::fs::read_to_string(setup.dir.path().join("out/credentials")).unwrap();
    // Profile names are the twin's and the region's, whoever is active.
    let names: Vec<&str> = profiles.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(names.len(), 2, "{profiles}");
    assert!(names.iter().all(|n| n.starts_with("[app-")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("user")), "{names:?}");
}

/// Three forced switches, each after the grace period of the one before:
/// the sink alternates between the users' fresh keys, a reader sees no
/// refusal, a forced run inside a grace period is deferred and changes
/// nothing, and each previous key is regenerated no earlier than
/// `retire_after` after its handover.
#[tokio::test(flavor = "multi_thread")]
async fn forced_switches_alternate_the_users_without_a_refusal() {
    let sim = start().await;
    let setup = config(&sim, "");
    let out = run(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let reader = Reader::start(&setup);
    let mut expected = A;
    for round in 0..3 {
        let out = run(&setup, &["--force"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            output_text(&out)
        );
        let switched = lines(&out, "twin");
        let previous = expected;
        expected = if expected == A { B } else { A };
        assert!(
            switched
                .iter()
                .any(|l| l["action"] == "switched" && l["user_email"] == expected),
            "round {round}: {switched:?}"
        );
        // The sink holds the standby's new keys, the API's current ones.
        let (email, keys) = sink_keys(&setup);
        assert_eq!(
            (email.as_str(), &keys),
            (expected, &api_keys_of(&sim, expected))
        );
        // Inside the grace period a forced run is deferred and changes nothing.
        let requests_before = sim.requests().len();
        let out = run(&setup, &["--force"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let twin = lines(&out, "twin");
        assert!(twin.iter().any(|l| l["action"] == "deferred"), "{twin:?}");
        // Nor does it rewrite a sink: the twin's values are as before.
        assert_eq!(
            lines(&out, "summary")[0]["sinks_written"],
            0,
            "{}",
            output_text(&out)
        );
        let later = sim.requests();
        assert!(regenerates(&later[requests_before..], &sim, A).is_empty());
        assert!(regenerates(&later[requests_before..], &sim, B).is_empty());
        // The previous user's keys still work until retire_after.
        assert_eq!(sink_keys(&setup).0, expected);
        assert!(!api_keys_of(&sim, previous).is_empty());
        tokio::time::sleep(RETIRE_AFTER + Duration::from_millis(300)).await;
    }
    // One more run retires the last previous keys.
    let out = run(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        lines(&out, "twin").iter().any(|l| l["action"] == "retired"),
        "{}",
        output_text(&out)
    );
    let (sent, refused) = reader.stop().await;
    assert!(sent > 0);
    assert_eq!(refused, 0, "{refused} of {sent} reads refused");
    // Each retirement (a regenerate of the user the sinks left) comes at
    // least retire_after after the regenerate that handed over the other
    // user's keys, and never while the sinks hold that user.
    let requests = sim.requests();
    let switch_of = |email: &str| regenerates(&requests, &sim, email);
    let (a, b) = (switch_of(A), switch_of(B));
    // B: switch (2 credentials), retire, switch; A: retire, switch, retire.
    assert_eq!(b.len(), 6, "{b:?}");
    assert_eq!(a.len(), 6, "{a:?}");
    let handover = |r: &[&RecordedRequest], i: usize| r[2 * i + 1].received_at;
    // Order: B switch, A retire, A switch, B retire, B switch, A retire.
    let steps = [(&b, 0), (&a, 0), (&a, 1), (&b, 1), (&b, 2), (&a, 2)];
    for pair in steps.windows(2) {
        let (earlier, later) = (
            handover(pair[0].0, pair[0].1),
            pair[1].0[2 * pair[1].1].received_at,
        );
        assert!(later > earlier, "order");
    }
    // A retirement is at least retire_after after the handover before it.
    for (handed, retired) in [((&b, 0), (&a, 0)), ((&a, 1), (&b, 1)), ((&b, 2), (&a, 2))] {
        let gap = retired.0[2 * retired.1].received_at - handover(handed.0, handed.1);
        assert!(gap >= RETIRE_AFTER, "retired {gap:?} after the handover");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_twin_user_missing_from_the_account_fails_the_twin_and_writes_nothing() {
    let sim = start().await;
    let setup = config(&sim, "");
    crate::util::edit_config(&setup, &[(B, "nobody@example.com")]);
    let out = run(&setup, &["--force"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let failed = lines(&out, "failed");
    assert!(
        failed.iter().any(|l| l["kind"] == "twin"
            && l["subject"] == "app"
            && l["error"].as_str().unwrap().contains("nobody@example.com")),
        "{failed:?}"
    );
    assert!(!setup.dir.path().join("out/app.json").exists());
    assert!(regenerates(&sim.requests(), &sim, A).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_at_each_switch_point_leaves_the_sink_on_a_valid_key() {
    for point in contabo_rotator::crash::TWIN_POINTS {
        let sim = start().await;
        let setup = config(&sim, "");
        let out = run(&setup, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let env = vec![("CONTABO_ROTATOR_CRASH_AT".to_owned(), (*point).to_owned())];
        let out = run_bin_env(args(&setup.config, &["--run-now", "--force"]), env).await;
        assert_ne!(out.status.code(), Some(0), "{point}: {}", output_text(&out));
        // Whichever user the sink holds, its keys are the API's current ones.
        let (email, keys) = sink_keys(&setup);
        assert_eq!(
            keys,
            api_keys_of(&sim, &email),
            "{point}: the sink holds a dead key"
        );
        let pending: Option<String> = crate::util::state_db(&setup.dir.path().join("state"))
            .query_row(
                "SELECT switch_user_id FROM twins WHERE name = 'app'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(pending.is_some(), "{point}: the switch is journalled");
        // The next run finishes the switch: the sinks on B's proven keys,
        // the switch recorded, A not retired.
        let out = run(&setup, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{point}: {}", output_text(&out));
        let twin = lines(&out, "twin");
        assert!(
            twin.iter()
                .any(|l| l["action"] == "switched" && l["recovered"] == true),
            "{point}: {twin:?}"
        );
        assert_eq!(
            sink_keys(&setup),
            (B.to_owned(), api_keys_of(&sim, B)),
            "{point}"
        );
        assert_eq!(twin_row(&setup), (B.to_owned(), None), "{point}");
        assert!(
            regenerates(&sim.requests(), &sim, A).is_empty(),
            "{point}: A retired early"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_twins_are_config_errors_naming_the_key() {
    let sim = start().await;
    let cases: [(&str, &str, &str); 4] = [
        ("[[object_storage.twins]]\nname = \"x\"\nusers = [\"a@example.com\"]\n", "object_storage.twins[1].users", "exactly two"),
        ("[[object_storage.twins]]\nname = \"y\"\nusers = [\"user001@example.com\", \"c@example.com\"]\n", "object_storage.twins[1].users", "at most one twin"),
        ("[[object_storage.twins]]\nname = \"bad name\"\nusers = [\"c@example.com\", \"d@example.com\"]\n", "object_storage.twins[1].name", "not a twin name"),
        ("[[object_storage.twins]]\nname = \"z\"\nusers = [\"c@example.com\", \"d@example.com\"]\nretire_after = \"0s\"\n", "object_storage.twins[1].retire_after", "out of range"),
    ];
    for (extra, key, problem) in cases {
        let setup = config(&sim, extra);
        let out = run(&setup, &[]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(78), "{text}");
        assert!(
            text.contains(key) && text.contains(problem),
            "{key}: {text}"
        );
    }
    let setup = config(&sim, "");
    crate::util::edit_config(
        &setup,
        &[(
            "select = { twins = [\"app\"] }\n\n",
            "select = { twins = [\"web\"] }\n\n",
        )],
    );
    let out = run(&setup, &[]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("sinks[0].select.twins[0]"), "{text}");
}

/// The daemon wakes for a retirement between ticks (its cron is a year
/// away), and its start-up recovery finishes a switch a kill left under
/// way.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_finishes_a_stopped_switch_at_start_and_wakes_to_retire() {
    use crate::util::{start_daemon, terminate, wait_for_log};
    let sim = start().await;
    let setup = config(&sim, "[schedule]\ncron = \"0 0 0 1 1 *\"\n");
    let out = run(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let env = vec![(
        "CONTABO_ROTATOR_CRASH_AT".to_owned(),
        "twin-after-regenerate".to_owned(),
    )];
    let out = run_bin_env(args(&setup.config, &["--run-now", "--force"]), env).await;
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    // The sinks still hold A; B was regenerated.
    assert_eq!(sink_keys(&setup).0, A);
    let log = setup.dir.path().join("daemon.log");
    let mut daemon = start_daemon(&setup, &log, &[]);
    let text = wait_for_log(&mut daemon, &log, "Scheduled run finished.").await;
    assert!(
        text.contains("\"retirement\":true") || text.contains("retirement=true"),
        "{text}"
    );
    terminate(daemon, &log).await;
    // Start-up recovery handed B's regenerated keys over, then the daemon
    // woke retire_after later and regenerated A's: the sink still holds
    // B's keys, which the API still holds.
    assert_eq!(sink_keys(&setup), (B.to_owned(), api_keys_of(&sim, B)));
    let requests = sim.requests();
    let (a, b) = (
        regenerates(&requests, &sim, A),
        regenerates(&requests, &sim, B),
    );
    assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
    assert!(a[0].received_at - b[1].received_at >= RETIRE_AFTER);
    let db = crate::util::state_db(&setup.dir.path().join("state"));
    let (previous, retired): (Option<String>, Option<String>) = db
        .query_row(
            "SELECT previous_email, last_retired_at FROM twins",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(previous.is_none() && retired.is_some());
}

/// A switch and a retirement show in `status`, `list`, the metrics file,
/// the audit log and the webhook events, and no secret reaches any.
#[tokio::test(flavor = "multi_thread")]
async fn switches_and_retirements_are_visible_everywhere_without_a_secret() {
    use crate::util::{Receiver, Reply};
    let sim = start().await;
    let receiver = Receiver::start(Reply::status(200)).await;
    let hook = format!(
        "[[sinks]]\ntype = \"webhook\"\nurl = \"{}\"\nsigning_secret = \"whsec_{}\"\ninclude_secrets = true\n",
        receiver.url(),
        "dGVzdC1zaWduaW5nLWtleS10d2lucy0wMTIzNDU2Nzg5"
    );
    let setup = config(&sim, "");
    let text = std::fs::read_to_string(&setup.config).unwrap() + "\n" + &hook;
    crate::util::write_secret(&setup.config, &text);
    let metrics = setup.dir.path().join("out/metrics.prom");
    let metrics_arg = metrics.display().to_string();
    for rest in [&[][..], &["--force"][..]] {
        let mut all = rest.to_vec();
        all.extend(["--metrics-file", metrics_arg.as_str()]);
        let out = run(&setup, &all).await;
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    }
    tokio::time::sleep(RETIRE_AFTER + Duration::from_millis(300)).await;
    let out = run(&setup, &["--metrics-file", &metrics_arg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let mut seen = output_text(&out);
    let status = run_bin(args(&setup.config, &["status"])).await;
    let status = output_text(&status);
    assert!(
        status.contains(&format!("Twin app: active {B}")),
        "{status}"
    );
    let status_json = run_bin(args(&setup.config, &["status", "--json"])).await;
    let doc: serde_json::Value = serde_json::from_slice(&status_json.stdout).unwrap();
    assert_eq!(doc["twins"][0]["active_user_email"], B);
    assert!(doc["twins"][0]["last_retired_at"].is_string(), "{doc}");
    let list = run_bin(args(&setup.config, &["list", "--json"])).await;
    let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let roles: Vec<(String, String)> = listing["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["twin"] == "app")
        .map(|r| {
            (
                r["user_email"].as_str().unwrap().to_owned(),
                r["twin_role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(roles.len(), 4, "{roles:?}");
    assert!(
        roles.iter().all(|(e, role)| (e == B) == (role == "active")),
        "{roles:?}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains(&format!(
            "contabo_rotator_twin_active_user{{twin=\"app\",user_email=\"{B}\"}} 1"
        )),
        "{prom}"
    );
    assert!(
        prom.contains("contabo_rotator_twin_last_switch_timestamp_seconds{twin=\"app\"}"),
        "{prom}"
    );
    let audit = std::fs::read_to_string(setup.dir.path().join("state/audit.log")).unwrap();
    assert!(audit.contains("\"subject\":\"twin app\""), "{audit}");
    let types: Vec<String> = receiver
        .posts()
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(&p.body).ok())
        .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        types.iter().any(|t| t == "object_storage_twin.switched"),
        "{types:?}"
    );
    assert!(
        types.iter().any(|t| t == "object_storage_twin.retired"),
        "{types:?}"
    );
    for p in receiver.posts() {
        if p.body.contains("object_storage_twin") {
            seen.push_str(&p.body);
        }
    }
    seen.push_str(&status);
    seen.push_str(&String::from_utf8_lossy(&list.stdout));
    seen.push_str(&prom);
    seen.push_str(&audit);
    crate::util::assert_no_secret(&sim, &seen);
}

/// A standby that a bucket policy denies one probe bucket is not handed
/// over: exit 1 naming the twin, the user and the bucket; the sinks keep
/// the active keys, which still work; no switch is recorded. Once the
/// policy names both users, the switch goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_denied_a_probe_bucket_is_not_handed_over() {
    let sim = start().await;
    for endpoint in sim.s3_endpoints() {
        sim.create_bucket(endpoint.signing_region, "app-data");
    }
    let setup = config(&sim, "probe_buckets = [\"app-data\"]\n");
    crate::util::edit_config(
        &setup,
        &[("verify_timeout = \"5s\"", "verify_timeout = \"2s\"")],
    );
    let out = run(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let before = sink_keys(&setup);
    let b = user_id(&sim, B);
    sim.deny_bucket(&b, None, "app-data");
    let out = run(&setup, &["--force"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let failed = lines(&out, "failed");
    assert!(
        failed.iter().any(|l| l["kind"] == "twin"
            && l["subject"] == "app"
            && l["error"].as_str().unwrap().contains(B)
            && l["error"].as_str().unwrap().contains("app-data")),
        "{failed:?}"
    );
    // The sink is unchanged and its keys are still the API's.
    assert_eq!(sink_keys(&setup), before);
    assert_eq!(before.1, api_keys_of(&sim, A));
    assert_eq!(twin_row(&setup), (A.to_owned(), None));
    // Every probe of the denied bucket was signed by B and refused.
    let denied: Vec<_> = sim
        .s3_requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/app-data"))
        .collect();
    assert!(!denied.is_empty());
    assert!(denied.iter().all(|r| r.status == 403), "{denied:?}");
    sim.allow_bucket(&b, None, "app-data");
    let out = run(&setup, &["--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sink_keys(&setup), (B.to_owned(), api_keys_of(&sim, B)));
}
