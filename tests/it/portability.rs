//! The binary runs where the README says it does: it needs nothing newer
//! than glibc 2.34 (Ubuntu 22.04, RHEL 9, Debian 12), whatever the build
//! host's glibc. Read from the binary's ELF version references with
//! binutils' `objdump`, as a packager would check it.

use std::process::Command;

/// Every version the binary requires of a shared library, e.g.
/// `GLIBC_2.34` or `GLIBC_ABI_DT_RELR`, from `objdump -p`'s "Version
/// References".
fn version_references(binary: &str) -> Vec<String> {
    let out = Command::new("objdump")
        .args(["-p", binary])
        .output()
        .unwrap_or_else(|e| panic!("objdump (binutils) must be installed: {e}"));
    assert!(out.status.success(), "objdump -p {binary} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = text
        .split_once("Version References:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no version references in {binary}:\n{text}"));
    section
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(3))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_binary_needs_nothing_newer_than_glibc_2_34() {
    let binary = env!("CARGO_BIN_EXE_contabo-rotator");
    let references = version_references(binary);
    let glibc: Vec<&String> = references
        .iter()
        .filter(|r| r.starts_with("GLIBC_"))
        .collect();
    assert!(!glibc.is_empty(), "no glibc versions found: {references:?}");
    for name in glibc {
        let version = name.trim_start_matches("GLIBC_");
        let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
        // A feature rather than a version (GLIBC_ABI_DT_RELR needs 2.36).
        let parts = parts.unwrap_or_else(|| panic!("{binary} requires {name}"));
        assert!(
            parts.as_slice() <= [2, 34].as_slice(),
            "{binary} requires {name}, newer than glibc 2.34"
        );
    }
}
