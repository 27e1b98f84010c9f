//! The shipped systemd units: `systemd-analyze verify` passes (with the
//! install path pointed at the built binary) and the daemon unit's exposure
//! score is 2.0 or better. systemd-analyze is part of the machine's systemd;
//! if it is missing the test fails rather than skips.

use std::path::PathBuf;
use std::process::Command;

fn analyze(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("systemd-analyze is required for this test (Debian package systemd)")
}

#[test]
fn units_verify_and_the_daemon_scores_2_0_or_better() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("contabo-rotator");
    let units = [
        "contabo-rotator.service",
        "contabo-rotator-once.service",
        "contabo-rotator-once.timer",
    ];
    for unit in units {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/contabo-rotator", &bin.display().to_string());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let paths: Vec<String> = units.iter().map(|u| format!("./{u}")).collect();
    let mut verify = vec!["verify"];
    verify.extend(paths.iter().map(String::as_str));
    let out = analyze(&verify, dir.path());
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for unit in ["contabo-rotator.service", "contabo-rotator-once.service"] {
        // The threshold is on systemd's 0..100 scale: 20 is an exposure of 2.0.
        let out = analyze(
            &[
                "security",
                "--offline=true",
                "--threshold=20",
                &format!("./{unit}"),
            ],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unit} scores worse than 2.0:\n{}",
            text.lines().last().unwrap_or_default()
        );
        assert!(text.contains("Overall exposure level"), "{text}");
    }
}
