//! The Debian package `scripts/build-deb` builds: exactly the files it
//! should hold (`dpkg-deb -c`), each the same as its source in the tree or
//! as the binary prints it, maintainer scripts that create the service user
//! and start nothing, and no error from lintian.

use crate::util::artifacts::{deb, root};
use crate::util::output_text;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

const DOC: &str = "/usr/share/doc/contabo-rotator";

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        output_text(&out)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the built binary prints for `args`.
fn binary_prints(args: &[&str]) -> Vec<u8> {
    let bin = assert_cmd::cargo::cargo_bin("contabo-rotator");
    run(bin.to_str().unwrap(), args).stdout
}

/// The files below `dir`, relative to it, with `/` between components.
fn files_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                found.push(rel.display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Source in the tree → path in the package, for the files shipped as they are.
fn copied_files() -> Vec<(String, String)> {
    let mut files = vec![
        (
            "systemd/contabo-rotator.sysusers".to_owned(),
            "/usr/lib/sysusers.d/contabo-rotator.conf".to_owned(),
        ),
        (
            "systemd/sinks.conf.example".to_owned(),
            format!("{DOC}/examples/systemd/sinks.conf"),
        ),
        ("README.md".to_owned(), format!("{DOC}/README.md")),
    ];
    for name in files_below(&root().join("config")) {
        files.push((format!("config/{name}"), format!("{DOC}/examples/{name}")));
    }
    if root().join("docs").is_dir() {
        for name in files_below(&root().join("docs")) {
            files.push((format!("docs/{name}"), format!("{DOC}/docs/{name}")));
        }
    }
    files
}

fn units() -> Vec<String> {
    let mut units: Vec<String> = std::fs::read_dir(root().join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".timer"))
        .collect();
    units.sort();
    units
}

#[test]
#[ignore = "needs cargo-deb and lintian: scripts/test installs them"]
fn the_package_holds_the_binary_units_man_page_completions_examples_and_docs() {
    let deb = deb().to_str().unwrap();
    let listing = stdout(&run("dpkg-deb", &["-c", deb]));
    // `-rw-r--r-- 0/0  1234 2026-01-01 00:00 ./usr/bin/...`
    let mut files = BTreeSet::new();
    for line in listing.lines().filter(|l| !l.starts_with('d')) {
        let path = line.split_whitespace().nth(5).unwrap();
        let path = path.strip_prefix('.').unwrap().to_owned();
        let mode = line.split_whitespace().next().unwrap();
        let want = if path == "/usr/bin/contabo-rotator" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want, "{path}");
        assert!(line.contains(" 0/0 "), "owned by root: {line}");
        files.insert(path);
    }

    let mut expected: BTreeSet<String> = [
        "/usr/bin/contabo-rotator",
        "/usr/share/man/man1/contabo-rotator.1.gz",
        "/usr/share/bash-completion/completions/contabo-rotator",
        "/usr/share/zsh/vendor-completions/_contabo-rotator",
        "/usr/share/fish/vendor_completions.d/contabo-rotator.fish",
        "/usr/share/lintian/overrides/contabo-rotator",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.insert(format!("{DOC}/copyright"));
    expected.insert(format!("{DOC}/changelog.Debian.gz"));
    expected.extend(
        units()
            .iter()
            .map(|u| format!("/usr/lib/systemd/system/{u}")),
    );
    expected.extend(copied_files().into_iter().map(|(_, to)| to));
    assert_eq!(files, expected);

    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    run("dpkg-deb", &["-x", deb, tree.to_str().unwrap()]);
    let in_package = |path: &str| tree.join(path.trim_start_matches('/'));
    let read = |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));

    for (from, to) in copied_files() {
        assert!(read(&root().join(&from)) == read(&in_package(&to)), "{to}");
    }
    // The units run the packaged binary.
    for unit in units() {
        let source = String::from_utf8(read(&root().join("systemd").join(&unit))).unwrap();
        let packaged = String::from_utf8(read(&in_package(&format!(
            "/usr/lib/systemd/system/{unit}"
        ))))
        .unwrap();
        assert!(!packaged.contains("/usr/local/"), "{unit}");
        assert_eq!(
            packaged,
            source.replace("/usr/local/bin/contabo-rotator", "/usr/bin/contabo-rotator")
        );
    }
    // The man page and completions are what the binary prints.
    let man = in_package("/usr/share/man/man1/contabo-rotator.1.gz");
    let man = run("gzip", &["-dc", man.to_str().unwrap()]).stdout;
    assert!(man == binary_prints(&["man"]), "the man page");
    for (shell, path) in [
        (
            "bash",
            "/usr/share/bash-completion/completions/contabo-rotator",
        ),
        ("zsh", "/usr/share/zsh/vendor-completions/_contabo-rotator"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/contabo-rotator.fish",
        ),
    ] {
        assert!(
            read(&in_package(path)) == binary_prints(&["completions", shell]),
            "{shell} completions"
        );
    }
    let copyright = String::from_utf8(read(&in_package(&format!("{DOC}/copyright")))).unwrap();
    assert!(copyright.contains("\nLicense: Apache-2.0\n"), "{copyright}");
    assert!(copyright.contains("/usr/share/common-licenses/Apache-2.0"));
    // The packaged binary runs.
    let bin = in_package("/usr/bin/contabo-rotator");
    let version = stdout(&run(bin.to_str().unwrap(), &["--version"]));
    assert_eq!(
        version.trim(),
        format!("contabo-rotator {}", env!("CARGO_PKG_VERSION"))
    );

    // Control: the version, dependencies, and maintainer scripts that
    // create the user on configure and enable or start nothing.
    let field = |name: &str| {
        stdout(&run("dpkg-deb", &["-f", deb, name]))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "contabo-rotator");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "{depends}");
    assert!(
        depends.contains("systemd | systemd-standalone-sysusers"),
        "{depends}"
    );
    let control = tempfile::tempdir().unwrap();
    run("dpkg-deb", &["-e", deb, control.path().to_str().unwrap()]);
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(
        postinst
            .contains("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} contabo-rotator.conf"),
        "{postinst}"
    );
    // Nothing starts; an `enable` runs only for a unit the package had
    // installed before (an upgrade keeps what the admin enabled).
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    let count = |s: &str| postinst.matches(s).count();
    assert_eq!(
        count("deb-systemd-helper enable "),
        count("if deb-systemd-helper debian-installed "),
        "{postinst}"
    );
}

#[test]
#[ignore = "needs cargo-deb and lintian: scripts/test installs them"]
fn lintian_finds_no_error_in_the_package() {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--display-level", ">=warning"])
        .arg(deb())
        .output()
        .unwrap_or_else(|e| panic!("lintian is required (scripts/install-test-tools): {e}"));
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("E: ")), "{text}");
}
