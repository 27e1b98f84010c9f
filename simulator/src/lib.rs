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
//! With [`SimulatorOptions::s3_endpoint`] (the default) it also serves S3,
//! one listener per region, and every storage's `s3Url` points there:
//! SigV4-checked against the keys the account holds, with in-memory
//! objects, a request log ([`Simulator::s3_requests`]), key faults
//! ([`Simulator::set_s3_fault`]), a per-customer request limit
//! ([`Simulator::set_s3_request_limit`]) and bucket policies
//! ([`Simulator::deny_bucket`]).
//!
//! It is the rotator's peer, a crate of its own that imports nothing from
//! the rotator: `contabo-rotator demo` runs it, and the rotator's
//! integration tests and benchmarks drive the rotator against it.
//!
//! The crate is split by role: `server` (accept loop, per-request pipeline),
//! `routes` (path → operation), `token` (the token endpoint and token store),
//! `handlers` (the `/v1` endpoints), `state` (data and mutations),
//! `snapshot` (read-only copies for tests), `wire` (JSON envelopes and
//! pagination), `faults` (fault rules) and `s3` (the S3 endpoint).

#![forbid(unsafe_code)]

mod faults;
mod handlers;
mod routes;
mod s3;
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

pub use faults::{mixed_faults, Fault, FaultRule};
pub use routes::{Operation, MARK_PATH};
pub use s3::{S3Fault, S3Request, DEFAULT_BUCKET};
pub use server::RecordedRequest;
pub use snapshot::{SimCredential, SimSnapshot, SimUser};

use server::{Listener, Shared};

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
    /// Serve S3 too, one listener per region, and point every storage's
    /// `s3Url` at it; when false the `s3Url`s are the public hosts.
    pub s3_endpoint: bool,
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
            s3_endpoint: true,
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
    /// The S3 endpoints, one per region, when served.
    s3: Vec<S3Endpoint>,
}

/// One region's S3 endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// The region's long name, as in `/v1/object-storages`.
    pub region: &'static str,
    /// The region requests are signed for (`eu`, `us-central`, `sin`).
    pub signing_region: &'static str,
    /// `http://127.0.0.1:PORT`, the storages' `s3Url`.
    pub url: String,
}

impl Simulator {
    /// Generates the account from `opts` and starts serving on `127.0.0.1:0`.
    pub async fn start(opts: SimulatorOptions) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut listeners = vec![(listener, Listener::Api)];
        let mut s3 = Vec::new();
        if opts.s3_endpoint {
            for (i, region) in state::REGIONS.iter().enumerate() {
                let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
                s3.push(S3Endpoint {
                    region: region.name,
                    signing_region: region.signing_region,
                    url: format!("http://{}", listener.local_addr()?),
                });
                listeners.push((listener, Listener::S3(i)));
            }
        }
        let s3_urls: Vec<String> = s3.iter().map(|e| e.url.clone()).collect();
        let shared = Arc::new(Shared::new(&opts, addr, &s3_urls));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (listener, kind) in listeners {
            tracker.spawn(server::accept_loop(
                listener,
                kind,
                Arc::clone(&shared),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracing::debug!(%addr, s3 = ?s3_urls, "Contabo simulator listening.");
        Ok(Simulator {
            addr,
            shared,
            shutdown,
            tracker,
            s3,
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

    /// The S3 endpoints, one per region (empty without
    /// [`SimulatorOptions::s3_endpoint`]).
    pub fn s3_endpoints(&self) -> &[S3Endpoint] {
        &self.s3
    }

    /// Sets how every region's storage treats regenerated keys.
    pub fn set_s3_fault(&self, fault: S3Fault) {
        self.shared.s3().set_fault(None, fault);
    }

    /// Sets the key fault of one region, named as it is signed for
    /// (`eu`, `us-central`, `sin`).
    pub fn set_s3_fault_in(&self, signing_region: &str, fault: S3Fault) {
        self.shared.s3().set_fault(Some(signing_region), fault);
    }

    /// Limits the account's S3 requests, every region's listener
    /// together, to `per_second` (a token bucket with a burst of a fifth
    /// of a second's requests, at least 2), as Contabo limits a customer.
    /// Beyond it a request gets `503 SlowDown` (a HEAD gets the 503 with
    /// no body), logged with `code: Some("SlowDown")`. `None` lifts it.
    pub fn set_s3_request_limit(&self, per_second: Option<f64>) {
        self.shared.s3().set_request_limit(per_second);
    }

    /// A bucket policy: requests signed with any key of `user_id` to
    /// `bucket` get `403 AccessDenied`, at the region signed as
    /// `signing_region` (`eu`, `us-central`, `sin`) or, with `None`, at
    /// every region. ListBuckets is not affected.
    pub fn deny_bucket(&self, user_id: &str, signing_region: Option<&str>, bucket: &str) {
        self.shared
            .s3()
            .deny_bucket(user_id, signing_region, bucket);
    }

    /// Lifts what [`Simulator::deny_bucket`] set for `user_id` and
    /// `bucket` (at one region, or with `None` at all of them).
    pub fn allow_bucket(&self, user_id: &str, signing_region: Option<&str>, bucket: &str) {
        self.shared
            .s3()
            .allow_bucket(user_id, signing_region, bucket);
    }

    /// Creates an empty bucket at a region's storage, shared by every
    /// user of the account; false if the region is unknown or the bucket
    /// exists already.
    pub fn create_bucket(&self, signing_region: &str, name: &str) -> bool {
        self.shared.s3().create_bucket(signing_region, name)
    }

    /// Every S3 request seen so far, in arrival order.
    pub fn s3_requests(&self) -> Vec<S3Request> {
        self.shared.s3().log().to_vec()
    }

    /// The body of an object at a region's storage, for assertions.
    pub fn s3_object(&self, signing_region: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.shared
            .s3()
            .object(signing_region, bucket, key)
            .map(|b| b.to_vec())
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
