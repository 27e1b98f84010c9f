//! Leak suite: every secret the simulator ever issued (`issued_secrets()`:
//! client secrets old and new, the API password, S3 secret keys old and
//! new, access and refresh tokens), every webhook signing key and webhook
//! header value (one from a file, one plain), in the spellings that
//! commonly leak, searched for in everything the binary prints or leaves
//! behind. Zero hits.
//!
//! Searched: stdout and stderr of every command at trace level (`-vv`, text
//! and JSON logs, and once `RUST_LOG=trace` for every crate), with the
//! `on_change` output they log; every state file but `client-secret.json`;
//! the bodies of webhooks without `include_secrets`; `/metrics`, `/healthz`
//! and `/readyz` of a daemon; the output of runs that fail hard (corrupt
//! state, an unreachable API, invalid configurations holding plain
//! secrets); and `demo`, whose secrets are taken from the directory it
//! leaves when killed, and from a simulator with its seed.
//!
//! The runs rotate everything (the client secret included) under 429, 500,
//! dropped and truncated answers, with sinks that fail (a file under a
//! regular file, a template error, a webhook nobody listens on), so the
//! logs carry errors too. Spellings: as is, JSON-escaped (also with
//! `\uXXXX` for non-ASCII), Rust-`Debug`-escaped, form- and
//! percent-encoded, base64 (standard and URL-safe), HTTP Basic
//! `client_id:secret`; for signing keys also the base64 after `whsec_`, the
//! decoded key as text, and its hex. As a control, the same search finds
//! the values in the sinks, whose job is to hold them, and the header
//! value in the requests the webhook received.

use crate::util::output_text as shown;
use crate::util::{options, write_config, write_secret, Setup};
use crate::util::{Receiver, Reply};
use base64::Engine;
use contabo_simulator::{Fault, FaultRule, Operation, Simulator, SimulatorOptions};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A client secret and a password with characters that change under every
/// encoding: quotes, backslash, slash, plus, `&`, `=`, `%`, non-ASCII.
const CLIENT_SECRET: &str = r#"leak-cs-"q"\b/s+ü&=%41"#;
const PASSWORD: &str = r##"leak-pw-\"#&=+é/%2F"##;
const PASSWORD_VAR: &str = "LEAK_API_PASSWORD";
/// Webhook header values, secrets too: one read from a file, one written
/// in the configuration (printable ASCII, as header values must be).
const HEADER_FROM_FILE: &str = r#"Bearer leak-hdr-file-"q"\b/s+&=%41"#;
const HEADER_PLAIN: &str = "leak-hdr-plain-7c1e9a2b";

