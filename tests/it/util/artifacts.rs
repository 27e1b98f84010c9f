//! What `scripts/build-image` and `scripts/build-deb` make, built once per
//! test run (each script runs the release build first, which is a no-op
//! once `scripts/test` has built it), and podman run the way the image
//! tests need it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The project's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference `scripts/build-image` tags and the deploy files name.
pub fn image_reference() -> String {
    format!("localhost/contabo-rotator:{}", env!("CARGO_PKG_VERSION"))
}

/// Runs one of the project's scripts; its last line on stdout is what it made.
///
/// Without the variables cargo sets for a test (`CARGO_MANIFEST_DIR` and
/// the like): build scripts watch some (ring's), so the script's release
/// build would otherwise differ from the one `scripts/test` made before the
/// tests, and start again from scratch.
fn run_script(name: &str) -> Result<String, String> {
    let mut command = Command::new(root().join("scripts").join(name));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_by_cargo = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
            .iter()
            .any(|prefix| key.starts_with(prefix))
            || [
                "CARGO",
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref());
        if set_by_cargo {
            command.env_remove(key.as_ref());
        }
    }
    let out = command
        .current_dir(root())
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .map_err(|e| format!("scripts/{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "scripts/{name} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    stdout
        .lines()
        .last()
        .map(str::to_owned)
        .ok_or_else(|| format!("scripts/{name} printed nothing"))
}

/// The image reference `scripts/build-image` printed, built on first use.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    match IMAGE.get_or_init(|| run_script("build-image")) {
        Ok(reference) => reference,
        Err(e) => panic!("{e}"),
    }
}

/// The `.deb` `scripts/build-deb` wrote, built on first use.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DEB.get_or_init(|| run_script("build-deb").map(PathBuf::from)) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// podman's configuration for the tests: runc with no default ulimits
/// (see the file).
pub fn containers_conf() -> PathBuf {
    root().join("tests/podman/containers.conf")
}

/// `podman ARGS`, with the tests' containers.conf.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .unwrap_or_else(|e| panic!("podman is required (scripts/install-test-tools): {e}"))
}

/// A named podman volume, removed on drop.
pub struct Volume(pub String);

impl Volume {
    pub fn new() -> Volume {
        let name = format!("contabo-rotator-test-{}", uuid::Uuid::new_v4().simple());
        let out = podman(&["volume", "create", &name]);
        assert!(out.status.success(), "{}", crate::util::output_text(&out));
        Volume(name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = podman(&["volume", "rm", "--force", &self.0]);
    }
}
