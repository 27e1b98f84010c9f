//! The proofs' budget at the storage (docs/design.md invariant 11,
//! `[object_storage] verify_requests_per_second`).
//!
//! Contabo takes about 250 S3 requests/s per customer, shared with the
//! customer's own applications, and answers more with `503 SlowDown`.
//! Every request a proof sends (the new key's ListBuckets, the probe
//! buckets, the old key's check) waits here first: one pacer per
//! [`super::Prover`], shared by all its clones, so the proofs of a pass
//! together send at most `verify_requests_per_second`, one request at a
//! time (no burst). The rate limiter is `governor`'s, as for the API.
//!
//! A `SlowDown` means the storage is busier than the budget assumed (the
//! customer's applications take their share too), so it does two things:
//!
//! - **A pause.** Every proof waits, as a 429 pauses every API call
//!   (`contabo::health`): for the answer's `Retry-After` if it has one
//!   (capped at [`MAX_PAUSE`]), [`PAUSE`] otherwise, and each proof
//!   resumes after its own jitter.
//! - **A lower rate.** The rate is halved, at most once per pause (the
//!   answers to requests already in flight say nothing new), down to a
//!   32nd of the budget, and doubled again after [`RECOVERY`] without a
//!   `SlowDown`: the storage's own limit is found from below and probed
//!   again now and then, so its rare `SlowDown`s are all it costs. Halving
//!   and doubling keep the rate at the budget over a power of two, so each
//!   of the six levels has its own limiter, built once (a `governor`
//!   limiter's rate is fixed).
//!
//! A pause or a lower rate that comes while a request waits for its turn
//! is waited for again: nothing queued before a `SlowDown` goes out at
//! the old pace.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The pause after a `SlowDown` without `Retry-After`.
pub(super) const PAUSE: Duration = Duration::from_secs(1);
/// The longest pause a `SlowDown`'s `Retry-After` gets.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(10);
/// Time at a lower rate without a `SlowDown` before the rate doubles.
pub(super) const RECOVERY: Duration = Duration::from_secs(10);
/// Rates: the budget, and its half, quarter, ... down to a 32nd.
const LEVELS: usize = 6;
/// Largest jitter a proof adds to the end of a pause.
const RESUME_JITTER: Duration = Duration::from_millis(250);

/// Paces the S3 requests of every proof of a prover.
#[derive(Debug)]
pub(super) struct Pacer {
    /// `levels[i]` lets through `budget / 2^i` requests per second, one at
    /// a time.
    levels: Vec<DefaultDirectRateLimiter>,
    budget: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Index into `levels`.
    level: usize,
    /// Counts the slow-downs: a request that waited across one waits again.
    epoch: u64,
    /// Every proof waits until then.
    pause_until: Option<Instant>,
    /// When the current level began (the end of its pause): it recovers
    /// [`RECOVERY`] later.
    since: Instant,
}

