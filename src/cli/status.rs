//! `status [--json]`: what the state directory says, read without the lock
//! and without any network call: last rotations, pending work, sink
//! deliveries and the next scheduled run. Ids, times and fingerprints only.

use super::{CliError, EXIT_OK};
use crate::config::Settings;
use crate::schedule::next_tick;
use crate::state::{CredentialKey, CredentialRecord, StateDir};
use anyhow::Context;
use serde_json::json;
use std::io::Write;

pub fn run(settings: &Settings, as_json: bool, out: &mut impl Write) -> Result<u8, CliError> {
    let view = StateDir::open_read_only(&settings.state.dir).with_context(|| {
        format!(
            "reading the state directory {}",
            settings.state.dir.display()
        )
    })?;
    let next_run = next_tick(&settings.schedule, chrono::Utc::now()).map(crate::json_time::format);
    let mut credentials: Vec<_> = view.records.iter().collect();
    credentials.sort_by(|a, b| b.1.rotated_at.cmp(&a.1.rotated_at).then(a.0.cmp(b.0)));
    let due_after = chrono::Duration::from_std(settings.object_storage.max_age)
        .unwrap_or(chrono::Duration::MAX);
    let removed =
        crate::sinks::webhook::removed_queues(&settings.sinks, &view.outbox, chrono::Utc::now());
    if as_json {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        let document = Document {
            head: head(&view, settings, &next_run, &removed),
            credentials: &credentials,
            due_after,
        };
        serde_json::to_writer(&mut out, &document).context("writing JSON")?;
        writeln!(out).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
        return Ok(EXIT_OK);
    }
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").context("writing to stdout");
    w(
        out,
        format!(
            "State directory: {}{}",
            view.dir.display(),
            if view.exists {
                ""
            } else {
                " (not created yet)"
            }
        ),
    )?;
    w(
        out,
        format!(
            "Next run: {} ({} in {})",
            next_run.as_deref().unwrap_or("never"),
            settings.schedule.cron_expr,
            settings.schedule.timezone
        ),
    )?;
    let runs = &view.runs;
    w(
        out,
        match runs.last_run_at {
            None => "Last run: none recorded".to_owned(),
            Some(at) => {
                let f = runs.last_failures;
                format!(
                    "Last run: {} ({}); last without a rotation failure: {}; last with every sink delivered: {}",
                    crate::json_time::format(at),
                    if f == crate::state::LastFailures::default() {
                        "nothing failed".to_owned()
                    } else {
                        format!(
                            "failed: {} rotation, {} file or template sink, {} webhook",
                            f.rotation, f.file_sinks, f.webhooks
                        )
                    },
                    runs.last_success_at.map_or("never".into(), crate::json_time::format),
                    runs.last_delivery_success_at
                        .map_or("never".into(), crate::json_time::format),
                )
            }
        },
    )?;
    match &view.records.client_secret {
        Some(r) => w(
            out,
            format!(
                "Client secret: last rotated {} ({})",
                r.rotated_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "never".into()),
                r.fingerprint.text()
            ),
        )?,
        None => w(out, "Client secret: no record".into())?,
    }
    let rotated = credentials
        .iter()
        .filter(|(_, r)| r.rotated_at.is_some())
        .count();
    w(
        out,
        format!(
            "Object-storage credentials: {} known, {rotated} rotated by contabo-rotator",
            credentials.len()
        ),
    )?;
    for (key, r) in credentials.iter().take(20) {
        w(
            out,
            format!(
                "  {} {} {}  last rotated {}{}",
                r.user_email,
                key,
                r.access_key,
                r.rotated_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "never".into()),
                match &r.verified {
                    Some(v) if v.accepted => "; the storage accepts the key".to_owned(),
                    Some(v) => format!(
                        "; the storage REFUSED the key ({})",
                        v.error.as_deref().unwrap_or("no answer")
                    ),
                    None => String::new(),
                }
            ),
        )?;
    }
    if credentials.len() > 20 {
        w(
            out,
            format!(
                "  … and {} more (status --json lists all)",
                credentials.len() - 20
            ),
        )?;
    }
    for t in &view.twins {
        w(out, twin_line(t))?;
    }
    w(
        out,
        format!("Pending rotations: {}", view.journal.intents.len()),
    )?;
    for (id, s) in &view.records.sinks {
        w(
            out,
            format!(
                "Sink {id}: delivered {}{}{}",
                s.delivered_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "never".into()),
                match pending_events(&view, id) {
                    0 => String::new(),
                    n => format!("; {n} webhook events pending"),
                },
                s.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        )?;
    }
    for q in &removed {
        w(
            out,
            format!(
                "Webhook queue of a sink no longer configured, {}: {} events; dropped at {} unless the sink comes back",
                q.sink_id,
                q.events,
                crate::json_time::format(q.drop_after)
            ),
        )?;
    }
    Ok(EXIT_OK)
}

