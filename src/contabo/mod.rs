//! The Contabo API: typed client, authentication and wire models (the simulator is its peer, `contabo_simulator`).

pub mod auth;
pub mod client;
pub mod error;
pub mod health;
mod lenient;
pub mod models;
pub mod observer;

pub use auth::{AccessToken, Authenticator, LoginCredentials};
pub use client::{ClientConfig, ContaboClient};
pub use error::ApiError;
pub use observer::ApiObserver;