impl Pacer {
    /// A pacer of `per_second` requests (finite and above 0, as the config
    /// validates; kept within a request per 1,000 s and one per
    /// nanosecond).
    pub fn new(per_second: f64) -> Pacer {
        let budget = per_second.clamp(1e-3, 1e9);
        let levels = (0..LEVELS)
            .map(|i| {
                let rate = budget / f64::from(1u32 << i);
                let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
                RateLimiter::direct(Quota::with_period(period).expect("a non-zero period"))
            })
            .collect();
        Pacer {
            levels,
            budget,
            state: Mutex::new(State {
                level: 0,
                epoch: 0,
                pause_until: None,
                since: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate requests are let through at now, per second.
    #[cfg(test)]
    pub fn rate(&self) -> f64 {
        self.budget / f64::from(1u32 << self.state().level)
    }

    /// Waits for this request's turn: the end of a pause (and a jitter),
    /// then a slot at the current rate.
    pub async fn ready(&self) {
        loop {
            let (epoch, level, pause_until) = {
                let mut s = self.state();
                let now = Instant::now();
                if s.level > 0
                    && s.pause_until.is_none_or(|until| until <= now)
                    && now.saturating_duration_since(s.since) >= RECOVERY
                {
                    s.level -= 1;
                    s.since = now;
                    tracing::debug!(
                        rate = self.budget / f64::from(1u32 << s.level),
                        "No SlowDown for a while; the proofs speed up."
                    );
                }
                (s.epoch, s.level, s.pause_until)
            };
            if let Some(until) = pause_until.filter(|until| *until > Instant::now()) {
                let jitter = rand::rng().random_range(0..=RESUME_JITTER.as_millis() as u64);
                tokio::time::sleep_until(until + Duration::from_millis(jitter)).await;
                continue;
            }
            self.levels[level].until_ready().await;
            if self.state().epoch == epoch {
                return;
            }
        }
    }

    /// The storage answered `SlowDown` (its `Retry-After`, if any): pauses
    /// every proof and halves the rate, unless a pause is in force already.
    pub fn slowed_down(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        if s.pause_until.is_some_and(|until| until > now) {
            return;
        }
        let pause = retry_after.map_or(PAUSE, |wait| wait.clamp(PAUSE, MAX_PAUSE));
        s.epoch += 1;
        s.level = (s.level + 1).min(LEVELS - 1);
        s.pause_until = Some(now + pause);
        s.since = now + pause;
        tracing::info!(
            pause_ms = pause.as_millis() as u64,
            rate = self.budget / f64::from(1u32 << s.level),
            "The storage asks for fewer requests (SlowDown); every proof pauses, then goes on slower."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A `SlowDown` holds every waiting proof until the pause ends (plus
    /// at most the jitter), and halves the rate once however many
    /// `SlowDown`s come during the pause.
    #[tokio::test(start_paused = true)]
    async fn a_slow_down_pauses_every_proof_and_halves_the_rate_once() {
        let pacer = Arc::new(Pacer::new(1000.0));
        let start = Instant::now();
        pacer.slowed_down(None);
        pacer.slowed_down(None);
        assert_eq!(pacer.rate(), 500.0, "halved once per pause");
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let p = pacer.clone();
                tokio::spawn(async move {
                    p.ready().await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            let resumed = w.await.unwrap() - start;
            assert!(resumed >= PAUSE, "{resumed:?}");
            assert!(resumed <= PAUSE + RESUME_JITTER, "{resumed:?}");
        }
        // After the pause, a new SlowDown halves again.
        pacer.slowed_down(None);
        assert_eq!(pacer.rate(), 250.0);
    }

    /// A `Retry-After` sets the pause, within [`PAUSE`] and [`MAX_PAUSE`].
    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_pause_within_its_bounds() {
        for (retry_after, pause) in [
            (Some(Duration::from_secs(3)), Duration::from_secs(3)),
            (Some(Duration::from_secs(3600)), MAX_PAUSE),
            (Some(Duration::ZERO), PAUSE),
            (None, PAUSE),
        ] {
            let pacer = Pacer::new(1000.0);
            let start = Instant::now();
            pacer.slowed_down(retry_after);
            pacer.ready().await;
            let waited = Instant::now() - start;
            assert!(
                waited >= pause && waited <= pause + RESUME_JITTER,
                "{retry_after:?}: {waited:?}"
            );
        }
    }

    /// The rate comes back one doubling per [`RECOVERY`] without a
    /// `SlowDown`, never above the budget, and never falls below a 32nd.
    #[tokio::test(start_paused = true)]
    async fn the_rate_recovers_slowly_and_has_a_floor() {
        let pacer = Pacer::new(640.0);
        for _ in 0..10 {
            pacer.slowed_down(None);
            tokio::time::advance(MAX_PAUSE).await;
        }
        assert_eq!(pacer.rate(), 20.0, "a 32nd of the budget at least");
        // The level began at the end of the last pause, 9 s ago.
        pacer.ready().await;
        assert_eq!(pacer.rate(), 20.0, "not yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        pacer.ready().await;
        assert_eq!(pacer.rate(), 40.0);
        pacer.ready().await;
        assert_eq!(pacer.rate(), 40.0, "one doubling per RECOVERY");
        for _ in 0..10 {
            tokio::time::advance(RECOVERY).await;
            pacer.ready().await;
        }
        assert_eq!(pacer.rate(), 640.0, "back to the budget, not above");
    }

    /// Requests go out one at a time at the budget (real time: the rate
    /// limiter keeps its own clock).
    #[tokio::test]
    async fn requests_are_spaced_at_the_budget() {
        let pacer = Pacer::new(20.0);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        // The first at once, then one every 50 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(195), "{took:?}");
    }
}
