//! `check [--online]`: validate the configuration; with `--online` also
//! probe every sink (see [`sinks::healthcheck`]) and log in.

use super::{api_client, CliError, EXIT_FAILED, EXIT_OK};
use crate::config::{self, Settings};
use crate::sinks;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

pub async fn run(path: &Path, online: bool) -> Result<u8, CliError> {
    let settings = config::load(path)?;
    let mut out = std::io::stdout();
    print_summary(&settings, &mut out).context("writing to stdout")?;
    if !online {
        return Ok(EXIT_OK);
    }
    let sinks_ok = check_sinks(&settings, &mut out).context("writing to stdout")?;
    let api_ok = check_api(&settings, &mut out).await?;
    Ok(if sinks_ok && api_ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// Probes every sink without delivering to it (see [`sinks::healthcheck`]);
/// false if any failed.
fn check_sinks(settings: &Settings, out: &mut impl Write) -> std::io::Result<bool> {
    let mut ok = true;
    for (i, sink) in settings.sinks.iter().enumerate() {
        match sinks::healthcheck(sink) {
            Ok(()) => writeln!(out, "sinks[{i}] {}: ok.", sink.describe())?,
            Err(err) => {
                eprintln!("error: sinks[{i}]: {err}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

/// Logs in and reads the OAuth client; false if either failed.
async fn check_api(settings: &Settings, out: &mut impl Write) -> Result<bool, CliError> {
    let client = api_client(settings)?;
    let user_id = match client.api_user_id().await {
        Ok(id) => id,
        Err(err) => {
            eprintln!("error: login as {} failed: {err}", settings.api.username);
            return Ok(false);
        }
    };
    writeln!(
        out,
        "Logged in as {} (API user id {user_id}).",
        settings.api.username
    )
    .context("writing to stdout")?;
    match client.get_client().await {
        Ok(api_client) => {
            writeln!(out, "OAuth client id: {}.", api_client.client_id)
                .context("writing to stdout")?;
            if api_client.client_id != settings.api.client_id {
                eprintln!(
                    "warning: the API reports client id {} but the configuration says {}",
                    api_client.client_id, settings.api.client_id
                );
            }
            Ok(true)
        }
        Err(err) => {
            eprintln!("error: reading the OAuth client failed: {err}");
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
