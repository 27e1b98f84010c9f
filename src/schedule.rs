//! The daemon: runs [`Engine::run_once`] on the configured cron schedule.
//!
//! Next fire times come from the cron expression evaluated in the configured
//! time zone with `croner` and `chrono-tz`, so "03:30 Europe/Berlin" stays
//! 03:30 local time across daylight-saving changes. (tokio-cron-scheduler,
//! which the design first named, fixes a job's UTC offset when the job is
//! created; a daemon that runs for months would drift by an hour twice a
//! year. It parses with the same `croner` rules, which the configuration
//! validation applies.)
//!
//! Signals arrive as [`Signal`] values on a channel, so tests can drive the
//! loop: the first terminate signal lets the run in progress finish the
//! credential in hand (rotate, persist, deliver) and exits 0; a second exits
//! at once; a reload swaps in a new configuration after validating it.

use crate::config::{self, ScheduleSettings};
use crate::rotation::{Engine, RunOptions};
use chrono::{DateTime, Utc};
use rand::Rng;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How far each EXTEND_TIMEOUT_USEC pushes the start timeout during
/// start-up recovery (sent every half of it).
const RECOVERY_EXTEND: Duration = Duration::from_secs(60);

/// What the daemon is told from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT.
    Terminate,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// How the daemon loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// After a terminate signal, with the work in hand finished.
    Graceful,
    /// A second terminate signal while a run was finishing.
    Immediate,
}

/// The next fire time strictly after `after`, in UTC.
pub fn next_tick(schedule: &ScheduleSettings, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .cron
        .find_next_occurrence(&after.with_timezone(&schedule.timezone), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A random delay in `0..=jitter`.
fn jitter(schedule: &ScheduleSettings) -> Duration {
    let max = schedule.jitter.as_millis() as u64;
    if max == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=max))
}

/// Runs until a terminate signal. `config_path` is re-read on reload.
pub async fn run_daemon(
    mut engine: Engine,
    config_path: PathBuf,
    mut signals: mpsc::Receiver<Signal>,
) -> Exit {
    let cancel = CancellationToken::new();
    let mut run_now = engine.settings().schedule.run_on_start;
    tracing::info!(config = %config_path.display(), "Daemon started.");
    let _watchdog = start_watchdog();
    if !run_now {
        // Start-up recovery (DESIGN.md §1.7): a run killed after
        // regenerating and before delivering is finished now, not at the
        // next tick (which may be a day away). READY=1 follows it; while it
        // runs, the start timeout is extended in steps, so a slow API does
        // not make systemd kill a start that is making progress. A
        // terminate signal cuts it short (the work stays in the journal,
        // the records and the outbox for the next start).
        notify(&[sd_notify::NotifyState::Status(
            "Finishing interrupted work before the first scheduled run",
        )]);
        let mut reload_requested = false;
        {
            let recovery = engine.recover(&cancel);
            tokio::pin!(recovery);
            let mut extend = tokio::time::interval(RECOVERY_EXTEND / 2);
            loop {
                tokio::select! {
                    report = &mut recovery => {
                        if !report.failed.is_empty() {
                            tracing::warn!(failed = report.failed.len(), "Start-up recovery left work for the first run.");
                        }
                        break;
                    }
                    _ = extend.tick() => notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(
                        RECOVERY_EXTEND.as_micros() as u32,
                    )]),
                    signal = signals.recv() => match signal {
                        Some(Signal::Reload) => reload_requested = true,
                        // Recovery rotates nothing and every step of it is
                        // safe to cut (atomic writes, journal, outbox): stop
                        // at once; the next start finishes it.
                        Some(Signal::Terminate) | None => {
                            tracing::info!("Terminate signal during start-up recovery; exiting (the next start finishes it).");
                            return Exit::Graceful;
                        }
                    },
                }
            }
        }
        if reload_requested {
            reload(&mut engine, &config_path);
        }
    }
    // The configuration is valid, the state directory locked, interrupted
    // work finished and the schedule about to run: tell systemd
    // (Type=notify) we are ready.
    notify(&[sd_notify::NotifyState::Ready]);
    loop {
        if !run_now {
            let schedule = engine.settings().schedule.clone();
            let Some(next) = next_tick(&schedule, Utc::now()) else {
                tracing::error!(cron = %schedule.cron_expr, "The schedule has no future run; waiting for a reload or a signal.");
                match signals.recv().await {
                    Some(Signal::Reload) => {
                        reload(&mut engine, &config_path);
                        continue;
                    }
                    _ => return Exit::Graceful,
                }
            };
            crate::metrics::metrics().set_next_run(next);
            let delay = jitter(&schedule);
            let wait = (next - Utc::now()).to_std().unwrap_or_default() + delay;
            tracing::info!(next_run = %next.to_rfc3339(), jitter_ms = delay.as_millis() as u64, "Waiting for the next run.");
            notify(&[sd_notify::NotifyState::Status(&format!(
                "Next run at {}",
                next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))]);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                signal = signals.recv() => match signal {
                    Some(Signal::Reload) => { reload(&mut engine, &config_path); continue; }
                    Some(Signal::Terminate) | None => {
                        tracing::info!("Terminate signal while idle; exiting.");
                        return Exit::Graceful;
                    }
                },
            }
        }
        run_now = false;
        notify(&[sd_notify::NotifyState::Status("Rotating")]);
        let mut reload_requested = false;
        {
            let run = engine.run_once(RunOptions::default(), &cancel);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    report = &mut run => {
                        crate::metrics::metrics().record_run(&report.tally());
                        let code = report.exit_code();
                        tracing::info!(rotated = report.rotated_count(), failed = report.failed.len(), exit_code = code, "Scheduled run finished.");
                        break;
                    }
                    signal = signals.recv() => match signal {
                        Some(Signal::Reload) => reload_requested = true,
                        Some(Signal::Terminate) | None if cancel.is_cancelled() => {
                            tracing::warn!("Second terminate signal; exiting at once.");
                            return Exit::Immediate;
                        }
                        Some(Signal::Terminate) | None => {
                            tracing::info!("Terminate signal; finishing the credential in hand, then exiting.");
                            cancel.cancel();
                        }
                    },
                }
            }
        }
        match engine.state().load_records() {
            Ok(records) => crate::metrics::metrics().record_ages(&records),
            Err(err) => {
                tracing::warn!(error = %err, "Could not read the records for the age metrics.")
            }
        }
        if cancel.is_cancelled() {
            return Exit::Graceful;
        }
        if reload_requested {
            reload(&mut engine, &config_path);
        }
    }
}

