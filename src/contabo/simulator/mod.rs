//! A stateful, in-process simulator of the Contabo API and its Keycloak token
//! endpoint.
//!
//! [`Simulator::start`] binds `127.0.0.1` on a random port and serves:
//!
//! - `POST /auth/realms/contabo/protocol/openid-connect/token` (password and
//!   refresh-token grants, Keycloak-shaped errors);
//! - the `/v1/users…` and `/v1/object-storages` endpoints a credential rotator
//!   needs, with the vendor spec's envelopes (`data` always an array,
//!   `_pagination`, `_links`), bearer-token and `x-request-id` checks.
//!
//! State (users, object storages, S3 credentials, the client secret, issued
//! tokens) is generated deterministically from [`SimulatorOptions::seed`] and
//! changes as requests mutate it. Tests inspect it with [`Simulator::snapshot`],
//! [`Simulator::requests`] and [`Simulator::issued_secrets`], and inject
//! failures with [`Simulator::set_faults`].
//!
//! The module is split by role: `server` (accept loop, per-request pipeline),
//! `routes` (path → operation), `token` (the token endpoint and token store),
//! `handlers` (the `/v1` endpoints), `state` (data and mutations),
//! `snapshot` (read-only copies for tests), `wire` (JSON envelopes and
//! pagination) and `faults` (fault rules).

mod faults;
mod routes;
mod snapshot;
mod state;
mod token;
mod wire;

use std::time::Duration;

use secrecy::SecretString;

pub use faults::{Fault, FaultRule};
pub use routes::Operation;
pub use snapshot::{SimCredential, SimSnapshot, SimUser};

/// How the simulated account looks and how the simulated servers behave.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// OAuth2 client id of the account (`INT-…`); its digits are the customer id.
    pub client_id: String,
    /// Initial client secret; `PUT /v1/users/client/secret` replaces it.
    pub client_secret: SecretString,
    /// E-mail of the API user, the account owner (user 0).
    pub username: String,
    /// API password of the API user for the password grant.
    pub password: SecretString,
    /// Number of users in total, including the API user.
    pub users: usize,
    /// Object storages of the account, and so credentials per user (one per
    /// storage). Storages cycle over the three regions.
    pub credentials_per_user: usize,
    /// When true, all credentials of one user share one key pair, so
    /// regenerating one changes all ("All purchased object storages in
    /// different locations share the same credentials", spec intro).
    pub shared_credentials: bool,
    /// The largest `size` a list endpoint honours; larger requests are capped.
    pub page_size_cap: usize,
    /// Lifetime of access tokens (`expires_in`).
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens (`refresh_expires_in`).
    pub refresh_token_ttl: Duration,
    /// Seed for the generated data, new keys and tokens, and fault draws.
    pub seed: u64,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            client_id: "INT-10000001".to_owned(),
            client_secret: SecretString::from("3b8f6a0e-5c1d-4e2f-9a7b-0c4d8e6f2a1b"),
            username: "api-user@example.com".to_owned(),
            password: SecretString::from("Sim-API-Passw0rd!"),
            users: 4,
            credentials_per_user: 3,
            shared_credentials: false,
            page_size_cap: 100,
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(1800),
            seed: 0x00C0_47AB_0000_0001,
        }
    }
}
