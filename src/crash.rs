//! Deliberate crash points for the crash tests.
//!
//! When `CONTABO_ROTATOR_CRASH_AT` names a point (optionally `NAME:N` for its
//! N-th passage, 1-based), the process sends itself SIGKILL there: no
//! destructor, flush or signal handler runs, exactly like `kill -9` from
//! outside. Unset (the normal case) this costs one environment lookup.

use std::sync::atomic::{AtomicU32, Ordering};

static PASSED: AtomicU32 = AtomicU32::new(0);

/// The named points, in the order a run passes them.
pub const POINTS: &[&str] = &[
    // Start-up recovery: records saved, intents not yet cleared.
    "resume-after-record",
    // Intents written, no regenerate sent yet.
    "s3-after-journal",
    "s3-after-regenerate",
    "s3-after-confirm",
    // A one-user sink written with its user's new values, the records
    // (and so its delivered version) not saved yet.
    "after-user-sink",
    "s3-after-record",
    // Intent written, the PUT not sent yet.
    "client-secret-after-journal",
    // The PUT answered (or the secret read back), the new secret not stored yet.
    "client-secret-after-put",
    "client-secret-after-store",
    "client-secret-after-confirm",
    "before-delivery",
    // A file or template sink's temp file created, not yet renamed into place.
    "sink-temp-created",
    // A webhook event delivered, the outbox not yet saved.
    "webhook-after-post",
    // One sink handled and its record updated in memory (once per sink).
    "after-sink",
    "after-delivery",
];

/// Passed only by the daemon's start-up recovery (tests start a daemon to
/// reach it): the journal resolved and recorded, the sinks not yet
/// re-delivered.
pub const STARTUP_POINTS: &[&str] = &["startup-after-resume"];

/// Kills the process with SIGKILL if `CONTABO_ROTATOR_CRASH_AT` names this point.
pub fn point(name: &str) {
    let Ok(spec) = std::env::var("CONTABO_ROTATOR_CRASH_AT") else {
        return;
    };
    let (target, nth) = match spec.split_once(':') {
        Some((t, n)) => (t.to_owned(), n.parse::<u32>().unwrap_or(1)),
        None => (spec, 1),
    };
    if target != name {
        return;
    }
    if PASSED.fetch_add(1, Ordering::SeqCst) + 1 < nth {
        return;
    }
    eprintln!("crash point {name}: sending SIGKILL to self");
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // `kill` delivers the signal before returning; never continue past it.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
