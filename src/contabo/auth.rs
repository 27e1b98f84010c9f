//! OAuth2 against Contabo's Keycloak: password grant, refresh grant, token cache.
//!
//! One [`Authenticator`] serves every request of a client. It hands out the
//! cached access token while it has more than a safety margin left, renews it
//! with the refresh token when it can, and falls back to a password grant. A
//! request that meets a 401 calls [`Authenticator::invalidate`] with the
//! generation it used, so concurrent 401s lead to one new login, not many.

use super::error::{clean_text, ApiError};
use super::health::{counts_as_failure, Health};
use super::lenient;
use crate::retry::{parse_retry_after, RetryPolicy};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use url::Url;

const OP: &str = "token";

/// What the password grant needs. The client secret can change at run time
/// (after a rotation) through [`Authenticator::set_client_secret`].
#[derive(Clone)]
pub struct LoginCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for LoginCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// An access token handed to one request, with the login it came from.
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    /// Increases with every login; used to invalidate exactly this token.
    pub generation: u64,
    /// The `sub` claim: the API user's id.
    pub subject: String,
    /// When the token stops working: from the login's `expires_in`, or
    /// the JWT's `exp` for a token saved earlier; `None` if unknown.
    pub expires_at: Option<Instant>,
}

impl AccessToken {
    /// The bearer value, for the one line that builds the header.
    pub(crate) fn bearer(&self) -> &str {
        self.value.expose_secret()
    }

    /// The token's value, to save it where secrets are kept.
    pub(crate) fn secret(&self) -> SecretString {
        self.value.clone()
    }

    /// A token saved earlier (by [`AccessToken::secret`]), for requests
    /// pinned to it. Its generation is 0, which no login has.
    pub(crate) fn saved(value: SecretString) -> AccessToken {
        crate::known_secrets::register_token(&value);
        let claims = jwt_claims(value.expose_secret());
        let subject = claims
            .as_ref()
            .and_then(|c| c.sub.clone())
            .unwrap_or_default();
        let expires_at = claims.and_then(|c| c.exp).map(|exp| {
            let left = exp - chrono::Utc::now().timestamp();
            Instant::now() + Duration::from_secs(left.max(0) as u64)
        });
        AccessToken {
            value,
            generation: 0,
            subject,
            expires_at,
        }
    }

    /// How long the token still works (zero once expired; `None` if unknown).
    pub fn remaining(&self) -> Option<Duration> {
        self.expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.generation)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

struct CachedToken {
    access: AccessToken,
    access_expires: Instant,
    refresh: Option<(SecretString, Instant)>,
    /// Renew this long before expiry: a fifth of the lifetime, at most 30 s.
    margin: Duration,
}

impl CachedToken {
    fn fresh(&self) -> bool {
        Instant::now() + self.margin < self.access_expires
    }
    fn refresh_token(&self) -> Option<&SecretString> {
        self.refresh
            .as_ref()
            .filter(|(_, until)| Instant::now() + Duration::from_secs(5) < *until)
            .map(|(t, _)| t)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(deserialize_with = "lenient::secret")]
    access_token: SecretString,
    #[serde(default, deserialize_with = "lenient::int")]
    expires_in: i64,
    #[serde(default, deserialize_with = "opt_secret")]
    refresh_token: Option<SecretString>,
    #[serde(default, deserialize_with = "lenient::int")]
    refresh_expires_in: i64,
}

fn opt_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let s = lenient::string(d)?;
    Ok((!s.is_empty()).then(|| SecretString::from(s)))
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

/// Obtains and caches access tokens for one Contabo API user.
pub struct Authenticator {
    http: reqwest::Client,
    token_url: Url,
    timeout: Duration,
    retry: RetryPolicy,
    credentials: RwLock<LoginCredentials>,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
    generation: std::sync::atomic::AtomicU64,
    /// The API client's 429 cap and circuit breaker.
    health: Arc<Health>,
    observer: Arc<dyn super::ApiObserver>,
}

impl Authenticator {
    pub fn new(
        http: reqwest::Client,
        token_url: Url,
        credentials: LoginCredentials,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        // The secret logged in with may be the stored one of an earlier
        // rotation, not the configuration's: known for redaction either way.
        crate::known_secrets::register(&credentials.client_secret);
        Authenticator {
            http,
            token_url,
            timeout,
            retry,
            credentials: RwLock::new(credentials),
            cache: tokio::sync::Mutex::new(None),
            generation: Default::default(),
            health: Arc::new(Health::new(Duration::from_secs(60), u32::MAX)),
            observer: Arc::new(super::observer::Unobserved),
        }
    }

