//! Client-secret rotation, the state machine of docs/design.md §4.
//!
//! 1. Log in afresh with the secret in use and save that token with the
//!    stored secret (0600, fsync) before the PUT: its whole lifetime is the
//!    recovery window. A process killed after the API switched secrets and
//!    before the new one was stored reads it back with that token on its
//!    next start ([`recover_refused`]). Every wait below is bounded by the
//!    token's remaining life.
//! 2. PUT. The answer's secret, when there is one, is the new secret.
//!    Otherwise the secret is read back with the saved token:
//!    - after an HTTP answer (500, 503, any 4xx) at once: the request is over;
//!    - after a 502 or 504, a timeout or a dropped connection the request
//!      may still be applied: the read-back is polled with backoff until the
//!      secret changes or one request timeout has passed;
//!    - after a 2xx without a usable secret the outcome is unknown: a
//!      read-back that still shows the old secret settles nothing.
//!
//!    The PUT is sent again only when a read-back proves it was not
//!    applied; a 429 on it is waited for (`Retry-After`, shared pause). A
//!    read-back that proves the old secret still works is also the moment
//!    to renew a window about to close: a new login with the old secret.
//! 3. Store the new secret (retried with backoff), switch logins to it,
//!    confirm it with a fresh login (retrying while the identity provider
//!    catches up), record it. The journal's intent stays until the secret
//!    is stored; every settle removes the recovery token.

use super::{Engine, Rotated, RunReport};
use crate::contabo::{AccessToken, ApiError, ContaboClient};
use crate::crash;
use crate::state::{
    AuditEvent, AuditKind, ClientSecretRecord, Fingerprint, Intent, IntentKind, Journal, Records,
    StateDir, StateError, StoredClientSecret,
};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Attempts to log in with a new secret before calling it unconfirmed.
const CONFIRM_ATTEMPTS: u32 = 6;
/// Attempts to store a secret (ENOSPC, EIO …) before leaving it to the next run.
const STORE_ATTEMPTS: u32 = 5;
/// Used for a saved token whose expiry is unknown.
const UNKNOWN_TOKEN_LIFE: Duration = Duration::from_secs(60);

/// What the PUT ended in.
enum Put {
    /// The API holds this new secret (from the answer or a read-back).
    Applied(SecretString),
    /// Proven not applied: the intent is settled.
    NotApplied(String),
    /// Not known: the intent stays, and the next run reads the secret back.
    Unknown(String),
}

/// How a PUT that handed back no secret is followed up.
#[derive(Debug, Clone, Copy, PartialEq)]
enum After {
    /// Never acted on (a 429 given up on, a `Retry-After` beyond the cap,
    /// the breaker open): nothing to read back.
    NotSent,
    /// An HTTP answer: the request is over; read back at once.
    Answered,
    /// A 2xx without a usable secret: read back, and never settle on
    /// "unchanged".
    AnsweredWithoutSecret,
    /// 502, 504, a timeout or a dropped connection: may still be applied.
    MaybeInFlight,
}

fn classify(err: &ApiError) -> After {
    match err {
        ApiError::GaveUp { last, .. } => classify(last),
        ApiError::RateLimited { .. }
        | ApiError::RetryAfterTooLong { .. }
        | ApiError::CircuitOpen { .. }
        | ApiError::Setup(_) => After::NotSent,
        ApiError::Server {
            status: 502 | 504, ..
        }
        | ApiError::Timeout { .. }
        | ApiError::Transport { .. } => After::MaybeInFlight,
        ApiError::Malformed { .. } | ApiError::Truncated { .. } => After::AnsweredWithoutSecret,
        _ => After::Answered,
    }
}

/// The saved token of one rotation: its remaining life bounds every wait.
struct Window {
    token: AccessToken,
}

impl Window {
    fn left(&self) -> Duration {
        self.token.remaining().unwrap_or(UNKNOWN_TOKEN_LIFE)
    }
}

