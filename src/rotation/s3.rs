//! S3 credential rotation: PATCH regenerate (the rotation id as the
//! `x-request-id`), then one re-read of the user's credentials that both
//! confirms the new keys and picks up every storage sharing them.
//!
//! The re-read is a list of the user's credentials rather than one GET per
//! credential: it is the confirming read for all of that user's rotations at
//! once and catches storages whose keys changed with them (the spec says
//! storages in several locations share credentials). Users are handled
//! concurrently, up to `[api] concurrency` at once; within a user the
//! credentials go one after another, and the shutdown signal is checked
//! before each one.

use super::{crash, key_of, subject_of, CredentialRef, Engine, Rotated, RunReport};
use crate::contabo::models::{Credential, CredentialFilter};
use crate::contabo::{ApiError, ContaboClient};
use crate::inventory::CredentialEntry;
use crate::state::{AuditEvent, AuditKind, Intent, IntentKind, Records};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Audit lines are appended this many at a time.
const AUDIT_BATCH: usize = 256;

/// What happened to one user's due credentials.
struct UserOutcome {
    user_id: String,
    /// (entry before, rotation id, keys from the PATCH answer if any).
    attempted: Vec<(CredentialEntry, Uuid, Option<Credential>)>,
    /// Refused by the API (the intent is settled: nothing changed).
    failed: Vec<(CredentialEntry, Uuid, ApiError)>,
    /// Skipped after a shutdown signal (the intent is settled too).
    not_attempted: Vec<Uuid>,
    /// The user's credentials as re-read after the PATCHes.
    reread: Option<Result<Vec<Credential>, ApiError>>,
}

