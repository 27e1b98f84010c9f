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
/// The longest single sleep between runs: the wall clock is read again
/// after each, so a clock step or a suspend is noticed within this long.
const MAX_SLEEP_SLICE: Duration = Duration::from_secs(60);

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
///
/// croner 4 is fold-aware: started inside a repeated (fall-back) hour it
/// also searches the hour's second pass, and it never answers with a time
/// before its start. croner 3 did, inside that hour, and the daemon then
/// ran back to back (1,283 runs in 6 s in one test). The loop is a guard
/// that keeps that true whatever the library answers: a tick at or before
/// `after` is searched past, never returned.
pub fn next_tick(schedule: &ScheduleSettings, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = after;
    let mut inclusive = false;
    for _ in 0..8 {
        let tick = schedule
            .cron
            .find_next_occurrence(&from.with_timezone(&schedule.timezone), inclusive)
            .ok()?
            .with_timezone(&Utc);
        if tick > after {
            return Some(tick);
        }
        tracing::warn!(cron = %schedule.cron_expr, after = %after, answered = %tick, "The cron library answered a tick that is not in the future; searching on.");
        from = from.max(tick) + chrono::Duration::seconds(1);
        inclusive = true;
    }
    None
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
    // The last run's outcome and the rotation timestamps, from the state
    // directory: a restart shows them before its first run.
    if engine.settings().metrics.is_some() {
        engine.restore_metrics();
    }
    if !run_now {
        // Start-up recovery (docs/design.md §1.7): a run killed after
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
        if engine.settings().metrics.is_some() {
            engine.restore_metrics();
        }
    }
    // The configuration is valid, the state directory locked, interrupted
    // work finished and the schedule about to run: tell systemd
    // (Type=notify) we are ready.
    notify(&[sd_notify::NotifyState::Ready]);
    'daemon: loop {
        let mut retire_only = false;
        if !run_now {
            let schedule = engine.settings().schedule.clone();
            let Some(next) = next_tick(&schedule, Utc::now()) else {
                tracing::error!(cron = %schedule.cron_expr, "The schedule has no future run; waiting for a reload or a signal.");
                match signals.recv().await {
                    Some(Signal::Reload) => {
                        reload(&mut engine, &config_path);
                        continue 'daemon;
                    }
                    _ => return Exit::Graceful,
                }
            };
            let delay = jitter(&schedule);
            let mut next = next;
            announce_next(next, delay);
            // Sleep in slices and compare with the wall clock after each:
            // tokio's timer runs on the monotonic clock, which neither a
            // clock step nor a suspend moves, so one long sleep would run
            // late after a resume and early or late after a step.
            loop {
                let now = Utc::now();
                // A clock stepped back makes a nearer tick the next one.
                if let Some(nearer) = next_tick(&schedule, now).filter(|t| *t < next) {
                    next = nearer;
                    announce_next(next, delay);
                }
                let Some(left) = (next - now)
                    .to_std()
                    .ok()
                    .map(|l| l + delay)
                    .filter(|l| !l.is_zero())
                else {
                    break;
                };
                // A twin's retirement due before the tick wakes the daemon
                // for it alone (docs/design.md §4, Twin users).
                let retirement = engine
                    .next_retirement()
                    .map(|at| (at - now).to_std().unwrap_or_default());
                if retirement.is_some_and(|r| r.is_zero()) {
                    retire_only = true;
                    break;
                }
                let left = retirement.map_or(left, |r| left.min(r));
                tokio::select! {
                    _ = tokio::time::sleep(left.min(MAX_SLEEP_SLICE)) => {}
                    signal = signals.recv() => match signal {
                        Some(Signal::Reload) => { reload(&mut engine, &config_path); continue 'daemon; }
                        Some(Signal::Terminate) | None => {
                            tracing::info!("Terminate signal while idle; exiting.");
                            return Exit::Graceful;
                        }
                    },
                }
            }
        }
        run_now = false;
        notify(&[sd_notify::NotifyState::Status(if retire_only {
            "Retiring a twin's keys"
        } else {
            "Rotating"
        })]);
        let mut reload_requested = false;
        let started = std::time::Instant::now();
        let finished = {
            let run = async {
                if retire_only {
                    engine.retire_twins(&cancel).await
                } else {
                    engine.run_once(RunOptions::default(), &cancel).await
                }
            };
            tokio::pin!(run);
            loop {
                tokio::select! {
                    report = &mut run => break report,
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
        };
        let served = engine.settings().metrics.is_some();
        if retire_only {
            // A retirement is not a run of the schedule: it would record a
            // success over the failure of the run before it. What it did
            // shows in the twins' gauges (and its failures in the log and
            // as an overdue retirement).
            if served {
                engine.restore_metrics();
            }
        } else {
            engine.record_run(&finished, started.elapsed(), served);
        }
        // Logged once the run's metrics are set: a scrape after this line
        // sees them.
        tracing::info!(
            rotated = finished.rotated_count(),
            failed = finished.failed.len(),
            retirement = retire_only,
            "Scheduled run finished."
        );
        if cancel.is_cancelled() {
            return Exit::Graceful;
        }
        if reload_requested {
            reload(&mut engine, &config_path);
        }
    }
}

/// Logs, exports and tells systemd when the next run is.
fn announce_next(next: DateTime<Utc>, delay: Duration) {
    crate::metrics::metrics().set_next_run(next);
    tracing::info!(next_run = %next.to_rfc3339(), jitter_ms = delay.as_millis() as u64, "Waiting for the next run.");
    notify(&[sd_notify::NotifyState::Status(&format!(
        "Next run at {}",
        next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ))]);
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
mod tests_support {
    use super::*;
    use std::path::Path;

    pub fn schedule(cron: &str, tz: &str) -> ScheduleSettings {
        let text = format!(
            "[api]\nclient_id = \"I\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n\
             [schedule]\ncron = \"{cron}\"\ntimezone = \"{tz}\"\n"
        );
        config::load_from_str(&text, Path::new("t.toml"))
            .unwrap()
            .schedule
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::schedule;
    use super::*;
    use chrono::TimeZone;

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

/// Ticks across daylight-saving changes, computed, never waited for.
#[cfg(test)]
mod dst_tests {
    use super::tests_support::schedule;
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The next `n` ticks after `start`, as RFC 3339 UTC.
    fn ticks(cron: &str, tz: &str, start: &str, n: usize) -> Vec<String> {
        let s = schedule(cron, tz);
        let mut at = utc(start);
        let mut out = Vec::new();
        for _ in 0..n {
            let next = next_tick(&s, at).unwrap();
            assert!(next > at, "{cron} {tz}: {next} after {at}");
            out.push(next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            at = next;
        }
        out
    }

    /// Both zones, both kinds of schedule, started before, inside (both
    /// passes of a repeated hour; either edge of a skipped one) and after
    /// each change: the next three ticks. A daily 02:30 runs once on the
    /// fall-back night (the first 02:30) and, where 02:30 does not exist,
    /// at the end of the gap (03:00); `*/15` keeps a tick every 15 minutes
    /// of real time through both passes.
    #[test]
    fn ticks_across_fall_back_and_spring_forward() {
        #[rustfmt::skip]
        let table: &[(&str, &str, &str, [&str; 3])] = &[
            // before the fall-back night
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-24T23:00:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]),
            // 02:10 CEST, first pass of the repeated hour
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-25T00:10:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]),
            // 02:40 CEST, first pass, after 02:30
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-25T00:40:00Z", ["2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "2026-10-28T01:30:00Z"]),
            // 02:50 CEST, end of the first pass
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-25T00:50:00Z", ["2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "2026-10-28T01:30:00Z"]),
            // 02:10 CET, second pass
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-25T01:10:00Z", ["2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "2026-10-28T01:30:00Z"]),
            // 03:10 CET, after the repeated hour
            ("Europe/Berlin", "0 30 2 * * *", "2026-10-25T02:10:00Z", ["2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "2026-10-28T01:30:00Z"]),
            // before the spring-forward gap
            ("Europe/Berlin", "0 30 2 * * *", "2026-03-28T23:00:00Z", ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]),
            // 01:50 CET, just before the gap
            ("Europe/Berlin", "0 30 2 * * *", "2026-03-29T00:50:00Z", ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]),
            // 03:00 CEST, the gap's far edge
            ("Europe/Berlin", "0 30 2 * * *", "2026-03-29T01:00:00Z", ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z", "2026-04-01T00:30:00Z"]),
            // 04:00 CEST, after the gap
            ("Europe/Berlin", "0 30 2 * * *", "2026-03-29T02:00:00Z", ["2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z", "2026-04-01T00:30:00Z"]),
            // before the fall-back night
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-24T23:00:00Z", ["2026-10-24T23:15:00Z", "2026-10-24T23:30:00Z", "2026-10-24T23:45:00Z"]),
            // 02:10 CEST, first pass of the repeated hour
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-25T00:10:00Z", ["2026-10-25T00:15:00Z", "2026-10-25T00:30:00Z", "2026-10-25T00:45:00Z"]),
            // 02:40 CEST, first pass, after 02:30
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-25T00:40:00Z", ["2026-10-25T00:45:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z"]),
            // 02:50 CEST, end of the first pass
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-25T00:50:00Z", ["2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z"]),
            // 02:10 CET, second pass
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-25T01:10:00Z", ["2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z"]),
            // 03:10 CET, after the repeated hour
            ("Europe/Berlin", "0 */15 * * * *", "2026-10-25T02:10:00Z", ["2026-10-25T02:15:00Z", "2026-10-25T02:30:00Z", "2026-10-25T02:45:00Z"]),
            // before the spring-forward gap
            ("Europe/Berlin", "0 */15 * * * *", "2026-03-28T23:00:00Z", ["2026-03-28T23:15:00Z", "2026-03-28T23:30:00Z", "2026-03-28T23:45:00Z"]),
            // 01:50 CET, just before the gap
            ("Europe/Berlin", "0 */15 * * * *", "2026-03-29T00:50:00Z", ["2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z", "2026-03-29T01:30:00Z"]),
            // 03:00 CEST, the gap's far edge
            ("Europe/Berlin", "0 */15 * * * *", "2026-03-29T01:00:00Z", ["2026-03-29T01:15:00Z", "2026-03-29T01:30:00Z", "2026-03-29T01:45:00Z"]),
            // 04:00 CEST, after the gap
            ("Europe/Berlin", "0 */15 * * * *", "2026-03-29T02:00:00Z", ["2026-03-29T02:15:00Z", "2026-03-29T02:30:00Z", "2026-03-29T02:45:00Z"]),
            // before the fall-back night
            ("America/New_York", "0 30 2 * * *", "2026-11-01T04:00:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // 01:10 EDT, first pass of the repeated hour
            ("America/New_York", "0 30 2 * * *", "2026-11-01T05:10:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // 01:40 EDT, first pass
            ("America/New_York", "0 30 2 * * *", "2026-11-01T05:40:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // 01:50 EDT, end of the first pass
            ("America/New_York", "0 30 2 * * *", "2026-11-01T05:50:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // 01:10 EST, second pass
            ("America/New_York", "0 30 2 * * *", "2026-11-01T06:10:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // 02:10 EST, after the repeated hour
            ("America/New_York", "0 30 2 * * *", "2026-11-01T07:10:00Z", ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z", "2026-11-03T07:30:00Z"]),
            // before the spring-forward gap
            ("America/New_York", "0 30 2 * * *", "2026-03-08T05:00:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]),
            // 01:50 EST, just before the gap
            ("America/New_York", "0 30 2 * * *", "2026-03-08T06:50:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]),
            // 03:00 EDT, the gap's far edge
            ("America/New_York", "0 30 2 * * *", "2026-03-08T07:00:00Z", ["2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z", "2026-03-11T06:30:00Z"]),
            // 04:00 EDT, after the gap
            ("America/New_York", "0 30 2 * * *", "2026-03-08T08:00:00Z", ["2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z", "2026-03-11T06:30:00Z"]),
            // before the fall-back night
            ("America/New_York", "0 */15 * * * *", "2026-11-01T04:00:00Z", ["2026-11-01T04:15:00Z", "2026-11-01T04:30:00Z", "2026-11-01T04:45:00Z"]),
            // 01:10 EDT, first pass of the repeated hour
            ("America/New_York", "0 */15 * * * *", "2026-11-01T05:10:00Z", ["2026-11-01T05:15:00Z", "2026-11-01T05:30:00Z", "2026-11-01T05:45:00Z"]),
            // 01:40 EDT, first pass
            ("America/New_York", "0 */15 * * * *", "2026-11-01T05:40:00Z", ["2026-11-01T05:45:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z"]),
            // 01:50 EDT, end of the first pass
            ("America/New_York", "0 */15 * * * *", "2026-11-01T05:50:00Z", ["2026-11-01T06:00:00Z", "2026-11-01T06:15:00Z", "2026-11-01T06:30:00Z"]),
            // 01:10 EST, second pass
            ("America/New_York", "0 */15 * * * *", "2026-11-01T06:10:00Z", ["2026-11-01T06:15:00Z", "2026-11-01T06:30:00Z", "2026-11-01T06:45:00Z"]),
            // 02:10 EST, after the repeated hour
            ("America/New_York", "0 */15 * * * *", "2026-11-01T07:10:00Z", ["2026-11-01T07:15:00Z", "2026-11-01T07:30:00Z", "2026-11-01T07:45:00Z"]),
            // before the spring-forward gap
            ("America/New_York", "0 */15 * * * *", "2026-03-08T05:00:00Z", ["2026-03-08T05:15:00Z", "2026-03-08T05:30:00Z", "2026-03-08T05:45:00Z"]),
            // 01:50 EST, just before the gap
            ("America/New_York", "0 */15 * * * *", "2026-03-08T06:50:00Z", ["2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z", "2026-03-08T07:30:00Z"]),
            // 03:00 EDT, the gap's far edge
            ("America/New_York", "0 */15 * * * *", "2026-03-08T07:00:00Z", ["2026-03-08T07:15:00Z", "2026-03-08T07:30:00Z", "2026-03-08T07:45:00Z"]),
            // 04:00 EDT, after the gap
            ("America/New_York", "0 */15 * * * *", "2026-03-08T08:00:00Z", ["2026-03-08T08:15:00Z", "2026-03-08T08:30:00Z", "2026-03-08T08:45:00Z"]),
        ];
        for (tz, cron, start, expected) in table {
            assert_eq!(
                ticks(cron, tz, start, 3),
                expected,
                "{tz} `{cron}` from {start}"
            );
        }
    }

    /// The guard: whatever instant inside the repeated hour the daemon
    /// starts, reloads or finishes a run at, the next tick is after it.
    #[test]
    fn no_tick_at_or_before_now_anywhere_in_a_repeated_hour() {
        for (tz, start) in [
            ("Europe/Berlin", "2026-10-24T23:30:00Z"),
            ("America/New_York", "2026-11-01T04:30:00Z"),
        ] {
            for cron in ["0 30 2 * * *", "0 */15 * * * *", "*/7 * * * * *"] {
                let s = schedule(cron, tz);
                let mut at = utc(start);
                let end = at + chrono::Duration::hours(3);
                while at < end {
                    let next = next_tick(&s, at).unwrap();
                    assert!(next > at, "{tz} `{cron}`: {next} at {at}");
                    at += chrono::Duration::seconds(53);
                }
            }
        }
    }
}
