//! What every request to Contabo shares about the API's health (docs/design.md
//! §1.6): the pause a 429 puts on every task, and the circuit breaker that
//! ends a pass after too many failures in a row.
//!
//! A task that got a 429 does not sleep on its own while the others keep
//! sending: the whole client pauses for the server's `Retry-After` (or the
//! backoff's delay when there is none), capped by `[api] max_retry_after`,
//! and each task resumes after its own small jitter so they do not all
//! come back in the same millisecond. A `Retry-After` beyond the cap is
//! not waited for at all: that call fails with a clear error.
//!
//! The breaker counts failed attempts (5xx, 429, timeouts, dropped
//! connections) across all tasks; any other answer resets the count. At
//! `[api] max_consecutive_failures` it opens, every later call fails at
//! once without being sent, and the pass stops. It is closed again at the
//! start of each pass.

use super::ApiError;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Largest jitter a task adds to the end of a shared pause.
const RESUME_JITTER: Duration = Duration::from_millis(250);

/// The shared pause and the breaker of one client.
#[derive(Debug)]
pub struct Health {
    pause_until: Mutex<Option<Instant>>,
    max_retry_after: Duration,
    threshold: u32,
    consecutive: AtomicU32,
    open: AtomicBool,
}

impl Health {
    pub fn new(max_retry_after: Duration, threshold: u32) -> Self {
        Health {
            pause_until: Mutex::new(None),
            max_retry_after,
            threshold: threshold.max(1),
            consecutive: AtomicU32::new(0),
            open: AtomicBool::new(false),
        }
    }

    /// Waits while a pause is in force (and a jitter after it). A pause
    /// extended meanwhile is waited for too.
    pub async fn wait(&self) {
        loop {
            let until = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(until) if until > Instant::now() => {
                    let jitter = rand::rng().random_range(0..=RESUME_JITTER.as_millis() as u64);
                    tokio::time::sleep_until(until + Duration::from_millis(jitter)).await;
                }
                _ => return,
            }
        }
    }

    /// Pauses every request for `delay` (at most `max_retry_after`) from
    /// now; a longer pause already in force stays.
    pub fn pause(&self, delay: Duration) {
        let delay = delay.min(self.max_retry_after);
        let until = Instant::now() + delay;
        let mut pause = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        if pause.is_none_or(|p| p < until) {
            *pause = Some(until);
            tracing::info!(
                pause_ms = delay.as_millis() as u64,
                "The API is rate-limiting; every request waits."
            );
        }
    }

    /// The error for a 429: [`ApiError::RetryAfterTooLong`] when its
    /// `Retry-After` is beyond the cap, [`ApiError::RateLimited`] otherwise.
    pub fn rate_limited(&self, op: &'static str, retry_after: Option<Duration>) -> ApiError {
        match retry_after {
            Some(wait) if wait > self.max_retry_after => ApiError::RetryAfterTooLong {
                op,
                retry_after: wait,
                cap: self.max_retry_after,
            },
            _ => ApiError::RateLimited { op, retry_after },
        }
    }

    /// `Err` once the breaker is open: the call is not sent.
    pub fn check(&self, op: &'static str) -> Result<(), ApiError> {
        if self.is_open() {
            return Err(ApiError::CircuitOpen {
                op,
                failures: self.threshold,
            });
        }
        Ok(())
    }

    /// Counts one attempt: `failed` for a 5xx, a 429, a timeout or a
    /// dropped connection, `false` for any other answer.
    pub fn record(&self, op: &'static str, failed: bool) {
        if !failed {
            self.consecutive.store(0, Ordering::Relaxed);
            return;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold && !self.open.swap(true, Ordering::Relaxed) {
            tracing::error!(
                op,
                failures = n,
                "The API failed {n} times in a row; stopping the pass (circuit breaker open)."
            );
        }
    }

    /// Whether the breaker is open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes the breaker and forgets the count (at the start of a pass).
    pub fn reset(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Relaxed);
    }
}

/// Whether an attempt's error counts against the breaker.
pub(crate) fn counts_as_failure(err: &ApiError) -> bool {
    matches!(
        err,
        ApiError::Server { .. }
            | ApiError::RateLimited { .. }
            | ApiError::RetryAfterTooLong { .. }
            | ApiError::Timeout { .. }
            | ApiError::Transport { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_task_until_it_ends_and_is_capped() {
        let health = Arc::new(Health::new(Duration::from_secs(5), 10));
        let start = Instant::now();
        health.pause(Duration::from_secs(2));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let h = health.clone();
                tokio::spawn(async move {
                    h.wait().await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            let resumed = w.await.unwrap() - start;
            assert!(resumed >= Duration::from_secs(2), "{resumed:?}");
            assert!(
                resumed <= Duration::from_secs(2) + RESUME_JITTER,
                "{resumed:?}"
            );
        }
        // A longer request is cut to the cap.
        let start = Instant::now();
        health.pause(Duration::from_secs(3600));
        health.wait().await;
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_secs(5) + RESUME_JITTER
        );
        // No pause: no wait.
        let start = Instant::now();
        health.wait().await;
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_extended_while_waiting_is_waited_for() {
        let health = Arc::new(Health::new(Duration::from_secs(60), 10));
        let start = Instant::now();
        health.pause(Duration::from_secs(1));
        let h = health.clone();
        let waiter = tokio::spawn(async move {
            h.wait().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        health.pause(Duration::from_secs(3));
        // A shorter pause does not shorten the one in force.
        health.pause(Duration::from_millis(10));
        let resumed = waiter.await.unwrap() - start;
        assert!(resumed >= Duration::from_millis(3500), "{resumed:?}");
    }

    #[test]
    fn a_retry_after_beyond_the_cap_is_refused_by_name() {
        let health = Health::new(Duration::from_secs(60), 10);
        assert!(matches!(
            health.rate_limited("listUsers", Some(Duration::from_secs(60))),
            ApiError::RateLimited { .. }
        ));
        let err = health.rate_limited("listUsers", Some(Duration::from_secs(3600)));
        let text = err.to_string();
        assert!(text.contains("listUsers"), "{text}");
        assert!(
            text.contains("3600s") && text.contains("max_retry_after"),
            "{text}"
        );
        assert!(!err.is_retryable() && !err.outcome_unknown());
    }

    #[test]
    fn the_breaker_opens_after_n_failures_in_a_row_and_an_answer_resets_the_count() {
        let health = Health::new(Duration::from_secs(60), 3);
        health.record("a", true);
        health.record("a", true);
        health.record("a", false);
        health.record("a", true);
        health.record("a", true);
        assert!(health.check("a").is_ok());
        health.record("a", true);
        let err = health.check("b").unwrap_err();
        assert!(matches!(
            err,
            ApiError::CircuitOpen {
                op: "b",
                failures: 3
            }
        ));
        assert!(!err.is_retryable() && !err.outcome_unknown());
        health.reset();
        assert!(health.check("b").is_ok());
    }
}
