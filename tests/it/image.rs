//! The container image `scripts/build-image` builds (without a registry),
//! run under podman the way the deploy files run it: as uid 65532 (the
//! image's user), with a read-only root filesystem and the state on a
//! volume. `demo` needs nothing but the image; a `--run-now` job reads
//! config/container-job.toml, pointed at the test's simulator on the host's
//! loopback (`--network host`), and writes its sink to a mounted directory.

use crate::util::artifacts::{image, image_reference, podman, Volume};
use crate::util::{api_keys, assert_no_secret, json_sink_keys, options, output_text};
use contabo_simulator::Simulator;
use secrecy::ExposeSecret;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const UID: u32 = 65532;

/// `podman image inspect` of one field (a Go template).
fn inspect(format: &str) -> String {
    let out = podman(&["image", "inspect", "--format", format, image()]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
#[ignore = "needs podman: scripts/test installs it"]
fn the_image_runs_demo_as_65532_with_a_read_only_root() {
    assert_eq!(image(), image_reference());
    assert_eq!(inspect("{{.Config.User}}"), "65532:65532");
    assert!(inspect("{{.Config.Env}}").contains("STATE_DIRECTORY=/var/lib/contabo-rotator"));
    assert!(inspect("{{.Config.Volumes}}").contains("/var/lib/contabo-rotator"));
    // The binary, four libraries, the CA bundle: no base image, no shell.
    let size: u64 = inspect("{{.Size}}").parse().unwrap();
    assert!(size < 32 << 20, "the image is {size} bytes");

    // No network either: the demo's simulator listens on the container's
    // loopback, and its temporary directory is podman's /tmp tmpfs.
    let out = podman(&[
        "run",
        "--rm",
        "--read-only",
        "--network",
        "none",
        image(),
        "demo",
    ]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Every S3 credential and the client secret, into the json sink.
    assert!(
        stdout.contains(" rotated, 15 verified, 0 failed, 1 sinks written"),
        "{stdout}"
    );
}

/// Chowns `path` to the image's user, with `mode`.
fn give(path: &Path, mode: u32) {
    std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman: scripts/test installs it"]
async fn a_run_now_job_rotates_against_the_simulator_with_its_state_on_a_volume() {
    let opts = options(3);
    let sim = Simulator::start(opts.clone()).await.unwrap();
    let image = tokio::task::spawn_blocking(image).await.unwrap();

    // The files the compose file mounts, owned by the image's user: the
    // shipped container-job config (plus where the simulator is), the
    // secrets directory, and the directory the sink writes to.
    let dir = tempfile::tempdir().unwrap();
    let shipped = crate::util::artifacts::root().join("config/container-job.toml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let api = format!(
        "[api]\nbase_url = \"{}\"\ntoken_url = \"{}\"\n",
        sim.base_url(),
        sim.token_url()
    );
    let text = text
        .replacen("[api]\n", &api, 1)
        .replace("\"INT-12345678\"", &format!("\"{}\"", opts.client_id))
        .replace(
            "\"api-user@example.com\"",
            &format!("\"{}\"", opts.username),
        );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    give(&config, 0o600);
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for (name, value) in [
        ("client-secret", opts.client_secret.expose_secret()),
        ("api-password", opts.password.expose_secret()),
    ] {
        std::fs::write(secrets.join(name), value).unwrap();
        give(&secrets.join(name), 0o400);
    }
    give(&secrets, 0o500);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    give(&out_dir, 0o700);
    let state = Volume::new();

    let mounts = [
        format!("{}:/etc/contabo-rotator/config.toml:ro", config.display()),
        format!("{}:/run/secrets/contabo:ro", secrets.display()),
        format!("{}:/var/lib/contabo-rotator", state.0),
        format!("{}:/out", out_dir.display()),
    ];
    let run = move |args: &'static [&'static str]| {
        let mut argv = vec!["run", "--rm", "--read-only", "--network", "host"];
        for mount in &mounts {
            argv.extend(["--volume", mount.as_str()]);
        }
        argv.push(image);
        argv.extend(args);
        podman(&argv)
    };
    let run = std::sync::Arc::new(run);
    let pass = |args: &'static [&'static str]| {
        let run = run.clone();
        tokio::task::spawn_blocking(move || run(args))
    };

    let first = pass(&["--run-now"]).await.unwrap();
    let text = output_text(&first);
    assert!(first.status.success(), "{text}");
    assert_no_secret(&sim, &text);
    let sink = out_dir.join("contabo.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sink).unwrap()).unwrap();
    let keys = json_sink_keys(&json);
    assert_eq!(keys.len(), 9, "three users, three credentials each");
    assert!(keys == api_keys(&sim), "the sink holds what the API holds");
    let meta = std::fs::metadata(&sink).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (UID, 0o600));

    // The second pass finds its records on the volume: nothing is due.
    let second = pass(&["--run-now"]).await.unwrap();
    assert!(second.status.success(), "{}", output_text(&second));
    assert!(api_keys(&sim) == keys, "nothing was rotated again");
    let status = pass(&["status", "--json"]).await.unwrap();
    let text = output_text(&status);
    assert!(status.status.success(), "{text}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state_dir"], "/var/lib/contabo-rotator");
    assert!(
        status["last_run"]["last_success_at"].is_string(),
        "{status}"
    );
    assert_eq!(status["credentials"].as_array().map(Vec::len), Some(9));
}
