//! The filesystem side of the trust boundary (invariant 9), met the way
//! another user on the host would meet it: the real binary runs as root
//! against the simulator, and made-up users (numeric uids; `setpriv`
//! switches to them) plant symlinks and open directories.

use crate::util::{args, options, output_text, run_bin, write_config, Setup};
use contabo_simulator::Simulator;
use secrecy::ExposeSecret;
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

/// A user whose home the sink writes into (the sink's `owner`).
const OPS: u32 = 64_201;
/// Another user, whose files must never change.
const VICTIM: u32 = 64_202;

fn as_root() {
    assert!(
        rustix_euid_is_root(),
        "these tests act as several users: run them as root (CI does)"
    );
}

fn rustix_euid_is_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

fn mkdir(path: &Path, uid: u32, mode: u32) {
    fs::create_dir_all(path).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `argv` as `uid` (the test's other users act through this).
fn as_user(uid: u32, argv: &[&str]) {
    let status = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".into(),
        ])
        .args(argv)
        .status()
        .expect("setpriv (util-linux) runs");
    assert!(status.success(), "{argv:?} as uid {uid}");
}

async fn run_now(setup: &Setup, extra: &[&str]) -> Output {
    let mut rest = vec!["--run-now"];
    rest.extend_from_slice(extra);
    run_bin(args(&setup.config, &rest)).await
}

/// Content, owner and mode of a file.
fn snapshot(path: &Path) -> (Vec<u8>, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (fs::read(path).unwrap(), meta.uid(), meta.mode() & 0o7777)
}

