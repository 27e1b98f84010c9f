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
mod wire;

pub use faults::{Fault, FaultRule};
pub use routes::Operation;
