//! The run report: what a run planned, rotated, delivered and what failed.
//! It holds ids, access keys and fingerprints only, never a secret.

use crate::policy::Reason;
use crate::sinks::Kind;
use serde::Serialize;

pub use crate::sinks::change::{CredentialRef, Failed, Rotated, Verified};

/// What one secret is in a run's plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    pub kind: crate::sinks::Kind,
    /// `user@example.com/Object Storage EU 420/12345`, or the client id.
    pub subject: String,
    pub access_key: Option<String>,
    pub rotate: bool,
    pub reason: String,
    #[serde(skip)]
    pub reason_code: Option<Reason>,
}

/// What a run did with a twin (docs/design.md §4, Twin users).
#[derive(Debug, Clone, Serialize)]
pub struct TwinOutcome {
    pub twin: String,
    /// `switched` (to `user_email`), `retired` (`user_email`'s keys
    /// regenerated and discarded), `deferred` (until `at`), `due` or `kept`
    /// (a dry run's plan).
    pub action: &'static str,
    pub user_email: String,
    /// `switched`: when the previous user retires; `deferred`: when the
    /// grace period ends.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The switch finishes one a stopped run left under way.
    pub recovered: bool,
}

/// One sink's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub sink: String,
    /// `written`, `unchanged` or `failed`.
    pub outcome: &'static str,
}

/// Where a run's report goes while the run goes on (`--run-now`): `cli`
/// renders it (text or JSON lines). This module holds the report as data.
pub trait ReportWriter: Send {
    /// One item, in the order the run reached it.
    fn item(&mut self, item: ReportItem<'_>);
    /// The run is over: writes what comes last (deliveries, totals) from
    /// `report`, and returns the first write error of the whole report.
    fn finish(&mut self, report: &RunReport) -> std::io::Result<()>;
}

impl std::fmt::Debug for dyn ReportWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportWriter")
    }
}

/// Makes the writer of a run's report, given whether the run is a dry run.
pub type ReportOutput = fn(dry_run: bool) -> Box<dyn ReportWriter>;

