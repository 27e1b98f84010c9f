//! Start-up recovery: intents left in the journal by an interrupted run are
//! resolved before any new work, by reading the API's current values and
//! comparing fingerprints with the values before the mutating call.

use super::{client_secret, new_record, CredentialRef, Engine, Rotated, RunReport};
use crate::contabo::models::Credential;
use crate::contabo::{ApiError, ContaboClient};
use crate::inventory::CredentialEntry;
use crate::state::{
    AuditEvent, AuditKind, ClientSecretRecord, Fingerprint, Intent, IntentKind, Records,
    StoredClientSecret,
};
use secrecy::ExposeSecret;

/// Resolves every journal intent it can; unresolved ones stay for later.
pub(super) async fn resume(
    engine: &mut Engine,
    client: &ContaboClient,
    records: &mut Records,
    report: &mut RunReport,
) {
    let state = engine.state.clone();
    let mut journal = match state.load_journal() {
        Ok(j) => j,
        Err(err) => {
            report.fail("state", "journal", err);
            return;
        }
    };
    if journal.intents.is_empty() {
        return;
    }
    tracing::info!(
        pending = journal.intents.len(),
        "Resuming rotations an earlier run left unfinished."
    );
    let mut settled_client_secret = false;
    let reads = read_back(client, records, &journal.intents).await;
    for (intent, read) in journal.intents.clone().into_iter().zip(reads) {
        let settled = match &intent.kind {
            IntentKind::ObjectStorage { .. } => {
                resume_credential(engine, client, records, report, &intent, read)
            }
            IntentKind::ClientSecret { old_fingerprint } => {
                let settled =
                    resume_client_secret(engine, client, records, report, &intent, old_fingerprint)
                        .await;
                settled_client_secret |= settled;
                settled
            }
        };
        if settled {
            journal.finish(intent.rotation_id);
        }
    }
    if let Err(err) = state.save_records(records) {
        report.fail("state", "records", err);
        return;
    }
    crate::crash::point("resume-after-record");
    if let Err(err) = state.save_journal(&journal) {
        report.fail("state", "journal", err);
        return;
    }
    if settled_client_secret {
        client_secret::clear_recovery_token(&state);
    }
}

/// For each intent, the credential as the API holds it now: `None` for a
/// client-secret intent, and for an S3 intent whose outcome the records
/// already hold (a run killed after saving its records and before clearing
/// the intents they settle). The credentials of every user with an
/// unsettled S3 intent are read back with one list per user, all users at
/// once (the client's request slots bound how many are in flight).
async fn read_back(
    client: &ContaboClient,
    records: &mut Records,
    intents: &[Intent],
) -> Vec<Option<Result<Credential, ApiError>>> {
    let mut recorded = |intent: &Intent, key: &crate::state::CredentialKey| {
        records.credential(key).and_then(|r| r.rotation_id) == Some(intent.rotation_id)
    };
    let unsettled: Vec<Option<&crate::state::CredentialKey>> = intents
        .iter()
        .map(|intent| match &intent.kind {
            IntentKind::ObjectStorage { key, .. } if !recorded(intent, key) => Some(key),
            _ => None,
        })
        .collect();
    let users: std::collections::BTreeSet<&str> =
        unsettled.iter().flatten().map(|k| &*k.user_id).collect();
    type Listed = Result<Vec<Credential>, ApiError>;
    let lists: std::collections::HashMap<&str, Listed> =
        futures_util::future::join_all(users.into_iter().map(|user_id| async move {
            let listed = client
                .list_credentials(
                    user_id,
                    &crate::contabo::models::CredentialFilter::default(),
                )
                .await;
            (user_id, listed)
        }))
        .await
        .into_iter()
        .collect();
    unsettled
        .into_iter()
        .map(|key| {
            let key = key?;
            Some(match &lists[&*key.user_id] {
                Ok(listed) => listed
                    .iter()
                    .find(|c| {
                        c.credential_id == key.credential_id
                            && *c.object_storage_id == *key.object_storage_id
                    })
                    .cloned()
                    // Gone from the list: as a 404 of the credential.
                    .ok_or_else(|| ApiError::Status {
                        op: "listObjectStorageCredentials",
                        status: 404,
                        message: Some("the credential is no longer listed".into()),
                    }),
                Err(err) => Err(err.clone()),
            })
        })
        .collect()
}

