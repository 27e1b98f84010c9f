//! The per-user stage of the pipeline: list the user's credentials (unless
//! the pass listed them already), decide, hold back what a sink could not
//! be given, journal, regenerate, and confirm with one re-read.
//!
//! The PATCH takes the rotation id as its `x-request-id`. The re-read is a
//! list of the user's credentials rather than one GET per credential: it is
//! the confirming read for all of the user's rotations at once and catches
//! storages whose keys changed with them (the spec says storages in several
//! locations share credentials). A user's regenerates wait for their
//! request slots together and are handled as they are answered; each is
//! sent only if no shutdown signal has come by the time it has its slot,
//! and one that was sent is finished. The pass keeps half as many users
//! again as `[api] concurrency` in this stage (`pass::users_in_flight`);
//! the client keeps the requests in flight within `concurrency`.

use super::deliver::Gate;
use super::{key_of, snapshot_values, subject_of, PlanItem, RunOptions};
use crate::config::{ObjectStorageSettings, OnFirstSight};
use crate::contabo::models::{Credential, CredentialFilter};
use crate::contabo::{ApiError, ContaboClient};
use crate::crash;
use crate::inventory::{self, CredentialEntry, UserRef};
use crate::policy::{self, Reason};
use crate::sinks::snapshot::Group;
use crate::sinks::Keys;
use crate::state::{Intent, IntentKind, Journal, JournalOp, Records, StateDir};
use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What every user's stage shares.
pub(super) struct StageContext {
    /// Shares the storages' fields between the values of every user.
    pub storages: Arc<crate::sinks::Interner>,
    pub client: ContaboClient,
    pub scope: ObjectStorageSettings,
    pub state: Arc<StateDir>,
    pub s3_urls: Arc<HashMap<String, String>>,
    pub options: RunOptions,
    pub now: DateTime<Utc>,
    /// The records, for each credential's history (the coordinator updates
    /// them as users finish; a user's own entries change only after its
    /// stage).
    pub records: Arc<Mutex<Records>>,
    /// Decisions made over the whole account (with `max_per_run`).
    pub decided: Option<HashMap<String, Reason>>,
    pub gate: Gate,
    /// Intents are written here, one fsync'd write per user, before its
    /// first regenerate.
    pub journal: Arc<tokio::sync::Mutex<JournalFile>>,
    pub cancel: CancellationToken,
    /// Each regenerate's answer goes to delivery at once (see [`Progress`]).
    pub progress: tokio::sync::mpsc::UnboundedSender<Progress>,
    /// Start-up recovery: list and deliver, decide nothing.
    pub deliver_only: bool,
}

/// A regenerate answered with the new keys: the user's values with them,
/// for delivery before the user's last regenerate and its confirming
/// re-read. The old secret is dead from this moment, so the sinks must not
/// wait for the rest of the user (at 10 requests per second that is
/// seconds). The confirm later delivers what the API holds, which is the
/// same unless storages share the keys.
pub(super) struct Progress {
    pub user: UserRef,
    pub values: Group,
}

/// What happened to one user.
pub(super) struct UserOutcome {
    pub user: UserRef,
    /// The user's credentials as listed; `Err` when the listing failed.
    pub listed: Result<Vec<CredentialEntry>, ApiError>,
    pub plan: Vec<PlanItem>,
    /// (entry before, rotation id, the PATCH's answer: its keys, or the
    /// error, which the re-read decides on).
    pub attempted: Vec<(CredentialEntry, Uuid, Result<Credential, ApiError>)>,
    /// Never sent (the circuit breaker was open): the intent is settled.
    pub failed: Vec<(CredentialEntry, Uuid, ApiError)>,
    /// Due but held back because a sink could not take the new value.
    pub held_back: Vec<(CredentialEntry, String)>,
    /// Skipped after a shutdown signal (the intent is settled too).
    pub not_attempted: Vec<Uuid>,
    /// The user's credentials as re-read after the PATCHes.
    pub reread: Option<Result<Vec<Credential>, ApiError>>,
}

/// Runs one user through the stage.
pub(super) async fn run(
    ctx: Arc<StageContext>,
    user: UserRef,
    listed: Option<Vec<CredentialEntry>>,
) -> UserOutcome {
    let mut outcome = UserOutcome {
        user,
        listed: Ok(Vec::new()),
        plan: Vec::new(),
        attempted: Vec::new(),
        failed: Vec::new(),
        held_back: Vec::new(),
        not_attempted: Vec::new(),
        reread: None,
    };
    let entries = match listed {
        Some(entries) => entries,
        None => {
            match inventory::list_user(&ctx.client, &ctx.scope, &outcome.user, &ctx.s3_urls).await {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::warn!(user = %outcome.user.email, error = %err, "Could not list the user's credentials.");
                    outcome.listed = Err(err);
                    return outcome;
                }
            }
        }
    };
    if !ctx.deliver_only {
        let due = plan(&ctx, &entries, &mut outcome);
        if !ctx.options.dry_run && !due.is_empty() {
            regenerate(&ctx, &entries, due, &mut outcome).await;
        }
    }
    outcome.listed = Ok(entries);
    outcome
}

