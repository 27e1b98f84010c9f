//! `demo`: starts the built-in Contabo simulator on loopback, writes a
//! throw-away configuration that points at it (secrets in 0600 files, state
//! and sinks in a temporary directory) and runs the real commands against it:
//! `list`, a full `--run-now` rotation (before and after shown by access key
//! and fingerprint, never by secret; every new key proven at the simulator's
//! S3 endpoint), and `list` again.

use super::{list, CliError};
use crate::config;
use crate::rotation::{Engine, RunOptions};
use crate::state::StateDir;
use anyhow::Context;
use contabo_simulator::{Simulator, SimulatorOptions};
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Runs the demo, writing what it does to `out`.
pub async fn run(out: &mut impl Write) -> Result<u8, CliError> {
    let options = SimulatorOptions {
        client_secret: SecretString::from(uuid::Uuid::new_v4().to_string()),
        password: SecretString::from(format!("demo-{}", uuid::Uuid::new_v4().simple())),
        users: 5,
        credentials_per_user: 3,
        page_size_cap: 10,
        ..SimulatorOptions::default()
    };
    let username = options.username.clone();
    let client_id = options.client_id.clone();
    let client_secret = options.client_secret.clone();
    let password = options.password.clone();
    let simulator = Simulator::start(options)
        .await
        .context("starting the simulator")?;
    let dir = tempfile::Builder::new()
        .prefix("contabo-rotator-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let root = dir.path();
    write_private(&root.join("client-secret"), &client_secret)?;
    write_private(&root.join("api-password"), &password)?;
    let config_path = root.join("config.toml");
    let config_text = format!(
        r#"# Written by `contabo-rotator demo`: points at the built-in simulator.
[api]
base_url = "{base}"
token_url = "{token}"
client_id = "{client_id}"
client_secret = {{ file = "{root}/client-secret" }}
username = "{username}"
password = {{ file = "{root}/api-password" }}

[state]
dir = "{root}/state"

[client_secret]
rotate = true
max_age = "30d"

[object_storage]
rotate = true
max_age = "7d"
# Prove every new key at the storage: a SigV4-signed ListBuckets at its
# s3Url (here the simulator's S3 endpoint), retried for up to verify_timeout.
verify = "s3"
verify_timeout = "60s"

[[sinks]]
type = "file"
path = "{root}/out/contabo.json"
format = "json"
"#,
        base = simulator.base_url(),
        token = simulator.token_url(),
        root = root.display(),
    );
    write_private(&config_path, &SecretString::from(config_text))?;

    writeln!(
        out,
        "Started the Contabo simulator at {} ({} users, 3 object storages, page size cap 10).",
        simulator.base_url(),
        simulator.snapshot().users.len()
    )
    .context("writing to stdout")?;
    writeln!(
        out,
        "Wrote a demo configuration to {}.",
        config_path.display()
    )
    .context("writing to stdout")?;

    let settings = config::load(&config_path)?;
    writeln!(out, "\n$ contabo-rotator -c {} list", config_path.display())
        .context("writing to stdout")?;
    let mut status = list::run(&settings, false, out).await?;

    std::fs::create_dir_all(root.join("out")).context("creating the sink directory")?;
    writeln!(
        out,
        "\n$ contabo-rotator -c {} --run-now",
        config_path.display()
    )
    .context("writing to stdout")?;
    let state = StateDir::open(&settings.state.dir).context("opening the state directory")?;
    let mut engine = Engine::new(settings.clone(), state).context("starting the engine")?;
    // The report streams to stdout, which `out` is.
    out.flush().context("writing to stdout")?;
    let options = RunOptions {
        output: Some(super::report::TEXT),
        ..RunOptions::default()
    };
    let mut report = engine.run_once(options, &CancellationToken::new()).await;
    drop(engine);
    report.finish_output().context("writing to stdout")?;
    status = status.max(super::report::exit_code(&report));

    writeln!(out, "\n$ contabo-rotator -c {} list", config_path.display())
        .context("writing to stdout")?;
    status = status.max(list::run(&settings, false, out).await?);
    writeln!(
        out,
        "\nThe json sink {} holds the rotated values (mode 0600); the demo directory is removed on exit.",
        root.join("out/contabo.json").display()
    )
    .context("writing to stdout")?;

    let requests = simulator.requests();
    writeln!(
        out,
        "\nThe simulator answered {} requests ({} token requests); listings show access keys, never secrets.",
        requests.len(),
        requests
            .iter()
            .filter(|r| r.operation == contabo_simulator::Operation::Token)
            .count()
    )
    .context("writing to stdout")?;
    let s3 = simulator.s3_requests();
    let accepted = s3.iter().filter(|r| r.status == 200).count();
    let refused = s3.iter().filter(|r| r.status == 403).count();
    writeln!(
        out,
        "The simulator's S3 endpoints answered {} signed requests: {accepted} accepted \
         (each new key proven), {refused} refused with 403 (the old keys, dead since their \
         regenerate).",
        s3.len(),
    )
    .context("writing to stdout")?;
    simulator.shutdown().await;
    Ok(status)
}

/// Writes a file created with mode 0600 from the start.
fn write_private(path: &Path, content: &SecretString) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(content.expose_secret().as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
