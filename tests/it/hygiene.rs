//! The trust boundary's process hygiene, with the real binary against the
//! simulator: bounded template renders (fuel, output size, terminate
//! signals), a daemon that is not dumpable and holds no `{ env }` secret in
//! its environment, and a configuration file anyone may write refused.

use crate::util::{
    args, assert_no_secret, edit_config, options, output_text, run_bin, write_config,
};
use contabo_simulator::{Operation, Simulator};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 64 MiB, the documented cap of a render's output.
const CAP: u64 = 64 * 1024 * 1024;

/// The files in `dir` (names and sizes).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Two templates that would never end: one computes without writing (its
/// fuel ends it), one writes a kilobyte a turn (the output cap ends it).
/// `check` accepts both; `--run-now` fails those two sinks, delivers the
/// third, leaves the templates' old or absent files as they were and no
/// temp file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_templates_fail_their_sinks_and_the_others_are_delivered() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        r#"
[[sinks]]
type = "template"
template = "{root}/spin.j2"
path = "{root}/out/spin.env"

[[sinks]]
type = "template"
template = "{root}/flood.j2"
path = "{root}/out/flood.env"

[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
"#,
    );
    let root = setup.dir.path();
    let out_dir = root.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(
        root.join("spin.j2"),
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("flood.j2"),
        "{% set k = \"x\" * 1024 %}{% for i in range(100000) %}{% for j in range(100000) %}\
         {{ k }}{% endfor %}{% endfor %}\n",
    )
    .unwrap();
    std::fs::write(out_dir.join("flood.env"), "old\n").unwrap();

    let checked = run_bin(args(&setup.config, &["check"])).await;
    assert_eq!(checked.status.code(), Some(0), "{}", output_text(&checked));

    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // The sinks are named as the report names them.
    let spin = format!(
        "FAILED sink template {out} (from {t}): template {out} (from {t}): cannot be rendered: \
         {t}:1: the render ran out of fuel after ",
        out = out_dir.join("spin.env").display(),
        t = root.join("spin.j2").display()
    );
    assert!(text.contains(&spin), "want {spin}…\n{text}");
    let flood = format!(
        "FAILED sink template {out} (from {t}): template {out} (from {t}): cannot be rendered: \
         {t}: output larger than 64 MiB",
        out = out_dir.join("flood.env").display(),
        t = root.join("flood.j2").display()
    );
    assert!(text.contains(&flood), "want {flood}…\n{text}");
    assert_no_secret(&sim, &text);

    // The json sink holds the run's values; the templates' files are as
    // they were; nothing else is there, and nothing near the cap.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("all.json")).unwrap()).unwrap();
    assert_eq!(
        json["object_storage_credentials"].as_array().unwrap().len(),
        sim.snapshot()
            .users
            .iter()
            .map(|u| u.credentials.len())
            .sum::<usize>()
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("flood.env")).unwrap(),
        "old\n"
    );
    let files = listing(&out_dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["all.json", "flood.env"], "{files:?}");
    assert!(files.iter().all(|(_, size)| *size <= CAP), "{files:?}");
}

/// Waits for `child` to exit within `limit`; kills it and fails otherwise,
/// showing `log`.
fn wait_for_exit(
    child: &mut Child,
    limit: Duration,
    what: &str,
    log: &Path,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not exit within {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A template within its fuel and its output cap that would still render
/// for many minutes (each turn copies and measures a 10 MB string): a
/// terminate signal ends it, both in `--run-now` and in the daemon, and the
/// process exits. The render is under way once the pass has listed the
/// credentials (before a credential is regenerated, every sink that selects
/// it is rendered); a signal that came before the render would end it just
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_signal_ends_a_render_in_progress() {
    for daemon in [false, true] {
        let opts = options(1);
        let sim = Simulator::start(opts.clone()).await.unwrap();
        let setup = write_config(
            &sim,
            &opts,
            r#"
[schedule]
cron = "0 0 3 * * *"
run_on_start = true

[[sinks]]
type = "template"
template = "{root}/slow.j2"
path = "{root}/out/slow.env"
"#,
        );
        let root = setup.dir.path();
        std::fs::create_dir(root.join("out")).unwrap();
        std::fs::write(
            root.join("slow.j2"),
            "{% set s = \"x\" * 10000000 %}{% for i in range(100000) %}\
             {{ (s ~ i) | length }}\n{% endfor %}",
        )
        .unwrap();
        let log = root.join("run.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("contabo-rotator"));
        command.args(["-c", &setup.config.display().to_string()]);
        if !daemon {
            command.arg("--run-now");
        }
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        let started = Instant::now();
        while !sim
            .requests()
            .iter()
            .any(|r| r.operation == Operation::ListObjectStorageCredentials)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no credentials listed:\n{}",
                text()
            );
            assert!(child.try_wait().unwrap().is_none(), "exited:\n{}", text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(child.try_wait().unwrap().is_none(), "exited:\n{}", text());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let what = if daemon { "the daemon" } else { "--run-now" };
        let status = tokio::task::block_in_place(|| {
            wait_for_exit(&mut child, Duration::from_secs(30), what, &log)
        });
        let text = text();
        assert!(
            text.contains("the render was stopped by a terminate signal"),
            "{what}:\n{text}"
        );
        // The sink failed: --run-now says so in its status; the daemon
        // exits cleanly (its next start delivers the sink).
        assert_eq!(status.code(), Some(if daemon { 0 } else { 1 }), "{text}");
        assert!(!root.join("out/slow.env").exists());
        assert_eq!(listing(&root.join("out")), [], "no temp file left");
        assert_no_secret(&sim, &text);
    }
}

/// A configuration file that everyone may write is refused by every
/// command that reads it, before any request; one its group may write is
/// used with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_writable_configuration_is_refused_before_any_request() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        "[[sinks]]\ntype = \"file\"\npath = \"{root}/out.json\"\nformat = \"json\"\n",
    );
    let config = setup.config.display().to_string();
    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o666)).unwrap();
    for command in [&["--run-now"][..], &["check"], &["list"], &["status"], &[]] {
        let out = run_bin(args(&setup.config, command)).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(78), "{command:?}: {text}");
        assert!(
            text.contains(&format!(
                "{config}: the configuration file is writable by everyone (mode 0666)"
            )) && text.contains(&format!("Fix: chmod o-w {config}")),
            "{command:?}: {text}"
        );
    }
    assert!(sim.requests().is_empty(), "a request was sent");
    assert!(!setup.dir.path().join("out.json").exists());

    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o660)).unwrap();
    let out = run_bin(args(&setup.config, &["check"])).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("its group may write it (mode 0660)")
            && text.contains(&format!("chmod g-w {config}")),
        "{text}"
    );
}