/// Webhook signing keys: two whose bytes are text, one binary, one read from a file.
fn signing_keys() -> [String; 4] {
    let b64 = |bytes: &[u8]| {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    [
        b64(b"leak-signing-key-one-0123456789abcdef"),
        b64(b"leak-signing-key-two-fedcba9876543210"),
        b64(&(0u8..32)
            .map(|i| i.wrapping_mul(37) ^ 0xa5)
            .collect::<Vec<_>>()),
        b64(b"leak-signing-key-file-00112233445566"),
    ]
}

fn sim_options(users: usize) -> SimulatorOptions {
    SimulatorOptions {
        client_secret: SecretString::from(CLIENT_SECRET),
        password: SecretString::from(PASSWORD),
        ..options(users)
    }
}

/// A simulator, a config with every kind of sink, and two receivers.
struct Account {
    sim: Simulator,
    setup: Setup,
    /// The webhook without `include_secrets`: its bodies are searched.
    thin: Receiver,
    /// The webhook with `include_secrets`: its bodies hold secrets by design.
    full: Receiver,
}

async fn account(users: usize, extra: &str) -> Account {
    let opts = sim_options(users);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let thin = Receiver::start(Reply::status(200)).await;
    let full = Receiver::start(Reply::status(200)).await;
    let keys = signing_keys();
    let sinks = format!(
        r#"
[client_secret]
rotate = true

[[sinks]]
type = "file"
path = "{{root}}/out/one.env"
format = "env"
select = {{ users = ["user001@example.com"], regions = ["European Union"] }}

[[sinks]]
type = "file"
path = "{{root}}/out/contabo.json"
format = "json"
# The hook prints the sinks' files and the configuration's own secrets:
# every one of them is redacted in the logged output.
on_change = ["sh", "-c", "echo hook-ran; cat \"$CONTABO_ROTATOR_SINK_PATH\"; cat \"$1\" >&2; cat {{root}}/api-password {{root}}/client-secret {{root}}/webhook.key {{root}}/hook-token; echo; env", "sh", "{{root}}/out/one.env"]

[[sinks]]
type = "file"
path = "{{root}}/out/credentials"
format = "aws-credentials"

[[sinks]]
type = "template"
template = "{{root}}/keys.txt.j2"
path = "{{root}}/out/keys.txt"

[[sinks]]
type = "template"
template = "{{root}}/one.txt.j2"
path = "{{root}}/out/one.txt"
# Holds one user's three credentials: its trial render fails, so they are
# held back (and the render error, redacted, is reported).
select = {{ users = ["user002@example.com"], kinds = ["object_storage"] }}

[[sinks]]
type = "file"
path = "{{root}}/blocked/contabo.json"
format = "json"
# Selects nobody's credentials, so it blocks no rotation; it fails all the same.
select = {{ users = ["nobody@example.com"], kinds = ["object_storage"] }}

[[sinks]]
type = "webhook"
url = "{thin}"
signing_secret = ["{k0}", "{k1}"]
timeout = "2s"
headers = {{ Authorization = {{ file = "{{root}}/hook-token" }} }}

[[sinks]]
type = "webhook"
url = "{full}"
signing_secret = "{k2}"
include_secrets = true
timeout = "2s"

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:9/hooks/dead"
signing_secret = {{ file = "{{root}}/webhook.key" }}
timeout = "2s"
headers = {{ "X-Api-Key" = "{HEADER_PLAIN}", Authorization = {{ file = "{{root}}/hook-token" }} }}
{extra}"#,
        thin = thin.url(),
        full = full.url(),
        k0 = keys[0],
        k1 = keys[1],
        k2 = keys[2],
    );
    let setup = write_config(&sim, &opts, &sinks);
    let root = setup.dir.path();
    std::fs::create_dir_all(root.join("out")).unwrap();
    // A regular file where the directory of a sink should be.
    std::fs::write(root.join("blocked"), "not a directory").unwrap();
    write_secret(&root.join("webhook.key"), &keys[3]);
    write_secret(&root.join("hook-token"), &format!("{HEADER_FROM_FILE}\n"));
    std::fs::write(
        root.join("keys.txt.j2"),
        "{% for c in object_storage_credentials %}{{ c.access_key }}={{ c.secret_key | env_quote }}\n{% endfor %}",
    )
    .unwrap();
    // Fails at every render: the selection holds more than one credential.
    std::fs::write(
        root.join("one.txt.j2"),
        "{% set c = credential() %}{{ c.secret_key }}\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace(
            &format!(
                "password = {{ file = \"{}/api-password\" }}",
                root.display()
            ),
            &format!("password = {{ env = \"{PASSWORD_VAR}\" }}"),
        )
        .replace("max_retries = 10", "max_retries = 1")
        .replace("timeout = \"10s\"", "timeout = \"1s\"");
    assert!(text.contains(PASSWORD_VAR));
    write_secret(&setup.config, &text);
    Account {
        sim,
        setup,
        thin,
        full,
    }
}

/// Everything captured, by where it came from.
#[derive(Default)]
struct Captured {
    texts: Vec<(String, String)>,
}

impl Captured {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.texts.push((label.into(), text.into()));
    }

    fn output(&mut self, label: &str, out: &Output) {
        self.add(
            format!("{label}: stdout"),
            String::from_utf8_lossy(&out.stdout),
        );
        self.add(
            format!("{label}: stderr"),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    /// Every file of the state directory but `client-secret.json`, and
    /// every row of the state database.
    fn state_files(&mut self, label: &str, state: &Path) {
        let mut seen = 0;
        for entry in std::fs::read_dir(state).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "client-secret.json" || !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            self.add(
                format!("{label}: {}", path.display()),
                String::from_utf8_lossy(&bytes),
            );
            seen += 1;
        }
        // lock, audit.log, fingerprint.key and state.db at least; the
        // database's rows too, decoded.
        assert!(seen >= 4, "{label}: the state files are there ({seen})");
        assert!(state.join("state.db").is_file(), "{label}");
        self.add(
            format!("{label}: the rows of state.db"),
            crate::util::state_db_text(state),
        );
    }

    fn len(&self) -> usize {
        self.texts.iter().map(|(_, t)| t.len()).sum()
    }

    fn joined(&self, label_part: &str) -> String {
        self.texts
            .iter()
            .filter(|(l, _)| l.contains(label_part))
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A secret in one spelling; `what` never shows the value.
struct Needle {
    what: String,
    value: String,
}

/// Every spelling of `secret` that commonly leaks.
fn spellings(what: &str, secret: &str, client_id: &str) -> Vec<Needle> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = serde_json::to_string(secret).unwrap();
    let json_ascii: String = json
        .chars()
        .flat_map(|c| {
            if c.is_ascii() {
                vec![c.to_string()]
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect();
    let debug = format!("{secret:?}");
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let basic = |id: &str, s: &str| b64.encode(format!("{id}:{s}"));
    let form_id: String = url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let mut all = vec![
        ("as is", secret.to_owned()),
        ("JSON-escaped", json[1..json.len() - 1].to_owned()),
        (
            "JSON-escaped ASCII",
            json_ascii[1..json_ascii.len() - 1].to_owned(),
        ),
        ("Debug-escaped", debug[1..debug.len() - 1].to_owned()),
        ("form-encoded", form.clone()),
        ("percent-encoded", form.replace('+', "%20")),
        ("base64", b64.encode(secret)),
        ("base64url", b64url.encode(secret)),
        ("Basic client_id:secret", basic(client_id, secret)),
        ("Basic, form-encoded", basic(&form_id, &form)),
    ];
    all.sort_by(|a, b| a.1.cmp(&b.1));
    all.dedup_by(|a, b| a.1 == b.1);
    all.into_iter()
        .map(|(how, value)| Needle {
            what: format!("{what} ({how}, {} chars)", secret.chars().count()),
            value,
        })
        .collect()
}

/// A `whsec_` key in every spelling, its decoded bytes included.
fn key_spellings(what: &str, key: &str) -> Vec<Needle> {
    let encoded = key.strip_prefix("whsec_").unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut all = spellings(what, key, "");
    for (how, value) in [
        ("base64 after whsec_", encoded.to_owned()),
        (
            "base64url after whsec_",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw),
        ),
        ("decoded, hex", hex),
    ] {
        all.push(Needle {
            what: format!("{what} ({how})"),
            value,
        });
    }
    if let Ok(text) = std::str::from_utf8(&raw) {
        all.extend(spellings(&format!("{what}, decoded"), text, ""));
    }
    all
}

/// Every issued secret of `sims` and every signing key, in every spelling.
fn needles(sims: &[&Simulator], extra: &[(String, String)]) -> Vec<Needle> {
    let mut all = Vec::new();
    for (s, sim) in sims.iter().enumerate() {
        let client_id = sim.snapshot().client_id;
        for (i, secret) in sim.issued_secrets().iter().enumerate() {
            let what = format!("simulator {s} secret #{i}");
            all.extend(spellings(&what, secret.expose_secret(), &client_id));
        }
    }
    for (i, key) in signing_keys().iter().enumerate() {
        all.extend(key_spellings(&format!("signing key #{i}"), key));
    }
    for (what, value) in [
        ("header value from a file", HEADER_FROM_FILE),
        ("plain header value", HEADER_PLAIN),
    ] {
        all.extend(spellings(what, value, ""));
    }
    for (what, secret) in extra {
        all.extend(spellings(what, secret, "INT-10000001"));
    }
    all
}

/// Where any needle occurs; never the value itself.
fn hits(needles: &[Needle], captured: &Captured) -> Vec<String> {
    let mut found = Vec::new();
    for (label, text) in &captured.texts {
        for n in needles {
            if let Some(at) = text.find(&n.value) {
                found.push(format!("{} in {label} at byte {at}", n.what));
            }
        }
        if let Some(at) = jwt_at(text) {
            found.push(format!("a JWT-shaped token in {label} at byte {at}"));
        }
    }
    found
}

fn assert_no_leak(needles: &[Needle], captured: &Captured) {
    let found = hits(needles, captured);
    assert!(
        found.is_empty(),
        "{} leaks in {} texts ({} bytes):\n{}",
        found.len(),
        captured.texts.len(),
        captured.len(),
        found.join("\n")
    );
}

/// The position of something shaped like a JWT (`eyJ…` header, payload and
/// signature in base64url), as every access and refresh token is.
fn jwt_at(text: &str) -> Option<usize> {
    let b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").map(|(i, _)| i).find(|&i| {
        let parts: Vec<&str> = text[i..]
            .split(|c: char| !(b64url(c) || c == '.'))
            .next()
            .unwrap()
            .split('.')
            .collect();
        parts.len() >= 3 && parts[..3].iter().all(|p| p.len() >= 8)
    })
}

/// Runs the binary with `args` (after `-c CONFIG` when given) and `env`.
async fn run(config: Option<&Path>, rest: &[&str], env: &[(&str, &str)]) -> Output {
    let mut argv: Vec<String> = Vec::new();
    if let Some(config) = config {
        argv.extend(["-c".to_owned(), config.display().to_string()]);
    }
    argv.extend(rest.iter().map(|s| (*s).to_owned()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = assert_cmd::Command::cargo_bin("contabo-rotator").unwrap();
        cmd.args(&argv)
            .env_remove("RUST_LOG")
            .env_remove("CONTABO_ROTATOR_CONFIG")
            .env_remove("CONTABO_ROTATOR_CRASH_AT")
            .env(PASSWORD_VAR, PASSWORD)
            .envs(env)
            .timeout(Duration::from_secs(120));
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

/// Faults for the first rotation: each once, so that one retry absorbs it,
/// except two 500s on the client-secret PUT, which fail its rotation (the
/// old secret, with its odd characters, then goes to the sinks and through
/// `on_change`).
fn first_run_faults() -> Vec<FaultRule> {
    let once = |op, fault| FaultRule::always(fault).on(op).times(1);
    vec![
        once(Operation::Token, Fault::InternalServerError),
        once(
            Operation::RetrieveUserList,
            Fault::TooManyRequests { retry_after: None },
        ),
        once(
            Operation::RegenerateObjectStorageCredentials,
            Fault::InternalServerError,
        ),
        FaultRule::always(Fault::InternalServerError)
            .on(Operation::GenerateClientSecret)
            .times(2),
        once(Operation::RetrieveUserClient, Fault::MalformedBody),
    ]
}

/// Faults for a later rotation: answers lost after the change was applied.
fn later_run_faults() -> Vec<FaultRule> {
    vec![
        FaultRule::always(Fault::MalformedBody)
            .on(Operation::RegenerateObjectStorageCredentials)
            .times(1),
        FaultRule::always(Fault::DropAfterApply)
            .on(Operation::RegenerateObjectStorageCredentials)
            .times(1),
        FaultRule::always(Fault::ServiceUnavailable)
            .on(Operation::ListObjectStorageCredentials)
            .times(1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_command_output_state_file_or_webhook_body() {
    let acct = account(3, "").await;
    let config = acct.setup.config.clone();
    let cfg = Some(config.as_path());
    let mut captured = Captured::default();

    for format in ["text", "json"] {
        let with = |rest: &[&'static str]| -> Vec<&'static str> {
            let mut argv = vec!["-vv", "--log-format", format];
            argv.extend_from_slice(rest);
            argv
        };
        // The text pass rotates everything for the first time, the JSON
        // pass rotates everything again; then a run retries the failed sinks.
        let (rotate, faults) = if format == "text" {
            (with(&["--run-now"]), first_run_faults())
        } else {
            (with(&["--run-now", "--force"]), later_run_faults())
        };
        let commands: Vec<(Vec<&str>, Option<i32>, Vec<FaultRule>)> = vec![
            (with(&["check", "--online"]), Some(1), Vec::new()),
            (with(&["list"]), Some(0), Vec::new()),
            (with(&["list", "--json"]), Some(0), Vec::new()),
            (
                with(&["--run-now", "--dry-run", "--force"]),
                Some(0),
                Vec::new(),
            ),
            (rotate, Some(1), faults),
            (with(&["--run-now"]), Some(1), Vec::new()),
            (with(&["status"]), Some(0), Vec::new()),
            (with(&["status", "--json"]), Some(0), Vec::new()),
        ];
        for (i, (argv, code, faults)) in commands.into_iter().enumerate() {
            acct.sim.set_faults(faults);
            let out = run(cfg, &argv, &[]).await;
            acct.sim.set_faults(Vec::new());
            let name = argv[3..].join(" ");
            assert_eq!(out.status.code(), code, "{format} {name}:\n{}", shown(&out));
            captured.output(&format!("{format} logs, command {i}: {name}"), &out);
        }
    }
    // Every crate at trace level, not only ours.
    let out = run(cfg, &["--run-now", "--force"], &[("RUST_LOG", "trace")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    captured.output("RUST_LOG=trace --run-now --force", &out);

    let root = acct.setup.dir.path();
    captured.state_files("state", &root.join("state"));
    let thin = acct.thin.posts();
    for post in &thin {
        captured.add(format!("webhook body {}", post.webhook_id()), &post.body);
    }

    // The runs did what the search relies on.
    let snapshot = acct.sim.snapshot();
    assert_ne!(snapshot.client_secret.expose_secret(), CLIENT_SECRET);
    let logs = captured.joined(": --run-now");
    for expected in [
        "Rotated object-storage credential.",
        // The proofs at the storage ran (verify = "s3", the default).
        "The storage accepts the new key.",
        "Rotated the client secret",
        "hook-ran",
        "AWS_SECRET_ACCESS_KEY=",
        "credential()",
        "is not a directory",
        "429",
        "500",
        "connection failed",
        "malformed",
    ] {
        assert!(logs.contains(expected), "the logs mention {expected:?}");
    }
    assert!(
        thin.iter().any(|p| p.body.contains("rotation.failed")),
        "the failed client-secret rotation was announced"
    );
    // Two rotations of 9 credentials, and a failed client-secret rotation.
    assert!(thin.len() > 2 * 9, "{} thin events", thin.len());

    // The signatures of the S3 probes, as the storage received them.
    let signatures: Vec<(String, String)> = acct
        .sim
        .s3_requests()
        .into_iter()
        .filter_map(|r| r.signature)
        .enumerate()
        .map(|(i, sig)| (format!("S3 request signature #{i}"), sig))
        .collect();
    assert!(signatures.len() >= 9, "the probes were signed");
    let needles = needles(&[&acct.sim], &signatures);
    assert_no_leak(&needles, &captured);

    // Control: the same search finds the values where they belong.
    let mut sinks = Captured::default();
    for name in ["contabo.json", "one.env", "credentials", "keys.txt"] {
        sinks.add(
            name,
            std::fs::read_to_string(root.join("out").join(name)).unwrap(),
        );
    }
    for post in acct.full.posts() {
        sinks.add("include_secrets webhook body", post.body);
    }
    for post in &thin {
        let authorization = post.authorization().unwrap_or_default();
        sinks.add("webhook request header", authorization);
    }
    sinks.add(
        "client-secret.json",
        std::fs::read_to_string(root.join("state/client-secret.json")).unwrap(),
    );
    let found = hits(&needles, &sinks);
    for place in [
        "contabo.json",
        "one.env",
        "credentials",
        "keys.txt",
        "include_secrets webhook body",
        "webhook request header",
        "client-secret.json",
    ] {
        assert!(
            found.iter().any(|h| h.contains(&format!(" in {place} "))),
            "the search finds the secrets in {place}"
        );
    }
}

/// A daemon with `[metrics]`: its log, and what it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_daemon_log_or_metrics() {
    let acct = account(
        2,
        "\n[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_on_start = true\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    acct.sim.set_faults(first_run_faults());
    let root = acct.setup.dir.path();
    let log = root.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let daemon = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-vv", "-c", &acct.setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .env(PASSWORD_VAR, PASSWORD)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    while !read_log().contains("Scheduled run finished.") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no run:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = crate::util::metrics_base_in(&log).await;
    let http = reqwest::Client::new();
    let mut captured = Captured::default();
    for path in ["/metrics", "/healthz", "/readyz"] {
        let answer = http.get(format!("{base}{path}")).send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap();
        if path == "/metrics" {
            assert_eq!(status, 200);
            assert!(body.contains("contabo_rotator_rotations_total"), "{body}");
        }
        captured.add(format!("GET {path} ({status})"), body);
    }
    crate::util::terminate(daemon, &log).await;
    let text = read_log();
    assert!(
        text.contains("Rotated object-storage credential."),
        "{text}"
    );
    assert!(text.contains("hook-ran"), "{text}");
    captured.add("daemon log", text);
    captured.state_files("state", &root.join("state"));
    for post in acct.thin.posts() {
        captured.add(format!("webhook body {}", post.webhook_id()), post.body);
    }
    assert_no_leak(&needles(&[&acct.sim], &[]), &captured);
}

/// Runs that fail hard: corrupt state files, an unreachable API, invalid
/// configurations that hold plain secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_when_runs_fail_hard() {
    let acct = account(2, "").await;
    let config = acct.setup.config.clone();
    let cfg = Some(config.as_path());
    let root = acct.setup.dir.path().to_owned();
    let state = root.join("state");
    // Two rotations: a stored client secret, records, an outbox.
    for argv in [&["--run-now"][..], &["--run-now", "--force"]] {
        let out = run(cfg, argv, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    }
    let mut captured = Captured::default();
    let commands: [&[&str]; 4] = [
        &["-vv", "--run-now"],
        &["-vv", "--log-format", "json", "--run-now"],
        &["-vv", "list"],
        &["-vv", "check", "--online"],
    ];

    // Each state file cut short; the client secret's just after its value.
    let stored = std::fs::read_to_string(state.join("client-secret.json")).unwrap();
    let current = acct.sim.snapshot().client_secret.expose_secret().to_owned();
    let cut = stored.find(&current).unwrap() + current.len() + 1;
    let corruptions: Vec<(&str, Vec<u8>)> = vec![
        ("client-secret.json", stored.as_bytes()[..cut].to_vec()),
        ("state.db", {
            let db = std::fs::read(state.join("state.db")).unwrap();
            db[..db.len() / 2].to_vec()
        }),
        ("state.db", b"SQLite format 3\0not a database".repeat(100)),
        ("fingerprint.key", b"short".to_vec()),
    ];
    for (name, broken) in corruptions {
        let path = state.join(name);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &broken).unwrap();
        let mut failed = 0;
        for argv in commands {
            let out = run(cfg, argv, &[]).await;
            failed += usize::from(out.status.code() != Some(0));
            assert!(
                out.status.code().is_some(),
                "{name} {argv:?}: {}",
                shown(&out)
            );
            captured.output(&format!("corrupt {name}, {argv:?}"), &out);
        }
        assert!(failed >= 2, "corrupt {name}: the runs failed");
        std::fs::write(&path, good).unwrap();
    }
    assert!(
        captured.joined("corrupt").contains("client-secret.json"),
        "the corrupt store is named"
    );

    // The API unreachable.
    let text = std::fs::read_to_string(&config).unwrap();
    let base = acct.sim.base_url().to_string();
    // Port 9 (discard): nothing listens there on a test machine.
    let dead = "http://127.0.0.1:9/";
    let unreachable = root.join("unreachable.toml");
    write_secret(&unreachable, &text.replace(&base, dead));
    for argv in commands {
        let out = run(Some(&unreachable), argv, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{argv:?}: {}", shown(&out));
        captured.output(&format!("unreachable API, {argv:?}"), &out);
    }
    assert!(captured.joined("unreachable").contains("connection failed"));

    // Invalid configurations with the secrets inline, next to the error.
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let plain = text
        .replace(
            &format!(
                "client_secret = {{ file = \"{}/client-secret\" }}",
                root.display()
            ),
            &format!("client_secret = {}", quoted(CLIENT_SECRET)),
        )
        .replace(
            &format!("password = {{ env = \"{PASSWORD_VAR}\" }}"),
            &format!("password = {}", quoted(PASSWORD)),
        );
    assert!(!plain.contains("client-secret\" }"), "{plain}");
    let keys = signing_keys();
    let broken = [
        (
            "a bad value after the secrets",
            plain.replace("timeout = \"1s\"", "timeout = \"soon\""),
        ),
        (
            "a syntax error after the secrets",
            plain.replace("concurrency = 8", "concurrency = = 8"),
        ),
        (
            "an unknown key after the secrets",
            plain.replace("concurrency = 8", "concurrency = 8\nsecret_too = 1"),
        ),
        (
            "a bad signing key",
            plain.replace(&keys[2], "whsec_not base64!"),
        ),
    ];
    for (what, config_text) in broken {
        let path = root.join("broken.toml");
        write_secret(&path, &config_text);
        for argv in [
            &["check"][..],
            &["-vv", "--run-now"],
            &["--log-format", "json", "list"],
        ] {
            let out = run(Some(&path), argv, &[]).await;
            assert_eq!(
                out.status.code(),
                Some(78),
                "{what} {argv:?}: {}",
                shown(&out)
            );
            captured.output(&format!("config with {what}, {argv:?}"), &out);
        }
    }
    // Valid, with plain secrets in a file others may read: a warning.
    let path = root.join("plain.toml");
    std::fs::write(&path, &plain).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = run(Some(&path), &["-vv", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    captured.output("plain secrets in a readable config, check", &out);

    assert_no_leak(&needles(&[&acct.sim], &[]), &captured);
}

/// `demo` runs its own simulator: its secrets come from the directory it
/// leaves when killed after delivering (secret files, the store, the json
/// sink) and, for the keys it starts with, from a simulator with its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_demo_output() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let mut captured = Captured::default();
    let mut harvested: Vec<(String, String)> = Vec::new();

    for format in ["text", "json"] {
        let killed = run(
            None,
            &["-vv", "--log-format", format, "demo"],
            &[
                ("TMPDIR", &tmpdir),
                ("CONTABO_ROTATOR_CRASH_AT", "after-delivery"),
            ],
        )
        .await;
        assert_eq!(killed.status.code(), None, "{}", shown(&killed));
        captured.output(
            &format!("demo killed after delivery, {format} logs"),
            &killed,
        );
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let dir: PathBuf = entry.unwrap().path();
            if dir.join("harvested").exists() {
                continue;
            }
            harvested.extend(demo_secrets(&dir));
            std::fs::write(dir.join("harvested"), "").unwrap();
        }

        let out = run(
            None,
            &["-vv", "--log-format", format, "demo"],
            &[("TMPDIR", &tmpdir)],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        assert!(shown(&out).contains("Rotated object-storage credential."));
        captured.output(&format!("demo, {format} logs"), &out);
    }
    assert!(harvested.len() >= 2 * (2 + 2 + 15), "{}", harvested.len());

    // The demo's simulator starts from a fixed seed: the same options give
    // the same initial keys (checked through the access keys it lists).
    let seeded = Simulator::start(SimulatorOptions {
        users: 5,
        credentials_per_user: 3,
        page_size_cap: 10,
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let listed = captured.joined("demo");
    for user in seeded.snapshot().users {
        for c in user.credentials {
            assert!(listed.contains(&c.access_key), "same seed as the demo");
            harvested.push((
                format!("demo's initial S3 secret of {}", c.credential_id),
                c.secret_key.expose_secret().to_owned(),
            ));
        }
    }
    let found = hits(&needles(&[], &harvested), &captured);
    let shaped: Vec<String> = captured
        .texts
        .iter()
        .filter_map(|(label, text)| {
            secret_key_shaped(text)
                .map(|at| format!("an S3-secret-shaped word in {label} at byte {at}"))
        })
        .collect();
    assert!(
        found.is_empty() && shaped.is_empty(),
        "leaks:\n{}\n{}",
        found.join("\n"),
        shaped.join("\n")
    );
}

/// The secrets a killed demo left in `dir`.
fn demo_secrets(dir: &Path) -> Vec<(String, String)> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let mut found = vec![
        ("demo client secret".to_owned(), read("client-secret")),
        ("demo API password".to_owned(), read("api-password")),
    ];
    let stored: serde_json::Value =
        serde_json::from_str(&read("state/client-secret.json")).unwrap();
    found.push((
        "demo rotated client secret".into(),
        stored["secret"].as_str().unwrap().to_owned(),
    ));
    let sink: serde_json::Value = serde_json::from_str(&read("out/contabo.json")).unwrap();
    found.push((
        "demo client secret in the sink".into(),
        sink["client"]["client_secret"].as_str().unwrap().to_owned(),
    ));
    for c in sink["object_storage_credentials"].as_array().unwrap() {
        found.push((
            format!("demo rotated S3 secret of {}", c["credential_id"]),
            c["secret_key"].as_str().unwrap().to_owned(),
        ));
    }
    found
}

/// The position of a 40-character word of the simulator's S3 secret
/// alphabet with upper and lower case and digits: the shape of a secret
/// key (access keys are 20 characters, fingerprints hex, ids have dashes).
fn secret_key_shaped(text: &str) -> Option<usize> {
    let in_alphabet = |c: char| c.is_ascii_alphanumeric() || c == '/' || c == '+';
    let shaped = |word: &str| {
        word.len() == 40
            && word.chars().any(|c| c.is_ascii_uppercase())
            && word.chars().any(|c| c.is_ascii_lowercase())
            && word.chars().any(|c| c.is_ascii_digit())
    };
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (in_alphabet(c), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                if shaped(&text[from..i]) {
                    return Some(from);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}
