//! The run report: what a run planned, rotated, delivered and what failed.
//! It holds ids, access keys and fingerprints only, never a secret.

use crate::policy::Reason;
use serde::Serialize;
use std::io::Write as _;

pub use crate::sinks::change::{CredentialRef, Failed, Rotated, Verified};

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

/// Where the report of a run goes while the run goes on (`--run-now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutput {
    /// One line per item (`rotated …`, `FAILED …`), then the totals.
    Text,
    /// One JSON object per line (`"type"`: `plan`, `rotated`, `verified`,
    /// `failed`, `delivery`, and `summary` last).
    Json,
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
    /// The run stopped early on a shutdown signal.
    pub interrupted: bool,
    /// Requests sent to the storages to verify new keys (apart from the
    /// API's requests).
    pub s3_probes: u64,
    /// What was flushed, counted.
    pub totals: Totals,
    /// How many of `failed` were written.
    failed_written: usize,
    output: Option<ReportOutput>,
}

impl RunReport {
    /// An empty report of the run `trace_id`.
    pub(crate) fn new(trace_id: &str, dry_run: bool, output: Option<ReportOutput>) -> RunReport {
        RunReport {
            trace_id: trace_id.to_owned(),
            dry_run,
            output,
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
        let mut out = self.output.map(|o| (o, std::io::stdout().lock()));
        for p in self.plan.drain(..) {
            self.totals.planned += 1;
            self.totals.due += usize::from(p.rotate);
            // A text report shows the plan of a dry run only.
            match out.as_mut() {
                Some((ReportOutput::Text, _)) if !self.dry_run => {}
                Some((o, w)) => {
                    let _ = write_item(*o, w, "plan", &p, |w| write_plan(w, &p));
                }
                None => {}
            }
        }
        for r in self.rotated.drain(..) {
            match r.kind {
                "client_secret" => self.totals.rotated_client_secret += 1,
                _ => self.totals.rotated_object_storage += 1,
            }
            if let Some((o, w)) = out.as_mut() {
                let _ = write_item(*o, w, "rotated", &r, |w| write_rotated(w, &r));
            }
        }
        for v in self.verified.drain(..) {
            self.totals.verified += 1;
            if let Some((o, w)) = out.as_mut() {
                let _ = write_item(*o, w, "verified", &v, |w| write_verified(w, &v));
            }
        }
        if let Some((o, w)) = out.as_mut() {
            for f in &self.failed[self.failed_written..] {
                let _ = write_item(*o, w, "failed", f, |w| write_failed(w, f));
            }
            self.failed_written = self.failed.len();
            let _ = std::io::Write::flush(w);
        }
    }

    /// Flushes, then writes the deliveries and the summary line. Nothing
    /// is written without an output.
    pub fn finish_output(&mut self) -> std::io::Result<()> {
        self.flush();
        let Some(output) = self.output else {
            return Ok(());
        };
        let mut w = std::io::stdout().lock();
        for d in &self.deliveries {
            write_item(output, &mut w, "delivery", d, |w| {
                writeln!(w, "sink {}: {}", d.sink, d.outcome)
            })?;
        }
        match output {
            ReportOutput::Text => write_summary(&mut w, self)?,
            ReportOutput::Json => {
                serde_json::to_writer(&mut w, &Summary::of(self))?;
                writeln!(w)?;
            }
        }
        std::io::Write::flush(&mut w)
    }

    /// What the metrics count of this run.
    pub fn tally(&self, duration: std::time::Duration) -> crate::metrics::RunTally {
        let failures = |kind: &str| self.failed.iter().filter(|f| f.kind == kind).count();
        let pending = |kind: &str| self.rotated.iter().filter(|r| r.kind == kind).count();
        let rotations = [
            (
                "object_storage",
                "success",
                self.totals.rotated_object_storage + pending("object_storage"),
            ),
            (
                "client_secret",
                "success",
                self.totals.rotated_client_secret + pending("client_secret"),
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
            deliveries: self
                .deliveries
                .iter()
                .map(|d| (d.sink.clone(), d.outcome))
                .collect(),
            failures: self.failures(),
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
            last.credential = Some(CredentialRef::from(entry));
            last.rotation_id = rotation_id;
        }
    }
}

/// The last line of a JSON report.
#[derive(Serialize)]
struct Summary<'a> {
    schema_version: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    trace_id: &'a str,
    dry_run: bool,
    planned: usize,
    due: usize,
    rotated: usize,
    verified: usize,
    failed: usize,
    sinks_written: usize,
    /// Requests sent to the storages to prove new keys (not API requests).
    s3_probes: u64,
    interrupted: bool,
}

impl<'a> Summary<'a> {
    fn of(report: &'a RunReport) -> Summary<'a> {
        Summary {
            schema_version: crate::cli::JSON_SCHEMA_VERSION,
            kind: "summary",
            trace_id: &report.trace_id,
            dry_run: report.dry_run,
            planned: report.totals.planned + report.plan.len(),
            due: report.totals.due + report.plan.iter().filter(|p| p.rotate).count(),
            rotated: report.rotated_count(),
            verified: report.totals.verified + report.verified.len(),
            failed: report.failed.len(),
            sinks_written: sinks_written(report),
            s3_probes: report.s3_probes,
            interrupted: report.interrupted,
        }
    }
}

fn sinks_written(report: &RunReport) -> usize {
    report
        .deliveries
        .iter()
        .filter(|d| d.outcome == "written")
        .count()
}

/// One item as a line of `output`: JSON with its `type`, or `text`.
fn write_item<W: std::io::Write, T: Serialize>(
    output: ReportOutput,
    w: &mut W,
    kind: &'static str,
    item: &T,
    text: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match output {
        ReportOutput::Text => text(w),
        ReportOutput::Json => {
            #[derive(Serialize)]
            struct Line<'a, T> {
                schema_version: u32,
                #[serde(rename = "type")]
                kind: &'static str,
                #[serde(flatten)]
                item: &'a T,
            }
            let line = Line {
                schema_version: crate::cli::JSON_SCHEMA_VERSION,
                kind,
                item,
            };
            serde_json::to_writer(&mut *w, &line)?;
            writeln!(w)
        }
    }
}

fn write_plan(w: &mut impl std::io::Write, p: &PlanItem) -> std::io::Result<()> {
    write!(
        w,
        "  {} {} {}",
        if p.rotate { "ROTATE" } else { "keep  " },
        p.kind,
        p.subject
    )?;
    if let Some(k) = &p.access_key {
        write!(w, " ({k})")?;
    }
    writeln!(w, ": {}", p.reason)
}

fn write_rotated(w: &mut impl std::io::Write, r: &Rotated) -> std::io::Result<()> {
    writeln!(
        w,
        "rotated {} {}: {} {} -> {} {}{}",
        r.kind,
        r.subject,
        r.old_access_key.as_deref().unwrap_or("-"),
        r.old_fingerprint,
        r.new_access_key.as_deref().unwrap_or("-"),
        r.new_fingerprint,
        if r.recovered { " (recovered)" } else { "" }
    )
}

fn write_verified(w: &mut impl std::io::Write, v: &Verified) -> std::io::Result<()> {
    let old = match v.old_key_refused {
        Some(true) => "; the old key is refused",
        Some(false) => "; the old key is still accepted",
        None => "",
    };
    writeln!(
        w,
        "verified {} {}: {} accepted by the storage after {} attempt{} ({} ms){old}",
        v.kind,
        v.subject,
        v.access_key,
        v.attempts,
        if v.attempts == 1 { "" } else { "s" },
        v.elapsed_ms
    )
}

fn write_failed(w: &mut impl std::io::Write, f: &Failed) -> std::io::Result<()> {
    writeln!(w, "FAILED {} {}: {}", f.kind, f.subject, f.error)
}

/// The text report's last line: the totals.
fn write_summary(w: &mut impl std::io::Write, report: &RunReport) -> std::io::Result<()> {
    let s = Summary::of(report);
    if report.dry_run {
        return writeln!(
            w,
            "Dry run: {} of {} secrets would rotate; no change was made.",
            s.due, s.planned
        );
    }
    writeln!(
        w,
        "{} rotated, {} verified, {} failed, {} sinks written{}{}.",
        s.rotated,
        s.verified,
        s.failed,
        s.sinks_written,
        match s.s3_probes {
            0 => String::new(),
            n => format!(" ({n} S3 requests to prove new keys)"),
        },
        if report.interrupted {
            "; stopped early by a shutdown signal"
        } else {
            ""
        }
    )
}
