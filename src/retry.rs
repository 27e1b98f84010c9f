//! Retry policy: exponential backoff with full jitter, bounded by attempts and
//! a deadline, honouring `Retry-After` on 429 (and, for callers that pass
//! it, on 503). The Contabo client and the webhook sink share it.
//!
//! This is a few lines of arithmetic rather than a crate because the decision
//! depends on the callers' own error types (which errors are retryable, what
//! the server asked us to wait, see [`Retryable`]) and callers interleave it
//! with re-login on 401.

use rand::Rng;
use std::time::{Duration, Instant};

/// What the backoff needs to know about a caller's error.
pub trait Retryable: std::fmt::Display + Sized {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
    /// The wait the server asked for (`Retry-After` on a 429).
    fn retry_after(&self) -> Option<Duration>;
    /// The error reported once retries are exhausted.
    fn gave_up(self, op: &'static str, attempts: u32) -> Self;
}

/// How persistent one logical request is.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// The first backoff ceiling; doubled after each failure.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Starts counting attempts for one logical request.
    pub fn start(&self, op: &'static str) -> Backoff<'_> {
        Backoff {
            policy: self,
            op,
            attempts: 0,
            started: Instant::now(),
        }
    }
}

/// The retry state of one logical request.
pub struct Backoff<'a> {
    policy: &'a RetryPolicy,
    op: &'static str,
    attempts: u32,
    started: Instant,
}

impl Backoff<'_> {
    /// Called after a failed attempt: `Ok(delay)` to wait and try again, or
    /// `Err` with the error to report (final errors unchanged, exhausted
    /// retries wrapped by [`Retryable::gave_up`]).
    pub fn next<E: Retryable>(&mut self, err: E) -> Result<Duration, E> {
        let retry_after = err.retry_after();
        self.next_after(err, retry_after)
    }

    /// Like [`Backoff::next`], with the wait the server asked for (its
    /// `Retry-After`, which a 503 may carry as well as a 429) taking the
    /// place of the jittered delay.
    pub fn next_after<E: Retryable>(
        &mut self,
        err: E,
        retry_after: Option<Duration>,
    ) -> Result<Duration, E> {
        self.attempts += 1;
        if !err.is_retryable() {
            return Err(err);
        }
        let delay = match retry_after {
            Some(wait) => wait,
            None => self.jitter(),
        };
        let out_of_time = self.started.elapsed() + delay > self.policy.deadline;
        if self.attempts > self.policy.max_retries || out_of_time {
            return Err(err.gave_up(self.op, self.attempts));
        }
        tracing::debug!(
            op = self.op,
            attempt = self.attempts,
            delay_ms = delay.as_millis() as u64,
            error = %err,
            "Retrying after a transient failure."
        );
        Ok(delay)
    }

    /// Full jitter: uniform in `0..=min(cap, base * 2^(attempts-1))`.
    fn jitter(&self) -> Duration {
        let exp = self.attempts.saturating_sub(1).min(20);
        let ceiling = self
            .policy
            .base
            .saturating_mul(1 << exp)
            .min(self.policy.cap);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = chrono::Utc::now();
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contabo::ApiError;

    fn server_error() -> ApiError {
        ApiError::Server {
            op: "t",
            status: 503,
            message: None,
        }
    }

    #[test]
    fn gives_up_after_max_retries() {
        let policy = RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut b = policy.start("t");
        assert!(b.next(server_error()).is_ok());
        assert!(b.next(server_error()).is_ok());
        match b.next(server_error()) {
            Err(ApiError::GaveUp { attempts: 3, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn final_errors_are_returned_unchanged() {
        let policy = RetryPolicy::default();
        let mut b = policy.start("t");
        let err = ApiError::Status {
            op: "t",
            status: 404,
            message: None,
        };
        assert!(matches!(
            b.next(err),
            Err(ApiError::Status { status: 404, .. })
        ));
    }

    #[test]
    fn retry_after_is_honoured_and_bounded_by_the_deadline() {
        let policy = RetryPolicy {
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let mut b = policy.start("t");
        let wait = b
            .next(ApiError::RateLimited {
                op: "t",
                retry_after: Some(Duration::from_secs(3)),
            })
            .unwrap();
        assert_eq!(wait, Duration::from_secs(3));
        let too_long = b.next(ApiError::RateLimited {
            op: "t",
            retry_after: Some(Duration::from_secs(60)),
        });
        assert!(matches!(too_long, Err(ApiError::GaveUp { .. })));
    }

    #[test]
    fn a_server_error_with_retry_after_waits_as_asked() {
        let policy = RetryPolicy::default();
        let mut b = policy.start("t");
        let wait = b
            .next_after(server_error(), Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(2));
        let final_error = ApiError::Status {
            op: "t",
            status: 400,
            message: None,
        };
        assert!(b
            .next_after(final_error, Some(Duration::from_secs(1)))
            .is_err());
    }

    #[test]
    fn jitter_stays_under_the_exponential_ceiling() {
        let policy = RetryPolicy {
            max_retries: 20,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            deadline: Duration::from_secs(3600),
        };
        let mut b = policy.start("t");
        for attempt in 1..=10u32 {
            let d = b.next(server_error()).unwrap();
            let ceiling = (100u64 << (attempt - 1)).min(1000);
            assert!(d.as_millis() as u64 <= ceiling, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
