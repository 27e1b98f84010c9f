//! `--run-now` (one pass) and the daemon (no command).

use super::report;
use super::{CliError, EXIT_FAILED, EXIT_OK};
use crate::config;
use crate::rotation::{Engine, RunOptions};
use crate::schedule::{self, Exit, Signal};
use crate::state::StateDir;
use anyhow::Context;
use std::path::Path;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Loads the configuration and the state directory (taking its lock).
fn engine(path: &Path) -> Result<Engine, CliError> {
    let settings = config::load(path)?;
    let state = StateDir::open(&settings.state.dir).with_context(|| {
        format!(
            "opening the state directory {}",
            settings.state.dir.display()
        )
    })?;
    Ok(Engine::new(settings, state).context("starting the rotation engine")?)
}

/// Forwards SIGTERM, SIGINT and SIGHUP to a channel. A terminate signal
/// also reaches template renders at once: a render blocks the task that
/// reads the channel until it ends (see
/// [`crate::sinks::template::terminate_signal`]).
fn forward_signals() -> Result<mpsc::Receiver<Signal>, CliError> {
    let (tx, rx) = mpsc::channel(8);
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing a SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Terminate,
                _ = hup.recv() => Signal::Reload,
            };
            if sig == Signal::Terminate {
                crate::sinks::template::terminate_signal();
            }
            if tx.send(sig).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// `--run-now [--dry-run] [--force]`: one pass; the report goes to stdout
/// (one JSON object with `--log-format json`).
/// A terminate signal finishes the credential in hand; a second exits at once.
pub async fn run_now(
    path: &Path,
    options: RunOptions,
    json: bool,
    metrics_file: Option<&Path>,
) -> Result<u8, CliError> {
    let mut engine = engine(path)?;
    let mut signals = forward_signals()?;
    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while let Some(sig) = signals.recv().await {
                if sig != Signal::Terminate {
                    continue;
                }
                if cancel.is_cancelled() {
                    tracing::warn!("Second terminate signal; exiting at once.");
                    std::process::exit(i32::from(EXIT_FAILED));
                }
                tracing::info!("Terminate signal; finishing the credential in hand, then exiting.");
                cancel.cancel();
            }
        })
    };
    let options = RunOptions {
        output: Some(if json { report::JSON } else { report::TEXT }),
        ..options
    };
    let started = std::time::Instant::now();
    let dry_run = options.dry_run;
    let mut report = engine.run_once(options, &cancel).await;
    if !dry_run {
        engine.record_run(&report, started.elapsed(), metrics_file.is_some());
    }
    watcher.abort();
    report.finish_output().context("writing the report")?;
    let mut code = report::exit_code(&report);
    if let Some(file) = metrics_file {
        if dry_run {
            // No run to report: the series of the state as it is.
            engine.restore_metrics();
        }
        if let Err(err) = crate::metrics::metrics().write_textfile(file) {
            tracing::error!(error = %err, "Could not write the metrics file.");
            code = EXIT_FAILED;
        }
    }
    Ok(code)
}

/// The daemon: runs on the schedule until SIGTERM/SIGINT.
pub async fn daemon(path: &Path) -> Result<u8, CliError> {
    let engine = engine(path)?;
    let signals = forward_signals()?;
    // Bound before READY=1, so a port in use fails the start loudly. The
    // address cannot change on reload.
    let _metrics = match engine.settings().metrics.as_ref() {
        Some(m) => Some(
            crate::metrics::serve(m.listen)
                .await
                .with_context(|| format!("binding the metrics address {}", m.listen))?,
        ),
        None => None,
    };
    match schedule::run_daemon(engine, path.to_path_buf(), signals).await {
        Exit::Graceful => Ok(EXIT_OK),
        Exit::Immediate => Ok(EXIT_FAILED),
    }
}
