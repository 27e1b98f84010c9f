//! contabo-rotator: keeps a Contabo account's API client secret and S3
//! object-storage credentials fresh, and delivers the current values to sinks.
//!
//! The binary (`src/main.rs`) is a thin shell around [`cli::main`]. The
//! library is organised by role: [`config`] (strict TOML, validated into typed
//! settings), [`contabo`] (API client, auth, models), [`policy`] (pure
//! rules: selection, due-ness, limits), [`inventory`] (what the account
//! holds now), [`rotation`] (the engine: the pipeline's stages), [`state`]
//! (the crash-safe state directory), [`sinks`] (delivery), [`schedule`]
//! (the daemon) and [`telemetry`] (logging) with [`metrics`] (Prometheus
//! and health endpoints). [`retry`] (backoff shared by the API client and
//! the webhook sink), [`crash`] (deliberate crash points for the crash
//! suite) and [`sorted_set`] (compact sets that grow with the account)
//! serve several of them, and [`tls`] (trusted roots) the HTTP clients.
//!
//! The built-in Contabo API, the client's peer, is a crate of its own in
//! this workspace, [`contabo_simulator`] (`simulator/`): it imports nothing
//! from this one, and the `demo` command, the integration tests and the
//! benchmarks drive the rotator against it.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod contabo;
pub mod crash;
pub mod dirfd;
pub mod globs;
pub mod inventory;
pub mod json_time;
pub mod known_secrets;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod retry;
pub mod rotation;
pub mod schedule;
pub mod sinks;
pub mod sorted_set;
pub mod state;
pub mod telemetry;
pub mod tls;
