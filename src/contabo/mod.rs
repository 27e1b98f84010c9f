//! The Contabo API: typed client, authentication, wire models and a stateful simulator.

pub mod simulator;