/// Rotates the client secret; returns the new secret when the API holds one
/// (stored, or in use and left for the next run to store).
pub(super) async fn rotate(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    report: &mut RunReport,
) -> Option<SecretString> {
    let mut begun = begin(engine, client, report).await?;
    let (state, subject) = (&engine.state, begun.subject.clone());
    let rotation_id = begun.rotation_id;
    tracing::info!(%rotation_id, client_id = %subject, "Generating a new client secret.");
    let mut window = Window {
        token: begun.token.clone(),
    };
    let new_secret = match put(
        engine,
        client,
        rotation_id,
        &mut window,
        &begun.old_secret,
        &begun.old_fp,
    )
    .await
    {
        Put::Applied(secret) => secret,
        Put::NotApplied(why) => {
            settle(state, &mut begun.journal, rotation_id);
            report.fail("client_secret", subject, why);
            return None;
        }
        Put::Unknown(why) => {
            report.fail(
                "client_secret",
                subject,
                format!("outcome unknown: {why}; the next run reads the secret back"),
            );
            return None;
        }
    };
    crash::point("client-secret-after-put");
    let now = Utc::now();
    let (new_secret, confirmed) = match store_and_confirm(
        engine,
        client,
        &window,
        rotation_id,
        now,
        new_secret,
    )
    .await
    {
        Ok(stored) => stored,
        Err((new_secret, err)) => {
            report.fail(
                    "client_secret",
                    subject,
                    format!("the new secret is in use but NOT stored: {err}; the rotation stays pending until it is"),
                );
            return Some(new_secret);
        }
    };
    crash::point("client-secret-after-confirm");
    let new_fp = state.fingerprint(&new_secret);
    let first_seen = records
        .client_secret
        .as_ref()
        .map(|r| r.first_seen)
        .unwrap_or(now);
    records.client_secret = Some(ClientSecretRecord {
        first_seen,
        rotated_at: Some(now),
        rotation_id: Some(rotation_id),
        fingerprint: new_fp,
    });
    if let Err(err) = state.save_records(records) {
        report.fail("state", "records", err);
        return Some(new_secret);
    }
    settle(state, &mut begun.journal, rotation_id);
    finish(state, client, &begun, now, new_fp, confirmed, report);
    Some(new_secret)
}

/// A rotation whose intent is journaled and whose recovery token is saved:
/// the PUT may be sent.
struct Begun {
    subject: String,
    old_secret: SecretString,
    old_fp: Fingerprint,
    /// A fresh token, whose life is the window in which an unstored new
    /// secret can still be read back.
    token: AccessToken,
    rotation_id: Uuid,
    journal: Journal,
}

/// Logs in afresh, journals the intent and saves the recovery token; on
/// failure reports why and returns `None` (nothing was sent).
async fn begin(engine: &Engine, client: &ContaboClient, report: &mut RunReport) -> Option<Begun> {
    let state = &engine.state;
    let subject = engine.settings.api.client_id.clone();
    let old_secret = client.auth().client_secret();
    let old_fp = state.fingerprint(&old_secret);
    // A fresh login: a cached token may have seconds left.
    let token = match client.auth().login_with_secret(&old_secret).await {
        Ok(t) => t,
        Err(err) => {
            report.fail("client_secret", subject, err);
            return None;
        }
    };
    let rotation_id = Uuid::new_v4();
    let mut journal = match state.load_journal() {
        Ok(j) => j,
        Err(err) => {
            report.fail("state", "journal", err);
            return None;
        }
    };
    journal.begin(Intent {
        rotation_id,
        started_at: Utc::now(),
        kind: IntentKind::ClientSecret {
            old_fingerprint: old_fp,
        },
    });
    if let Err(err) = state.save_journal(&journal) {
        report.fail("state", "journal", err);
        return None;
    }
    crash::point("client-secret-after-journal");
    // Without the token on disk, a crash after the PUT is applied and before
    // the new secret is stored would lock the daemon out: do not start.
    if let Err(err) = save_recovery_token(engine, client, &token, rotation_id) {
        settle(state, &mut journal, rotation_id);
        report.fail(
            "client_secret",
            subject,
            format!("not rotated: cannot save the recovery token: {err}"),
        );
        return None;
    }
    Some(Begun {
        subject,
        old_secret,
        old_fp,
        token,
        rotation_id,
        journal,
    })
}