/// One streamed item of a report.
#[derive(Debug, Clone, Copy)]
pub enum ReportItem<'a> {
    Plan(&'a PlanItem),
    Rotated(&'a Rotated),
    Verified(&'a Verified),
    Failed(&'a Failed),
    Twin(&'a TwinOutcome),
}

/// Counts of what a run did, for the summary and the metrics.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Totals {
    /// Secrets in the plan, and how many of them were due.
    pub planned: usize,
    pub due: usize,
    /// Rotated S3 credentials and client secrets.
    pub rotated_object_storage: usize,
    pub rotated_client_secret: usize,
    /// S3 keys the storage accepted, and kept refusing (`verify = "s3"`).
    pub verified: usize,
    pub verify_refused: usize,
}

/// Everything a run did. Items are streamed: [`RunReport::flush`] writes
/// the plan items and rotations gathered since the last flush to the
/// output (if any) and keeps only their counts, so a pass over a large
/// account does not hold its whole report. Failures are kept (they decide
/// the exit code and are few), and written once each.
#[derive(Debug, Default)]
pub struct RunReport {
    pub trace_id: String,
    pub dry_run: bool,
    /// Plan items not flushed yet.
    pub plan: Vec<PlanItem>,
    /// Rotations not flushed yet.
    pub rotated: Vec<Rotated>,
    /// Verifications not flushed yet (each follows its rotation).
    pub verified: Vec<Verified>,
    pub failed: Vec<Failed>,
    pub deliveries: Vec<Delivery>,
    /// Twins switched, retired or deferred (few: kept whole).
    pub twins: Vec<TwinOutcome>,
    /// How many of `twins` were written.
    twins_written: usize,
    /// The run stopped early on a shutdown signal.
    pub interrupted: bool,
    /// Requests sent to the storages to verify new keys (apart from the
    /// API's requests).
    pub s3_probes: u64,
    /// Of `s3_probes`, those a storage answered with `SlowDown`.
    pub s3_slow_downs: u64,
    /// What was flushed, counted.
    pub totals: Totals,
    /// How many of `failed` were written.
    failed_written: usize,
    output: Option<Box<dyn ReportWriter>>,
}

impl RunReport {
    /// An empty report of the run `trace_id`.
    pub(crate) fn new(trace_id: &str, dry_run: bool, output: Option<ReportOutput>) -> RunReport {
        RunReport {
            trace_id: trace_id.to_owned(),
            dry_run,
            output: output.map(|make| make(dry_run)),
            ..RunReport::default()
        }
    }

    /// Takes `other`'s failures and deliveries (start-up recovery's
    /// delivery pass).
    pub(crate) fn absorb(&mut self, other: RunReport) {
        self.failed.extend(other.failed);
        self.deliveries.extend(other.deliveries);
    }

    /// Rotated secrets, flushed or not.
    pub fn rotated_count(&self) -> usize {
        self.totals.rotated_object_storage + self.totals.rotated_client_secret + self.rotated.len()
    }

    /// Writes what was gathered since the last flush to the output and
    /// keeps its counts. Without an output the items are only counted.
    pub fn flush(&mut self) {
        let mut out = self.output.as_mut();
        for p in self.plan.drain(..) {
            self.totals.planned += 1;
            self.totals.due += usize::from(p.rotate);
            if let Some(w) = out.as_mut() {
                w.item(ReportItem::Plan(&p));
            }
        }
        for r in self.rotated.drain(..) {
            match r.kind {
                Kind::ClientSecret => self.totals.rotated_client_secret += 1,
                Kind::ObjectStorage => self.totals.rotated_object_storage += 1,
            }
            if let Some(w) = out.as_mut() {
                w.item(ReportItem::Rotated(&r));
            }
        }
        for v in self.verified.drain(..) {
            self.totals.verified += 1;
            if let Some(w) = out.as_mut() {
                w.item(ReportItem::Verified(&v));
            }
        }
        if let Some(w) = out {
            for t in &self.twins[self.twins_written..] {
                w.item(ReportItem::Twin(t));
            }
            for f in &self.failed[self.failed_written..] {
                w.item(ReportItem::Failed(f));
            }
        }
        self.twins_written = self.twins.len();
        self.failed_written = self.failed.len();
    }

    /// Flushes, then has the writer finish the report (deliveries and
    /// totals). Nothing is written without an output.
    pub fn finish_output(&mut self) -> std::io::Result<()> {
        self.flush();
        match self.output.take() {
            Some(mut w) => w.finish(self),
            None => Ok(()),
        }
    }

    /// What the metrics count of this run.
    pub fn tally(&self, duration: std::time::Duration) -> crate::metrics::RunTally {
        let failures = |kind: &str| self.failed.iter().filter(|f| f.kind == kind).count();
        let pending = |kind: Kind| self.rotated.iter().filter(|r| r.kind == kind).count();
        let rotations = [
            (
                "object_storage",
                "success",
                self.totals.rotated_object_storage + pending(Kind::ObjectStorage),
            ),
            (
                "client_secret",
                "success",
                self.totals.rotated_client_secret + pending(Kind::ClientSecret),
            ),
            ("object_storage", "failure", failures("object_storage")),
            ("client_secret", "failure", failures("client_secret")),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(kind, result, n)| (kind, result, n as u64))
        .collect();
        let verifications = [
            ("accepted", self.totals.verified + self.verified.len()),
            ("refused", self.totals.verify_refused),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(result, n)| (result, n as u64))
        .collect();
        crate::metrics::RunTally {
            rotations,
            verifications,
            s3_probes: self.s3_probes,
            s3_slow_downs: self.s3_slow_downs,
            deliveries: self
                .deliveries
                .iter()
                .map(|d| (d.sink.clone(), d.outcome))
                .collect(),
            failures: self.failures().into(),
            duration,
        }
    }

    /// What failed, by kind: a sink failure is not a rotation failure, and
    /// a webhook (a notification, queued in the outbox) is not a file.
    pub fn failures(&self) -> crate::state::LastFailures {
        let mut failures = crate::state::LastFailures::default();
        for f in &self.failed {
            let count = match f.kind {
                "sink" if f.subject.starts_with("webhook ") => &mut failures.webhooks,
                "sink" => &mut failures.file_sinks,
                _ => &mut failures.rotation,
            };
            *count += 1;
        }
        failures
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
            last.credential = Some(CredentialRef::from(entry));
            last.rotation_id = rotation_id;
        }
    }
}