/// Rotates the credentials at `due` (indexes into `credentials`), updates
/// `credentials` with the API's values after the run, and records everything.
pub(super) async fn rotate_due(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    credentials: &mut [CredentialEntry],
    due: Vec<usize>,
    cancel: &CancellationToken,
    report: &mut RunReport,
) {
    if due.is_empty() {
        return;
    }
    let mut journal = match engine.state.load_journal() {
        Ok(j) => j,
        Err(err) => {
            report.fail("state", "journal.json", err);
            return;
        }
    };
    // One intent per due credential, written (and fsync'd) once before the
    // first regenerate: a crash at any later point leaves every credential
    // that may have changed in the journal, and the next start reads each
    // back. One write per run instead of one per credential.
    let started_at = Utc::now();
    let mut by_user: BTreeMap<String, Vec<(CredentialEntry, Uuid)>> = BTreeMap::new();
    for i in due {
        let entry = credentials[i].clone();
        let rotation_id = Uuid::new_v4();
        journal.begin(Intent {
            rotation_id,
            started_at,
            kind: IntentKind::ObjectStorage {
                key: key_of(&entry),
                user_email: entry.user_email.clone(),
                old_access_key: entry.access_key.clone(),
                old_fingerprint: engine.state.fingerprint(&entry.secret_key),
            },
        });
        by_user
            .entry(entry.user_id.clone())
            .or_default()
            .push((entry, rotation_id));
    }
    if let Err(err) = engine.state.save_journal(&journal) {
        report.fail("state", "journal.json: no credential rotated", err);
        return;
    }
    crash::point("s3-after-journal");
    let slots = Arc::new(Semaphore::new(engine.settings.api.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (user_id, entries) in by_user {
        let client = client.clone();
        let cancel = cancel.clone();
        // Spawn only with a free slot: pending tasks would each hold their
        // whole future in memory (see `inventory::collect`).
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _slot = slot;
            rotate_user(&client, user_id, entries, &cancel).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.expect("rotation task panicked"));
    }
    outcomes.sort_by(|a, b| a.user_id.cmp(&b.user_id));

    let mut finished = Vec::new();
    let mut audit = Vec::new();
    for outcome in outcomes {
        merge_user(
            engine,
            client,
            records,
            credentials,
            outcome,
            report,
            &mut Settled {
                intents: &mut finished,
                audit: &mut audit,
            },
        );
        // Appended in batches: one sync per batch, bounded memory.
        if audit.len() >= AUDIT_BATCH {
            if let Err(err) = engine.state.audit_all(&audit) {
                tracing::warn!(error = %err, "Could not append to the audit log.");
            }
            audit.clear();
        }
    }
    if let Err(err) = engine.state.audit_all(&audit) {
        tracing::warn!(error = %err, "Could not append to the audit log.");
    }
    // Records first, then the intents they settle: a crash in between only
    // replays intents whose outcome the records already hold.
    if let Err(err) = engine.state.save_records(records) {
        report.fail("state", "records.json", err);
        return;
    }
    crash::point("s3-after-record");
    for id in finished {
        journal.finish(id);
    }
    if let Err(err) = engine.state.save_journal(&journal) {
        report.fail("state", "journal.json", err);
    }
}

async fn rotate_user(
    client: &ContaboClient,
    user_id: String,
    entries: Vec<(CredentialEntry, Uuid)>,
    cancel: &CancellationToken,
) -> UserOutcome {
    let mut outcome = UserOutcome {
        user_id: user_id.clone(),
        attempted: Vec::new(),
        failed: Vec::new(),
        not_attempted: Vec::new(),
        reread: None,
    };
    for (entry, rotation_id) in entries {
        if cancel.is_cancelled() {
            outcome.not_attempted.push(rotation_id);
            continue;
        }
        tracing::info!(
            %rotation_id,
            credential_id = entry.credential_id,
            user = %entry.user_email,
            "Regenerating object-storage credential."
        );
        match client
            .regenerate_credential(
                &entry.user_id,
                &entry.object_storage_id,
                entry.credential_id,
                Some(rotation_id),
            )
            .await
        {
            Ok(new) => {
                crash::point("s3-after-regenerate");
                outcome.attempted.push((entry, rotation_id, Some(new)));
            }
            // The PATCH may have been applied: the re-read decides.
            Err(err) if err.outcome_unknown() => {
                tracing::warn!(%rotation_id, error = %err, "No answer to the regenerate call; reading back.");
                outcome.attempted.push((entry, rotation_id, None));
            }
            Err(err) => outcome.failed.push((entry, rotation_id, err)),
        }
    }
    if !outcome.attempted.is_empty() {
        outcome.reread = Some(
            client
                .list_credentials(&user_id, &CredentialFilter::default())
                .await,
        );
        crash::point("s3-after-confirm");
    }
    outcome
}

/// Folds one user's outcome into the records, the report and the entries.
fn merge_user(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    credentials: &mut [CredentialEntry],
    outcome: UserOutcome,
    report: &mut RunReport,
    settled: &mut Settled<'_>,
) {
    let state = &engine.state;
    settled.intents.extend(outcome.not_attempted);
    for (entry, rotation_id, err) in outcome.failed {
        settled.intents.push(rotation_id);
        settled
            .audit
            .push(failure_event(client, &entry, Some(rotation_id), &err));
        report.fail_credential(&entry, Some(rotation_id), err);
    }
    let reread = match outcome.reread {
        Some(Ok(list)) => Some(list),
        Some(Err(err)) => {
            tracing::warn!(user = %outcome.user_id, error = %err, "Could not re-read the user's credentials.");
            None
        }
        None => None,
    };
    for (entry, rotation_id, answer) in outcome.attempted {
        let old_fp = state.fingerprint(&entry.secret_key);
        let current = reread
            .as_ref()
            .and_then(|list| list.iter().find(|c| c.credential_id == entry.credential_id))
            .or(answer.as_ref());
        let Some(current) = current else {
            // Neither an answer nor a re-read: the intent stays in the
            // journal and the next run resolves it.
            report.fail_credential(
                &entry,
                Some(rotation_id),
                "regenerate sent but not confirmed; will be resolved on the next run",
            );
            continue;
        };
        let new_fp = state.fingerprint(&current.secret_key);
        settled.intents.push(rotation_id);
        if new_fp == old_fp && current.access_key == entry.access_key {
            let err = "the regenerate call got no answer and the credential did not change";
            settled
                .audit
                .push(failure_event(client, &entry, Some(rotation_id), &err));
            report.fail_credential(&entry, Some(rotation_id), err);
            continue;
        }
        let now = Utc::now();
        let key = key_of(&entry).to_string();
        let record = records
            .credentials
            .entry(key)
            .or_insert_with(|| super::new_record(&entry, state, now));
        record.rotated_at = Some(now);
        record.rotation_id = Some(rotation_id);
        record.access_key = current.access_key.clone();
        record.secret_fingerprint = new_fp.clone();
        settled.audit.push(AuditEvent {
            at: now,
            event: AuditKind::Rotation,
            rotation_id: Some(rotation_id),
            trace_id: Some(client.trace_id().to_owned()),
            subject: subject_of(&entry),
            detail: serde_json::json!({
                "kind": "object_storage",
                "old_access_key": entry.access_key,
                "new_access_key": current.access_key,
                "old_fingerprint": old_fp.0,
                "new_fingerprint": new_fp.0,
                "confirmed": reread.is_some(),
            }),
        });
        tracing::info!(%rotation_id, credential_id = entry.credential_id, user = %entry.user_email, "Rotated object-storage credential.");
        report.rotated.push(Rotated {
            kind: "object_storage",
            subject: subject_of(&entry),
            credential: Some(CredentialRef::of(&entry)),
            at: now,
            rotation_id,
            old_access_key: Some(entry.access_key.clone()),
            new_access_key: Some(current.access_key.clone()),
            old_fingerprint: old_fp.0,
            new_fingerprint: new_fp.0,
            recovered: false,
        });
    }
    // Deliver what the API holds now, for every storage of this user.
    let fresh = reread.unwrap_or_default();
    for c in credentials
        .iter_mut()
        .filter(|c| c.user_id == outcome.user_id)
    {
        if let Some(now) = fresh.iter().find(|f| f.credential_id == c.credential_id) {
            c.access_key = now.access_key.clone();
            c.secret_key = now.secret_key.clone();
        }
    }
}

fn failure_event(
    client: &ContaboClient,
    entry: &CredentialEntry,
    rotation_id: Option<Uuid>,
    err: &dyn std::fmt::Display,
) -> AuditEvent {
    AuditEvent {
        at: Utc::now(),
        event: AuditKind::Failure,
        rotation_id,
        trace_id: Some(client.trace_id().to_owned()),
        subject: subject_of(entry),
        detail: serde_json::json!({ "kind": "object_storage", "error": err.to_string() }),
    }
}

/// What merging users settles: journal intents to clear and audit lines to append.
struct Settled<'a> {
    intents: &'a mut Vec<Uuid>,
    audit: &'a mut Vec<AuditEvent>,
}