/// Stores the new secret and logs in with it, then checks with the saved
/// token that it is still the API's current one (a delayed or repeated PUT
/// may have changed it again: the current one is adopted and stored, up to
/// three times). Returns the secret and how the login went; `Err` with the
/// secret in use when it could not be stored (the intent then stays, and
/// with it the recovery token on disk: the next run stores the secret).
async fn store_and_confirm(
    engine: &Engine,
    client: &ContaboClient,
    window: &Window,
    rotation_id: Uuid,
    now: chrono::DateTime<Utc>,
    mut new_secret: SecretString,
) -> Result<(SecretString, Result<(), ApiError>), (SecretString, StateError)> {
    let state = &engine.state;
    let superseded = state.fingerprint(&engine.settings.api.client_secret);
    let mut reads_back = 0;
    loop {
        let stored = StoredClientSecret {
            secret: new_secret.clone(),
            rotated_at: now,
            rotation_id,
            superseded,
            recovery_token: None,
        };
        let result = store_with_retry(state, &stored).await;
        // The API already switched: logins use the new secret from now on,
        // stored or not.
        client.auth().set_client_secret(new_secret.clone()).await;
        if let Err(err) = result {
            tracing::error!(%rotation_id, error = %err, "The new client secret could not be stored.");
            return Err((new_secret, err));
        }
        crash::point("client-secret-after-store");
        let confirmed = confirm(client, &new_secret).await;
        if reads_back >= 3 {
            return Ok((new_secret, confirmed));
        }
        reads_back += 1;
        match bounded(window, client.get_client_with_token(&window.token)).await {
            Ok(current)
                if !current.secret.expose_secret().is_empty()
                    && state.fingerprint(&current.secret) != state.fingerprint(&new_secret) =>
            {
                tracing::warn!(%rotation_id, "The client secret changed again after the PUT; adopting the current one.");
                new_secret = current.secret;
            }
            _ => return Ok((new_secret, confirmed)),
        }
    }
}

/// The rotation's audit line and report item, once recorded.
fn finish(
    state: &StateDir,
    client: &ContaboClient,
    begun: &Begun,
    now: chrono::DateTime<Utc>,
    new_fp: Fingerprint,
    confirmed: Result<(), ApiError>,
    report: &mut RunReport,
) {
    let (rotation_id, subject) = (begun.rotation_id, begun.subject.clone());
    // The rotation stands whether or not its audit line is written.
    let _ = state.audit(&AuditEvent {
        at: now,
        event: AuditKind::Rotation,
        rotation_id: Some(rotation_id),
        trace_id: Some(client.trace_id().to_owned()),
        subject: subject.clone(),
        detail: serde_json::json!({
            "kind": "client_secret",
            "old_fingerprint": begun.old_fp.text(),
            "new_fingerprint": new_fp.text(),
            "confirmed": confirmed.is_ok(),
        }),
    });
    if let Err(err) = confirmed {
        report.fail(
            "client_secret",
            subject.clone(),
            format!("rotated and stored, but a login with the new secret failed: {err}"),
        );
    } else {
        tracing::info!(%rotation_id, "Rotated the client secret; logins now use the stored secret.");
    }
    report.rotated.push(Rotated {
        kind: crate::sinks::Kind::ClientSecret,
        subject,
        credential: None,
        at: now,
        rotation_id,
        old_access_key: None,
        new_access_key: None,
        old_fingerprint: begun.old_fp.text(),
        new_fingerprint: new_fp.text(),
        recovered: false,
    });
}

