//! Real S3 clients (aws-cli v1, boto3, rclone) driven with nothing but the
//! files the sinks wrote, against the simulator's S3 endpoint, which checks
//! SigV4 against the keys the account holds. After a forced rotation the
//! old files are refused (403) and the new ones work.
//!
//! The clients come from `scripts/install-test-tools` (`scripts/test` runs
//! it). With `CI=true` a missing client fails the test; elsewhere the test
//! says loudly what is missing and how to install it, and stops there.

use crate::util::{args, options, output_with_stdin, run_bin, write_config};
use contabo_rotator::sinks::formats::{profile_name, region_code};
use contabo_simulator::{Simulator, SimulatorOptions, DEFAULT_BUCKET};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The installed clients, from `.tools/s3-clients/paths`.
struct Clients {
    aws: PathBuf,
    python: PathBuf,
    rclone: PathBuf,
}

/// The installed clients (the test fails without them).
fn clients() -> Clients {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = std::fs::read_to_string(root.join(".tools/s3-clients/paths")).unwrap_or_default();
    let paths: BTreeMap<&str, PathBuf> = listed
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, PathBuf::from(v)))
        .collect();
    let find = |name: &str| paths.get(name).filter(|p| p.exists()).cloned();
    let missing: Vec<&str> = ["AWS", "PYTHON", "RCLONE"]
        .into_iter()
        .filter(|n| find(n).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "the real S3 clients {missing:?} are not installed under .tools/s3-clients: \
         run scripts/install-test-tools (scripts/test runs it)"
    );
    let found = |name: &str| find(name).expect("checked above");
    Clients {
        aws: found("AWS"),
        python: found("PYTHON"),
        rclone: found("RCLONE"),
    }
}

/// A command with nothing from the test's environment: no AWS variables,
/// no proxy, a fresh HOME, and the shared AWS files pointed nowhere unless
/// the case sets them.
fn clean(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("LC_ALL", "C.UTF-8");
    cmd
}

fn shown(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How a client finds its settings in one of the sink files.
#[derive(Clone, Copy, Debug)]
enum Source<'a> {
    /// `AWS_SHARED_CREDENTIALS_FILE` with `AWS_PROFILE`.
    Credentials(&'a str),
    /// `AWS_CONFIG_FILE` with `AWS_PROFILE`.
    Config(&'a str),
    /// An env file, read by `sh` (`set -a; . file`), as systemd or compose
    /// would hand it to a process.
    Env,
}

/// Runs `argv` (a client and its arguments) with its settings from `file`.
fn run_with(file: &Path, source: Source, home: &Path, argv: &[&str], stdin: &str) -> Output {
    let cmd = match source {
        Source::Env => {
            let mut cmd = clean(Path::new("/bin/sh"), home);
            cmd.arg("-c")
                .arg(r#"set -a; . "$0"; set +a; exec "$@""#)
                .arg(file)
                .args(argv);
            cmd
        }
        Source::Credentials(profile) => {
            let mut cmd = clean(Path::new(argv[0]), home);
            cmd.args(&argv[1..])
                .env("AWS_SHARED_CREDENTIALS_FILE", file)
                .env("AWS_PROFILE", profile);
            cmd
        }
        Source::Config(profile) => {
            let mut cmd = clean(Path::new(argv[0]), home);
            cmd.args(&argv[1..])
                .env("AWS_CONFIG_FILE", file)
                .env("AWS_PROFILE", profile);
            cmd
        }
    };
    output_with_stdin(cmd, stdin)
}

/// boto3: ListBuckets, PutObject, GetObject and ListObjectsV2, for each
/// profile named after the object key and body (`argv[3..]`; none: the
/// environment's variables, or the `S3_*` variables of `app.env.j2`).
/// Object `KEY-N` is written with profile N.
const BOTO3: &str = r#"
import os, sys, boto3
from botocore.exceptions import ClientError
key, body, profiles = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
def client(profile):
    if profile:
        return boto3.session.Session(profile_name=profile).client("s3")
    if os.environ.get("S3_ENDPOINT"):
        return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"],
                            region_name=os.environ["S3_REGION"],
                            aws_access_key_id=os.environ["S3_ACCESS_KEY"],
                            aws_secret_access_key=os.environ["S3_SECRET_KEY"])
    return boto3.session.Session().client("s3")
for i, profile in enumerate(profiles or [None]):
    s3 = client(profile)
    try:
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    except ClientError as e:
        print("REFUSED", profile, e.response["ResponseMetadata"]["HTTPStatusCode"],
              e.response["Error"]["Code"])
        sys.exit(3)
    assert "sim-bucket" in names, names
    name = f"{key}-{i}.txt"
    s3.put_object(Bucket="sim-bucket", Key=name, Body=body)
    got = s3.get_object(Bucket="sim-bucket", Key=name)["Body"].read()
    assert got == body, got
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="sim-bucket").get("Contents", [])]
    assert name in listed, listed
    print("OK", profile, s3.meta.region_name)
