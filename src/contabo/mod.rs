//! The Contabo API: typed client, authentication, wire models and a stateful simulator.

pub mod auth;
pub mod client;
pub mod error;
mod lenient;
pub mod models;
pub mod retry;
pub mod simulator;

pub use auth::{AccessToken, Authenticator, LoginCredentials};
pub use client::{ClientConfig, ContaboClient};
pub use error::ApiError;