/// Sends a state to systemd when `NOTIFY_SOCKET` is set; a no-op otherwise.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(false, state) {
        tracing::debug!(error = %err, "Could not notify systemd.");
    }
}

/// Pings the systemd watchdog at half its interval while the runtime is
/// alive (`WatchdogSec=`); `None` when no watchdog is configured.
fn start_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        loop {
            notify(&[sd_notify::NotifyState::Watchdog]);
            tokio::time::sleep(period).await;
        }
    }))
}

/// Validates the configuration file again and swaps it in; on error the old
/// configuration stays and the error is logged.
fn reload(engine: &mut Engine, path: &std::path::Path) {
    match config::load(path) {
        Ok(settings) if settings.state.dir != engine.settings().state.dir => {
            tracing::error!(
                new = %settings.state.dir.display(),
                "Reload refused: the state directory cannot change while running; restart instead."
            );
        }
        Ok(settings) => match engine.reload(settings) {
            Ok(()) => {
                notify(&[sd_notify::NotifyState::Ready]);
                tracing::info!(config = %path.display(), "Configuration reloaded.")
            }
            Err(err) => {
                tracing::error!(error = %err, "Reload failed; keeping the old configuration.")
            }
        },
        Err(err) => {
            tracing::error!(error = %err, "Reload failed: the new configuration is invalid; keeping the old one.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    fn schedule(cron: &str, tz: &str) -> ScheduleSettings {
        let text = format!(
            "[api]\nclient_id = \"I\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n\
             [schedule]\ncron = \"{cron}\"\ntimezone = \"{tz}\"\n"
        );
        config::load_from_str(&text, Path::new("t.toml"))
            .unwrap()
            .schedule
    }

    #[test]
    fn next_tick_follows_local_time_across_daylight_saving() {
        let s = schedule("0 30 3 * * *", "Europe/Berlin");
        // Before the change to summer time (CET, UTC+1): 03:30 local is 02:30 UTC.
        let winter = Utc.with_ymd_and_hms(2026, 3, 20, 12, 0, 0).unwrap();
        assert_eq!(
            next_tick(&s, winter).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 21, 2, 30, 0).unwrap()
        );
        // After it (CEST, UTC+2): 03:30 local is 01:30 UTC.
        let summer = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
        assert_eq!(
            next_tick(&s, summer).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 3, 1, 30, 0).unwrap()
        );
    }

    #[test]
    fn five_and_six_field_expressions() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        assert_eq!(
            next_tick(&schedule("*/2 * * * * *", "UTC"), t).unwrap(),
            t + chrono::Duration::seconds(2)
        );
        assert_eq!(
            next_tick(&schedule("15 * * * *", "UTC"), t).unwrap(),
            t + chrono::Duration::minutes(15)
        );
    }
}