/// Sends the PUT and follows it up until the outcome is known, or the
/// window would close (see the module's documentation).
async fn put(
    engine: &Engine,
    client: &ContaboClient,
    rotation_id: Uuid,
    window: &mut Window,
    old_secret: &SecretString,
    old_fp: &Fingerprint,
) -> Put {
    let api = &engine.settings.api;
    let mut puts = 0;
    loop {
        puts += 1;
        let answer = bounded(
            window,
            client.generate_client_secret(Some(rotation_id), Some(&window.token)),
        )
        .await;
        let (after, err) = match answer {
            Ok(generated) if !generated.secret.expose_secret().is_empty() => {
                return Put::Applied(generated.secret)
            }
            Ok(_) => (
                After::AnsweredWithoutSecret,
                "generateClientSecret: the 2xx answer holds no secret".to_owned(),
            ),
            Err(err) => (classify(&err), err.to_string()),
        };
        if after == After::NotSent {
            return Put::NotApplied(format!("not rotated: {err}"));
        }
        tracing::warn!(%rotation_id, error = %err, follow_up = ?after, "The client-secret PUT handed back no secret; reading it back.");
        let poll = after == After::MaybeInFlight;
        match read_back(engine, client, window, old_fp, poll).await {
            Ok(Some(secret)) => return Put::Applied(secret),
            Ok(None) if after == After::AnsweredWithoutSecret => {
                return Put::Unknown(format!(
                    "{err}, and the secret read back is still the old one"
                ))
            }
            Ok(None) if puts > api.max_retries => {
                return Put::NotApplied(format!("not rotated: {err}"))
            }
            Ok(None) => {
                tracing::info!(%rotation_id, attempt = puts, "The PUT was not applied; trying again.");
            }
            Err(read_err) => {
                return Put::Unknown(format!("{err}; reading the secret back failed: {read_err}"))
            }
        }
        // The read-back just proved that the old secret still works: the
        // moment to renew a window that would close during the next try.
        if window.left() < renew_margin(api.timeout) {
            match client.auth().login_with_secret(old_secret).await {
                Ok(token) => {
                    if let Err(err) = save_recovery_token(engine, client, &token, rotation_id) {
                        return Put::Unknown(format!(
                            "cannot save the renewed recovery token: {err}"
                        ));
                    }
                    tracing::info!(%rotation_id, "Renewed the recovery token with the old secret.");
                    window.token = token;
                }
                // Refused right after the proof: the last PUT landed since.
                Err(ApiError::LoginRefused { .. }) => {
                    return match read_back(engine, client, window, old_fp, true).await {
                        Ok(Some(secret)) => Put::Applied(secret),
                        Ok(None) => Put::Unknown(
                            "the old secret was refused, but the read-back shows it".to_owned(),
                        ),
                        Err(err) => Put::Unknown(format!("reading the secret back failed: {err}")),
                    };
                }
                Err(err) => return Put::Unknown(format!("cannot renew the recovery token: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(500 * u64::from(puts)).min(window.left())).await;
    }
}

/// A saved token with less life than this is renewed before another try.
fn renew_margin(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(5)
}

/// Reads the API's current secret with the saved token: `Some` when it is
/// a new (non-empty) one, `None` when it is still the old one. Read once,
/// or (`poll`) with backoff until it changes or one request timeout has
/// passed; never beyond the window.
async fn read_back(
    engine: &Engine,
    client: &ContaboClient,
    window: &Window,
    old_fp: &Fingerprint,
    poll: bool,
) -> Result<Option<SecretString>, ApiError> {
    let started = Instant::now();
    let budget = if poll {
        engine.settings.api.timeout
    } else {
        Duration::ZERO
    };
    let mut delay = Duration::from_millis(250);
    loop {
        let result = bounded(window, client.get_client_with_token(&window.token))
            .await
            .and_then(|c| {
                if c.secret.expose_secret().is_empty() {
                    Err(ApiError::Malformed {
                        op: "retrieveUserClient",
                        detail: "the client read back has an empty secret".into(),
                    })
                } else {
                    Ok(c.secret)
                }
            });
        match result {
            Ok(secret) if engine.state.fingerprint(&secret) != *old_fp => return Ok(Some(secret)),
            result if started.elapsed() + delay > budget || window.left() <= delay => {
                return result.map(|_| None)
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Runs an API call for at most the window's remaining life.
async fn bounded<T>(
    window: &Window,
    call: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let left = window.left();
    match tokio::time::timeout(left, call).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout {
            op: "client-secret recovery window",
            timeout: left,
        }),
    }
}

/// Stores a secret, retrying with backoff (a full disk may clear).
pub(super) async fn store_with_retry(
    state: &StateDir,
    stored: &StoredClientSecret,
) -> Result<(), StateError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match state.store_client_secret(stored) {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= STORE_ATTEMPTS => return Err(err),
            Err(err) => {
                tracing::warn!(attempt, error = %err, "Could not store the client secret; retrying.");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// Removes the recovery token from the store once its rotation is settled
/// (a failure only leaves a token that expires on its own).
pub(super) fn clear_recovery_token(state: &StateDir) {
    match state.load_client_secret() {
        Ok(Some(stored)) if stored.recovery_token.is_some() => {
            let cleared = StoredClientSecret {
                recovery_token: None,
                ..stored
            };
            if let Err(err) = state.store_client_secret(&cleared) {
                tracing::warn!(error = %err, "Could not remove the recovery token from the client-secret store.");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "Could not read the client-secret store."),
    }
}

/// Adds the access token to the stored client secret (a store holding the
/// secret in use now, when there is none yet) before the PUT.
fn save_recovery_token(
    engine: &Engine,
    client: &ContaboClient,
    token: &AccessToken,
    rotation_id: Uuid,
) -> Result<(), StateError> {
    let state = &engine.state;
    let stored = match state.load_client_secret()? {
        Some(stored) => StoredClientSecret {
            recovery_token: Some(token.secret()),
            ..stored
        },
        None => StoredClientSecret {
            secret: client.auth().client_secret(),
            rotated_at: Utc::now(),
            rotation_id,
            superseded: state.fingerprint(&engine.settings.api.client_secret),
            recovery_token: Some(token.secret()),
        },
    };
    state.store_client_secret(&stored)
}

/// For a login refused with every known client secret: if the journal holds
/// a client-secret rotation and the store the token saved before its PUT,
/// the process died between the PUT and storing its answer. The token
/// (valid for a few minutes after the PUT) reads the API's current secret
/// back; it is stored, and logins use it. Returns it, `None` when there is
/// nothing to recover or the read fails.
pub(super) async fn recover_refused(
    engine: &Engine,
    client: &ContaboClient,
) -> Option<SecretString> {
    let state = &engine.state;
    let intent = state
        .load_journal()
        .ok()?
        .intents
        .into_iter()
        .find(|i| matches!(i.kind, IntentKind::ClientSecret { .. }))?;
    let token = state.load_client_secret().ok()??.recovery_token?;
    let rotation_id = intent.rotation_id;
    let current = match client
        .get_client_with_token(&AccessToken::saved(token))
        .await
    {
        Ok(api_client) if !api_client.secret.expose_secret().is_empty() => api_client.secret,
        Ok(_) => {
            tracing::warn!(%rotation_id, "The client read back for an interrupted rotation has an empty secret.");
            return None;
        }
        Err(err) => {
            tracing::warn!(%rotation_id, error = %err, "Could not read back the client secret of an interrupted rotation with the token saved before its PUT.");
            return None;
        }
    };
    let stored = StoredClientSecret {
        secret: current.clone(),
        rotated_at: intent.started_at,
        rotation_id,
        superseded: state.fingerprint(&engine.settings.api.client_secret),
        recovery_token: None,
    };
    // On failure the store keeps the recovery token; the journal's intent
    // stays, and the next pass stores the secret.
    if let Err(err) = store_with_retry(state, &stored).await {
        tracing::error!(%rotation_id, error = %err, "The recovered client secret could not be stored.");
    }
    tracing::warn!(%rotation_id, "Read back the client secret an interrupted rotation generated; logins use it from now on.");
    client.auth().set_client_secret(current.clone()).await;
    Some(current)
}

/// Logs in with the new secret, waiting a little longer after each refusal
/// while the identity provider propagates it.
async fn confirm(client: &ContaboClient, secret: &SecretString) -> Result<(), ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.auth().login_with_secret(secret).await {
            Ok(_) => return Ok(()),
            Err(err) if attempt >= CONFIRM_ATTEMPTS => return Err(err),
            Err(err) => {
                tracing::debug!(attempt, error = %err, "The new client secret is not accepted yet.");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
        }
    }
}

/// Removes a settled intent from the journal (a failure to save it only
/// means the next run re-checks an outcome that is already known).
fn settle(state: &StateDir, journal: &mut crate::state::Journal, rotation_id: Uuid) {
    journal.finish(rotation_id);
    if let Err(err) = state.save_journal(journal) {
        tracing::warn!(error = %err, "Could not clear a settled intent from the journal.");
    }
    clear_recovery_token(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16) -> ApiError {
        ApiError::Server {
            op: "generateClientSecret",
            status,
            message: None,
        }
    }

    #[test]
    fn a_put_failure_is_followed_up_by_what_the_server_said() {
        let op = "generateClientSecret";
        let cases = [
            (server(500), After::Answered),
            (server(503), After::Answered),
            (
                ApiError::Status {
                    op,
                    status: 403,
                    message: None,
                },
                After::Answered,
            ),
            (ApiError::Redirect { op, status: 307 }, After::Answered),
            (server(502), After::MaybeInFlight),
            (server(504), After::MaybeInFlight),
            (
                ApiError::Timeout {
                    op,
                    timeout: Duration::from_secs(1),
                },
                After::MaybeInFlight,
            ),
            (
                ApiError::Transport {
                    op,
                    detail: String::new(),
                },
                After::MaybeInFlight,
            ),
            (
                ApiError::Malformed {
                    op,
                    detail: String::new(),
                },
                After::AnsweredWithoutSecret,
            ),
            (
                ApiError::GaveUp {
                    op,
                    attempts: 6,
                    last: Box::new(ApiError::RateLimited {
                        op,
                        retry_after: None,
                    }),
                },
                After::NotSent,
            ),
            (ApiError::CircuitOpen { op, failures: 10 }, After::NotSent),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&err), want, "{err}");
        }
    }
}