"#;

/// What one client did with one file.
struct Tried {
    what: String,
    out: Output,
}

/// The sinks under test: every built-in format and every shipped template.
fn sinks(root: &Path) -> String {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let one = r#"select = { users = ["user001@example.com"], regions = ["European Union"] }"#;
    let mut text = String::from("[object_storage]\nverify = \"s3\"\n");
    for (path, format, select) in [
        ("credentials", "aws-credentials", ""),
        ("config", "aws-config", ""),
        ("s3.env", "env", one),
    ] {
        text.push_str(&format!(
            "\n[[sinks]]\ntype = \"file\"\npath = \"{}/out/{path}\"\nformat = \"{format}\"\n{select}\n",
            root.display()
        ));
    }
    for (name, select) in [
        ("app.env.j2", one),
        ("compose.env.j2", one),
        ("aws-credentials.j2", ""),
        ("rclone.conf.j2", ""),
    ] {
        text.push_str(&format!(
            "\n[[sinks]]\ntype = \"template\"\ntemplate = \"{}\"\npath = \"{}/out/{}\"\n{select}\n",
            templates.join(name).display(),
            root.display(),
            name.trim_end_matches(".j2"),
        ));
    }
    text
}

/// Every client against every file in `dir`; `tag` makes object keys
/// unique per round.
fn try_all(c: &Clients, dir: &Path, home: &Path, profiles: &[String], tag: &str) -> Vec<Tried> {
    let aws = c.aws.to_str().unwrap();
    let python = c.python.to_str().unwrap();
    let mut tried = Vec::new();
    let mut push = |what: String, out: Output| tried.push(Tried { what, out });
    // boto3, every profile of each profile file, in one process per file.
    for (file, config_file) in [
        ("credentials", false),
        ("config", true),
        ("aws-credentials", false),
    ] {
        let path = dir.join(file);
        let mut cmd = clean(Path::new(python), home);
        cmd.args(["-c", BOTO3, tag, tag]).args(profiles).env(
            if config_file {
                "AWS_CONFIG_FILE"
            } else {
                "AWS_SHARED_CREDENTIALS_FILE"
            },
            &path,
        );
        push(format!("boto3 with {file}"), output_with_stdin(cmd, ""));
    }
    for (i, profile) in profiles.iter().enumerate() {
        push(
            format!("rclone with rclone.conf [contabo-{profile}]"),
            rclone_round(
                &c.rclone,
                &dir.join("rclone.conf"),
                home,
                profile,
                &format!("{tag}-rclone-{i}.txt"),
                tag,
            ),
        );
    }
    // aws-cli (its start-up is slow): a round trip (ls, put, get) with the
    // first profile of each built-in profile file, and a ListBuckets,
    // which shows the endpoint, region and keys were read, with the others.
    let first = profiles[0].as_str();
    let object = format!("{tag}-cli.txt");
    for (file, source, round_trip) in [
        ("credentials", Source::Credentials(first), true),
        ("config", Source::Config(first), true),
        ("aws-credentials", Source::Credentials(first), false),
        ("s3.env", Source::Env, true),
        ("compose.env", Source::Env, false),
    ] {
        let path = dir.join(file);
        let out = if round_trip {
            aws_round(aws, &path, source, home, &object, tag)
        } else {
            aws_ls(aws, &path, source, home)
        };
        push(format!("aws-cli with {file}"), out);
    }
    for file in ["s3.env", "app.env", "compose.env"] {
        push(
            format!("boto3 with {file}"),
            run_with(
                &dir.join(file),
                Source::Env,
                home,
                &[python, "-c", BOTO3, &format!("{tag}-{file}"), tag],
                "",
            ),
        );
    }
    tried
}

/// `aws s3 ls`, then `aws s3 cp - s3://…` and back: stops at the first
/// failure and returns that command's output.
fn aws_round(
    aws: &str,
    file: &Path,
    source: Source,
    home: &Path,
    object: &str,
    body: &str,
) -> Output {
    let url = format!("s3://{DEFAULT_BUCKET}/{object}");
    let ls = aws_ls(aws, file, source, home);
    if !ls.status.success() {
        return ls;
    }
    let put = run_with(file, source, home, &[aws, "s3", "cp", "-", &url], body);
    if !put.status.success() {
        return put;
    }
    let get = run_with(file, source, home, &[aws, "s3", "cp", &url, "-"], "");
    if String::from_utf8_lossy(&get.stdout) != body {
        return get;
    }
    ls
}

