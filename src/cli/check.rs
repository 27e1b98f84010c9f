//! `check [--online]`: validate the configuration; optionally log in and
//! check that webhook URLs answer.

use super::{api_client, CliError, EXIT_FAILED, EXIT_OK};
use crate::config::{self, Settings, SinkSettings};
use crate::sinks::webhook;
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
    let api = check_api(&settings, &mut out).await?;
    let webhooks = check_webhooks(&settings, &mut out).await?;
    Ok(if api == EXIT_OK && webhooks == EXIT_OK {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// Logs in and reads the OAuth client back.
async fn check_api(settings: &Settings, out: &mut impl Write) -> Result<u8, CliError> {
    let client = api_client(settings)?;
    let user_id = match client.api_user_id().await {
        Ok(id) => id,
        Err(err) => {
            eprintln!("error: login as {} failed: {err}", settings.api.username);
            return Ok(EXIT_FAILED);
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
            Ok(EXIT_OK)
        }
        Err(err) => {
            eprintln!("error: reading the OAuth client failed: {err}");
            Ok(EXIT_FAILED)
        }
    }
}

/// Probes every webhook URL (a HEAD request: any HTTP answer will do).
async fn check_webhooks(settings: &Settings, out: &mut impl Write) -> Result<u8, CliError> {
    let mut code = EXIT_OK;
    for sink in &settings.sinks {
        let SinkSettings::Webhook(hook) = sink else {
            continue;
        };
        match webhook::healthcheck(hook).await {
            Ok(()) => writeln!(out, "Sink {} is reachable.", hook.describe())
                .context("writing to stdout")?,
            Err(err) => {
                eprintln!("error: sink {err}");
                code = EXIT_FAILED;
            }
        }
    }
    Ok(code)
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
