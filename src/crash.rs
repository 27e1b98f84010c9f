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
    // Webhook events committed to the outbox, none sent yet.
    "webhook-after-enqueue",
    // A webhook event delivered, the outbox not yet saved.
    "webhook-after-post",
    // One sink handled and its record updated in memory (once per sink).
    "after-sink",
    "after-delivery",
];

/// Passed only by a twin's switch (docs/design.md §4, Twin users), in order.
pub const TWIN_POINTS: &[&str] = &[
    // The switch journalled, no regenerate sent.
    "twin-after-intent",
    // The standby regenerated, nothing proven or delivered.
    "twin-after-regenerate",
    // The new keys in every sink holding the twin, the switch not recorded.
    "twin-after-delivery",
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

static FAILED: AtomicU32 = AtomicU32::new(0);

/// Whether the write at this point should fail as a full disk would, when
/// `CONTABO_ROTATOR_FAIL_AT` names it (the one point is
/// `client-secret-store`, each attempt of each store counting): `NAME` fails its first passage,
/// `NAME:N` its first N, `NAME:FROM-TO` passages FROM to TO (1-based).
/// Unset (the normal case) this costs one environment lookup. The fault
/// tests use it where a real ENOSPC cannot be made (they run as root,
/// whom a read-only directory does not stop).
pub fn fails(name: &str) -> bool {
    let Ok(spec) = std::env::var("CONTABO_ROTATOR_FAIL_AT") else {
        return false;
    };
    let (target, range) = spec.split_once(':').unwrap_or((&spec, "1"));
    if target != name {
        return false;
    }
    let (from, to) = match range.split_once('-') {
        Some((f, t)) => (f.parse().unwrap_or(1), t.parse().unwrap_or(0)),
        None => (1, range.parse().unwrap_or(1)),
    };
    let passage = FAILED.fetch_add(1, Ordering::SeqCst) + 1;
    (from..=to).contains(&passage)
}
