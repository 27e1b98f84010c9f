//! The record stage: one user's outcome folded into the records, the audit
//! lines and the report, and the user's current values for delivery.

use super::user::UserOutcome;
use super::{key_of, subject_of, CredentialRef, Failed, Rotated, RunReport};
use crate::contabo::models::Credential;
use crate::contabo::{ApiError, ContaboClient};
use crate::inventory::CredentialEntry;
use crate::state::{AuditEvent, AuditKind, Records, StateDir};
use chrono::Utc;
use uuid::Uuid;

/// What recording one user produced, for delivery.
pub(super) struct Recorded {
    /// The user's credentials as the API holds them now.
    pub entries: Vec<CredentialEntry>,
    /// Whether any value changed (a rotation).
    pub changed: bool,
    pub rotated: Vec<Rotated>,
    pub failed: Vec<Failed>,
    /// Intents settled by this user (cleared once the records are saved).
    pub settled: Vec<Uuid>,
    pub audit: Vec<AuditEvent>,
    /// The rotated credentials, for verification at the storage (empty
    /// unless `prove`).
    pub proofs: Vec<super::verify::Job>,
}

/// Folds one user's outcome into `records` and `report`; with `prove`,
/// each rotation also gives a verification job.
pub(super) fn record(
    state: &StateDir,
    client: &ContaboClient,
    records: &mut Records,
    outcome: UserOutcome,
    report: &mut RunReport,
    prove: bool,
) -> Recorded {
    let now = Utc::now();
    let mut entries = outcome.listed.unwrap_or_default();
    let mut out = Recorded {
        entries: Vec::new(),
        changed: false,
        rotated: Vec::new(),
        failed: Vec::new(),
        settled: outcome.not_attempted,
        audit: Vec::new(),
        proofs: Vec::new(),
    };
    // First sight: the clock of `on_first_sight` starts now.
    for c in &entries {
        records.credential_or_insert_with(&key_of(c), || super::new_record(c, state, now));
    }
    let failures_before = report.failed.len();
    for (entry, reason) in outcome.held_back {
        report.fail_credential(&entry, None, reason);
    }
    for (entry, rotation_id, err) in outcome.failed {
        out.settled.push(rotation_id);
        out.audit
            .push(failure_event(client, &entry, Some(rotation_id), &err));
        report.fail_credential(&entry, Some(rotation_id), err);
    }
    let reread = match outcome.reread {
        Some(Ok(list)) => Some(list),
        Some(Err(err)) => {
            tracing::warn!(user = %outcome.user.email, error = %err, "Could not re-read the user's credentials.");
            None
        }
        None => None,
    };
    let fold = Fold {
        state,
        client,
        now,
        prove,
        reread: reread.as_deref(),
    };
    for (entry, rotation_id, answer) in outcome.attempted {
        fold.attempt(
            &entry,
            rotation_id,
            answer,
            &mut entries,
            records,
            report,
            &mut out,
        );
    }
    // Every storage of this user as the API holds it now (shared keys
    // change together).
    if let Some(fresh) = &reread {
        for e in &mut entries {
            if let Some(now) = fresh.iter().find(|f| f.credential_id == e.credential_id) {
                if now.access_key != e.access_key {
                    out.changed = true;
                }
                e.access_key = now.access_key.clone();
                e.secret_key = now.secret_key.clone();
            }
        }
    }
    out.failed = report.failed[failures_before..]
        .iter()
        .filter(|f| f.kind == "object_storage")
        .cloned()
        .collect();
    report.rotated.extend(out.rotated.iter().cloned());
    out.entries = entries;
    out
}

/// What a user's attempts are folded with.
struct Fold<'a> {
    state: &'a StateDir,
    client: &'a ContaboClient,
    now: chrono::DateTime<Utc>,
    prove: bool,
    /// The user's credentials read back after the regenerates.
    reread: Option<&'a [Credential]>,
}