/// Decides each of the user's credentials into the outcome's plan, and
/// returns those due.
fn plan(
    ctx: &StageContext,
    entries: &[CredentialEntry],
    outcome: &mut UserOutcome,
) -> Vec<CredentialEntry> {
    let reasons = decide(ctx, entries);
    let mut due = Vec::new();
    for (entry, reason) in entries.iter().zip(&reasons) {
        outcome.plan.push(PlanItem {
            kind: crate::sinks::Kind::ObjectStorage,
            subject: subject_of(entry),
            access_key: Some(entry.access_key.clone()),
            rotate: reason.rotates(),
            reason: reason.to_string(),
            reason_code: Some(*reason),
        });
        if reason.rotates() {
            due.push(entry.clone());
        }
    }
    due
}

/// Regenerates the `due` credentials a sink can take, each after its
/// intent is journaled, then reads them back (the re-read decides).
async fn regenerate(
    ctx: &StageContext,
    entries: &[CredentialEntry],
    due: Vec<CredentialEntry>,
    outcome: &mut UserOutcome,
) {
    let values = {
        let records = ctx.records.lock().expect("records lock");
        snapshot_values(entries, &records, &ctx.storages)
    };
    let held = ctx.gate.held_back(&outcome.user, &values);
    let held: HashMap<i64, String> = entries
        .iter()
        .zip(held)
        .filter_map(|(e, r)| r.map(|r| (e.credential_id, r)))
        .collect();
    let mut intents = Vec::new();
    for entry in due {
        if let Some(reason) = held.get(&entry.credential_id) {
            outcome.held_back.push((entry, reason.clone()));
        } else {
            intents.push((entry, Uuid::new_v4()));
        }
    }
    if !intents.is_empty() && !journal(ctx, &intents).await {
        for (entry, _) in intents {
            outcome.held_back.push((
                entry,
                "not rotated: the journal could not be written".to_owned(),
            ));
        }
        return;
    }
    send_regenerates(ctx, intents, values, outcome).await;
    if !outcome.attempted.is_empty() {
        outcome.reread = Some(reread(ctx, outcome).await);
        crash::point("s3-after-confirm");
    }
}

/// Sends the journaled regenerates and notes each answer in `outcome`,
/// in the order they were decided. The user's regenerates wait for their
/// slots together, so that the last users of a pass do not leave slots
/// idle; each is sent only if the run is not stopping by then, and handled
/// as it is answered (the sinks get the new values at once).
async fn send_regenerates(
    ctx: &StageContext,
    intents: Vec<(CredentialEntry, Uuid)>,
    mut values: Group,
    outcome: &mut UserOutcome,
) {
    let mut answers: FuturesUnordered<_> = intents
        .into_iter()
        .enumerate()
        .map(|(order, (entry, rotation_id))| async move {
            let answer = if ctx.cancel.is_cancelled() {
                Err(ApiError::Stopped {
                    op: "regenerateObjectStorageCredentials",
                })
            } else {
                tracing::info!(
                    %rotation_id,
                    credential_id = entry.credential_id,
                    user = %entry.user_email,
                    "Regenerating object-storage credential."
                );
                ctx.client
                    .regenerate_credential_unless(
                        &entry.user_id,
                        &entry.object_storage_id,
                        entry.credential_id,
                        Some(rotation_id),
                        Some(&ctx.cancel),
                    )
                    .await
            };
            (order, entry, rotation_id, answer)
        })
        .collect();
    let mut attempted = Vec::new();
    while let Some((order, entry, rotation_id, answer)) = answers.next().await {
        match answer {
            Ok(new) => {
                crash::point("s3-after-regenerate");
                // A new group with the new keys (built in place: no copy
                // of a secret is left behind in a temporary vector).
                values = values
                    .iter()
                    .map(|v| {
                        let mut v = v.clone();
                        if v.credential_id == entry.credential_id {
                            v.keys = Keys::new(&new.access_key, new.secret_key.expose_secret());
                            v.rotated_at = Some(Utc::now());
                        }
                        v
                    })
                    .collect();
                let _ = ctx.progress.send(Progress {
                    user: outcome.user.clone(),
                    values: values.clone(),
                });
                attempted.push((order, (entry, rotation_id, Ok(new))));
            }
            Err(ApiError::Stopped { .. }) => {
                tracing::info!(%rotation_id, "Not regenerated: the run is stopping.");
                outcome.not_attempted.push(rotation_id);
            }
            Err(err @ ApiError::CircuitOpen { .. }) => {
                outcome.failed.push((entry, rotation_id, err));
            }
            // Whatever the error, the re-read decides.
            Err(err) => {
                tracing::warn!(%rotation_id, error = %err, "The regenerate call failed; reading back.");
                attempted.push((order, (entry, rotation_id, Err(err))));
            }
        }
    }
    attempted.sort_by_key(|(order, _)| *order);
    outcome.attempted = attempted.into_iter().map(|(_, a)| a).collect();
}

