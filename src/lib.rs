//! contabo-rotator: keeps a Contabo account's API client secret and S3
//! object-storage credentials fresh, and delivers the current values to sinks.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::main`]. The
//! library is organised by role: [`config`] (strict TOML, validated into typed
//! settings), [`contabo`] (API client, auth, models, simulator), [`policy`]
//! (pure selection rules), [`inventory`] (what the account holds now), and
//! [`telemetry`] (logging).

pub mod cli;
pub mod config;
pub mod contabo;
pub mod inventory;
pub mod policy;
pub mod telemetry;
