//! Delivery: the snapshot of current values to every sink, recording per
//! sink the version it last delivered so that only changes are written and
//! failed sinks are retried on the next run.

use super::{crash, key_of, Delivery, Engine, RunReport};
use crate::config::SinkSettings;
use crate::contabo::ContaboClient;
use crate::inventory::CredentialEntry;
use crate::sinks::{self, file, template, webhook, SinkError, Snapshot, SnapshotCredential};
use crate::state::{AuditEvent, AuditKind, Records};
use chrono::Utc;

pub(super) async fn deliver_all(
    engine: &Engine,
    client: &ContaboClient,
    records: &mut Records,
    credentials: &[CredentialEntry],
    report: &mut RunReport,
) {
    if engine.settings.sinks.is_empty() {
        return;
    }
    crash::point("before-delivery");
    let snapshot = snapshot(engine, client, records, credentials).await;
    // Events are built only for webhook sinks: thousands of rotations make
    // thousands of events, which nothing else needs.
    let events = if has_webhooks(engine) {
        webhook::from_report(report, &engine.settings.api.client_id)
    } else {
        Vec::new()
    };
    let retry = webhook::retry_policy(engine.settings.api.max_retries);
    for sink in &engine.settings.sinks {
        let id = sinks::sink_id(sink);
        let delivered = records
            .sinks
            .get(&id)
            .and_then(|r| r.delivered_version.clone());
        let result = match sink {
            SinkSettings::File(f) => {
                file::deliver(
                    f,
                    &snapshot,
                    &engine.state,
                    delivered.as_deref(),
                    &engine.settings.secret_env_vars,
                )
                .await
            }
            SinkSettings::Template(t) => {
                template::deliver(
                    t,
                    &snapshot,
                    &engine.state,
                    delivered.as_deref(),
                    &engine.settings.secret_env_vars,
                )
                .await
            }
            SinkSettings::Webhook(w) => {
                let ctx = webhook::Context {
                    state: &engine.state,
                    snapshot: Some(&snapshot),
                    records: Some(records),
                    client_id: &engine.settings.api.client_id,
                    retry: &retry,
                };
                webhook::deliver(w, &id, &events, &ctx).await
            }
        };
        let record = records.sinks.entry(id).or_default();
        let now = Utc::now();
        record.last_attempt = Some(now);
        let outcome = match result {
            Ok(Some(version)) => {
                record.delivered_version = Some(version);
                record.delivered_at = Some(now);
                record.last_error = None;
                let _ = engine.state.audit(&AuditEvent {
                    at: now,
                    event: AuditKind::Delivery,
                    rotation_id: None,
                    trace_id: Some(client.trace_id().to_owned()),
                    subject: sink.describe(),
                    detail: serde_json::json!({
                        "credentials": snapshot.credentials.len(),
                    }),
                });
                tracing::info!(sink = %sink.describe(), "Delivered to sink.");
                "written"
            }
            Ok(None) => {
                record.last_error = None;
                "unchanged"
            }
            Err(err) => {
                if matches!(err, SinkError::OnChange { .. }) {
                    // The file is in place but its reader was not told:
                    // forget the version so the next run writes it and runs
                    // on_change again, whatever the content.
                    record.delivered_version = None;
                }
                record.last_error = Some(err.to_string());
                let _ = engine.state.audit(&AuditEvent {
                    at: now,
                    event: AuditKind::Failure,
                    rotation_id: None,
                    trace_id: Some(client.trace_id().to_owned()),
                    subject: sink.describe(),
                    detail: serde_json::json!({ "error": err.to_string() }),
                });
                report.fail("sink", sink.describe(), err);
                "failed"
            }
        };
        report.deliveries.push(Delivery {
            sink: sink.describe(),
            outcome,
        });
        crash::point("after-sink");
    }
    crash::point("after-delivery");
}

/// For a run that cannot deliver (its snapshot would be partial): this
/// run's webhook events go to the outbox, and the next run sends them.
pub(super) fn enqueue_webhook_events(engine: &Engine, report: &mut RunReport) {
    if !has_webhooks(engine) {
        return;
    }
    let events = webhook::from_report(report, &engine.settings.api.client_id);
    if let Err(err) = webhook::enqueue_only(&engine.settings.sinks, &events, &engine.state) {
        report.fail("state", "outbox.json", err);
    }
}

/// Before the first rotation of a run: gives every webhook sink its outbox
/// queue, so that rotations recorded from now on are announced even if the
/// run stops before delivering.
pub(super) fn open_webhook_queues(engine: &Engine, report: &mut RunReport) {
    if let Err(err) = webhook::enqueue_only(&engine.settings.sinks, &[], &engine.state) {
        report.fail("state", "outbox.json", err);
    }
}

impl Engine {
    /// Sends the webhook events earlier runs left undelivered, for the
    /// daemon's start (every run sends them too). Failures are logged; the
    /// events stay queued for the next run.
    pub async fn resend_pending_webhooks(&self) {
        let retry = webhook::retry_policy(self.settings.api.max_retries);
        let results = webhook::resend_pending(
            &self.settings.sinks,
            &self.state,
            &self.settings.api.client_id,
            &retry,
        )
        .await;
        for (sink, result) in results {
            match result {
                Ok(Some(last)) => {
                    tracing::info!(%sink, last_webhook_id = %last, "Sent pending webhook events.")
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%sink, error = %err, "Pending webhook events are still undelivered.")
                }
            }
        }
    }
}

/// The current values: credentials as listed (and re-read after rotation),
/// and the client secret as the API reports it when it is managed.
async fn snapshot(
    engine: &Engine,
    client: &ContaboClient,
    records: &Records,
    credentials: &[CredentialEntry],
) -> Snapshot {
    let client_entry = if engine.settings.client_secret.rotate {
        let secret = match client.get_client().await {
            Ok(api_client) => api_client.secret,
            Err(err) => {
                tracing::warn!(error = %err, "Could not read the client back; delivering the secret in use.");
                client.auth().client_secret()
            }
        };
        Some((engine.settings.api.client_id.clone(), secret))
    } else {
        None
    };
    Snapshot {
        client: client_entry,
        credentials: credentials
            .iter()
            .map(|c| SnapshotCredential {
                user_id: c.user_id.clone(),
                user_email: c.user_email.clone(),
                object_storage_id: c.object_storage_id.clone(),
                object_storage_name: c.object_storage_name.clone(),
                region: c.region.clone(),
                s3_url: c.s3_url.clone(),
                credential_id: c.credential_id,
                access_key: c.access_key.clone(),
                secret_key: c.secret_key.clone(),
                rotated_at: records
                    .credentials
                    .get(&key_of(c).to_string())
                    .and_then(|r| r.rotated_at),
            })
            .collect(),
    }
}

/// Whether any sink is a webhook (events are built only for those).
fn has_webhooks(engine: &Engine) -> bool {
    engine
        .settings
        .sinks
        .iter()
        .any(|s| matches!(s, SinkSettings::Webhook(_)))
}
