//! The run report: what a run planned, rotated, delivered and what failed.
//! It holds ids, access keys and fingerprints only, never a secret.

use crate::policy::Reason;
use serde::Serialize;

/// What one secret is in a run's plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    /// `object_storage` or `client_secret`.
    pub kind: &'static str,
    /// `user@example.com/Object Storage EU 420/12345`, or the client id.
    pub subject: String,
    pub access_key: Option<String>,
    pub rotate: bool,
    pub reason: String,
    #[serde(skip)]
    pub reason_code: Option<Reason>,
}

/// Which S3 credential a rotation or failure is about.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialRef {
    pub user_id: String,
    pub user_email: String,
    pub object_storage_id: String,
    pub object_storage_name: String,
    pub region: String,
    pub credential_id: i64,
}

impl CredentialRef {
    pub(crate) fn of(c: &crate::inventory::CredentialEntry) -> Self {
        CredentialRef {
            user_id: c.user_id.clone(),
            user_email: c.user_email.clone(),
            object_storage_id: c.object_storage_id.clone(),
            object_storage_name: c.object_storage_name.clone(),
            region: c.region.clone(),
            credential_id: c.credential_id,
        }
    }
}

/// One secret rotated in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub kind: &'static str,
    pub subject: String,
    /// The credential, for `object_storage` rotations.
    pub credential: Option<CredentialRef>,
    /// When the rotation happened.
    pub at: chrono::DateTime<chrono::Utc>,
    pub rotation_id: uuid::Uuid,
    pub old_access_key: Option<String>,
    pub new_access_key: Option<String>,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    /// True when it was finished from the journal of an interrupted run.
    pub recovered: bool,
}

/// One thing that failed (a credential, a user listing, a sink, the run).
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub kind: &'static str,
    pub subject: String,
    pub error: String,
    /// The credential, when an S3 credential failed.
    pub credential: Option<CredentialRef>,
    /// The rotation id, when a rotation had started.
    pub rotation_id: Option<uuid::Uuid>,
}

/// One sink's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub sink: String,
    /// `written`, `unchanged` or `failed`.
    pub outcome: &'static str,
}

/// Everything a run did.
#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    pub trace_id: String,
    pub dry_run: bool,
    pub plan: Vec<PlanItem>,
    pub rotated: Vec<Rotated>,
    pub failed: Vec<Failed>,
    pub deliveries: Vec<Delivery>,
    /// The run stopped early on a shutdown signal.
    pub interrupted: bool,
}

impl RunReport {
    /// 0 when nothing failed, 1 otherwise (DESIGN.md §2).
    pub fn exit_code(&self) -> u8 {
        if self.failed.is_empty() {
            0
        } else {
            1
        }
    }

    pub(crate) fn fail(
        &mut self,
        kind: &'static str,
        subject: impl Into<String>,
        error: impl ToString,
    ) {
        let subject = subject.into();
        let error = error.to_string();
        tracing::error!(kind, subject = %subject, error = %error, "Failed.");
        self.failed.push(Failed {
            kind,
            subject,
            error,
            credential: None,
            rotation_id: None,
        });
    }

    /// Like [`RunReport::fail`], naming the credential and rotation.
    pub(crate) fn fail_credential(
        &mut self,
        entry: &crate::inventory::CredentialEntry,
        rotation_id: Option<uuid::Uuid>,
        error: impl ToString,
    ) {
        self.fail("object_storage", super::subject_of(entry), error);
        if let Some(last) = self.failed.last_mut() {
            last.credential = Some(CredentialRef::of(entry));
            last.rotation_id = rotation_id;
        }
    }
}

/// A human summary, one line per item, for `--run-now` and `--dry-run`.
/// Written piece by piece: a sweep of thousands of credentials is printed
/// without building the whole text first.
impl std::fmt::Display for RunReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run {
            let due = self.plan.iter().filter(|p| p.rotate).count();
            writeln!(
                out,
                "Dry run: {due} of {} secrets would rotate; no change was made.",
                self.plan.len()
            )?;
            for p in &self.plan {
                write!(
                    out,
                    "  {} {} {}",
                    if p.rotate { "ROTATE" } else { "keep  " },
                    p.kind,
                    p.subject
                )?;
                if let Some(k) = &p.access_key {
                    write!(out, " ({k})")?;
                }
                writeln!(out, ": {}", p.reason)?;
            }
            return Ok(());
        }
        for r in &self.rotated {
            writeln!(
                out,
                "rotated {} {}: {} {} -> {} {}{}",
                r.kind,
                r.subject,
                r.old_access_key.as_deref().unwrap_or("-"),
                r.old_fingerprint,
                r.new_access_key.as_deref().unwrap_or("-"),
                r.new_fingerprint,
                if r.recovered { " (recovered)" } else { "" }
            )?;
        }
        for d in &self.deliveries {
            writeln!(out, "sink {}: {}", d.sink, d.outcome)?;
        }
        for f in &self.failed {
            writeln!(out, "FAILED {} {}: {}", f.kind, f.subject, f.error)?;
        }
        writeln!(
            out,
            "{} rotated, {} failed, {} sinks written{}.",
            self.rotated.len(),
            self.failed.len(),
            self.deliveries
                .iter()
                .filter(|d| d.outcome == "written")
                .count(),
            if self.interrupted {
                "; stopped early by a shutdown signal"
            } else {
                ""
            }
        )
    }
}
