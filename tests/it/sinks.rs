//! File and template sinks end to end: the real binary against the
//! simulator, checking what lands on disk, with which mode, when
//! `on_change` runs, how one failing sink is contained, and that no secret
//! reaches the logs.

use crate::util::output_text as text;
use crate::util::{args, assert_no_secret, options, run_bin, write_config, write_secret, Setup};
use contabo_rotator::sinks::formats::{profile_name, region_code};
use contabo_simulator::{SimCredential, Simulator, SimulatorOptions};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

/// One S3 credential as the API holds it now.
#[derive(Debug, Clone, PartialEq)]
struct ApiCredential {
    email: String,
    region: String,
    credential_id: i64,
    access_key: String,
    secret_key: String,
    s3_url: String,
}

fn api_credentials(sim: &Simulator) -> Vec<ApiCredential> {
    let snapshot = sim.snapshot();
    let mut all: Vec<ApiCredential> = snapshot
        .users
        .iter()
        .flat_map(|u| {
            u.credentials.iter().map(|c: &SimCredential| ApiCredential {
                email: u.email.clone(),
                region: c.region.clone(),
                credential_id: c.credential_id,
                access_key: c.access_key.clone(),
                secret_key: c.secret_key.expose_secret().to_owned(),
                s3_url: c.s3_url.clone(),
            })
        })
        .collect();
    all.sort_by_key(|c| c.credential_id);
    all
}

/// The one credential of `email` in `region`.
fn api_credential(sim: &Simulator, email: &str, region: &str) -> ApiCredential {
    let found: Vec<_> = api_credentials(sim)
        .into_iter()
        .filter(|c| c.email == email && c.region == region)
        .collect();
    assert_eq!(found.len(), 1, "{email} {region}");
    found.into_iter().next().unwrap()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Reads `vars` as POSIX sh sees them after `. file`.
fn sh_env(path: &Path, vars: &[&str]) -> Vec<String> {
    let printed: Vec<String> = vars.iter().map(|v| format!("\"${v}\"")).collect();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(". \"$1\" && printf '%s\\0' {}", printed.join(" ")))
        .arg("sh")
        .arg(path)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let values: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_owned)
        .collect();
    assert_eq!(values.len(), vars.len());
    values
}

type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// An INI file as botocore and rclone read it: `[section]` headers, `key =
/// value` lines (trimmed), `#`/`;` comment lines. Anything else, a key
/// outside a section or a repeated section fails the test.
fn parse_ini(path: &Path) -> Ini {
    let text = std::fs::read_to_string(path).unwrap();
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(
                ini.insert(name.to_owned(), BTreeMap::new()).is_none(),
                "section [{name}] twice in {}",
                path.display()
            );
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not INI: {line:?}"));
        let section = section.as_ref().expect("a key before any section");
        ini.get_mut(section)
            .unwrap()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    ini
}

/// The `[profile]` of an `aws-credentials` file carries `c`.
fn assert_profile(ini: &Ini, name: &str, c: &ApiCredential) {
    let profile = ini
        .get(name)
        .unwrap_or_else(|| panic!("no [{name}] in {:?}", ini.keys()));
    assert_eq!(profile["aws_access_key_id"], c.access_key, "[{name}]");
    assert!(
        profile["aws_secret_access_key"] == c.secret_key,
        "[{name}] secret differs"
    );
    assert_eq!(profile["region"], region_code(&c.region), "[{name}]");
    assert_eq!(profile["endpoint_url"], c.s3_url, "[{name}]");
}

