//! Bad input: a corpus of broken configurations, each refused by the real
//! binary with exit 78, a message naming the key, and no request to the API.

use crate::util::{args, options, run_bin, write_config, write_secret};
use contabo_simulator::Simulator;
use std::os::unix::fs::PermissionsExt;

/// (what is wrong, text appended to a valid config or replacing a line, key named in the error)
const APPENDED: &[(&str, &str, &str)] = &[
    ("unknown table", "[apii]\nx = 1\n", "apii"),
    ("unknown key in schedule", "[schedule]\ncronn = \"* * * * *\"\n", "cronn"),
    ("bad cron", "[schedule]\ncron = \"61 * * * *\"\n", "schedule.cron"),
    ("cron with too many fields", "[schedule]\ncron = \"0 0 0 0 0 0 0 0\"\n", "schedule.cron"),
    ("bad time zone", "[schedule]\ncron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n", "schedule.timezone"),
    ("bad jitter", "[schedule]\njitter = \"soon\"\n", "schedule.jitter"),
    ("max_age of the wrong type", "[object_storage]\nmax_age = 7\n", "max_age"),
    ("max_age too small", "[object_storage]\nmax_age = \"1s\"\n", "object_storage.max_age"),
    ("bad glob", "[object_storage]\nusers = [\"[unclosed\"]\n", "object_storage.users"),
    ("bad on_first_sight", "[object_storage]\non_first_sight = \"maybe\"\n", "on_first_sight"),
    ("max_per_run zero", "[object_storage]\nmax_per_run = 0\n", "object_storage.max_per_run"),
    ("rotate as a string", "[client_secret]\nrotate = \"yes\"\n", "rotate"),
    ("unknown sink type", "[[sinks]]\ntype = \"ftp\"\npath = \"/tmp/x\"\n", "sinks[0]"),
    ("file sink without format", "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.json\"\n", "format"),
    ("world-readable sink mode", "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.json\"\nformat = \"json\"\nmode = \"0644\"\n", "sinks[0].mode"),
    ("unknown file format", "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x\"\nformat = \"yaml\"\n", "format"),
    ("sink wait too long", "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.json\"\nformat = \"json\"\nwait = \"1m\"\n", "sinks[0].wait"),
    ("sink wait not a duration", "[[sinks]]\ntype = \"template\"\ntemplate = \"/tmp/t.j2\"\npath = \"/tmp/x\"\nwait = \"soon\"\n", "wait"),
    ("wait on a webhook", "[[sinks]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsigning_secret = \"whsec_c2VjcmV0\"\nwait = \"1s\"\n", "wait"),
    ("on_change not argv", "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.json\"\nformat = \"json\"\non_change = \"systemctl reload x\"\n", "on_change"),
    ("webhook secrets over plain http", "[[sinks]]\ntype = \"webhook\"\nurl = \"http://hooks.example.com/x\"\nsigning_secret = \"whsec_c2VjcmV0\"\ninclude_secrets = true\n", "include_secrets"),
    ("webhook key not whsec_", "[[sinks]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsigning_secret = \"plain-key\"\n", "signing_secret"),
    ("webhook secret file missing", "[[sinks]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsigning_secret = { file = \"/nonexistent/webhook.key\" }\n", "signing_secret"),
    ("metrics listen not an address", "[metrics]\nlisten = \"everywhere\"\n", "metrics.listen"),
    ("secret from an unset variable", "[[sinks]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsigning_secret = { env = \"CONTABO_ROTATOR_TEST_UNSET_VAR\" }\n", "signing_secret"),
];

/// (what is wrong, line of the valid [api] table to replace, replacement, key named)
const REPLACED: &[(&str, &str, &str, &str)] = &[
    (
        "timeout out of range",
        "timeout = \"10s\"",
        "timeout = \"0s\"",
        "api.timeout",
    ),
    (
        "concurrency out of range",
        "concurrency = 8",
        "concurrency = 1000",
        "api.concurrency",
    ),
    (
        "concurrency of the wrong type",
        "concurrency = 8",
        "concurrency = \"eight\"",
        "concurrency",
    ),
    (
        "requests_per_second zero",
        "requests_per_second = 1000",
        "requests_per_second = 0",
        "api.requests_per_second",
    ),
    (
        "negative max_retries",
        "max_retries = 10",
        "max_retries = -1",
        "max_retries",
    ),
    (
        "misspelt key in api",
        "max_retries = 10",
        "max_retry = 10",
        "max_retry",
    ),
    (
        "empty client id",
        "client_id = \"INT-10000001\"",
        "client_id = \"\"",
        "api.client_id",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_config_exits_78_naming_the_key_without_a_request() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let valid = std::fs::read_to_string(&setup.config).unwrap();
    assert!(run_bin(args(&setup.config, &["check"]))
        .await
        .status
        .success());

    let mut cases: Vec<(String, String, &str)> = APPENDED
        .iter()
        .map(|(what, extra, key)| (what.to_string(), format!("{valid}\n{extra}"), *key))
        .collect();
    for (what, line, replacement, key) in REPLACED {
        assert!(
            valid.contains(line),
            "{what}: the valid config has no line {line}"
        );
        cases.push((what.to_string(), valid.replace(line, replacement), *key));
    }
    for (what, text, key) in &cases {
        write_secret(&setup.config, text);
        for command in [&["check"][..], &["--run-now"], &["list"]] {
            let out = run_bin(args(&setup.config, command)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "{what} ({command:?}): {stderr}"
            );
            assert!(
                stderr.contains(key),
                "{what}: the error does not name {key}: {stderr}"
            );
            assert!(
                stderr.contains("config.toml"),
                "{what}: the error does not name the file: {stderr}"
            );
        }
    }
    assert!(
        sim.requests().is_empty(),
        "no request for any broken config"
    );
    assert!(cases.len() >= 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_or_exposed_secret_files_are_refused() {
    let opts = options(2);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let setup = write_config(&sim, &opts, "");
    let secret = setup.dir.path().join("api-password");
    // A directory where a file is expected: unreadable even for root.
    std::fs::remove_file(&secret).unwrap();
    std::fs::create_dir(&secret).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("api.password"), "{stderr}");
    std::fs::remove_dir(&secret).unwrap();
    // A secret file others can read.
    std::fs::write(&secret, "sim-api-password-77").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("api.password") && stderr.contains("readable by others"),
        "{stderr}"
    );
    assert!(!stderr.contains("sim-api-password-77"), "{stderr}");
    // An empty secret file.
    std::fs::write(&secret, "").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_bin(args(&setup.config, &["--run-now"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("api.password"), "{stderr}");
    assert!(sim.requests().is_empty());
}
