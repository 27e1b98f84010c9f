//! What the client tells about its calls, to whoever hands it an observer
//! ([`super::ClientConfig::observer`]): the engine hands the metrics. The
//! client knows nothing of where the figures go.

use std::time::Duration;

/// Receives one call per HTTP attempt, retry and give-up. Every method
/// does nothing by default.
pub trait ApiObserver: Send + Sync {
    /// An attempt of `op` ended with `status` (0: no answer) after `took`.
    fn request(&self, _op: &'static str, _status: u16, _took: Duration) {}
    /// `op` failed and will be tried again.
    fn retry(&self, _op: &'static str) {}
    /// `op` failed for the last time.
    fn give_up(&self, _op: &'static str) {}
}

/// The observer of a client nobody watches.
pub struct Unobserved;

impl ApiObserver for Unobserved {}