    /// Tells `observer` of every login attempt (the API client's).
    pub fn with_observer(mut self, observer: Arc<dyn super::ApiObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Shares the API client's 429 cap and circuit breaker.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// The configured OAuth client id.
    pub fn client_id(&self) -> String {
        self.read_credentials().client_id.clone()
    }

    /// A valid access token: the cached one, a refreshed one, or a new login.
    pub async fn access_token(&self) -> Result<AccessToken, ApiError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| c.fresh()) {
            return Ok(cached.access.clone());
        }
        let refreshed = match cache.as_ref().and_then(CachedToken::refresh_token) {
            Some(refresh) => match self.refresh_grant(refresh).await {
                Ok(token) => Some(token),
                Err(err) => {
                    tracing::debug!(error = %err, "Refresh grant failed; logging in again.");
                    None
                }
            },
            None => None,
        };
        let token = match refreshed {
            Some(token) => token,
            None => {
                let creds = self.read_credentials().clone();
                self.password_grant(&creds).await?
            }
        };
        let access = token.access.clone();
        *cache = Some(token);
        Ok(access)
    }

    /// The client secret new logins use now.
    pub fn client_secret(&self) -> SecretString {
        self.read_credentials().client_secret.clone()
    }

    /// Drops the cached token if it is still the one of `generation` (after a 401).
    pub async fn invalidate(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|c| c.access.generation == generation)
        {
            *cache = None;
        }
    }

    /// Logs in with the given client secret without touching the cache: the
    /// way to prove that a freshly generated secret works.
    pub async fn login_with_secret(&self, secret: &SecretString) -> Result<AccessToken, ApiError> {
        let mut creds = self.read_credentials().clone();
        creds.client_secret = secret.clone();
        Ok(self.password_grant(&creds).await?.access)
    }

    /// From now on log in with this client secret. The cached access token
    /// stays (tokens already issued remain valid); its refresh token is
    /// dropped because a refresh grant must present the current secret.
    pub async fn set_client_secret(&self, secret: SecretString) {
        crate::known_secrets::register(&secret);
        self.credentials
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .client_secret = secret;
        if let Some(cached) = self.cache.lock().await.as_mut() {
            cached.refresh = None;
        }
    }

    fn read_credentials(&self) -> std::sync::RwLockReadGuard<'_, LoginCredentials> {
        self.credentials.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn password_grant(&self, creds: &LoginCredentials) -> Result<CachedToken, ApiError> {
        let form = [
            ("grant_type", "password"),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.expose_secret()),
            ("username", creds.username.as_str()),
            ("password", creds.password.expose_secret()),
        ];
        self.grant(&form).await
    }

    async fn refresh_grant(&self, refresh: &SecretString) -> Result<CachedToken, ApiError> {
        let creds = self.read_credentials().clone();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.expose_secret()),
            ("refresh_token", refresh.expose_secret()),
        ];
        self.grant(&form).await
    }

    async fn grant(&self, form: &[(&str, &str)]) -> Result<CachedToken, ApiError> {
        let mut backoff = self.retry.start(OP);
        loop {
            self.health.check(OP)?;
            let result = self.grant_once(form).await;
            let failed = result.as_ref().err().is_some_and(counts_as_failure);
            self.health.record(OP, failed);
            match result {
                Ok(token) => return Ok(token),
                Err(err) => match backoff.next(err) {
                    Ok(delay) => {
                        self.observer.retry(OP);
                        tokio::time::sleep(delay).await
                    }
                    Err(last) => {
                        self.observer.give_up(OP);
                        return Err(last);
                    }
                },
            }
        }
    }

    async fn grant_once(&self, form: &[(&str, &str)]) -> Result<CachedToken, ApiError> {
        let started = Instant::now();
        let response = self
            .http
            .post(self.token_url.clone())
            .form(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                self.observer.request(OP, 0, started.elapsed());
                ApiError::from_reqwest(OP, e, self.timeout)
            })?;
        let status = response.status();
        self.observer
            .request(OP, status.as_u16(), started.elapsed());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::from_reqwest(OP, e, self.timeout))?;
        match status.as_u16() {
            200..=299 => {}
            429 => return Err(self.health.rate_limited(OP, retry_after)),
            s @ 300..=399 => return Err(ApiError::Redirect { op: OP, status: s }),
            s @ 500..=599 => {
                return Err(ApiError::Server {
                    op: OP,
                    status: s,
                    message: None,
                })
            }
            s => {
                let parsed: Option<OAuthError> = serde_json::from_slice(&body).ok();
                let (error, description) = parsed
                    .map(|e| (e.error, e.error_description))
                    .unwrap_or_default();
                return Err(ApiError::LoginRefused {
                    status: s,
                    error: clean_text(error.as_deref().unwrap_or("unknown_error"), 80),
                    description: description.map(|d| clean_text(&d, 200)),
                });
            }
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| ApiError::malformed_json(OP, &e))?;
        let subject = jwt_subject(parsed.access_token.expose_secret()).ok_or_else(|| {
            ApiError::Malformed {
                op: OP,
                detail: "the access token carries no readable `sub` claim".into(),
            }
        })?;
        crate::known_secrets::register_token(&parsed.access_token);
        if let Some(refresh) = &parsed.refresh_token {
            crate::known_secrets::register_token(refresh);
        }
        let lifetime = Duration::from_secs(parsed.expires_in.clamp(1, 86_400 * 365) as u64);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        tracing::debug!(
            generation,
            expires_in = lifetime.as_secs(),
            "Obtained an access token."
        );
        let refresh = parsed.refresh_token.map(|t| {
            let ttl = Duration::from_secs(parsed.refresh_expires_in.max(0) as u64);
            (t, started + ttl)
        });
        Ok(CachedToken {
            access: AccessToken {
                value: parsed.access_token,
                generation,
                subject,
                expires_at: Some(started + lifetime),
            },
            access_expires: started + lifetime,
            refresh,
            margin: (lifetime / 5).min(Duration::from_secs(30)),
        })
    }
}

