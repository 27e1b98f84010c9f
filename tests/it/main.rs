//! The integration-test binary: one binary, one module per area, shared helpers.

mod cli;
mod client;
mod contract;
mod examples;
mod rotation;
mod secrets;
mod util;
mod webhook;