/// `aws s3 ls` (ListBuckets); a listing without the bucket is made a
/// failure.
fn aws_ls(aws: &str, file: &Path, source: Source, home: &Path) -> Output {
    let mut ls = run_with(file, source, home, &[aws, "s3", "ls"], "");
    if ls.status.success() && !String::from_utf8_lossy(&ls.stdout).contains(DEFAULT_BUCKET) {
        use std::os::unix::process::ExitStatusExt;
        ls.status = std::process::ExitStatus::from_raw(1 << 8);
    }
    ls
}

/// `rclone lsd`, `rcat` and `cat` with a remote of `rclone.conf`.
fn rclone_round(
    rclone: &Path,
    conf: &Path,
    home: &Path,
    profile: &str,
    object: &str,
    body: &str,
) -> Output {
    let remote = format!("contabo-{profile}:");
    let plain = |argv: &[&str], stdin: &str| {
        let mut cmd = clean(rclone, home);
        cmd.arg("--config").arg(conf).args(argv).args([
            "--low-level-retries",
            "1",
            "--retries",
            "1",
        ]);
        output_with_stdin(cmd, stdin)
    };
    let lsd = plain(&["lsd", &remote], "");
    if !lsd.status.success() || !String::from_utf8_lossy(&lsd.stdout).contains(DEFAULT_BUCKET) {
        return lsd;
    }
    let target = format!("{remote}{DEFAULT_BUCKET}/{object}");
    let put = plain(&["rcat", &target], body);
    if !put.status.success() {
        return put;
    }
    let get = plain(&["cat", &target], "");
    if String::from_utf8_lossy(&get.stdout) != body {
        return get;
    }
    lsd
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// (credential id, region code, profile name) of every credential the
/// simulator holds now, ordered by user and credential.
fn credentials(sim: &Simulator) -> Vec<(i64, &'static str, String, String)> {
    sim.snapshot()
        .users
        .iter()
        .flat_map(|u| {
            u.credentials.iter().map(|c| {
                (
                    c.credential_id,
                    region_code(&c.region),
                    profile_name(&u.email, &c.region, c.credential_id),
                    c.access_key.clone(),
                )
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs aws-cli, boto3 and rclone: scripts/test installs them"]
async fn real_clients_work_with_the_sink_files_and_old_files_are_refused() {
    let clients = clients();
    let opts = SimulatorOptions {
        credentials_per_user: 3,
        ..options(2)
    };
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, &sinks(Path::new("{root}")));
    let root = setup.dir.path().to_owned();
    std::fs::create_dir_all(root.join("out")).unwrap();
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();

    // First run: every credential is rotated (first sight) and delivered.
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let creds = credentials(&sim);
    assert_eq!(creds.len(), 6);
    let profiles: Vec<String> = creds.iter().map(|c| c.2.clone()).collect();

    let tried = tokio::task::block_in_place(|| {
        try_all(&clients, &root.join("out"), &home, &profiles, "one")
    });
    for t in &tried {
        assert!(t.out.status.success(), "{}: {}", t.what, shown(&t.out));
    }
    // What boto3 put is in the storage of the credential's region.
    for (i, (id, region, _, _)) in creds.iter().enumerate() {
        assert_eq!(
            sim.s3_object(region, DEFAULT_BUCKET, &format!("one-{i}.txt"))
                .as_deref(),
            Some(&b"one"[..]),
            "credential {id} in {region}"
        );
    }

    // Keep the files, rotate everything again.
    copy_dir(&root.join("out"), &root.join("old"));
    let out = run_bin(args(&setup.config, &["--run-now", "--force"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let new_creds = credentials(&sim);
    for (old, new) in creds.iter().zip(&new_creds) {
        assert_eq!(old.2, new.2, "a rotation keeps the profile name");
        assert_ne!(old.3, new.3, "a new access key");
    }

    // The old files: refused by the storage, with S3's 403.
    let log_before = sim.s3_requests().len();
    let tried = tokio::task::block_in_place(|| {
        try_all(&clients, &root.join("old"), &home, &profiles, "old")
    });
    for t in &tried {
        let text = shown(&t.out);
        assert!(
            !t.out.status.success(),
            "{}: the old key still works: {text}",
            t.what
        );
        assert!(
            text.contains("InvalidAccessKeyId") || text.contains("403"),
            "{}: refused by S3: {text}",
            t.what
        );
    }
    // Every request made with the old files named an old key and got 403.
    let old_keys: std::collections::BTreeSet<&str> = creds.iter().map(|c| c.3.as_str()).collect();
    let log = sim.s3_requests();
    assert!(log.len() > log_before);
    for r in &log[log_before..] {
        let key = r.access_key.as_deref().unwrap_or_default();
        assert!(old_keys.contains(key), "{r:?}");
        assert_eq!(r.status, 403, "{r:?}");
    }

    // The new files work.
    let tried = tokio::task::block_in_place(|| {
        try_all(&clients, &root.join("out"), &home, &profiles, "two")
    });
    for t in &tried {
        assert!(t.out.status.success(), "{}: {}", t.what, shown(&t.out));
    }
}
