//! The Contabo API client: typed calls over one retrying, rate-limited,
//! authenticated request path.
//!
//! Every request carries a fresh UUIDv4 `x-request-id` (or the caller's, e.g.
//! a rotation id, on every attempt of that call) and the client's `x-trace-id`,
//! one per run. Lists are walked page by page using `_pagination`, never
//! `_links`. Tokens travel in the `Authorization` header only, never in a URL.

use super::auth::{AccessToken, Authenticator, LoginCredentials};
use super::error::{vendor_message, ApiError};
use super::health::Health;
use super::models::*;
use crate::retry::{parse_retry_after, RetryPolicy};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

/// Largest response body accepted; anything bigger is refused as malformed.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// A page that came back empty before the last one `_pagination` promised.
fn truncated(
    op: &'static str,
    page: i64,
    total_pages: i64,
    received: usize,
    first: &Pagination,
) -> ApiError {
    ApiError::Truncated {
        op,
        page,
        total_pages,
        received,
        expected: first.total_elements.unwrap_or(-1),
    }
}

/// A list longer than this many pages is taken for a server loop.
const MAX_PAGES: i64 = 10_000;

/// Everything the client needs; built from `[api]` by the caller.
#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: Url,
    pub token_url: Url,
    pub credentials: LoginCredentials,
    /// Per HTTP attempt, body included.
    pub timeout: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests started per second, at most.
    pub requests_per_second: u32,
    pub retry: RetryPolicy,
    /// `size` asked for on list endpoints (the server may cap it).
    pub page_size: u32,
    /// The longest `Retry-After` honoured on a 429.
    pub max_retry_after: Duration,
    /// Failed attempts in a row that open the circuit breaker.
    pub max_consecutive_failures: u32,
    /// Trusted besides the system's roots (`[api] ca_file`).
    pub ca: Option<crate::tls::ExtraRoots>,
    /// Told of every attempt, retry and give-up (the engine's metrics).
    pub observer: Arc<dyn super::ApiObserver>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("requests_per_second", &self.requests_per_second)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// The client for a validated `[api]` table.
    pub fn from_settings(api: &crate::config::ApiSettings) -> Self {
        let mut config = ClientConfig::new(
            api.base_url.clone(),
            api.token_url.clone(),
            LoginCredentials {
                client_id: api.client_id.clone(),
                client_secret: api.client_secret.clone(),
                username: api.username.clone(),
                password: api.password.clone(),
            },
        );
        config.timeout = api.timeout;
        config.concurrency = api.concurrency;
        config.requests_per_second = api.requests_per_second;
        config.retry.max_retries = api.max_retries;
        config.max_retry_after = api.max_retry_after;
        config.max_consecutive_failures = api.max_consecutive_failures;
        config.ca = api.ca.clone();
        config
    }

    /// A config with the documented defaults for everything but the endpoints and credentials.
    pub fn new(base_url: Url, token_url: Url, credentials: LoginCredentials) -> Self {
        ClientConfig {
            base_url,
            token_url,
            credentials,
            timeout: Duration::from_secs(30),
            concurrency: 4,
            requests_per_second: 10,
            retry: RetryPolicy::default(),
            page_size: 100,
            max_retry_after: Duration::from_secs(60),
            max_consecutive_failures: 10,
            ca: None,
            observer: Arc::new(super::observer::Unobserved),
        }
    }
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
    retry: RetryPolicy,
    page_size: u32,
    auth: Authenticator,
    slots: Semaphore,
    /// The configured bound on requests in flight (the semaphore's size).
    concurrency: usize,
    limiter: DefaultDirectRateLimiter,
    /// The 429 pause and the circuit breaker, shared with the token login.
    health: Arc<Health>,
    observer: Arc<dyn super::ApiObserver>,
}

/// A cheap-to-clone handle; clones share the token cache, the rate limit and
/// the concurrency bound.
#[derive(Clone)]
pub struct ContaboClient {
    inner: Arc<Inner>,
    trace_id: Arc<str>,
}

