//! contabo-rotator: keeps a Contabo account's API client secret and S3
//! object-storage credentials fresh, and delivers the current values to sinks.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::run`].

pub mod contabo;
pub mod state;
