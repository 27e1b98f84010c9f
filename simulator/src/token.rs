//! The Keycloak token endpoint (`grant_type=password` and
//! `grant_type=refresh_token`), the JWT-shaped tokens it issues, the store
//! that remembers them, and the bearer check of the `/v1` endpoints.
//!
//! Tokens are kept only as SHA-256 digests; the values themselves exist in
//! the response and in the issued-secrets log. Expiry uses
//! `tokio::time::Instant`, so tests with a paused clock can let tokens lapse.

use std::collections::HashMap;

use axum::response::Response;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CACHE_CONTROL, PRAGMA};
use hyper::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::state::State;
use super::wire;

type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Issued access and refresh tokens, by digest.
#[derive(Debug, Default)]
pub(super) struct TokenStore {
    access: HashMap<TokenDigest, AccessEntry>,
    refresh: HashMap<TokenDigest, RefreshEntry>,
}

#[derive(Debug)]
struct AccessEntry {
    /// userId (`sub`) the token was issued to.
    subject: String,
    expires: Instant,
}

#[derive(Debug)]
struct RefreshEntry {
    subject: String,
    /// Client the token was issued to; a refresh by another client fails.
    client_id: String,
    /// Keycloak session; kept across refreshes.
    session_state: String,
    expires: Instant,
}

impl TokenStore {
    /// The subject of `token` if it was issued here and has not expired.
    /// Access tokens survive a client-secret rotation, as JWTs do.
    pub(super) fn access_subject(&self, token: &str) -> Option<&str> {
        self.access
            .get(&digest(token))
            .filter(|e| Instant::now() < e.expires)
            .map(|e| e.subject.as_str())
    }

    /// Lets every access token issued so far expire now.
    pub(super) fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for entry in self.access.values_mut() {
            entry.expires = now;
        }
    }
}

/// True when `headers` carry `Authorization: Bearer <token>` with a live
/// token of a user that still exists.
pub(super) fn authenticate(state: &State, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    state
        .tokens
        .access_subject(token.trim())
        .is_some_and(|sub| state.user(sub).is_some())
}

/// A Keycloak-style OAuth2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    wire::json(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn not_active() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "Token is not active",
    )
}

/// Client credentials from an `Authorization: Basic` header, which Keycloak
/// accepts as an alternative to form fields.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// `POST /auth/realms/contabo/protocol/openid-connect/token`.
pub(super) fn handle(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let Some(grant_type) = field("grant_type") else {
        return invalid_request("Missing form parameter: grant_type");
    };
    let basic = basic_credentials(headers);
    let client_id = field("client_id").or(basic.as_ref().map(|(id, _)| id.as_str()));
    let Some(client_id) = client_id else {
        return invalid_request("Missing parameter: client_id");
    };
    let client_secret = field("client_secret").or(basic.as_ref().map(|(_, s)| s.as_str()));
    let Some(client_secret) = client_secret else {
        return invalid_request("Missing parameter: client_secret");
    };
    if client_id != state.client_id {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    }
    if !state.client_secret_matches(client_secret) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client secret",
        );
    }
    match grant_type {
        "password" => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return invalid_request("Missing parameter: username or password");
            };
            password_grant(state, username, password)
        }
        "refresh_token" => {
            let Some(token) = field("refresh_token") else {
                return invalid_request("Missing parameter: refresh_token");
            };
            refresh_grant(state, token)
        }
        _ => invalid_request("Unsupported grant_type"),
    }
}

fn password_grant(state: &mut State, username: &str, password: &str) -> Response {
    let user = state
        .user_by_email(username)
        .filter(|u| u.user_id == state.api_user_id);
    let Some(user) = user.filter(|_| state.password.expose_secret() == password) else {
        tracing::debug!("Token request refused: invalid user credentials.");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        );
    };
    if !user.enabled {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Account disabled");
    }
    let subject = user.user_id.clone();
    let session_state = state.uuid();
    issue(state, subject, session_state)
}

fn refresh_grant(state: &mut State, token: &str) -> Response {
    let Some(entry) = state.tokens.refresh.get(&digest(token)) else {
        return not_active();
    };
    if Instant::now() >= entry.expires {
        return not_active();
    }
    if entry.client_id != state.client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token. Token client and authorized client don't match",
        );
    }
    let (subject, session_state) = (entry.subject.clone(), entry.session_state.clone());
    match state.user(&subject) {
        None => not_active(),
        Some(u) if !u.enabled => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Account disabled")
        }
        Some(_) => issue(state, subject, session_state),
    }
}

/// A JWT-shaped token: base64url header and payload, random signature.
fn jwt(state: &mut State, header: &Value, payload: &Value, signature_len: usize) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON serialises"));
    let signature = URL_SAFE_NO_PAD.encode(state.random_bytes(signature_len));
    format!("{}.{}.{signature}", part(header), part(payload))
}

/// Issues an access and a refresh token to `subject` and answers with them.
fn issue(state: &mut State, subject: String, session_state: String) -> Response {
    let iat = chrono::Utc::now().timestamp();
    let access_ttl = state.access_token_ttl;
    let refresh_ttl = state.refresh_token_ttl;
    let (email, given, family) = state
        .user(&subject)
        .map(|u| (u.email.clone(), u.first_name.clone(), u.last_name.clone()))
        .unwrap_or_default();
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let access_payload = json!({
        "exp": iat.saturating_add(secs(access_ttl)),
        "iat": iat,
        "jti": state.uuid(),
        "iss": state.issuer,
        "aud": "account",
        "sub": subject,
        "typ": "Bearer",
        "azp": state.client_id,
        "session_state": session_state,
        "scope": "profile email",
        "email_verified": true,
        "name": format!("{given} {family}"),
        "given_name": given,
        "family_name": family,
        "preferred_username": email,
        "email": email,
        "tenantId": state.tenant_id,
        "customerId": state.customer_id,
    });
    let refresh_payload = json!({
        "exp": iat.saturating_add(secs(refresh_ttl)),
        "iat": iat,
        "jti": state.uuid(),
        "iss": state.issuer,
        "aud": state.issuer,
        "sub": subject,
        "typ": "Refresh",
        "azp": state.client_id,
        "session_state": session_state,
        "scope": "profile email",
    });
    let access = jwt(
        state,
        &json!({"alg": "RS256", "typ": "JWT"}),
        &access_payload,
        256,
    );
    let refresh = jwt(
        state,
        &json!({"alg": "HS512", "typ": "JWT"}),
        &refresh_payload,
        64,
    );
    let now = Instant::now();
    state.tokens.access.insert(
        digest(&access),
        AccessEntry {
            subject: subject.clone(),
            expires: now + access_ttl,
        },
    );
    state.tokens.refresh.insert(
        digest(&refresh),
        RefreshEntry {
            subject,
            client_id: state.client_id.clone(),
            session_state: session_state.clone(),
            expires: now + refresh_ttl,
        },
    );
    let access = SecretString::from(access);
    let refresh = SecretString::from(refresh);
    state.record_secret(&access);
    state.record_secret(&refresh);
    tracing::debug!("Issued an access and a refresh token.");
    let mut resp = wire::json(
        StatusCode::OK,
        &json!({
            "access_token": access.expose_secret(),
            "expires_in": access_ttl.as_secs(),
            "refresh_expires_in": refresh_ttl.as_secs(),
            "refresh_token": refresh.expose_secret(),
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session_state,
            "scope": "profile email",
        }),
    );
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