/// Resolves an S3 intent from its credential `read` back; returns whether
/// it is settled (else it stays for the next run).
fn resume_credential(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    report: &mut RunReport,
    intent: &Intent,
    read: Option<Result<Credential, ApiError>>,
) -> bool {
    let IntentKind::ObjectStorage {
        key,
        user_email,
        old_access_key,
        old_fingerprint,
    } = &intent.kind
    else {
        return false;
    };
    let id = intent.rotation_id;
    // The records hold the outcome already.
    let Some(read) = read else {
        return true;
    };
    let subject = format!(
        "{user_email}/{}/{}",
        key.object_storage_id, key.credential_id
    );
    let current = match read {
        Ok(current) => current,
        Err(err) if err.status() == Some(404) => {
            tracing::info!(rotation_id = %id, "The credential of an interrupted rotation no longer exists.");
            return true;
        }
        Err(err) => {
            report.fail("resume", subject, err);
            return false;
        }
    };
    let state = &engine.state;
    let fp = state.fingerprint(&current.secret_key);
    if &fp == old_fingerprint && &current.access_key == old_access_key {
        tracing::info!(rotation_id = %id, "The interrupted regenerate was not applied.");
        return true;
    }
    let entry = CredentialEntry {
        user_id: key.user_id.clone(),
        user_email: user_email.as_str().into(),
        object_storage_id: key.object_storage_id.to_string(),
        object_storage_name: current.display_name.clone(),
        region: current.region.clone(),
        s3_url: String::new(),
        credential_id: key.credential_id,
        access_key: current.access_key.clone(),
        secret_key: current.secret_key.clone(),
    };
    let record =
        records.credential_or_insert_with(key, || new_record(&entry, state, intent.started_at));
    record.rotated_at = Some(intent.started_at);
    record.rotation_id = Some(id);
    record.verified = None;
    record.access_key = current.access_key.as_str().into();
    record.secret_fingerprint = fp;
    let rotated = Rotated {
        kind: crate::sinks::Kind::ObjectStorage,
        subject,
        credential: Some(CredentialRef::from(&entry)),
        at: intent.started_at,
        rotation_id: id,
        old_access_key: Some(old_access_key.clone()),
        new_access_key: Some(current.access_key.clone()),
        old_fingerprint: old_fingerprint.text(),
        new_fingerprint: fp.text(),
        recovered: true,
    };
    recovered(engine, client, report, rotated);
    true
}

/// Resolves a client-secret intent by reading the client back (and
/// storing a secret a stopped run left unstored); returns whether it is
/// settled.
async fn resume_client_secret(
    engine: &mut Engine,
    client: &ContaboClient,
    records: &mut Records,
    report: &mut RunReport,
    intent: &Intent,
    old_fingerprint: &Fingerprint,
) -> bool {
    let id = intent.rotation_id;
    let subject = engine.settings.api.client_id.clone();
    let api_client = match client.get_client().await {
        Ok(api_client) if api_client.secret.expose_secret().is_empty() => {
            report.fail(
                "resume",
                subject,
                "the client read back has an empty secret; the rotation stays pending",
            );
            return false;
        }
        Ok(api_client) => api_client,
        Err(err) => {
            report.fail("resume", subject, err);
            return false;
        }
    };
    let state = engine.state.clone();
    let fp = state.fingerprint(&api_client.secret);
    if &fp == old_fingerprint {
        tracing::info!(rotation_id = %id, "The interrupted client-secret rotation was not applied.");
        return true;
    }
    // Compared with the stored secret, not the one in use: a run whose
    // store failed keeps the new secret in memory only.
    let stored_fp = match state.load_client_secret() {
        Ok(stored) => stored.map(|s| state.fingerprint(&s.secret)),
        Err(err) => {
            tracing::warn!(error = %err, "Could not read the client-secret store; writing it anew.");
            None
        }
    };
    if stored_fp.as_ref() != Some(&fp) {
        let stored = StoredClientSecret {
            secret: api_client.secret.clone(),
            rotated_at: intent.started_at,
            rotation_id: id,
            superseded: state.fingerprint(&engine.settings.api.client_secret),
            recovery_token: None,
        };
        if let Err(err) = client_secret::store_with_retry(&state, &stored).await {
            report.fail(
                "client_secret",
                subject,
                format!("recovered secret NOT stored: {err}; the rotation stays pending"),
            );
            return false;
        }
    }
    if state.fingerprint(&client.auth().client_secret()) != fp {
        client
            .auth()
            .set_client_secret(api_client.secret.clone())
            .await;
    }
    engine.login_secrets = vec![
        api_client.secret.clone(),
        engine.settings.api.client_secret.clone(),
    ];
    let first_seen = records
        .client_secret
        .as_ref()
        .map(|r| r.first_seen)
        .unwrap_or(intent.started_at);
    records.client_secret = Some(ClientSecretRecord {
        first_seen,
        rotated_at: Some(intent.started_at),
        rotation_id: Some(id),
        fingerprint: fp,
    });
    let rotated = Rotated {
        kind: crate::sinks::Kind::ClientSecret,
        subject,
        credential: None,
        at: intent.started_at,
        rotation_id: id,
        old_access_key: None,
        new_access_key: None,
        old_fingerprint: old_fingerprint.text(),
        new_fingerprint: fp.text(),
        recovered: true,
    };
    recovered(engine, client, report, rotated);
    true
}

/// Audits and reports a rotation an earlier run left unfinished, now known
/// to have happened.
fn recovered(engine: &Engine, client: &ContaboClient, report: &mut RunReport, r: Rotated) {
    tracing::info!(rotation_id = %r.rotation_id, kind = %r.kind, subject = %r.subject, "Recovered an interrupted rotation.");
    let _ = engine.state.audit(&AuditEvent {
        at: chrono::Utc::now(),
        event: AuditKind::Recovery,
        rotation_id: Some(r.rotation_id),
        trace_id: Some(client.trace_id().to_owned()),
        subject: r.subject.clone(),
        detail: serde_json::json!({
            "kind": r.kind,
            "old_access_key": r.old_access_key,
            "new_access_key": r.new_access_key,
            "old_fingerprint": r.old_fingerprint,
            "new_fingerprint": r.new_fingerprint,
        }),
    });
    report.rotated.push(r);
}