/// How long to wait before reading again when the first re-read disagrees
/// with a PATCH answer (a replica that has not caught up yet).
const REREAD_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// The confirming re-read of the user's credentials. When it disagrees with
/// a PATCH answer (neither the old keys nor the answered ones), it is read
/// once more after [`REREAD_DELAY`] before record decides; a second read
/// that fails leaves the first.
async fn reread(ctx: &StageContext, outcome: &UserOutcome) -> Result<Vec<Credential>, ApiError> {
    let all = CredentialFilter::default();
    let read = || ctx.client.list_credentials(&outcome.user.user_id, &all);
    let first = read().await?;
    let disagrees = outcome.attempted.iter().any(|(_, _, answer)| {
        let Ok(answer) = answer else { return false };
        first
            .iter()
            .find(|c| c.credential_id == answer.credential_id)
            .is_some_and(|c| !same_keys(c, answer))
    });
    if !disagrees {
        return Ok(first);
    }
    tracing::info!(user = %outcome.user.email, "The re-read disagrees with a regenerate answer; reading again.");
    tokio::time::sleep(REREAD_DELAY).await;
    Ok(read().await.unwrap_or(first))
}

/// Whether two views of a credential hold the same keys.
fn same_keys(a: &Credential, b: &Credential) -> bool {
    a.access_key == b.access_key && a.secret_key.expose_secret() == b.secret_key.expose_secret()
}

/// The policy's decision for each of the user's credentials.
fn decide(ctx: &StageContext, entries: &[CredentialEntry]) -> Vec<Reason> {
    if let Some(decided) = &ctx.decided {
        return entries
            .iter()
            .map(|e| {
                decided
                    .get(&key_of(e).to_string())
                    .copied()
                    .unwrap_or(Reason::Deferred)
            })
            .collect();
    }
    let mut records = ctx.records.lock().expect("records lock");
    entries
        .iter()
        .map(|e| decide_one(&ctx.scope, ctx.options, ctx.now, &mut records, e))
        .collect()
}

/// The policy's decision for one credential, from its records.
pub(super) fn decide_one(
    scope: &ObjectStorageSettings,
    options: RunOptions,
    now: DateTime<Utc>,
    records: &mut Records,
    entry: &CredentialEntry,
) -> Reason {
    let history = super::history(records.credential(&key_of(entry)));
    let adopt = scope.on_first_sight == OnFirstSight::Adopt;
    policy::decide(
        now,
        history,
        scope.rotate,
        scope.max_age,
        adopt,
        options.force,
    )
}

/// The journal of a streaming pass, in memory as it is stored.
pub(super) struct JournalFile {
    pub journal: Journal,
}

impl JournalFile {
    /// Commits `ops` in one transaction and applies them in memory. On
    /// failure nothing is applied, stored or in memory.
    pub fn write(
        &mut self,
        state: &StateDir,
        ops: Vec<JournalOp>,
    ) -> Result<(), crate::state::StateError> {
        state.append_journal(&ops)?;
        ops.into_iter().for_each(|op| self.journal.apply(op));
        Ok(())
    }
}

/// Writes one intent per credential about to be regenerated (fsync) before
/// the first regenerate: a crash at any later point leaves every credential
/// that may have changed in the journal, and the next start reads each back.
async fn journal(ctx: &StageContext, intents: &[(CredentialEntry, Uuid)]) -> bool {
    let started_at = Utc::now();
    let ops = intents
        .iter()
        .map(|(entry, rotation_id)| {
            JournalOp::Begin(Intent {
                rotation_id: *rotation_id,
                started_at,
                kind: IntentKind::ObjectStorage {
                    key: key_of(entry),
                    user_email: entry.user_email.to_string(),
                    old_access_key: entry.access_key.clone(),
                    old_fingerprint: ctx.state.fingerprint(&entry.secret_key),
                },
            })
        })
        .collect();
    let mut journal = ctx.journal.lock().await;
    match journal.write(&ctx.state, ops) {
        Ok(()) => {
            crash::point("s3-after-journal");
            true
        }
        Err(err) => {
            tracing::error!(error = %err, "Could not write the journal; not regenerating.");
            false
        }
    }
}