/// A uid no account on the machine has.
const OTHER_UID: u32 = 64011;

/// A daemon started as another user (as a service user would run it),
/// with its API password in `{ env = "..." }`: its `/proc/PID/environ`
/// belongs to root (the process is not dumpable), so its own user cannot
/// read it (nor can its `on_change` child), and read as root it holds
/// neither the variable's name nor its value. The daemon works with the
/// password all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_as_another_user_is_not_dumpable_and_its_env_secret_is_gone() {
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        r#"
[schedule]
cron = "0 0 3 * * *"
run_on_start = true

[[sinks]]
type = "file"
path = "{root}/out/all.json"
format = "json"
# What an on_change child sees: its environment, and whether it can read
# the daemon's.
on_change = ["sh", "-c", '''
env > "$CONTABO_ROTATOR_SINK_PATH.env"
if cat /proc/$PPID/environ > /dev/null 2>&1; then echo readable; else echo denied; fi > "$CONTABO_ROTATOR_SINK_PATH.parent"
''']
"#,
    );
    let root = setup.dir.path();
    let var = "CONTABO_ROTATOR_TEST_API_PASSWORD";
    let password = "sim-api-password-77";
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&opts.password),
        password
    );
    edit_config(
        &setup,
        &[(
            &format!(
                "password = {{ file = \"{}/api-password\" }}",
                root.display()
            ),
            &format!("password = {{ env = \"{var}\" }}"),
        )],
    );
    // The other user reaches its files: the directory is searchable, the
    // configuration readable (and root's), the rest its own.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&setup.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    for dir in ["state", "out"] {
        std::fs::create_dir(root.join(dir)).unwrap();
        std::fs::set_permissions(root.join(dir), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for owned in ["state", "out", "client-secret"] {
        std::os::unix::fs::chown(root.join(owned), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    let log = root.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let as_other = |command: &mut Command| {
        command.args([
            format!("--reuid={OTHER_UID}"),
            format!("--regid={OTHER_UID}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ]);
    };
    let mut command = Command::new("setpriv");
    as_other(&mut command);
    let mut child = command
        .arg(assert_cmd::cargo::cargo_bin("contabo-rotator"))
        .args(["-c", &setup.config.display().to_string()])
        .env_remove("RUST_LOG")
        .env(var, password)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    // Running, with the password (the run on start rotated and delivered).
    let started = Instant::now();
    while !text().contains("Scheduled run finished.") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no run:\n{}",
            text()
        );
        assert!(child.try_wait().unwrap().is_none(), "exited:\n{}", text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text().contains("failed=0"), "{}", text());
    assert!(root.join("out/all.json").exists());
    // The on_change child has neither the variable nor the daemon's
    // environment.
    let child_env = std::fs::read_to_string(root.join("out/all.json.env")).unwrap();
    assert!(
        child_env.contains("CONTABO_ROTATOR_SINK_PATH="),
        "{child_env}"
    );
    assert!(!child_env.contains(var) && !child_env.contains(password));
    assert_eq!(
        std::fs::read_to_string(root.join("out/all.json.parent")).unwrap(),
        "denied\n"
    );

    let proc_dir = Path::new("/proc").join(child.id().to_string());
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(2) == Some(&OTHER_UID.to_string()),
        "not running as the other user: {uid_line}"
    );
    let environ_path = proc_dir.join("environ");
    let meta = std::fs::metadata(&environ_path).unwrap();
    assert_eq!(meta.uid(), 0, "environ belongs to uid {}", meta.uid());
    let environ = std::fs::read(&environ_path).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("PATH="),
        "environ read as root is empty: {environ:?}"
    );
    assert!(!environ.contains(var), "the variable is still there");
    assert!(!environ.contains(password), "the secret is still there");
    // The daemon's own user cannot read it.
    let mut cat = Command::new("setpriv");
    as_other(&mut cat);
    let read = cat.arg("cat").arg(&environ_path).output().unwrap();
    assert!(
        !read.status.success(),
        "its own user read /proc/PID/environ"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::block_in_place(|| {
        wait_for_exit(&mut child, Duration::from_secs(30), "the daemon", &log)
    });
    assert_eq!(status.code(), Some(0), "{}", text());
    assert_no_secret(&sim, &text());
}