/// `/home/ops/.aws` swapped by `ops` for a symlink to another user's
/// `.aws`: root must not rename a file it gave to `ops` over the other
/// user's `credentials` (which `ops` could then edit into code execution
/// as that user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to act as several users"]
async fn a_symlinked_parent_planted_by_the_owner_is_refused() {
    as_root();
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            r#"
[object_storage]
rotate = true
max_age = "7d"

[[sinks]]
type = "file"
path = "{{root}}/home/ops/.aws/credentials"
format = "aws-credentials"
owner = "{OPS}"
"#
        ),
    );
    let root = setup.dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    mkdir(&root.join("home"), 0, 0o755);
    mkdir(&root.join("home/ops"), OPS, 0o755);
    mkdir(&root.join("home/victim"), VICTIM, 0o755);
    mkdir(&root.join("home/victim/.aws"), VICTIM, 0o700);
    let victim_file = root.join("home/victim/.aws/credentials");
    fs::write(&victim_file, "[default]\naws_access_key_id = VICTIMS\n").unwrap();
    chown(&victim_file, Some(VICTIM), Some(VICTIM)).unwrap();
    fs::set_permissions(&victim_file, fs::Permissions::from_mode(0o600)).unwrap();
    let before = snapshot(&victim_file);

    // The owner's own directory is trusted for the owner's sink.
    let aws = root.join("home/ops/.aws");
    as_user(OPS, &["mkdir", "-m", "700", &aws.display().to_string()]);
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let written = aws.join("credentials");
    assert_eq!(fs::metadata(&written).unwrap().uid(), OPS);
    assert!(fs::read_to_string(&written)
        .unwrap()
        .contains("aws_secret_access_key"));

    // ops swaps the directory for a symlink to the victim's.
    let moved = root.join("home/ops/.aws-mine");
    let link = format!("{}", aws.display());
    as_user(OPS, &["mv", &link, &moved.display().to_string()]);
    let target = root.join("home/victim/.aws").display().to_string();
    as_user(OPS, &["ln", "-s", &target, &link]);
    let requests = sim.requests().len();

    let out = run_now(&setup, &["--force"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("refusing the path through {link}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("a symlink owned by uid {OPS}")),
        "{text}"
    );
    assert_eq!(
        snapshot(&victim_file),
        before,
        "the victim's file is untouched"
    );
    let names: Vec<_> = fs::read_dir(root.join("home/victim/.aws"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["credentials"], "no temp file either");
    // The sink could not take new keys, so none was regenerated for it.
    let mutating = sim.requests()[requests..]
        .iter()
        .filter(|r| r.method == "PATCH" || r.method == "PUT")
        .count();
    assert_eq!(mutating, 0, "no credential regenerated for a refused sink");
}

/// Symlinks root owns (an operator's `/etc/myapp -> /srv/myapp/etc`) are
/// followed, relative and absolute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to act as several users"]
async fn a_sink_path_through_root_owned_symlinks_is_written() {
    as_root();
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        r#"
[object_storage]
rotate = true
max_age = "7d"

[[sinks]]
type = "file"
path = "{root}/etc-link/myapp/all.json"
format = "json"

[[sinks]]
type = "file"
path = "{root}/relative/all.json"
format = "json"
"#,
    );
    let root = setup.dir.path();
    fs::create_dir_all(root.join("srv/myapp")).unwrap();
    fs::create_dir_all(root.join("srv/other")).unwrap();
    std::os::unix::fs::symlink(root.join("srv"), root.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("srv/myapp/../other", root.join("relative")).unwrap();
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    for written in ["srv/myapp/all.json", "srv/other/all.json"] {
        let written = fs::read_to_string(root.join(written)).unwrap();
        assert!(written.contains("secret_key"));
    }
}

/// A state directory someone else could write is refused by every command
/// before any request; files planted in a closed one as symlinks are never
/// written through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to act as several users"]
async fn the_state_directory_is_closed_and_its_symlinks_never_followed() {
    as_root();
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        r#"
[object_storage]
rotate = true
max_age = "7d"
"#,
    );
    let root = setup.dir.path();
    let state = root.join("state");
    let precious = root.join("precious");
    fs::write(&precious, "root's own file\n").unwrap();
    let before = snapshot(&precious);

    for mode in [0o770, 0o777, 0o1777] {
        mkdir(&state, 0, mode);
        for command in [&["--run-now"][..], &["status"], &["list"], &["check"]] {
            let out = run_bin(args(&setup.config, command)).await;
            let text = output_text(&out);
            assert_eq!(out.status.code(), Some(1), "{command:?} {mode:o}: {text}");
            assert!(
                text.contains(&format!("refusing the state directory {}", state.display())),
                "{text}"
            );
            assert!(text.contains("chmod go-w"), "{text}");
        }
        fs::remove_dir_all(&state).unwrap();
    }
    // Owned by someone else, even closed.
    mkdir(&state, VICTIM, 0o700);
    let out = run_now(&setup, &[]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("belongs to uid {VICTIM}")), "{text}");
    assert!(text.contains("chown 0"), "{text}");
    fs::remove_dir_all(&state).unwrap();
    assert!(sim.requests().is_empty(), "nothing sent to a refused start");

    // Planted as symlinks to a root-owned file (by someone who could write
    // the directory once, or through a backup restored carelessly).
    mkdir(&state, 0, 0o700);
    for name in ["lock", "audit.log", "state.db"] {
        let planted = state.join(name);
        std::os::unix::fs::symlink(&precious, &planted).unwrap();
        let out = run_now(&setup, &[]).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}");
        assert!(
            text.contains(&format!("{} is a symlink", planted.display())),
            "{name}: {text}"
        );
        assert_eq!(snapshot(&precious), before, "{name} was written through");
        fs::remove_file(&planted).unwrap();
    }
    assert_eq!(snapshot(&precious), before);

    // And the directory, once closed and clean, works.
    let out = run_now(&setup, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

/// Files the configuration names are read only from places no other user
/// controls: a template `ops` could swap for a link to a root-only file
/// would otherwise be rendered, with that file's content, into `ops`'s sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, to act as several users"]
async fn a_template_or_secret_file_another_user_controls_is_refused() {
    as_root();
    let opts = options(1);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(
        &sim,
        &opts,
        &format!(
            r#"
[object_storage]
rotate = true
max_age = "7d"

[[sinks]]
type = "template"
template = "{{root}}/home/ops/tpl/app.j2"
path = "{{root}}/home/ops/app.env"
owner = "{OPS}"
"#
        ),
    );
    let root = setup.dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    mkdir(&root.join("home"), 0, 0o755);
    mkdir(&root.join("home/ops"), OPS, 0o755);
    let root_only = root.join("root-only");
    mkdir(&root_only, 0, 0o700);
    fs::write(root_only.join("secret.txt"), "ROOT-ONLY-CONTENT\n").unwrap();
    let tpl = root.join("home/ops/tpl");
    as_user(OPS, &["mkdir", &tpl.display().to_string()]);
    let target = root_only.join("secret.txt").display().to_string();
    as_user(
        OPS,
        &[
            "ln",
            "-s",
            &target,
            &tpl.join("app.j2").display().to_string(),
        ],
    );

    for command in [&["check"][..], &["--run-now"]] {
        let out = run_bin(args(&setup.config, command)).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(78), "{command:?}: {text}");
        assert!(text.contains("cannot read template"), "{text}");
        assert!(text.contains(&format!("belongs to uid {OPS}")), "{text}");
        assert!(!text.contains("ROOT-ONLY-CONTENT"), "{text}");
    }
    assert!(!root.join("home/ops/app.env").exists());
    assert!(sim.requests().is_empty());

    // A secret file of another user's is refused the same way.
    let setup = write_config(&sim, &opts, "");
    let root = setup.dir.path();
    let theirs = root.join("password");
    fs::write(&theirs, opts.password.expose_secret()).unwrap();
    chown(&theirs, Some(OPS), Some(OPS)).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&setup.config).unwrap();
    let mine = format!("{}/api-password", root.display());
    fs::write(
        &setup.config,
        text.replace(&mine, &theirs.display().to_string()),
    )
    .unwrap();
    let out = run_bin(args(&setup.config, &["check"])).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("api.password"), "{text}");
    assert!(text.contains(&format!("it belongs to uid {OPS}")), "{text}");
    assert!(sim.requests().is_empty());
}
