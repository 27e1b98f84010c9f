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
fn run_script(name: &str) -> Result<String, String> {
    let out = Command::new(root().join("scripts").join(name))
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