impl Fold<'_> {
    /// One regenerate: its answer and the re-read decide whether the
    /// credential rotated, failed, or stays unknown (its intent then stays
    /// in the journal for the next run).
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        entry: &CredentialEntry,
        rotation_id: Uuid,
        answer: Result<Credential, ApiError>,
        entries: &mut [CredentialEntry],
        records: &mut Records,
        report: &mut RunReport,
        out: &mut Recorded,
    ) {
        let old_fp = self.state.fingerprint(&entry.secret_key);
        let listed = self
            .reread
            .and_then(|list| list.iter().find(|c| c.credential_id == entry.credential_id));
        let unchanged = |c: &Credential| {
            self.state.fingerprint(&c.secret_key) == old_fp && c.access_key == entry.access_key
        };
        let current = match (&answer, listed) {
            // A re-read still showing the old keys after a good answer is
            // stale (read twice already): the answer stands.
            (Ok(answered), Some(listed)) if unchanged(listed) => Some(answered),
            (_, Some(listed)) => Some(listed),
            (Ok(answered), None) => Some(answered),
            (Err(_), None) => None,
        };
        let unknown = answer.as_ref().err().is_some_and(ApiError::outcome_unknown);
        let Some(current) = current else {
            // (Only an error leaves no current value.)
            let err = answer
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            if unknown {
                // Neither an answer nor a re-read: the intent stays in the
                // journal and the next run resolves it.
                report.fail_credential(
                    entry,
                    Some(rotation_id),
                    format!("regenerate sent but not confirmed ({err}); will be resolved on the next run"),
                );
            } else {
                self.failed(entry, rotation_id, err, report, out);
            }
            return;
        };
        if unchanged(current) {
            let err = match &answer {
                // No answer, and no change yet: it may still land, so the
                // outcome stays unknown and the intent with it.
                Err(err) if unknown => {
                    report.fail_credential(
                        entry,
                        Some(rotation_id),
                        format!("regenerate sent, outcome unknown ({err}); the credential has not changed yet; will be resolved on the next run"),
                    );
                    return;
                }
                Err(err) => format!("{err}; the credential did not change"),
                Ok(_) => "the regenerate answered with the same keys".to_owned(),
            };
            self.failed(entry, rotation_id, err, report, out);
            return;
        }
        // Deliver the confirmed value even when the re-read failed.
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.credential_id == entry.credential_id)
        {
            e.access_key = current.access_key.clone();
            e.secret_key = current.secret_key.clone();
        }
        self.rotated(entry, rotation_id, current, records, out);
    }

    /// A regenerate that failed for good: settled, audited and reported.
    fn failed(
        &self,
        entry: &CredentialEntry,
        rotation_id: Uuid,
        err: String,
        report: &mut RunReport,
        out: &mut Recorded,
    ) {
        out.settled.push(rotation_id);
        out.audit
            .push(failure_event(self.client, entry, Some(rotation_id), &err));
        report.fail_credential(entry, Some(rotation_id), err);
    }

    /// A credential that rotated to `current`: its record, audit line,
    /// proof job and report item.
    fn rotated(
        &self,
        entry: &CredentialEntry,
        rotation_id: Uuid,
        current: &Credential,
        records: &mut Records,
        out: &mut Recorded,
    ) {
        let (state, now) = (self.state, self.now);
        out.settled.push(rotation_id);
        let old_fp = state.fingerprint(&entry.secret_key);
        let new_fp = state.fingerprint(&current.secret_key);
        let record = records
            .credential_or_insert_with(&key_of(entry), || super::new_record(entry, state, now));
        record.rotated_at = Some(now);
        record.rotation_id = Some(rotation_id);
        record.verified = None;
        record.access_key = current.access_key.as_str().into();
        record.secret_fingerprint = new_fp;
        out.audit.push(AuditEvent {
            at: now,
            event: AuditKind::Rotation,
            rotation_id: Some(rotation_id),
            trace_id: Some(self.client.trace_id().to_owned()),
            subject: subject_of(entry),
            detail: serde_json::json!({
                "kind": "object_storage",
                "old_access_key": entry.access_key,
                "new_access_key": current.access_key,
                "old_fingerprint": old_fp.text(),
                "new_fingerprint": new_fp.text(),
                "confirmed": self.reread.is_some(),
            }),
        });
        tracing::info!(%rotation_id, credential_id = entry.credential_id, user = %entry.user_email, "Rotated object-storage credential.");
        crate::known_secrets::register_retired(&entry.secret_key);
        out.changed = true;
        if self.prove {
            out.proofs.push(super::verify::Job::new(
                rotation_id,
                entry,
                &current.access_key,
                &current.secret_key,
            ));
        }
        out.rotated.push(Rotated {
            kind: crate::sinks::Kind::ObjectStorage,
            subject: subject_of(entry),
            credential: Some(CredentialRef::from(entry)),
            at: now,
            rotation_id,
            old_access_key: Some(entry.access_key.clone()),
            new_access_key: Some(current.access_key.clone()),
            old_fingerprint: old_fp.text(),
            new_fingerprint: new_fp.text(),
            recovered: false,
        });
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