/// `status --json`, written as it is serialised: every field but the
/// credentials is small and built first; each credential's object is
/// built, written and dropped in turn. (With the document built whole,
/// `status --json` peaked at 95.9 MiB for 30,000 credentials; streamed,
/// at 21.4 MiB, most of it the records.) Keys come out sorted, as a
/// `serde_json::Value`'s do.
struct Document<'a> {
    head: serde_json::Map<String, serde_json::Value>,
    credentials: &'a [(&'a CredentialKey, &'a CredentialRecord)],
    due_after: chrono::Duration,
}

impl serde::Serialize for Document<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const CREDENTIALS: &str = "credentials";
        let credentials = Credentials(self.credentials, self.due_after);
        let mut map = serializer.serialize_map(Some(self.head.len() + 1))?;
        let mut written = false;
        for (key, value) in &self.head {
            if !written && key.as_str() > CREDENTIALS {
                map.serialize_entry(CREDENTIALS, &credentials)?;
                written = true;
            }
            map.serialize_entry(key, value)?;
        }
        if !written {
            map.serialize_entry(CREDENTIALS, &credentials)?;
        }
        map.end()
    }
}

struct Credentials<'a>(
    &'a [(&'a CredentialKey, &'a CredentialRecord)],
    chrono::Duration,
);

impl serde::Serialize for Credentials<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(key, r)| credential(key, r, self.1)))
    }
}

fn credential(
    key: &CredentialKey,
    r: &CredentialRecord,
    due_after: chrono::Duration,
) -> serde_json::Value {
    let ts = crate::json_time::value;
    json!({
        "key": key,
        "user_email": r.user_email,
        "access_key": r.access_key,
        "first_seen": ts(Some(r.first_seen)),
        "rotated_at": ts(r.rotated_at),
        "rotation_id": r.rotation_id,
        "fingerprint": r.secret_fingerprint.text(),
        "due_at": ts(Some(r.rotated_at.unwrap_or(r.first_seen) + due_after)),
        "verified": r.verified.as_ref().map(|v| json!({
            "at": ts(Some(v.at)),
            "rotation_id": v.rotation_id,
            "accepted": v.accepted,
            "error": v.error,
        })),
    })
}