/// The json sink at `path` holds every credential of the API and the
/// current client secret.
fn assert_json_matches(path: &Path, sim: &Simulator) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut got: Vec<(i64, String, String)> = json["object_storage_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["credential_id"].as_i64().unwrap(),
                c["access_key"].as_str().unwrap().to_owned(),
                c["secret_key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(i64, String, String)> = api_credentials(sim)
        .into_iter()
        .map(|c| (c.credential_id, c.access_key, c.secret_key))
        .collect();
    assert!(got == want, "json sink differs from the API");
    assert!(
        json["client"]["client_secret"] == sim.snapshot().client_secret.expose_secret(),
        "client secret differs"
    );
}

async fn run_now(setup: &Setup, extra: &[&str]) -> Output {
    let mut rest = vec!["--run-now"];
    rest.extend_from_slice(extra);
    run_bin(args(&setup.config, &rest)).await
}

fn setup(sim: &Simulator, opts: &SimulatorOptions, sinks: &str) -> Setup {
    let setup = write_config(
        sim,
        opts,
        // Proofs are paced (verify_requests_per_second): a slow budget
        // would stretch a pass past a sink's `wait`.
        &format!(
            "[client_secret]\nrotate = true\n\n[object_storage]\nverify_requests_per_second = 1000\n\n{sinks}"
        ),
    );
    std::fs::create_dir_all(setup.dir.path().join("out")).unwrap();
    std::fs::create_dir_all(setup.dir.path().join("t")).unwrap();
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_template_sinks_carry_the_api_values_with_their_modes() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"

[[sinks]]
type = "file"
path = "{root}/out/one.env"
format = "env"
mode = "0640"
group = "daemon"
select = { users = ["USER001@example.com"], regions = ["European Union"] }

[[sinks]]
type = "file"
path = "{root}/out/credentials"
format = "aws-credentials"

[[sinks]]
type = "template"
template = "t/app.env.j2"
path = "{root}/out/app.env"
select = { users = ["user002@example.com"], regions = ["Asia (Singapore)"] }
"#,
    );
    std::fs::write(
        setup.dir.path().join("t/app.env.j2"),
        "{% set c = credential() %}KEY={{ c.access_key | env_quote }}\n\
         SECRET={{ c.secret_key | env_quote }}\nCLIENT={{ client.client_secret | env_quote }}\n",
    )
    .unwrap();
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_secret(&sim, &text(&out));
    let dir = setup.dir.path().join("out");

    assert_json_matches(&dir.join("all.json"), &sim);
    assert_eq!(mode_of(&dir.join("all.json")), 0o600);

    let one = api_credential(&sim, "user001@example.com", "European Union");
    let env = sh_env(
        &dir.join("one.env"),
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
        ],
    );
    assert_eq!(env[0], one.access_key);
    assert!(env[1] == one.secret_key, "env secret differs");
    assert_eq!(env[2], one.s3_url);
    assert!(
        env[2].starts_with("http://127.0.0.1:"),
        "the simulator's S3 endpoint"
    );
    assert_eq!(env[3], "eu");
    assert_eq!(mode_of(&dir.join("one.env")), 0o640);
    assert_eq!(std::fs::metadata(dir.join("one.env")).unwrap().gid(), 1);

    let ini = parse_ini(&dir.join("credentials"));
    let all = api_credentials(&sim);
    assert_eq!(ini.len(), all.len(), "one profile per credential");
    for c in &all {
        assert_profile(&ini, &profile_name(&c.email, &c.region, c.credential_id), c);
    }
    assert_eq!(mode_of(&dir.join("credentials")), 0o600);

    let app = api_credential(&sim, "user002@example.com", "Asia (Singapore)");
    let env = sh_env(&dir.join("app.env"), &["KEY", "SECRET", "CLIENT"]);
    assert_eq!(env[0], app.access_key);
    assert!(env[1] == app.secret_key, "template secret differs");
    assert!(env[2] == sim.snapshot().client_secret.expose_secret());
    assert_eq!(mode_of(&dir.join("app.env")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_change_runs_once_per_change_and_unchanged_files_keep_their_mtime() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
on_change = ["sh", "-c", "echo changed >> {root}/json.log"]

[[sinks]]
type = "template"
template = "t/keys.j2"
path = "{root}/out/keys.txt"
select = { kinds = ["object_storage"] }
on_change = ["sh", "-c", "echo changed >> {root}/keys.log"]
"#,
    );
    let root = setup.dir.path();
    std::fs::write(
        root.join("t/keys.j2"),
        "{% for c in object_storage_credentials %}{{ c.access_key }}\n{% endfor %}",
    )
    .unwrap();
    let runs = |name: &str| {
        std::fs::read_to_string(root.join(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!((runs("json.log"), runs("keys.log")), (1, 1));
    let json = root.join("out/all.json");
    let keys = root.join("out/keys.txt");
    let (json_mtime, keys_mtime) = (mtime(&json), mtime(&keys));

    // Nothing due: nothing written, no hook.
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 sinks written"), "{}", text(&out));
    assert_eq!((runs("json.log"), runs("keys.log")), (1, 1));
    assert_eq!((mtime(&json), mtime(&keys)), (json_mtime, keys_mtime));

    // Everything rotated: each file changes once, each hook runs once.
    let out = run_now(&setup, &["--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!((runs("json.log"), runs("keys.log")), (2, 2));
    assert_json_matches(&json, &sim);
    let keys_text = std::fs::read_to_string(&keys).unwrap();
    for c in api_credentials(&sim) {
        assert!(keys_text.contains(&c.access_key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_change_output_is_logged_redacted() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/one.env"
format = "env"
select = { users = ["user001@example.com"], regions = ["European Union"] }

[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
on_change = ["sh", "-c", "cat \"$CONTABO_ROTATOR_SINK_PATH\"; cat \"$1\" >&2; echo hook-done", "sh", "{root}/out/one.env"]
"#,
    );
    let out = run_now(&setup, &["-v"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let logs = text(&out);
    assert!(
        logs.contains("hook-done"),
        "the hook's output is logged: {logs}"
    );
    assert!(logs.contains("[REDACTED]"), "{logs}");
    assert!(
        logs.contains("secret_key"),
        "the json file was printed: {logs}"
    );
    assert!(
        logs.contains("AWS_SECRET_ACCESS_KEY="),
        "the env file was printed: {logs}"
    );
    assert_no_secret(&sim, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_on_change_is_run_again_on_the_next_run() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let sink = r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
on_change = ["sh", "-c", "echo run >> {root}/hook.log; test -e {root}/hook-ok"]
"#;
    let setup = setup(&sim, &opts, sink);
    let root = setup.dir.path();
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("on_change `sh` failed: exit status: 1"),
        "{}",
        text(&out)
    );
    assert_json_matches(&root.join("out/all.json"), &sim);
    std::fs::write(root.join("hook-ok"), "").unwrap();
    // Nothing changed at the API, but the hook has not succeeded yet.
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs = || {
        std::fs::read_to_string(root.join("hook.log"))
            .unwrap()
            .lines()
            .count()
    };
    // The first run wrote twice (the user's credentials, then the client
    // secret right after its own step), the second once.
    assert_eq!(runs(), 3);
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(runs(), 3, "converged: no further run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_sink_fails_alone_and_the_next_run_converges() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/good.json"
format = "json"

[[sinks]]
type = "file"
path = "{root}/blocked/bad.json"
format = "json"

[[sinks]]
type = "template"
template = "t/keys.j2"
path = "{root}/gone/keys.txt"
"#,
    );
    let root = setup.dir.path();
    std::fs::write(
        root.join("t/keys.j2"),
        "{{ object_storage_credentials | length }}\n",
    )
    .unwrap();
    // Root ignores directory permissions; a regular file where the
    // directory should be, and a dangling symlink, stop root too.
    std::fs::write(root.join("blocked"), "not a directory").unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("gone")).unwrap();

    let check = run_bin(args(&setup.config, &["check", "--online"])).await;
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let shown = text(&check);
    assert!(shown.contains("sinks[0] file"), "{shown}");
    assert!(
        shown.contains(&format!(
            "error: sinks[1]: file sink {}/blocked/bad.json: {}/blocked is not a directory",
            root.display(),
            root.display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{}/nowhere does not exist", root.display())),
        "{shown}"
    );

    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains(&format!(
            "{}/blocked/bad.json: {}/blocked is not a directory",
            root.display(),
            root.display()
        )),
        "{report}"
    );
    // Every credential and the client secret are selected by a sink that
    // cannot be written: none is regenerated (its readers would be left on
    // a dead key), and the run says why.
    assert!(
        report.contains("not rotated: file ") && report.contains("cannot be given its new value"),
        "{report}"
    );
    assert!(!report.contains("rotated client_secret"), "{report}");
    assert!(
        !sim.requests().iter().any(|r| r.operation.is_mutating()),
        "no mutating call while a sink is blocked"
    );
    assert_json_matches(&root.join("out/good.json"), &sim);

    std::fs::remove_file(root.join("blocked")).unwrap();
    std::fs::create_dir(root.join("blocked")).unwrap();
    std::fs::create_dir(root.join("nowhere")).unwrap();
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("3 sinks written"), "{}", text(&out));
    assert!(text(&out).contains("7 rotated"), "{}", text(&out));
    assert_json_matches(&root.join("out/good.json"), &sim);
    assert_json_matches(&root.join("blocked/bad.json"), &sim);
    assert_eq!(
        std::fs::read_to_string(root.join("nowhere/keys.txt")).unwrap(),
        "6\n"
    );
    let good_mtime = mtime(&root.join("out/good.json"));
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mtime(&root.join("out/good.json")), good_mtime, "left alone");
}

/// A tmpfs mounted for a test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a child of a concurrent test inherited a descriptor):
            // detach it now, the kernel frees it once unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to mount a tmpfs"]
async fn a_full_disk_fails_the_sink_keeps_the_old_file_and_the_next_run_converges() {
    let opts = SimulatorOptions {
        users: 20,
        ..options(20)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"

[[sinks]]
type = "file"
path = "{root}/tiny/all.json"
format = "json"
"#,
    );
    let root = setup.dir.path();
    let tiny = Tmpfs::mount(&root.join("tiny"), "16k")
        .expect("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
    write_secret(&root.join("tiny/all.json"), "old content\n");
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("No space left on device"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("tiny/all.json")).unwrap(),
        "old content\n",
        "the old file is untouched"
    );
    // Counted, not collected: a DirEntry keeps the directory open.
    let leftovers = std::fs::read_dir(root.join("tiny")).unwrap().count();
    assert_eq!(leftovers, 1, "no temp file left behind");
    assert_json_matches(&root.join("out/all.json"), &sim);

    tiny.resize("1m");
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_json_matches(&root.join("tiny/all.json"), &sim);
    drop(tiny);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_render_error_keeps_the_old_file_and_fails_that_sink_alone() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "template"
template = "t/one.j2"
path = "{root}/out/one.env"

[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
"#,
    );
    let root = setup.dir.path();
    std::fs::write(root.join("t/one.j2"), "\n{{ credential().secret_key }}\n").unwrap();
    write_secret(&root.join("out/one.env"), "old\n");
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{}/t/one.j2:2: invalid operation: credential(): 6 credentials match",
            root.display()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out/one.env")).unwrap(),
        "old\n"
    );
    assert_json_matches(&root.join("out/all.json"), &sim);
    assert_no_secret(&sim, &text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_template_is_a_configuration_error() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        "[[sinks]]\ntype = \"template\"\ntemplate = \"t/bad.j2\"\npath = \"{root}/out/x\"\n",
    );
    let root = setup.dir.path();
    for (source, want) in [
        (None, "cannot read template".to_owned()),
        (
            Some("ok\n{% if client %}\n"),
            format!(
                "{}/t/bad.j2:2: syntax error: unexpected end of input",
                root.display()
            ),
        ),
    ] {
        if let Some(source) = source {
            std::fs::write(root.join("t/bad.j2"), source).unwrap();
        }
        for command in [&["check"][..], &["--run-now"]] {
            let out = run_bin(args(&setup.config, command)).await;
            assert_eq!(out.status.code(), Some(78), "{}", text(&out));
            let shown = text(&out);
            let key = format!("{}:23:12: sinks[0].template: ", setup.config.display());
            assert!(
                shown.contains(&key) && shown.contains(&want),
                "{shown}\nwant {key}…{want}"
            );
        }
    }
    assert!(sim.requests().is_empty(), "no API call on a bad template");
}

/// Maps the example's e-mails to the simulator's users.
const EXAMPLE_USERS: [(&str, &str); 3] = [
    ("app@example.com", "user001@example.com"),
    ("backup@example.com", "user002@example.com"),
    ("ops@example.com", "api-user@example.com"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sinks_and_templates_render_the_api_values() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let root = setup.dir.path().to_owned();
    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();

    // config/sinks.example.toml, pointed at the simulator and a temporary
    // directory: sinks write under out/, templates are the shipped ones,
    // the example's users are simulator users, owners and hooks dropped.
    let config_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let example: toml::Table = std::fs::read_to_string(config_dir.join("sinks.example.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut config: toml::Table = std::fs::read_to_string(&setup.config)
        .unwrap()
        .parse()
        .unwrap();
    for table in ["client_secret", "object_storage"] {
        config.insert(table.into(), example[table].clone());
    }
    let mut sinks = example["sinks"].as_array().unwrap().clone();
    let mut outputs = Vec::new();
    for (i, sink) in sinks.iter_mut().enumerate() {
        let sink = sink.as_table_mut().unwrap();
        let name = Path::new(sink["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let path = out_dir.join(format!("{i}-{name}"));
        sink.insert("path".into(), path.display().to_string().into());
        outputs.push(path);
        if let Some(template) = sink.get("template") {
            let absolute = config_dir.join(template.as_str().unwrap());
            sink.insert("template".into(), absolute.display().to_string().into());
        }
        for key in ["owner", "group", "on_change"] {
            sink.remove(key);
        }
        if let Some(users) = sink
            .get_mut("select")
            .and_then(|s| s.get_mut("users"))
            .and_then(|u| u.as_array_mut())
        {
            for user in users {
                let (_, sim_user) = EXAMPLE_USERS
                    .iter()
                    .find(|(example, _)| user.as_str() == Some(*example))
                    .expect("every example user is mapped");
                *user = (*sim_user).into();
            }
        }
    }
    config.insert("sinks".into(), toml::Value::Array(sinks));
    write_secret(&setup.config, &toml::to_string(&config).unwrap());

    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_secret(&sim, &text(&out));
    let client_secret = sim.snapshot().client_secret.expose_secret().to_owned();
    let output = |name: &str| {
        outputs
            .iter()
            .find(|p| p.file_name().unwrap().to_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no output {name}"))
            .clone()
    };
    assert_eq!(outputs.len(), 7, "{outputs:?}");

    // contabo.json: everything.
    assert_json_matches(&output("-contabo.json"), &sim);

    // s3.env (format env) and app.env (templates/app.env.j2): user001, EU.
    let app = api_credential(&sim, "user001@example.com", "European Union");
    let env = sh_env(
        &output("1-s3.env"),
        &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"],
    );
    assert!(env == [app.access_key.clone(), app.secret_key.clone(), "eu".into()]);
    assert_eq!(mode_of(&output("1-s3.env")), 0o640);
    let env = sh_env(
        &output("3-.env"),
        &["S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "S3_ENDPOINT"],
    );
    assert!(env[..3] == [app.access_key.clone(), app.secret_key.clone(), "eu".into()]);
    assert_eq!(env[3], app.s3_url);

    // compose .env (templates/compose.env.j2): user002, EU, plus the client.
    let backup = api_credential(&sim, "user002@example.com", "European Union");
    let env = sh_env(
        &output("4-.env"),
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "CNTB_OAUTH2_CLIENT_ID",
            "CNTB_OAUTH2_CLIENT_SECRET",
        ],
    );
    assert!(
        env == [
            backup.access_key.clone(),
            backup.secret_key.clone(),
            opts.client_id.clone(),
            client_secret.clone()
        ],
        "compose .env differs from the API"
    );

    // credentials (format aws-credentials): every credential.
    let ini = parse_ini(&output("2-credentials"));
    let all = api_credentials(&sim);
    assert_eq!(ini.len(), all.len());
    for c in &all {
        assert_profile(&ini, &profile_name(&c.email, &c.region, c.credential_id), c);
    }

    // templates/aws-credentials.j2: [default] plus the ops user's profiles.
    let ini = parse_ini(&output("5-credentials"));
    let ops: Vec<_> = all
        .iter()
        .filter(|c| c.email == "api-user@example.com")
        .collect();
    assert_eq!(ini.len(), ops.len() + 1, "{:?}", ini.keys());
    let mut ops_sorted = ops.clone();
    ops_sorted.sort_by_key(|c| c.credential_id);
    assert_profile(&ini, "default", ops_sorted[0]);
    for c in &ops {
        assert_profile(&ini, &profile_name(&c.email, &c.region, c.credential_id), c);
    }

    // templates/rclone.conf.j2: one s3 remote per credential of user002.
    let ini = parse_ini(&output("6-rclone.conf"));
    let backups: Vec<_> = all
        .iter()
        .filter(|c| c.email == "user002@example.com")
        .collect();
    assert_eq!(ini.len(), backups.len());
    for c in backups {
        let name = format!(
            "contabo-{}",
            profile_name(&c.email, &c.region, c.credential_id)
        );
        let remote = ini
            .get(&name)
            .unwrap_or_else(|| panic!("no [{name}] in {:?}", ini.keys()));
        assert_eq!(remote["type"], "s3");
        assert_eq!(remote["access_key_id"], c.access_key);
        assert!(
            remote["secret_access_key"] == c.secret_key,
            "[{name}] secret differs"
        );
        assert_eq!(remote["region"], region_code(&c.region));
        assert_eq!(remote["endpoint"], c.s3_url);
    }
}

/// A hook that prints the previous copy of its file shows dead keys only
/// as `[REDACTED]`: the old S3 secrets a pass rotates away are redacted
/// too (kept as hashes, not values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_change_output_redacts_the_old_secrets_of_the_pass() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = setup(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
on_change = ["sh", "-c", "cat {root}/previous.json 2>/dev/null; cp \"$CONTABO_ROTATOR_SINK_PATH\" {root}/previous.json; echo hook-done"]
"#,
    );
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first: Vec<String> = api_credentials(&sim)
        .into_iter()
        .map(|c| c.secret_key)
        .collect();
    let out = run_now(&setup, &["--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let logs = text(&out);
    assert!(logs.contains("hook-done"), "{logs}");
    assert!(
        logs.contains("\"secret_key\":\"[REDACTED]\"") || logs.contains("[REDACTED]"),
        "the previous file was printed, redacted: {logs}"
    );
    for old in &first {
        assert!(
            !logs.contains(old.as_str()),
            "an old S3 secret in the hook's output"
        );
    }
    assert_no_secret(&sim, &logs);
}
