//! Client-secret rotation, exactly as DESIGN.md §4: with a valid token in
//! hand, PUT a new secret, store it (0600, fsync) before anything else,
//! switch the login to it, confirm it with a fresh login (retrying while the
//! identity provider catches up), then record it. If the PUT's answer is
//! lost, the new secret is read back with `GET /v1/users/client` using the
//! token obtained before the PUT. That token is saved with the stored
//! secret (0600, fsync) before the PUT, so that a process killed after the
//! API switched secrets and before the new one was stored can still read it
//! back on its next start ([`recover_refused`]).

use super::{Engine, Rotated, RunReport};
use crate::contabo::{AccessToken, ApiError, ContaboClient};
use crate::crash;
use crate::state::{
    AuditEvent, AuditKind, ClientSecretRecord, Intent, IntentKind, Records, StateDir, StateError,
    StoredClientSecret,
};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use uuid::Uuid;

/// Attempts to log in with a new secret before calling it unconfirmed.
const CONFIRM_ATTEMPTS: u32 = 6;

/// Rotates the client secret; returns the new secret when one was stored.
pub(super) async fn rotate(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    report: &mut RunReport,
) -> Option<SecretString> {
    let state = &engine.state;
    let subject = engine.settings.api.client_id.clone();
    let token = match client.auth().access_token().await {
        Ok(t) => t,
        Err(err) => {
            report.fail("client_secret", subject, err);
            return None;
        }
    };
    let old_fp = state.fingerprint(&client.auth().client_secret());
    let rotation_id = Uuid::new_v4();
    let mut journal = match state.load_journal() {
        Ok(j) => j,
        Err(err) => {
            report.fail("state", "journal.json", err);
            return None;
        }
    };
    journal.begin(Intent {
        rotation_id,
        started_at: Utc::now(),
        kind: IntentKind::ClientSecret {
            old_fingerprint: old_fp.clone(),
        },
    });
    if let Err(err) = state.save_journal(&journal) {
        report.fail("state", "journal.json", err);
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
    tracing::info!(%rotation_id, client_id = %subject, "Generating a new client secret.");
    // The PUT is never repeated blindly: after a failure whose outcome is
    // unknown, the secret is read back first, and the PUT is tried again only
    // when the read shows that it was not applied.
    let mut attempts = 0;
    let new_secret = loop {
        attempts += 1;
        let err = match client
            .generate_client_secret(Some(rotation_id), Some(&token))
            .await
        {
            Ok(generated) => break generated.secret,
            Err(err) if err.outcome_unknown() => err,
            Err(err) => {
                settle(state, &mut journal, rotation_id);
                report.fail("client_secret", subject, err);
                return None;
            }
        };
        tracing::warn!(%rotation_id, error = %err, "No answer to the client-secret PUT; reading the secret back.");
        // A request we stopped waiting for may still be applied by the
        // server: give it the timeout's length before reading back.
        tokio::time::sleep(engine.settings.api.timeout).await;
        match client.get_client_with_token(&token).await {
            Ok(api_client) if state.fingerprint(&api_client.secret) != old_fp => {
                break api_client.secret;
            }
            Ok(_) if attempts <= engine.settings.api.max_retries => {
                tracing::info!(%rotation_id, attempt = attempts, "The PUT was not applied; trying again.");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts))).await;
            }
            Ok(_) => {
                settle(state, &mut journal, rotation_id);
                report.fail("client_secret", subject, format!("not rotated: {err}"));
                return None;
            }
            Err(read_err) => {
                // The intent stays: the next run reads the secret back.
                report.fail(
                    "client_secret",
                    subject,
                    format!("{err}; reading it back failed too: {read_err}"),
                );
                return None;
            }
        }
    };
    crash::point("client-secret-after-put");
    if new_secret.expose_secret().is_empty() {
        settle(state, &mut journal, rotation_id);
        report.fail("client_secret", subject, "the API returned an empty secret");
        return None;
    }
    let now = Utc::now();
    let superseded = state.fingerprint(&engine.settings.api.client_secret);
    let mut new_secret = new_secret;
    let mut confirmed;
    let mut reads_back = 0;
    loop {
        let stored = StoredClientSecret {
            secret: new_secret.clone(),
            rotated_at: now,
            rotation_id,
            superseded: superseded.clone(),
            recovery_token: None,
        };
        if let Err(err) = state.store_client_secret(&stored) {
            // The API already switched; this process keeps working with the
            // new secret in memory, and the failure is loud.
            tracing::error!(%rotation_id, error = %err, "The new client secret could not be stored.");
            report.fail(
                "client_secret",
                subject.clone(),
                format!("new secret NOT stored: {err}"),
            );
        }
        crash::point("client-secret-after-store");
        client.auth().set_client_secret(new_secret.clone()).await;
        confirmed = confirm(client, &new_secret).await;
        // Whether or not the login worked, check with the token from before
        // the PUT (still valid) that the secret we hold is the API's current
        // one: a delayed or repeated PUT may have changed it again.
        if reads_back >= 3 {
            break;
        }
        reads_back += 1;
        match client.get_client_with_token(&token).await {
            Ok(current) if state.fingerprint(&current.secret) != state.fingerprint(&new_secret) => {
                tracing::warn!(%rotation_id, "The client secret changed again after the PUT; adopting the current one.");
                new_secret = current.secret;
            }
            _ => break,
        }
    }
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
        fingerprint: new_fp.clone(),
    });
    if let Err(err) = state.save_records(records) {
        report.fail("state", "records.json", err);
        return Some(new_secret);
    }
    settle(state, &mut journal, rotation_id);
    let _ = state.audit(&AuditEvent {
        at: now,
        event: AuditKind::Rotation,
        rotation_id: Some(rotation_id),
        trace_id: Some(client.trace_id().to_owned()),
        subject: subject.clone(),
        detail: serde_json::json!({
            "kind": "client_secret",
            "old_fingerprint": old_fp.0,
            "new_fingerprint": new_fp.0,
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
        kind: "client_secret",
        subject,
        credential: None,
        at: now,
        rotation_id,
        old_access_key: None,
        new_access_key: None,
        old_fingerprint: old_fp.0,
        new_fingerprint: new_fp.0,
        recovered: false,
    });
    Some(new_secret)
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
        Ok(api_client) => api_client.secret,
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
    if let Err(err) = state.store_client_secret(&stored) {
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
}
