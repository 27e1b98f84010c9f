//! The shipped systemd units: `systemd-analyze verify` passes for every
//! unit and for an instance of every template (with the install path
//! pointed at the built binary), every service's exposure score is 1.5 or
//! better, and the sysusers.d file creates the service user. Every service
//! sets `LimitCORE=0`, and the documented drop-in for `owner`/`group`
//! verifies and leaves `fchown` allowed by the system call filter.
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

/// `systemd/sinks.conf.example` with the directives of the paragraph about
/// `owner`/`group` uncommented (and no others), as an operator applies it.
fn owner_drop_in() -> String {
    let example = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/sinks.conf.example"),
    )
    .unwrap();
    let mut in_owner_paragraph = false;
    let mut uncommented = 0;
    let text: Vec<String> = example
        .lines()
        .map(|line| {
            if line.starts_with("# ") {
                // A line of prose: a new paragraph, or more of this one.
                if !line.starts_with("#  ") && line.contains("Needed only") {
                    in_owner_paragraph = line.contains("`owner`");
                }
                return line.to_owned();
            }
            match line.strip_prefix('#') {
                Some(directive) if in_owner_paragraph && directive.contains('=') => {
                    uncommented += 1;
                    directive.to_owned()
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    assert!(
        uncommented >= 3,
        "no owner/group directives found:\n{example}"
    );
    text.join("\n") + "\n"
}

/// The `SystemCallFilter=~@privileged` row of `systemd-analyze security`.
fn privileged_row(dir: &std::path::Path, unit: &str) -> String {
    let out = run(
        "systemd-analyze",
        &["security", "--offline=true", unit],
        dir,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("SystemCallFilter=~@privileged"))
        .unwrap_or_else(|| panic!("no @privileged row for {unit}:\n{text}"))
        .to_owned()
}

/// The units deny `@privileged`, which holds `@chown`: the documented
/// drop-in for sinks with `owner`/`group` must allow the chown calls again
/// as well as give the capability, or `fchown` fails with EPERM whatever
/// the capabilities say. `systemd-analyze security` computes the effective
/// filter of the unit with its drop-ins; a probe drop-in that also denies
/// `chown` and `chown32` makes it name the next allowed call of the group,
/// which must be `fchown` (the call the sinks use).
#[test]
fn the_owner_drop_in_verifies_and_lets_the_service_fchown() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let bin = assert_cmd::cargo::cargo_bin("contabo-rotator");
    let drop_in = owner_drop_in();
    assert!(drop_in.contains("\nSystemCallFilter=@chown\n"), "{drop_in}");
    assert!(
        drop_in.contains("\nAmbientCapabilities=CAP_CHOWN"),
        "{drop_in}"
    );
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        assert!(text.contains("\nLimitCORE=0\n"), "{unit} allows core dumps");
        let text = text.replace("/usr/local/bin/contabo-rotator", &bin.display().to_string());
        std::fs::write(dir.path().join(unit), text).unwrap();
        // A template's drop-in directory applies to every instance.
        let checked = if unit.contains("@.") {
            let instance = unit.replace("@.", "@shop.");
            std::os::unix::fs::symlink(unit, dir.path().join(&instance)).unwrap();
            format!("./{instance}")
        } else {
            format!("./{unit}")
        };
        let drop_ins = dir.path().join(format!("{unit}.d"));
        std::fs::create_dir(&drop_ins).unwrap();
        let probe = "[Service]\nSystemCallFilter=~chown chown32\n";
        std::fs::write(drop_ins.join("zz-probe.conf"), probe).unwrap();

        // Without the drop-in, no call of @privileged is allowed: the row
        // the test reads can tell.
        let row = privileged_row(dir.path(), &checked);
        assert!(row.contains("@privileged is not included"), "{unit}: {row}");

        std::fs::write(drop_ins.join("sinks.conf"), &drop_in).unwrap();
        let out = run("systemd-analyze", &["verify", &checked], dir.path());
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit} with the drop-in: systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let row = privileged_row(dir.path(), &checked);
        assert!(row.contains("(e.g. fchown is allowed)"), "{unit}: {row}");
        let out = run(
            "systemd-analyze",
            &["security", "--offline=true", &checked],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let capability = text
            .lines()
            .find(|l| l.contains("CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)"))
            .unwrap_or_default();
        assert!(
            capability.contains("may change file ownership"),
            "{unit}: {capability}"
        );
    }
}
