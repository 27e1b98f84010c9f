//! The deploy files (deploy/kubernetes/cronjob.yaml,
//! deploy/compose/compose.yaml) parse as YAML, run the image
//! `scripts/build-image` builds, by its name, the way it is built to run
//! (uid 65532, read-only root), pass the binary only flags it accepts, and
//! mount what config/container-job.toml reads and writes where it reads and
//! writes it: the configuration at the default path, the secrets, the
//! state directory (the image's volume) and the sink's directory.

use crate::util::artifacts::{image_reference, root};
use clap::Parser;
use contabo_rotator::cli::Cli;
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&read(path))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The binary parses `args` (as they follow the image's entrypoint).
fn assert_accepted(args: &[String], what: &str) {
    let argv = std::iter::once("contabo-rotator".to_owned()).chain(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(argv) {
        panic!("{what}: {args:?}: {e}");
    }
}

/// The paths config/container-job.toml reads and writes, and the image's
/// state directory.
struct JobPaths {
    secrets_dir: String,
    state_dir: String,
    sink_dirs: BTreeSet<String>,
}

fn job_paths() -> JobPaths {
    let config: toml::Value = toml::from_str(&read("config/container-job.toml")).unwrap();
    let parent = |path: &str| Path::new(path).parent().unwrap().display().to_string();
    let secrets: BTreeSet<String> = ["client_secret", "password"]
        .iter()
        .map(|key| parent(config["api"][key]["file"].as_str().unwrap()))
        .collect();
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    let state_dir = config["state"]["dir"].as_str().unwrap().to_owned();
    // The image's state directory, where its volume is.
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains(&format!("\nENV STATE_DIRECTORY={state_dir}\n")));
    assert!(dockerfile.contains(&format!("\nVOLUME [\"{state_dir}\"]\n")));
    let sink_dirs = config["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sink| parent(sink["path"].as_str().unwrap()))
        .collect();
    JobPaths {
        secrets_dir: secrets.into_iter().next().unwrap(),
        state_dir,
        sink_dirs,
    }
}

#[test]
fn the_compose_file_runs_the_built_image_with_the_job_config_mounts() {
    let docs = documents("deploy/compose/compose.yaml");
    assert_eq!(docs.len(), 1);
    let service = &docs[0]["services"]["contabo-rotator"];
    assert_eq!(service["image"].as_str(), Some(image_reference().as_str()));
    assert_eq!(service["user"].as_str(), Some("65532:65532"));
    assert_eq!(service["read_only"].as_bool(), Some(true));
    assert_accepted(&strings(&service["command"]), "compose command");

    let targets: BTreeSet<String> = strings(&service["volumes"])
        .iter()
        .map(|v| v.split(':').nth(1).unwrap().to_owned())
        .collect();
    let paths = job_paths();
    let mut expected: BTreeSet<String> = [
        contabo_rotator::config::DEFAULT_CONFIG_PATH.to_owned(),
        paths.secrets_dir,
        paths.state_dir,
    ]
    .into();
    expected.extend(paths.sink_dirs);
    assert_eq!(targets, expected);
}

#[test]
fn the_cronjob_runs_the_built_image_with_the_job_config_mounts() {
    let docs = documents("deploy/kubernetes/cronjob.yaml");
    let kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    // The ConfigMap's configuration is the shipped example (which the
    // examples test checks), mounted at the default path.
    let config_map = kind("ConfigMap");
    assert_eq!(
        config_map["data"]["config.toml"].as_str(),
        Some(read("config/container-job.toml").as_str())
    );
    let pod = &kind("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(
        container["image"].as_str(),
        Some(image_reference().as_str())
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_accepted(&strings(&container["args"]), "cronjob args");
    // The commented alternative too.
    let cronjob = read("deploy/kubernetes/cronjob.yaml");
    let commented: Vec<&str> = cronjob
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("# args: "))
        .map(str::trim)
        .collect();
    assert_eq!(commented.len(), 1);
    let args: Value = serde_yaml_ng::from_str(commented[0]).unwrap();
    assert_accepted(&strings(&args), "cronjob commented args");

    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap().to_owned();
            (field("name"), field("mountPath"))
        })
        .collect();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|(name, _)| name == volume)
            .map(|(_, path)| path.clone())
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    };
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume_with = |key: &str| {
        volumes
            .iter()
            .find(|v| v.get(key).is_some())
            .and_then(|v| v["name"].as_str())
            .unwrap_or_else(|| panic!("no {key} volume"))
    };
    let config_path = Path::new(&mount_of(volume_with("configMap"))).join("config.toml");
    assert_eq!(
        config_path.display().to_string(),
        contabo_rotator::config::DEFAULT_CONFIG_PATH
    );
    let paths = job_paths();
    assert_eq!(mount_of(volume_with("secret")), paths.secrets_dir);
    assert_eq!(
        mount_of(volume_with("persistentVolumeClaim")),
        paths.state_dir
    );
    let targets: BTreeSet<String> = mounts.iter().map(|(_, path)| path.clone()).collect();
    for dir in &paths.sink_dirs {
        assert!(targets.contains(dir), "no volume at the sink's {dir}");
    }
}