/// One logical API call.
struct Call<'a> {
    op: &'static str,
    method: Method,
    path: &'a [&'a str],
    query: Vec<(&'static str, String)>,
    body: Option<serde_json::Value>,
    request_id: Option<Uuid>,
    token: Option<&'a AccessToken>,
    /// False for calls that must not be repeated blindly: only a 429 (which
    /// the server did not act on) is retried; any other failure goes back to
    /// the caller, who reads the state back instead.
    repeatable: bool,
    /// Checked once the first attempt has its slot, just before it is
    /// sent: a call queued behind others is not sent once the run is
    /// stopping ([`ApiError::Stopped`]); one already sent is finished.
    stop: Option<&'a CancellationToken>,
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, path: &'a [&'a str]) -> Self {
        Call {
            op,
            method,
            path,
            query: Vec::new(),
            body: None,
            request_id: None,
            token: None,
            repeatable: true,
            stop: None,
        }
    }
}

impl ContaboClient {
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let builder = crate::net::client_builder()
            .connect_timeout(config.timeout)
            .https_only(false)
            // Never follow a redirect, on the API or the token endpoint: a
            // bearer token or the login form re-sent to a `Location` on
            // another host would leak it. A 3xx is an error.
            .redirect(reqwest::redirect::Policy::none());
        let http = crate::tls::trust(builder, config.ca.as_ref())
            .build()
            .map_err(|e| ApiError::Setup(e.without_url().to_string()))?;
        let rps = NonZeroU32::new(config.requests_per_second.max(1)).expect("non-zero");
        let health = Arc::new(Health::new(
            config.max_retry_after,
            config.max_consecutive_failures,
        ));
        let auth = Authenticator::new(
            http.clone(),
            config.token_url,
            config.credentials,
            config.timeout,
            config.retry.clone(),
        )
        .with_health(health.clone())
        .with_observer(config.observer.clone());
        Ok(ContaboClient {
            inner: Arc::new(Inner {
                http,
                base_url: config.base_url,
                timeout: config.timeout,
                retry: config.retry,
                page_size: config.page_size.max(1),
                auth,
                slots: Semaphore::new(config.concurrency.max(1)),
                concurrency: config.concurrency.max(1),
                limiter: RateLimiter::direct(Quota::per_second(rps)),
                health,
                observer: config.observer,
            }),
            trace_id: Arc::from(new_trace_id()),
        })
    }

    /// A handle that shares everything but sends `trace_id` as `x-trace-id`.
    pub fn with_trace_id(&self, trace_id: impl Into<String>) -> Self {
        ContaboClient {
            inner: self.inner.clone(),
            trace_id: Arc::from(trace_id.into()),
        }
    }

    /// The `x-trace-id` this handle sends.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// How many requests may be in flight at once (`[api] concurrency`).
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// The shared 429 pause and circuit breaker.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// The token cache and login (for confirming a new client secret).
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The API user's id: the `sub` of the access token (logs in if needed).
    pub async fn api_user_id(&self) -> Result<String, ApiError> {
        Ok(self.inner.auth.access_token().await?.subject)
    }

    /// `GET /v1/users`, every page.
    pub async fn list_users(&self, filter: &UserFilter) -> Result<Vec<User>, ApiError> {
        let mut query = Vec::new();
        push(&mut query, "email", filter.email.clone());
        push(&mut query, "enabled", filter.enabled.map(|b| b.to_string()));
        push(&mut query, "owner", filter.owner.map(|b| b.to_string()));
        push(&mut query, "orderBy", Some("userId:asc".to_owned()));
        self.list_all("retrieveUserList", &["v1", "users"], query)
            .await
    }

    /// `GET /v1/users/{userId}`.
    pub async fn get_user(&self, user_id: &str) -> Result<User, ApiError> {
        let path = ["v1", "users", user_id];
        let call = Call::new("retrieveUser", Method::GET, &path);
        self.one(call).await
    }

    /// `POST /v1/users`.
    pub async fn create_user(&self, user: &CreateUserRequest) -> Result<CreatedUser, ApiError> {
        let mut call = Call::new("createUser", Method::POST, &["v1", "users"]);
        call.body = Some(serde_json::to_value(user).expect("serialisable"));
        self.one(call).await
    }

    /// `PATCH /v1/users/{userId}`; the answer carries no data.
    pub async fn update_user(
        &self,
        user_id: &str,
        update: &UpdateUserRequest,
    ) -> Result<(), ApiError> {
        let path = ["v1", "users", user_id];
        let mut call = Call::new("updateUser", Method::PATCH, &path);
        call.body = Some(serde_json::to_value(update).expect("serialisable"));
        self.send(call).await.map(drop)
    }

    /// `DELETE /v1/users/{userId}`.
    pub async fn delete_user(&self, user_id: &str) -> Result<(), ApiError> {
        let path = ["v1", "users", user_id];
        let call = Call::new("deleteUser", Method::DELETE, &path);
        self.send(call).await.map(drop)
    }

    /// `GET /v1/users/client`: the OAuth client with its current secret.
    pub async fn get_client(&self) -> Result<ApiClient, ApiError> {
        self.get_client_inner(None).await
    }

    /// `GET /v1/users/client` with a token obtained earlier, e.g. before a
    /// client-secret rotation whose answer was lost.
    pub async fn get_client_with_token(&self, token: &AccessToken) -> Result<ApiClient, ApiError> {
        self.get_client_inner(Some(token)).await
    }

    async fn get_client_inner(&self, token: Option<&AccessToken>) -> Result<ApiClient, ApiError> {
        let mut call = Call::new(
            "retrieveUserClient",
            Method::GET,
            &["v1", "users", "client"],
        );
        call.token = token;
        self.one(call).await
    }

    /// `PUT /v1/users/client/secret`: a new client secret; the old one stops
    /// working for new logins. `token` pins the access token to use. Only a
    /// 429 is retried: after any other failure the outcome may be unknown,
    /// and the caller reads the secret back with `GET /v1/users/client`.
    pub async fn generate_client_secret(
        &self,
        request_id: Option<Uuid>,
        token: Option<&AccessToken>,
    ) -> Result<GeneratedClientSecret, ApiError> {
        let mut call = Call::new(
            "generateClientSecret",
            Method::PUT,
            &["v1", "users", "client", "secret"],
        );
        call.request_id = request_id;
        call.token = token;
        // A second PUT after a lost answer would rotate the secret again;
        // the caller reads the secret back instead (docs/design.md §4).
        call.repeatable = false;
        self.one(call).await
    }

    /// `GET /v1/users/{userId}/object-storages/credentials`, every page.
    pub async fn list_credentials(
        &self,
        user_id: &str,
        filter: &CredentialFilter,
    ) -> Result<Vec<Credential>, ApiError> {
        let mut query = Vec::new();
        push(
            &mut query,
            "objectStorageId",
            filter.object_storage_id.clone(),
        );
        push(&mut query, "regionName", filter.region_name.clone());
        push(&mut query, "displayName", filter.display_name.clone());
        push(&mut query, "orderBy", Some("credentialId:asc".to_owned()));
        let path = ["v1", "users", user_id, "object-storages", "credentials"];
        self.list_all("listObjectStorageCredentials", &path, query)
            .await
    }

    /// `GET /v1/users/{userId}/object-storages/{objectStorageId}/credentials/{credentialId}`.
    pub async fn get_credential(
        &self,
        user_id: &str,
        object_storage_id: &str,
        credential_id: i64,
    ) -> Result<Credential, ApiError> {
        let id = credential_id.to_string();
        let path = credential_path(user_id, object_storage_id, &id);
        let call = Call::new("getObjectStorageCredentials", Method::GET, &path);
        self.one(call).await
    }

    /// `PATCH …/credentials/{credentialId}`: regenerates the credential and
    /// returns it with its new keys. `request_id` is typically the rotation id.
    pub async fn regenerate_credential(
        &self,
        user_id: &str,
        object_storage_id: &str,
        credential_id: i64,
        request_id: Option<Uuid>,
    ) -> Result<Credential, ApiError> {
        self.regenerate_credential_unless(
            user_id,
            object_storage_id,
            credential_id,
            request_id,
            None,
        )
        .await
    }

    /// [`Self::regenerate_credential`], not sent if `stop` is cancelled by
    /// the time the call has its slot ([`ApiError::Stopped`]): several can
    /// wait for slots at once, and none that has not been sent outlives a
    /// shutdown signal.
    pub async fn regenerate_credential_unless(
        &self,
        user_id: &str,
        object_storage_id: &str,
        credential_id: i64,
        request_id: Option<Uuid>,
        stop: Option<&CancellationToken>,
    ) -> Result<Credential, ApiError> {
        let id = credential_id.to_string();
        let path = credential_path(user_id, object_storage_id, &id);
        let mut call = Call::new("regenerateObjectStorageCredentials", Method::PATCH, &path);
        call.request_id = request_id;
        call.stop = stop;
        self.one(call).await
    }

    /// `POST /v1/users/{userId}/reset-password`: sends the user an e-mail.
    pub async fn reset_password(
        &self,
        user_id: &str,
        redirect_url: Option<&str>,
    ) -> Result<(), ApiError> {
        let path = ["v1", "users", user_id, "reset-password"];
        let mut call = Call::new("resetPassword", Method::POST, &path);
        push(
            &mut call.query,
            "redirectUrl",
            redirect_url.map(str::to_owned),
        );
        self.send(call).await.map(drop)
    }

    /// `POST /v1/users/{userId}/resend-email-verification`.
    pub async fn resend_email_verification(
        &self,
        user_id: &str,
        redirect_url: Option<&str>,
    ) -> Result<(), ApiError> {
        let path = ["v1", "users", user_id, "resend-email-verification"];
        let mut call = Call::new("resendEmailVerification", Method::POST, &path);
        push(
            &mut call.query,
            "redirectUrl",
            redirect_url.map(str::to_owned),
        );
        self.send(call).await.map(drop)
    }

    /// `GET /v1/object-storages`, every page (for each storage's `s3Url`).
    pub async fn list_object_storages(&self) -> Result<Vec<ObjectStorage>, ApiError> {
        self.list_all(
            "retrieveObjectStorageList",
            &["v1", "object-storages"],
            vec![("orderBy", "objectStorageId:asc".to_owned())],
        )
        .await
    }

    /// Walks every page of a list endpoint (in a stable `orderBy`, so that
    /// pages neither overlap nor skip). A walk whose item count differs
    /// from `_pagination.totalElements` (the list changed while it was
    /// read) is walked again once; a second mismatch is an error.
    async fn list_all<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &[&str],
        query: Vec<(&'static str, String)>,
    ) -> Result<Vec<T>, ApiError> {
        let mut walks = 0;
        loop {
            walks += 1;
            let (items, total) = self.walk(op, path, &query).await?;
            match total {
                Some(expected) if expected != items.len() as i64 => {
                    if walks >= 2 {
                        return Err(ApiError::Miscounted {
                            op,
                            received: items.len(),
                            expected,
                        });
                    }
                    tracing::info!(
                        op,
                        received = items.len(),
                        expected,
                        "A list's count differs from its totalElements; reading it again."
                    );
                }
                _ => return Ok(items),
            }
        }
    }

    /// One walk: every page by `_pagination`, with the `totalElements` it
    /// promised. Once the first page says how many pages there are, the
    /// rest are requested together (the request slots bound them) and taken
    /// in page order; a server without a usable `_pagination` is walked one
    /// page after another.
    async fn walk<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: &[&str],
        query: &[(&'static str, String)],
    ) -> Result<(Vec<T>, Option<i64>), ApiError> {
        let fetch = |page: i64| {
            let mut call = Call::new(op, Method::GET, path);
            call.query = query.to_vec();
            call.query.push(("page", page.to_string()));
            call.query.push(("size", self.inner.page_size.to_string()));
            async move {
                let envelope: Envelope<T> = parse(op, &self.send(call).await?)?;
                let data = envelope.data.ok_or_else(|| no_data(op))?;
                Ok::<_, ApiError>((data, envelope.pagination.unwrap_or_default()))
            }
        };
        let (mut items, first) = fetch(1).await?;
        if let Some(total_pages) = first.total_pages.filter(|t| *t >= 0) {
            if total_pages > MAX_PAGES {
                return Err(ApiError::Malformed {
                    op,
                    detail: format!("more than {MAX_PAGES} pages"),
                });
            }
            if total_pages > 1 && items.is_empty() {
                return Err(truncated(op, 1, total_pages, 0, &first));
            }
            let rest = futures_util::future::join_all((2..=total_pages).map(fetch)).await;
            for (page, result) in (2..).zip(rest) {
                let (data, _) = result?;
                if data.is_empty() {
                    return Err(truncated(op, page, total_pages, items.len(), &first));
                }
                items.extend(data);
            }
            return Ok((items, first.total_elements.filter(|t| *t >= 0)));
        }
        // Without a usable `_pagination`, a short or empty page ends the
        // list (a server that ignores `page` cannot loop us).
        let mut received = items.len();
        let mut page: i64 = 1;
        while received >= self.inner.page_size as usize {
            page += 1;
            if page > MAX_PAGES {
                return Err(ApiError::Malformed {
                    op,
                    detail: format!("more than {MAX_PAGES} pages"),
                });
            }
            let (data, _) = fetch(page).await?;
            received = data.len();
            items.extend(data);
        }
        Ok((items, None))
    }

    /// A call whose answer is `{data: [one]}`.
    async fn one<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, ApiError> {
        let op = call.op;
        let envelope: Envelope<T> = parse(op, &self.send(call).await?)?;
        envelope
            .data
            .and_then(|d| d.into_iter().next())
            .ok_or_else(|| no_data(op))
    }

    /// Sends one logical call with retries; returns the body of the 2xx answer.
    async fn send(&self, mut call: Call<'_>) -> Result<bytes::Bytes, ApiError> {
        let mut backoff = self.inner.retry.start(call.op);
        // The first attempt of a mutating call that got no answer: whatever
        // later attempts answer, it may have been applied.
        let mut maybe_applied: Option<ApiError> = None;
        let mutating = call.method != Method::GET;
        loop {
            let attempt = self.attempt(&call).await;
            // Only the first attempt may be held back: a retry finishes
            // a call that was sent.
            call.stop = None;
            let result = match attempt {
                Ok(body) => return Ok(body),
                Err(err @ ApiError::Stopped { .. }) => return Err(err),
                // A 429 pauses every task, not only this one; the next
                // attempt (of any call) waits for the shared pause.
                Err(err @ ApiError::RateLimited { .. }) => backoff.next(err).map(|delay| {
                    self.inner.health.pause(delay);
                    Duration::ZERO
                }),
                Err(err) if !call.repeatable => Err(err),
                Err(err) => {
                    if mutating && maybe_applied.is_none() && err.outcome_unknown() {
                        maybe_applied = Some(err.clone());
                    }
                    backoff.next(err)
                }
            };
            match result {
                Ok(delay) => {
                    self.inner.observer.retry(call.op);
                    tokio::time::sleep(delay).await
                }
                Err(last) => {
                    self.inner.observer.give_up(call.op);
                    return Err(match maybe_applied {
                        Some(first) if !last.outcome_unknown() => ApiError::MaybeApplied {
                            op: call.op,
                            first: Box::new(first),
                            last: Box::new(last),
                        },
                        _ => last,
                    });
                }
            }
        }
    }

    /// One attempt, including at most one re-login after a 401.
    async fn attempt(&self, call: &Call<'_>) -> Result<bytes::Bytes, ApiError> {
        let op = call.op;
        let mut relogged = false;
        loop {
            let token = match call.token {
                Some(pinned) => pinned.clone(),
                None => self.inner.auth.access_token().await?,
            };
            let status = self.http_once(call, &token).await?;
            match status {
                Answer::Ok(body) => return Ok(body),
                Answer::Unauthorized if !relogged && call.token.is_none() => {
                    tracing::debug!(op, "HTTP 401; logging in again.");
                    self.inner.auth.invalidate(token.generation).await;
                    relogged = true;
                }
                Answer::Unauthorized => return Err(ApiError::Unauthorized { op }),
                Answer::Err(err) => return Err(err),
            }
        }
    }

    async fn http_once(&self, call: &Call<'_>, token: &AccessToken) -> Result<Answer, ApiError> {
        let op = call.op;
        let inner = &self.inner;
        inner.health.wait().await;
        let _slot = inner.slots.acquire().await.expect("semaphore never closed");
        inner.limiter.until_ready().await;
        // Checked last: a call that waited for a slot is not sent once the
        // breaker has opened meanwhile.
        inner.health.check(op)?;
        if call.stop.is_some_and(|stop| stop.is_cancelled()) {
            return Err(ApiError::Stopped { op });
        }
        let request_id = call.request_id.unwrap_or_else(Uuid::new_v4);
        let mut url = inner.base_url.clone();
        url.path_segments_mut()
            .map_err(|_| ApiError::Setup("base_url cannot have a path".into()))?
            .pop_if_empty()
            .extend(call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let mut request = inner
            .http
            .request(call.method.clone(), url)
            .bearer_auth(token.bearer())
            .header("x-request-id", request_id.to_string())
            .header("x-trace-id", &*self.trace_id)
            .timeout(inner.timeout);
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let sent = std::time::Instant::now();
        let response = request.send().await.map_err(|e| {
            self.inner.observer.request(op, 0, sent.elapsed());
            inner.health.record(op, true);
            ApiError::from_reqwest(op, e, inner.timeout)
        })?;
        let status = response.status().as_u16();
        inner
            .health
            .record(op, status == 429 || (500..=599).contains(&status));
        self.inner.observer.request(op, status, sent.elapsed());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_body(op, response, inner.timeout).await?;
        tracing::debug!(op, status, %request_id, "Contabo API answered.");
        Ok(match status {
            200..=299 => Answer::Ok(body),
            401 => Answer::Unauthorized,
            429 => Answer::Err(inner.health.rate_limited(op, retry_after)),
            300..=399 => Answer::Err(ApiError::Redirect { op, status }),
            500..=599 => Answer::Err(ApiError::Server {
                op,
                status,
                message: vendor_message(&body),
            }),
            _ => Answer::Err(ApiError::Status {
                op,
                status,
                message: vendor_message(&body),
            }),
        })
    }
}

enum Answer {
    Ok(bytes::Bytes),
    Unauthorized,
    Err(ApiError),
}

/// Reads a body of at most [`MAX_BODY`] bytes.
async fn read_body(
    op: &'static str,
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ApiError::from_reqwest(op, e, timeout))?
    {
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::Malformed {
                op,
                detail: format!("body larger than {} MiB", MAX_BODY / (1024 * 1024)),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn parse<T: DeserializeOwned>(op: &'static str, body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Malformed {
            op,
            detail: "empty body".into(),
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(op, &e))
}

fn no_data(op: &'static str) -> ApiError {
    ApiError::Malformed {
        op,
        detail: "no `data` array".into(),
    }
}

fn push(query: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<String>) {
    if let Some(v) = value {
        query.push((key, v));
    }
}

fn credential_path<'a>(user_id: &'a str, storage: &'a str, id: &'a str) -> [&'a str; 7] {
    [
        "v1",
        "users",
        user_id,
        "object-storages",
        storage,
        "credentials",
        id,
    ]
}

/// A trace id for one run: `contabo-rotator-<uuid>`.
pub fn new_trace_id() -> String {
    format!("contabo-rotator-{}", Uuid::new_v4())
}
