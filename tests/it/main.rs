//! The integration-test binary: one binary, one module per area, shared helpers.

mod bad_input;
mod bounded;
mod cli;
mod client;
mod client_secret;
mod contract;
mod crash;
mod examples;
mod faults;
mod fuzz;
mod hygiene;
mod leak;
mod malformed;
mod metrics;
mod rotation;
mod s3_clients;
mod schedule;
mod secrets;
mod sinks;
mod streaming;
mod systemd;
mod tls;
mod util;
mod verify;
mod webhook;
