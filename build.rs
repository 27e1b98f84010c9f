//! Links the binary with packed relative relocations (`-z
//! pack-relative-relocs`, DT_RELR) where the toolchain and the C library
//! support them.
//!
//! The binary is position-independent (PIE, so the kernel places it at a
//! random address), and its about 40,000 pointers into its own data and code
//! (vtables, `&'static str` tables, panic locations) are relocated at
//! start-up. As classic RELA entries they take 24 bytes each: about 1 MB of
//! the file the dynamic loader reads, and keeps resident, in every process.
//! DT_RELR packs the same relocations into about 20 KB. Measured with the
//! sweep benchmark (README, Performance): 3,000 credentials 15.2 to 14.5 MiB
//! peak RSS, 30,000 credentials 30.8-31.0 to 29.6-30.0 MiB.
//!
//! DT_RELR needs GNU ld 2.38 (or lld 15) to link and glibc 2.36 to run, so
//! the flag is probed, not assumed: a one-line C program is linked with it
//! and run. If that fails (an older toolchain, a cross build, a non-glibc
//! target), the binary is linked as before. `CONTABO_ROTATOR_NO_RELR=1`
//! turns it off, e.g. to build on a new system for an older one.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CONTABO_ROTATOR_NO_RELR");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let wanted = env("CONTABO_ROTATOR_NO_RELR").is_empty()
        && env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu"
        // The probe runs what it links: only a native build can.
        && env("TARGET") == env("HOST");
    if !wanted {
        return;
    }
    let out = std::path::PathBuf::from(env("OUT_DIR"));
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    if probe(&linker, &out) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    } else {
        println!(
            "cargo:warning=linking without packed relative relocations: `{linker} -Wl,-z,pack-relative-relocs` did not link and run a test program"
        );
    }
}

/// Whether `linker` links a program with DT_RELR that then runs here.
fn probe(linker: &str, out: &Path) -> bool {
    let source = out.join("relr_probe.c");
    let program = out.join("relr_probe");
    // A pointer in initialised data, so the probe has a relative relocation.
    let text = "static const char *p = \"ok\";\nint main(void) { return p[0] != 'o'; }\n";
    if std::fs::write(&source, text).is_err() {
        return false;
    }
    let linked = Command::new(linker)
        .args(["-pie", "-fPIE", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .is_ok_and(|o| o.status.success());
    linked && Command::new(&program).status().is_ok_and(|s| s.success())
}
