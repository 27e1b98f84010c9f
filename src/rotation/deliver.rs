//! Delivery: the snapshot of current values to every sink, recording per
//! sink the version it last delivered so that only changes are written and
//! failed sinks are retried on the next run.

use super::{crash, key_of, Delivery, Engine, RunReport};
use crate::config::SinkSettings;
use crate::contabo::ContaboClient;
use crate::inventory::CredentialEntry;
use crate::sinks::{self, file, template, SinkError, Snapshot, SnapshotCredential};
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
    for sink in &engine.settings.sinks {
        let id = sinks::sink_id(sink);
        let record = records.sinks.entry(id).or_default();
        let result = match sink {
            SinkSettings::File(f) => {
                file::deliver(
                    f,
                    &snapshot,
                    &engine.state,
                    record.delivered_version.as_deref(),
                )
                .await
            }
            SinkSettings::Template(t) => {
                template::deliver(
                    t,
                    &snapshot,
                    &engine.state,
                    record.delivered_version.as_deref(),
                )
                .await
            }
            other => Err(SinkError::Unsupported {
                sink: other.describe(),
                what: "this sink type arrives with the sinks release".into(),
            }),
        };
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
    }
    crash::point("after-delivery");
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
