//! The integration-test binary: one binary, one module per area, shared helpers.

// The tests' own clients talk to servers on 127.0.0.1 they started; the
// rotator's clients start from `net::client_builder` (see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod bad_input;
mod boundary;
mod bounded;
mod cli;
mod client;
mod client_secret;
mod contract;
mod crash;
mod deploy;
mod examples;
mod faults;
mod fuzz;
mod hygiene;
mod image;
mod leak;
mod malformed;
mod metrics;
mod package;
mod portability;
mod prometheus;
mod proof_budget;
mod proxy;
mod rotation;
mod s3_clients;
mod schedule;
mod secrets;
mod sinks;
mod streaming;
mod systemd;
mod tls;
mod twins;
mod upgrade;
mod util;
mod verify;
mod webhook;
