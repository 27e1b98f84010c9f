//! The shipped systemd units: `systemd-analyze verify` passes for every
//! unit and for an instance of every template (with the install path
//! pointed at the built binary), every service's exposure score is 1.5 or
//! better, and the sysusers.d file creates the service user.
//! systemd-analyze is part of the machine's systemd; if it is missing the
//! test fails rather than skips.

use std::path::PathBuf;
use std::process::Command;

fn run(program: &str, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is required for this test (Debian package systemd): {e}")
        })
}

const UNITS: [&str; 6] = [
    "contabo-rotator.service",
    "contabo-rotator-once.service",
    "contabo-rotator-once.timer",
    "contabo-rotator@.service",
    "contabo-rotator-once@.service",
    "contabo-rotator-once@.timer",
];

#[test]
fn units_and_template_instances_verify_and_every_service_scores_1_5_or_better() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("contabo-rotator");
    for unit in UNITS {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/contabo-rotator", &bin.display().to_string());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    // Every unit in systemd/ is one of these.
    let mut shipped: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    shipped.sort();
    let mut listed: Vec<String> = UNITS.iter().map(|u| u.to_string()).collect();
    listed.sort();
    assert_eq!(shipped, listed);

    // Templates are verified as an instance, `shop`.
    let mut checked = Vec::new();
    for unit in UNITS {
        let name = if unit.contains("@.") {
            let instance = unit.replace("@.", "@shop.");
            std::os::unix::fs::symlink(unit, dir.path().join(&instance)).unwrap();
            instance
        } else {
            unit.to_string()
        };
        checked.push(format!("./{name}"));
    }
    let mut verify = vec!["verify"];
    verify.extend(checked.iter().map(String::as_str));
    let out = run("systemd-analyze", &verify, dir.path());
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The instance reads its own configuration, state and secrets.
    let instance = std::fs::read_to_string(dir.path().join("contabo-rotator@.service")).unwrap();
    for expected in [
        "-c /etc/contabo-rotator/%i.toml",
        "StateDirectory=contabo-rotator/%i\n",
        "LoadCredential=client-secret:/etc/contabo-rotator/%i/client-secret\n",
    ] {
        assert!(instance.contains(expected), "{expected}");
    }

    for service in checked.iter().filter(|u| u.ends_with(".service")) {
        // The threshold is on systemd's 0..100 scale: 15 is an exposure of 1.5.
        let out = run(
            "systemd-analyze",
            &["security", "--offline=true", "--threshold=15", service],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{service} scores worse than 1.5:\n{}",
            text.lines().last().unwrap_or_default()
        );
        assert!(text.contains("Overall exposure level"), "{text}");
    }
}

#[test]
fn the_sysusers_file_creates_the_service_user() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/contabo-rotator.sysusers");
    let root = tempfile::tempdir().unwrap();
    let out = run(
        "systemd-sysusers",
        &[
            "--dry-run",
            &format!("--root={}", root.path().display()),
            &file.display().to_string(),
        ],
        root.path(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Creating user 'contabo-rotator'"), "{text}");
    // The units run as that user.
    let unit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/contabo-rotator@.service"),
    )
    .unwrap();
    assert!(unit.contains("\nUser=contabo-rotator\n"));
}