/// Every field of `status --json` but the credentials.
fn head(
    view: &crate::state::StateView,
    settings: &Settings,
    next_run: &Option<String>,
    removed: &[crate::sinks::webhook::RemovedQueue],
) -> serde_json::Map<String, serde_json::Value> {
    let ts = crate::json_time::value;
    let value = json!({
        "schema_version": super::JSON_SCHEMA_VERSION,
        "state_dir": view.dir,
        "initialised": view.exists,
        "next_run": next_run,
        "schedule": settings.schedule.cron_expr,
        "timezone": settings.schedule.timezone.to_string(),
        "last_run": {
            "at": ts(view.runs.last_run_at),
            "duration_ms": view.runs.last_run_duration_ms,
            "last_success_at": ts(view.runs.last_success_at),
            "last_delivery_success_at": ts(view.runs.last_delivery_success_at),
            "failures": view.runs.last_failures,
        },
        "client_secret": view.records.client_secret.as_ref().map(|r| json!({
            "first_seen": ts(Some(r.first_seen)),
            "rotated_at": ts(r.rotated_at),
            "rotation_id": r.rotation_id,
            "fingerprint": r.fingerprint.text(),
        })),
        "pending_rotations": view.journal.intents.iter().map(|i| json!({
            "rotation_id": i.rotation_id,
            "started_at": ts(Some(i.started_at)),
            "kind": match &i.kind {
                crate::state::IntentKind::ObjectStorage { key, .. } => format!("object_storage {key}"),
                crate::state::IntentKind::ClientSecret { .. } => "client_secret".to_string(),
            },
        })).collect::<Vec<_>>(),
        "twins": view.twins.iter().map(|t| json!({
            "twin": t.name,
            "active_user_email": t.active.email,
            "active_user_id": t.active.user_id,
            "active_since": ts(Some(t.active_since)),
            "last_switch_at": ts(t.last_switch_at),
            "previous_user_email": t.previous.as_ref().map(|p| &p.email),
            "retire_at": ts(t.retire_at),
            "last_retired_at": ts(t.last_retired_at),
            "switch_under_way": t.switch.as_ref().map(|s| json!({
                "to_user_email": s.to.email,
                "started_at": ts(Some(s.started_at)),
            })),
        })).collect::<Vec<_>>(),
        "sinks": view.records.sinks.iter().map(|(id, s)| json!({
            "sink": id,
            "delivered_at": ts(s.delivered_at),
            "last_attempt": ts(s.last_attempt),
            "last_error": s.last_error,
            "pending_events": pending_events(view, id),
        })).collect::<Vec<_>>(),
        "removed_webhook_queues": removed.iter().map(|q| json!({
            "sink": q.sink_id,
            "events": q.events,
            "removed_at": ts(Some(q.removed_since)),
            "drop_at": ts(Some(q.drop_after)),
        })).collect::<Vec<_>>(),
    });
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a json! object"),
    }
}

/// `Twin app: active app-b@example.com since …; last switch …; app-a@… retires at …`.
fn twin_line(t: &crate::state::TwinState) -> String {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "never".to_owned(), crate::json_time::format)
    };
    let mut line = format!(
        "Twin {}: active {} since {}; last switch {}",
        t.name,
        t.active.email,
        crate::json_time::format(t.active_since),
        ts(t.last_switch_at)
    );
    if let (Some(previous), Some(at)) = (&t.previous, t.retire_at) {
        line.push_str(&format!(
            "; the keys of {} retire at {}",
            previous.email,
            crate::json_time::format(at)
        ));
    }
    if let Some(s) = &t.switch {
        line.push_str(&format!(
            "; a switch to {} is under way (the next run finishes it)",
            s.to.email
        ));
    }
    line
}

/// Webhook events queued for the sink `id` and not yet delivered.
fn pending_events(view: &crate::state::StateView, id: &str) -> usize {
    view.outbox.queues.get(id).map_or(0, |q| q.events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Fingerprint;

    /// The streamed document is the one a `serde_json::Value` of it would
    /// print, byte for byte: keys sorted, `credentials` in its place.
    #[test]
    fn the_streamed_document_prints_as_the_whole_value_would() {
        let record = |rotated: bool| CredentialRecord {
            user_email: "a@example.com".into(),
            first_seen: "2026-01-01T00:00:00Z".parse().unwrap(),
            rotated_at: rotated.then(|| "2026-02-01T00:00:00Z".parse().unwrap()),
            rotation_id: None,
            access_key: "AK".into(),
            secret_fingerprint: Fingerprint::repeated(7),
            verified: None,
        };
        let keys = [
            CredentialKey::new("u-1", "os-1", 1),
            CredentialKey::new("u-1", "os-1", 2),
        ];
        let records = [record(true), record(false)];
        let credentials: Vec<_> = keys.iter().zip(&records).collect();
        let due_after = chrono::Duration::days(7);
        for head_keys in [&["a", "z"][..], &["a"], &["z"], &[]] {
            let mut head = serde_json::Map::new();
            for k in head_keys {
                head.insert((*k).to_owned(), json!({ "k": k }));
            }
            let mut whole = head.clone();
            whole.insert(
                "credentials".into(),
                credentials
                    .iter()
                    .map(|(k, r)| credential(k, r, due_after))
                    .collect(),
            );
            let document = Document {
                head,
                credentials: &credentials,
                due_after,
            };
            assert_eq!(
                serde_json::to_string(&document).unwrap(),
                serde_json::to_string(&serde_json::Value::Object(whole)).unwrap(),
                "{head_keys:?}"
            );
        }
    }
}
