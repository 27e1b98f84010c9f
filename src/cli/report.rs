//! The run report as `--run-now` and `demo` print it: one line per item as
//! the run goes (text, or JSON objects with a `type`), then the
//! deliveries and the totals; and the exit code it gives. The report
//! itself is data (`rotation::RunReport`).

use crate::rotation::{
    Failed, PlanItem, ReportItem, ReportOutput, ReportWriter, Rotated, RunReport, TwinOutcome,
    Verified,
};
use serde::Serialize;
use std::io::Write;

/// 0 when nothing failed, 1 otherwise.
pub fn exit_code(report: &RunReport) -> u8 {
    u8::from(!report.failed.is_empty())
}

/// The text report.
pub const TEXT: ReportOutput = |dry_run| Box::new(Stdout::new(Format::Text, dry_run));

/// The JSON-lines report.
pub const JSON: ReportOutput = |dry_run| Box::new(Stdout::new(Format::Json, dry_run));

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// Writes each line to stdout as it comes (Rust's stdout is line
/// buffered), keeping the first write error for [`ReportWriter::finish`].
struct Stdout {
    format: Format,
    dry_run: bool,
    error: Option<std::io::Error>,
}

impl Stdout {
    fn new(format: Format, dry_run: bool) -> Stdout {
        Stdout {
            format,
            dry_run,
            error: None,
        }
    }

    fn keep(&mut self, result: std::io::Result<()>) {
        if let Err(err) = result {
            self.error.get_or_insert(err);
        }
    }
}

impl ReportWriter for Stdout {
    fn item(&mut self, item: ReportItem<'_>) {
        let f = self.format;
        let w = &mut std::io::stdout().lock();
        let written = match item {
            // A text report shows the plan of a dry run only.
            ReportItem::Plan(_) if f == Format::Text && !self.dry_run => Ok(()),
            ReportItem::Plan(p) => write_item(f, w, "plan", p, |w| write_plan(w, p)),
            ReportItem::Rotated(r) => write_item(f, w, "rotated", r, |w| write_rotated(w, r)),
            ReportItem::Verified(v) => write_item(f, w, "verified", v, |w| write_verified(w, v)),
            ReportItem::Failed(e) => write_item(f, w, "failed", e, |w| write_failed(w, e)),
            ReportItem::Twin(t) => write_item(f, w, "twin", t, |w| write_twin(w, t)),
        };
        self.keep(written);
    }

    fn finish(&mut self, report: &RunReport) -> std::io::Result<()> {
        let w = &mut std::io::stdout().lock();
        for d in &report.deliveries {
            write_item(self.format, w, "delivery", d, |w| {
                writeln!(w, "sink {}: {}", d.sink, d.outcome)
            })?;
        }
        match self.format {
            Format::Text => write_summary(w, report)?,
            Format::Json => {
                serde_json::to_writer(&mut *w, &Summary::of(report))?;
                writeln!(w)?;
            }
        }
        w.flush()?;
        self.error.take().map_or(Ok(()), Err)
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
    /// Of them, those a storage answered with `SlowDown`.
    s3_slow_downs: u64,
    interrupted: bool,
}

impl<'a> Summary<'a> {
    fn of(report: &'a RunReport) -> Summary<'a> {
        Summary {
            schema_version: super::JSON_SCHEMA_VERSION,
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
            s3_slow_downs: report.s3_slow_downs,
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
    output: Format,
    w: &mut W,
    kind: &'static str,
    item: &T,
    text: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match output {
        Format::Text => text(w),
        Format::Json => {
            #[derive(Serialize)]
            struct Line<'a, T> {
                schema_version: u32,
                #[serde(rename = "type")]
                kind: &'static str,
                #[serde(flatten)]
                item: &'a T,
            }
            let line = Line {
                schema_version: super::JSON_SCHEMA_VERSION,
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
        match (s.s3_probes, s.s3_slow_downs) {
            (0, _) => String::new(),
            (n, 0) => format!(" ({n} S3 requests to prove new keys)"),
            (n, slow) => format!(" ({n} S3 requests to prove new keys, {slow} answered SlowDown)"),
        },
        if report.interrupted {
            "; stopped early by a shutdown signal"
        } else {
            ""
        }
    )
}

/// `twin app: switched to app-b@example.com (the keys handed over before retire at …)`.
fn write_twin(w: &mut dyn Write, t: &TwinOutcome) -> std::io::Result<()> {
    let at = t.at.map(crate::json_time::format).unwrap_or_default();
    let recovered = if t.recovered {
        ", finishing a stopped run's switch"
    } else {
        ""
    };
    match t.action {
        "switched" => writeln!(
            w,
            "twin {}: switched to {}{recovered}; the keys handed over before retire at {at}",
            t.twin, t.user_email
        ),
        "retired" => writeln!(
            w,
            "twin {}: retired the keys of {} (regenerated, discarded)",
            t.twin, t.user_email
        ),
        "deferred" => writeln!(
            w,
            "twin {}: deferred until {at}: the keys handed over before are in their grace period",
            t.twin
        ),
        action => writeln!(w, "twin {}: {action} (active: {})", t.twin, t.user_email),
    }
}
