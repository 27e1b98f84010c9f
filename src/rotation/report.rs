//! The run report: what a run planned, rotated, delivered and what failed.
//! It holds ids, access keys and fingerprints only, never a secret.

use crate::policy::Reason;
use serde::Serialize;

pub use crate::sinks::change::{CredentialRef, Failed, Rotated};

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
    /// What the metrics count of this run.
    pub fn tally(&self) -> crate::metrics::RunTally {
        let rotations = self
            .rotated
            .iter()
            .map(|r| (r.kind, "success"))
            .chain(
                self.failed
                    .iter()
                    .filter(|f| f.kind == "object_storage" || f.kind == "client_secret")
                    .map(|f| (f.kind, "failure")),
            )
            .collect();
        crate::metrics::RunTally {
            rotations,
            deliveries: self
                .deliveries
                .iter()
                .map(|d| (d.sink.clone(), d.outcome))
                .collect(),
            ok: self.failed.is_empty(),
        }
    }

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
