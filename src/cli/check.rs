//! `check [--online]`: validate the configuration; with `--online` also
//! probe every sink (without delivering) and log in to the API.

use super::{api_client, CliError, EXIT_FAILED, EXIT_OK};
use crate::config::{self, Settings};
use crate::sinks;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Validates (and with `online`, probes); text or, with `json`, one JSON object.
pub async fn run(path: &Path, online: bool, json: bool) -> Result<u8, CliError> {
    let settings = config::load(path)?;
    // A state directory open to other users would be refused by every
    // other command: say so here, before anything else.
    crate::state::StateDir::open_existing(&settings.state.dir)
        .context("checking the state directory")?;
    let mut out = std::io::stdout();
    let mut result = serde_json::json!({
        "config": settings.path,
        "valid": true,
        "state_dir": settings.state.dir,
        "sinks": settings.sinks.iter().map(|s| s.describe()).collect::<Vec<_>>(),
    });
    if !json {
        print_summary(&settings, &mut out).context("writing to stdout")?;
    }
    let code = if online {
        let sinks_ok = check_sinks(&settings, &mut result, json, &mut out).await?;
        let api_ok = check_api(&settings, &mut result, json, &mut out).await?;
        if sinks_ok && api_ok {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    } else {
        EXIT_OK
    };
    if json {
        writeln!(out, "{result}").context("writing to stdout")?;
    }
    Ok(code)
}

/// Probes every sink without delivering to it (see [`sinks::healthcheck`]);
/// false if any failed.
async fn check_sinks(
    settings: &Settings,
    result: &mut serde_json::Value,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let mut ok = true;
    let mut checks = Vec::new();
    for (i, sink) in settings.sinks.iter().enumerate() {
        match sinks::healthcheck(sink).await {
            Ok(()) => {
                checks.push(serde_json::json!({ "sink": sink.describe(), "ok": true }));
                if !json {
                    let verdict = match sink {
                        crate::config::SinkSettings::Webhook(_) => "is reachable",
                        _ => "ok",
                    };
                    writeln!(out, "sinks[{i}] {}: {verdict}.", sink.describe())
                        .context("writing to stdout")?;
                }
            }
            Err(err) => {
                if json {
                    tracing::error!(sink = i, error = %err, "Sink check failed.");
                } else {
                    eprintln!("error: sinks[{i}]: {err}");
                }
                checks.push(serde_json::json!({
                    "sink": sink.describe(), "ok": false, "error": err.to_string(),
                }));
                ok = false;
            }
        }
    }
    result["sink_checks"] = serde_json::Value::Array(checks);
    Ok(ok)
}

/// Logs in and reads the OAuth client; false if either failed.
async fn check_api(
    settings: &Settings,
    result: &mut serde_json::Value,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let client = api_client(settings)?;
    let user_id = match client.api_user_id().await {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(user = %settings.api.username, error = %err, "Login failed.");
            result["login"] = serde_json::json!({ "ok": false, "error": err.to_string() });
            return Ok(false);
        }
    };
    result["login"] = serde_json::json!({ "ok": true, "api_user_id": user_id });
    if !json {
        writeln!(
            out,
            "Logged in as {} (API user id {user_id}).",
            settings.api.username
        )
        .context("writing to stdout")?;
    }
    match client.get_client().await {
        Ok(api_client) => {
            result["client_id"] = serde_json::json!(api_client.client_id);
            if !json {
                writeln!(out, "OAuth client id: {}.", api_client.client_id)
                    .context("writing to stdout")?;
            }
            if api_client.client_id != settings.api.client_id {
                tracing::warn!(
                    api = %api_client.client_id,
                    configured = %settings.api.client_id,
                    "The API reports another client id than the configuration."
                );
            }
            Ok(true)
        }
        Err(err) => {
            tracing::error!(error = %err, "Reading the OAuth client failed.");
            result["client_error"] = serde_json::json!(err.to_string());
            Ok(false)
        }
    }
}

fn print_summary(settings: &Settings, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "Configuration {} is valid.", settings.path.display())?;
    let api = &settings.api;
    writeln!(
        out,
        "  api:            {} (client {}, user {})",
        api.base_url, api.client_id, api.username
    )?;
    writeln!(out, "  token url:      {}", api.token_url)?;
    writeln!(
        out,
        "  schedule:       {} ({})",
        settings.schedule.cron_expr, settings.schedule.timezone
    )?;
    writeln!(out, "  state dir:      {}", settings.state.dir.display())?;
    let cs = &settings.client_secret;
    if cs.rotate {
        writeln!(
            out,
            "  client secret:  rotated every {}",
            humantime::format_duration(cs.max_age)
        )?;
    } else {
        writeln!(out, "  client secret:  not rotated")?;
    }
    let os = &settings.object_storage;
    if os.rotate {
        writeln!(
            out,
            "  object storage: rotated every {}, first sight: {:?}",
            humantime::format_duration(os.max_age),
            os.on_first_sight
        )?;
    } else {
        writeln!(out, "  object storage: not rotated")?;
    }
    if settings.sinks.is_empty() {
        writeln!(out, "  sinks:          none")?;
    }
    for (i, sink) in settings.sinks.iter().enumerate() {
        writeln!(out, "  sinks[{i}]:       {}", sink.describe())?;
    }
    if let Some(metrics) = &settings.metrics {
        writeln!(out, "  metrics:        http://{}/metrics", metrics.listen)?;
    }
    Ok(())
}
