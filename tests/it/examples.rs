//! Every file shipped in `config/` passes `check` with the real binary.

use crate::util::run_bin_env;
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_config_passes_check() {
    let creds = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("client-secret", "example-client-secret"),
        ("api-password", "example-password"),
        ("webhook-key", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("webhook-token", "Bearer example-webhook-token"),
    ] {
        crate::util::write_secret(&creds.path().join(name), value);
    }
    let state = tempfile::tempdir().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // Container examples read secrets from mounted files: point those
        // paths at the test's secrets, in a copy of the file.
        let text = std::fs::read_to_string(&path).unwrap();
        let copy = creds.path().join(path.file_name().unwrap());
        let path = if text.contains("/run/secrets/contabo/") {
            let rewritten = text.replace(
                "/run/secrets/contabo/",
                &format!("{}/", creds.path().display()),
            );
            crate::util::write_secret(&copy, &rewritten);
            copy
        } else {
            path
        };
        let out = run_bin_env(
            vec!["-c".into(), path.display().to_string(), "check".into()],
            vec![
                (
                    "CREDENTIALS_DIRECTORY".into(),
                    creds.path().display().to_string(),
                ),
                ("STATE_DIRECTORY".into(), state.path().display().to_string()),
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 6, "found {checked} configs");
}

/// The LICENSE file is the license Cargo.toml declares.
#[test]
fn the_license_file_matches_cargo_toml() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\nlicense = \"Apache-2.0\"\n"));
    let license = std::fs::read_to_string(root.join("LICENSE")).unwrap();
    let head: Vec<&str> = license.lines().take(2).map(str::trim).collect();
    assert_eq!(head, ["Apache License", "Version 2.0, January 2004"]);
    assert!(license.trim_end().ends_with("END OF TERMS AND CONDITIONS"));
}

/// The ```toml blocks of README.md and docs/: a block with an `[api]` table
/// is a whole configuration, any other a part of one, checked after a
/// minimal `[api]` table (a twin a block's sinks select is declared for
/// it). Paths under /etc/contabo-rotator/ point at the test's secrets and
/// the shipped templates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_config_example_in_the_docs_passes_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    for (name, value) in [
        ("client-secret", "example-client-secret"),
        ("api-password", "example-password"),
        ("webhook.key", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("webhook-key", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("hook-token", "Bearer example-hook-token"),
    ] {
        crate::util::write_secret(&etc.join(name), value);
    }
    for entry in std::fs::read_dir(root.join("config/templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        crate::util::write_secret(&etc.join(path.file_name().unwrap()), &text);
    }
    let state = tempfile::tempdir().unwrap();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            pages.push(path);
        }
    }
    let (mut checked, mut failures) = (0, Vec::new());
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (n, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap();
            let mut config = String::new();
            if !block.contains("[api]") {
                config.push_str(
                    "[api]\nclient_id = \"INT-1\"\nclient_secret = { file = \"/etc/contabo-rotator/client-secret\" }\n\
                     username = \"api@example.com\"\npassword = { file = \"/etc/contabo-rotator/api-password\" }\n",
                );
            }
            config.push_str(block);
            if block.contains("twins = [\"app\"]") && !block.contains("[[object_storage.twins]]") {
                config.push_str(
                    "\n[[object_storage.twins]]\nname = \"app\"\nusers = [\"app-a@example.com\", \"app-b@example.com\"]\n",
                );
            }
            let config = config.replace("/etc/contabo-rotator/", &format!("{}/", etc.display()));
            let file = dir.path().join(format!("example-{checked}.toml"));
            crate::util::write_secret(&file, &config);
            let out = run_bin_env(
                vec!["-c".into(), file.display().to_string(), "check".into()],
                vec![
                    ("CREDENTIALS_DIRECTORY".into(), etc.display().to_string()),
                    ("STATE_DIRECTORY".into(), state.path().display().to_string()),
                ],
            )
            .await;
            if !out.status.success() {
                failures.push(format!(
                    "{} block {}:\n{block}\n{}",
                    page.display(),
                    n + 1,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 5, "found {checked} examples");
}

/// docs/configuration.md has a row for every key the configuration file
/// takes (the fields of `src/config/raw.rs`, as serde names them).
#[test]
fn the_configuration_reference_names_every_key() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(root.join("src/config/raw.rs")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut rename = None;
    let mut keys = Vec::new();
    // The top level's fields are the tables, not keys.
    let mut top = false;
    for line in raw.lines().map(str::trim) {
        if line.starts_with("pub struct ") {
            top = line.starts_with("pub struct RawConfig ");
        }
        if top {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("#[serde(rename = \"")
            .and_then(|r| r.split('"').next())
        {
            rename = Some(name.to_owned());
        } else if let Some(field) = line.strip_prefix("pub ").and_then(|r| r.split_once(':')) {
            let name = field.0;
            if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push(rename.take().unwrap_or_else(|| name.to_owned()));
            }
        }
    }
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
}
