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
mod handlers;
mod routes;
mod server;
mod snapshot;
mod state;
mod token;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

pub use faults::{Fault, FaultRule};
pub use routes::{Operation, MARK_PATH};
pub use server::RecordedRequest;
pub use snapshot::{SimCredential, SimSnapshot, SimUser};

use server::Shared;

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
    /// Lists requested without `orderBy` come back in a different order on
    /// every request (as from a database without a stable default order),
    /// so pages of one walk overlap and miss items.
    pub unstable_order: bool,
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
            unstable_order: false,
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(1800),
            seed: 0x00C0_47AB_0000_0001,
        }
    }
}

/// A running simulator. Dropping it, or [`Simulator::shutdown`], stops the server.
pub struct Simulator {
    /// The bound address; all URLs derive from it.
    addr: SocketAddr,
    /// State, fault rules and the request log, shared with the server tasks.
    shared: Arc<Shared>,
    /// Cancelled on shutdown or drop; stops the accept loop and all connections.
    shutdown: CancellationToken,
    /// Tracks the accept loop and connection tasks so `shutdown` can wait for them.
    tracker: TaskTracker,
}

impl Simulator {
    /// Generates the account from `opts` and starts serving on `127.0.0.1:0`.
    pub async fn start(opts: SimulatorOptions) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&opts, addr));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            shutdown.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, "Contabo simulator listening.");
        Ok(Simulator {
            addr,
            shared,
            shutdown,
            tracker,
        })
    }

    /// `http://127.0.0.1:PORT`, the API base URL.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).expect("socket address forms a valid URL")
    }

    /// The Keycloak token endpoint of the simulator.
    pub fn token_url(&self) -> Url {
        self.base_url()
            .join(routes::TOKEN_PATH)
            .expect("token path is a valid relative URL")
    }

    /// The userId of the API user (the `sub` claim of its access tokens).
    pub fn api_user_id(&self) -> String {
        self.shared.state().api_user_id.clone()
    }

    /// Replaces the fault rules; they are checked in order on every request.
    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.shared.set_faults(faults);
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// The current account state, for assertions.
    pub fn snapshot(&self) -> SimSnapshot {
        self.shared.state().snapshot()
    }

    /// Every secret value ever configured or issued: client secrets, the API
    /// password, S3 secret keys, access and refresh tokens.
    pub fn issued_secrets(&self) -> Vec<SecretString> {
        self.shared.state().issued_secrets().to_vec()
    }

    /// Makes every access token issued so far expire now, as if its lifetime
    /// had passed; refresh tokens are unaffected.
    pub fn expire_access_tokens(&self) {
        self.shared.state().tokens.expire_access_tokens();
    }

    /// Stops accepting, closes all connections and waits for the server tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