/// The `sub` claim of a JWT, read without verifying the signature (the token
/// is only ever sent back to the server that issued it).
pub fn jwt_subject(token: &str) -> Option<String> {
    jwt_claims(token)?.sub.filter(|s| !s.is_empty())
}

/// The claims of a JWT this client reads (unverified, as above).
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    /// Expiry, seconds since the epoch.
    exp: Option<i64>,
}

fn jwt_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_read_from_the_payload() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"sub":"6cdf5968-f9fe-4192-97c2-f349e813c5e8","exp":1}"#)
        );
        assert_eq!(
            jwt_subject(&token).as_deref(),
            Some("6cdf5968-f9fe-4192-97c2-f349e813c5e8")
        );
        assert_eq!(jwt_subject("not-a-jwt"), None);
        assert_eq!(jwt_subject(&format!("a.{}.c", b64("{}"))), None);
    }

    #[test]
    fn debug_hides_credentials_and_tokens() {
        let creds = LoginCredentials {
            client_id: "INT-1".into(),
            client_secret: SecretString::from("CLIENT-SECRET-VALUE"),
            username: "u@example.com".into(),
            password: SecretString::from("PASSWORD-VALUE"),
        };
        let token = AccessToken {
            value: SecretString::from("TOKEN-VALUE"),
            generation: 1,
            subject: "sub".into(),
            expires_at: None,
        };
        let text = format!("{creds:?} {token:?} {creds:#?}");
        for secret in ["CLIENT-SECRET-VALUE", "PASSWORD-VALUE", "TOKEN-VALUE"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
