//! contabo-rotator: keeps a Contabo account's API client secret and S3
//! object-storage credentials fresh, and delivers the current values to sinks.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::main`]. The
//! library is organised by role: [`config`] (strict TOML, validated into typed
//! settings), [`contabo`] (API client, auth, models, simulator), [`policy`]
//! (pure rules: selection, due-ness, limits), [`inventory`] (what the account
//! holds now), [`rotation`] (the engine), [`state`] (the crash-safe state
//! directory), [`sinks`] (delivery), [`schedule`] (the daemon) and
//! [`telemetry`] (logging) with [`metrics`] (Prometheus and health endpoints).

pub mod cli;
pub mod config;
pub mod contabo;
pub mod inventory;
pub mod metrics;
pub mod policy;
pub mod rotation;
pub mod schedule;
pub mod sinks;
pub mod state;
pub mod telemetry;
