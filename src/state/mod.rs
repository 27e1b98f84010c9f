//! The state directory: the daemon's durable memory.
//!
//! This first part holds the crash-safety primitives; the typed state files
//! build on them (next commit), hence the allowance for unused items.
#![allow(dead_code)]

mod error;
mod fs;

pub use error::StateError;
pub use fs::{remove_stale_temp_files, write_atomic, write_atomic_with};

const LOCK_FILE: &str = "lock";
const RECORDS_FILE: &str = "records.json";
const JOURNAL_FILE: &str = "journal.json";
const CLIENT_SECRET_FILE: &str = "client-secret.json";
const KEY_FILE: &str = "fingerprint.key";
