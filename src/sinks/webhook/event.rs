//! Webhook events: built thin from a run's report (or, for a rotation that
//! was recorded but never announced, from the records), stored thin in the
//! outbox, and given their secret only in the body of a send attempt.
//!
//! The body is the Standard Webhooks envelope
//! `{"type": "...", "timestamp": "<RFC 3339>", "data": {...}}`.

use crate::sinks::change::{CredentialRef, Failed, Rotated, Verified};
use crate::sinks::{Kind, Snapshot};
use crate::state::{
    CredentialKey, EventData, OutboxEvent, OutboxQueue, Records, SecretSource, StateDir,
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use uuid::Uuid;

/// An S3 credential was rotated.
pub const OBJECT_STORAGE_CREDENTIAL_ROTATED: &str = "object_storage_credential.rotated";
/// The account's OAuth client secret was rotated.
pub const CLIENT_SECRET_ROTATED: &str = "client_secret.rotated";
/// A rotated S3 key was accepted by the storage (`verify = "s3"`): a
/// follow-up of its `object_storage_credential.rotated`, which is sent
/// before the proof so that it never waits for the storage. A key the
/// storage keeps refusing is a `rotation.failed` instead.
pub const OBJECT_STORAGE_CREDENTIAL_VERIFIED: &str = "object_storage_credential.verified";
/// Rotating an S3 credential, the client secret or a twin failed.
pub const ROTATION_FAILED: &str = "rotation.failed";
/// A twin's sinks were handed the standby user's new, proven keys.
pub const OBJECT_STORAGE_TWIN_SWITCHED: &str = "object_storage_twin.switched";
/// The keys a twin handed over before were regenerated and discarded.
pub const OBJECT_STORAGE_TWIN_RETIRED: &str = "object_storage_twin.retired";

/// A twin's event (`switched` or `retired`) with its `data`: identifiers,
/// access keys and fingerprints. It never carries a secret, whatever
/// `include_secrets` says: the sinks holding the twin have the keys.
pub fn twin_event(kind: &str, at: DateTime<Utc>, data: Value) -> NewEvent {
    NewEvent {
        announces: None,
        event: new_event(kind, at, data, None),
    }
}

/// An event to enqueue, with the rotation it announces (if it is one).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub(super) event: OutboxEvent,
    /// The rotation id, for the queue's `announced` set.
    pub(super) announces: Option<Uuid>,
}

impl NewEvent {
    /// The event type, e.g. `object_storage_credential.rotated`.
    pub fn kind(&self) -> &str {
        &self.event.kind
    }

    /// The payload's `data`, without any secret.
    pub fn data(&self) -> Value {
        self.event.data.value()
    }
}

/// The events of some rotations and failures (one user's, as a pass
/// streams), named by the run's `trace_id`.
pub fn events_for(
    rotations: &[Rotated],
    failures: &[Failed],
    client_id: &str,
    trace_id: &str,
) -> Vec<NewEvent> {
    let rotated = rotations
        .iter()
        .filter_map(|r| rotated(r, client_id, trace_id));
    let failed = failures
        .iter()
        .filter_map(|f| failed(f, client_id, trace_id));
    rotated.chain(failed).collect()
}

/// The follow-up events of keys the storage accepted. They carry no
/// secret, whatever `include_secrets` says.
pub fn verified_events(verified: &[Verified], trace_id: &str) -> Vec<NewEvent> {
    verified
        .iter()
        .map(|v| {
            let mut data = json!({
                "rotation_id": v.rotation_id,
                "verified_at": time(v.at),
                "trace_id": trace_id,
                "access_key": v.access_key,
                "method": v.method,
                "attempts": v.attempts,
                "elapsed_ms": v.elapsed_ms,
                "old_key_refused": v.old_key_refused,
            });
            merge(&mut data, credential_fields(&v.credential));
            NewEvent {
                announces: None,
                event: new_event(OBJECT_STORAGE_CREDENTIAL_VERIFIED, v.at, data, None),
            }
        })
        .collect()
}

fn new_event(
    kind: &str,
    timestamp: DateTime<Utc>,
    data: Value,
    secret: Option<SecretSource>,
) -> OutboxEvent {
    OutboxEvent {
        id: format!("msg_{}", Uuid::new_v4().simple()),
        kind: kind.to_owned(),
        timestamp,
        data: EventData::new(&data),
        secret,
        enqueued_at: Utc::now(),
        attempts: 0,
        last_attempt: None,
        last_error: None,
    }
}

fn time(t: DateTime<Utc>) -> String {
    crate::json_time::format(t)
}

fn rotated(r: &Rotated, client_id: &str, trace_id: &str) -> Option<NewEvent> {
    match r.kind {
        Kind::ObjectStorage => {
            let c = r.credential.as_ref()?;
            let key = CredentialKey::new(&c.user_id, &c.object_storage_id, c.credential_id);
            let mut data = json!({
                "rotation_id": r.rotation_id,
                "rotated_at": time(r.at),
                "recovered": r.recovered,
                "trace_id": trace_id,
                "access_key": r.new_access_key,
                "previous_access_key": r.old_access_key,
                "fingerprint": r.new_fingerprint,
            });
            merge(&mut data, credential_fields(c));
            Some(NewEvent {
                announces: Some(r.rotation_id),
                event: new_event(
                    OBJECT_STORAGE_CREDENTIAL_ROTATED,
                    r.at,
                    data,
                    Some(SecretSource::ObjectStorage { key }),
                ),
            })
        }
        Kind::ClientSecret => {
            let data = json!({
                "rotation_id": r.rotation_id,
                "rotated_at": time(r.at),
                "recovered": r.recovered,
                "trace_id": trace_id,
                "client_id": client_id,
                "fingerprint": r.new_fingerprint,
            });
            Some(NewEvent {
                announces: Some(r.rotation_id),
                event: new_event(
                    CLIENT_SECRET_ROTATED,
                    r.at,
                    data,
                    Some(SecretSource::ClientSecret),
                ),
            })
        }
    }
}

fn failed(f: &Failed, client_id: &str, trace_id: &str) -> Option<NewEvent> {
    let mut data = json!({
        "kind": f.kind,
        "subject": f.subject,
        "error": f.error,
        "rotation_id": f.rotation_id,
        "failed_at": time(Utc::now()),
        "trace_id": trace_id,
    });
    match f.kind {
        "object_storage" => {
            if let Some(c) = &f.credential {
                merge(&mut data, credential_fields(c));
            }
        }
        "client_secret" => merge(&mut data, json!({ "client_id": client_id })),
        "twin" => merge(&mut data, json!({ "twin": f.subject })),
        _ => return None,
    }
    Some(NewEvent {
        announces: None,
        event: new_event(ROTATION_FAILED, Utc::now(), data, None),
    })
}

/// The fields naming an S3 credential in an event's `data`.
fn credential_fields(c: &CredentialRef) -> Value {
    json!({
        "user_id": c.user_id,
        "user_email": c.user_email,
        "object_storage_id": c.object_storage_id,
        "object_storage_name": c.object_storage_name,
        "region": c.region,
        "credential_id": c.credential_id,
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// Rotations the records hold but `queue` never announced: the process
/// stopped between recording a rotation and enqueueing its event, or the
/// run that rotated could not deliver. Only rotations since the queue was
/// created count. Names and regions come from `snapshot` when it still
/// lists the credential.
pub(super) fn unannounced(
    queue: &OutboxQueue,
    records: &Records,
    snapshot: &Snapshot,
    client_id: &str,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let scanned = records.scan(|key, record| {
        let (Some(rotation_id), Some(at)) = (record.rotation_id, record.rotated_at) else {
            return;
        };
        if at < queue.since || queue.announced.contains(&rotation_id) {
            return;
        }
        let listed = snapshot.credential(key);
        let data = json!({
            "rotation_id": rotation_id,
            "rotated_at": time(at),
            "recovered": true,
            "trace_id": null,
            "user_id": key.user_id,
            "user_email": record.user_email,
            "object_storage_id": key.object_storage_id,
            "object_storage_name": listed.map(|c| &*c.storage.name),
            "region": listed.map(|c| &*c.storage.region),
            "credential_id": key.credential_id,
            "access_key": record.access_key,
            "previous_access_key": null,
            "fingerprint": record.secret_fingerprint.text(),
        });
        events.push(NewEvent {
            announces: Some(rotation_id),
            event: new_event(
                OBJECT_STORAGE_CREDENTIAL_ROTATED,
                at,
                data,
                Some(SecretSource::ObjectStorage { key: key.clone() }),
            ),
        });
    });
    if let Err(err) = scanned {
        tracing::warn!(error = %err, "Could not read every record back; rotations it holds may be announced later.");
    }
    if let Some(record) = &records.client_secret {
        if let (Some(rotation_id), Some(at)) = (record.rotation_id, record.rotated_at) {
            let announced = queue.announced.contains(&rotation_id);
            if at >= queue.since && !announced {
                let data = json!({
                    "rotation_id": rotation_id,
                    "rotated_at": time(at),
                    "recovered": true,
                    "trace_id": null,
                    "client_id": client_id,
                    "fingerprint": record.fingerprint.text(),
                });
                events.push(NewEvent {
                    announces: Some(rotation_id),
                    event: new_event(
                        CLIENT_SECRET_ROTATED,
                        at,
                        data,
                        Some(SecretSource::ClientSecret),
                    ),
                });
            }
        }
    }
    events
}

/// The request body of one attempt. With `snapshot` (a sink with
/// `include_secrets`), the event's secret is added as the API holds it now:
/// `secret_key` and `s3_url` with the current `access_key` and
/// `fingerprint`, or `client_secret` with its `fingerprint`. Returns the
/// body and whether the secret could be added (a credential deleted since
/// the event, or a client secret no longer managed, has none to add).
pub(super) fn body(
    event: &OutboxEvent,
    snapshot: Option<&Snapshot>,
    state: &StateDir,
) -> (SecretString, bool) {
    let mut data = event.data.value();
    let mut added = false;
    if let (Some(snapshot), Some(source), Value::Object(fields)) =
        (snapshot, &event.secret, &mut data)
    {
        match source {
            SecretSource::ObjectStorage { key } => {
                if let Some(c) = snapshot.credential(key) {
                    fields.insert("access_key".into(), c.access_key().into());
                    fields.insert(
                        "fingerprint".into(),
                        state.fingerprint(&c.keys).text().into(),
                    );
                    fields.insert("s3_url".into(), (&*c.storage.s3_url).into());
                    fields.insert("secret_key".into(), c.keys.expose_secret().into());
                    added = true;
                }
            }
            SecretSource::ClientSecret => {
                if let Some((_, secret)) = &snapshot.client {
                    fields.insert(
                        "fingerprint".into(),
                        state.fingerprint(secret).text().into(),
                    );
                    fields.insert("client_secret".into(), secret.expose_secret().into());
                    added = true;
                }
            }
        }
    }
    let envelope = json!({
        "type": event.kind,
        "timestamp": time(event.timestamp),
        "data": data,
    });
    let text = serde_json::to_string(&envelope).expect("JSON values serialise");
    (SecretString::from(text), added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::change::CredentialRef;

    /// A run's changes, as the engine hands them over.
    #[derive(Default)]
    struct Report {
        trace_id: String,
        rotated: Vec<Rotated>,
        failed: Vec<Failed>,
    }
    use crate::sinks::SnapshotCredential;
    use crate::state::{ClientSecretRecord, CredentialRecord, Fingerprint};

    const S3_SECRET: &str = "S3-secret-value-9Xq";
    const CLIENT_SECRET: &str = "client-secret-value-7Rt";

    fn credential() -> CredentialRef {
        CredentialRef {
            user_id: "u-1".into(),
            user_email: "app@example.com".into(),
            object_storage_id: "os-1".into(),
            object_storage_name: "Object Storage EU 420".into(),
            region: "European Union".into(),
            credential_id: 42,
        }
    }

    fn report() -> Report {
        let at = Utc::now();
        let mut report = Report {
            trace_id: "trace-1".into(),
            ..Report::default()
        };
        report.rotated.push(Rotated {
            kind: crate::sinks::Kind::ObjectStorage,
            subject: "app@example.com/Object Storage EU 420/42".into(),
            credential: Some(credential()),
            at,
            rotation_id: Uuid::new_v4(),
            old_access_key: Some("OLDKEY".into()),
            new_access_key: Some("NEWKEY".into()),
            old_fingerprint: "hmac-sha256:old".into(),
            new_fingerprint: "hmac-sha256:new".into(),
            recovered: false,
        });
        report.rotated.push(Rotated {
            kind: crate::sinks::Kind::ClientSecret,
            subject: "INT-1".into(),
            credential: None,
            at,
            rotation_id: Uuid::new_v4(),
            old_access_key: None,
            new_access_key: None,
            old_fingerprint: "hmac-sha256:a".into(),
            new_fingerprint: "hmac-sha256:b".into(),
            recovered: false,
        });
        for kind in ["object_storage", "client_secret", "sink", "user", "resume"] {
            report.failed.push(Failed {
                kind,
                subject: format!("{kind}-subject"),
                error: "HTTP 500".into(),
                credential: (kind == "object_storage").then(credential),
                rotation_id: None,
            });
        }
        report
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(
            Some(("INT-1".into(), SecretString::from(CLIENT_SECRET))),
            &[SnapshotCredential {
                user_id: "u-1".into(),
                user_email: "app@example.com".into(),
                storage: crate::sinks::Storage::new(
                    "os-1",
                    "Object Storage EU 420",
                    "European Union",
                    "https://eu2.contabostorage.com",
                ),
                credential_id: 42,
                keys: crate::sinks::Keys::new("CURRENTKEY", S3_SECRET),
                rotated_at: None,
                twin: None,
            }],
        )
    }

    #[test]
    fn one_event_per_rotation_and_per_rotation_failure() {
        let events = {
            let r = report();
            events_for(&r.rotated, &r.failed, "INT-1", &r.trace_id)
        };
        let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            [
                OBJECT_STORAGE_CREDENTIAL_ROTATED,
                CLIENT_SECRET_ROTATED,
                ROTATION_FAILED,
                ROTATION_FAILED
            ]
        );
        let s3 = events[0].data();
        assert_eq!(s3["access_key"], "NEWKEY");
        assert_eq!(s3["credential_id"], 42);
        assert_eq!(s3["region"], "European Union");
        assert_eq!(s3["fingerprint"], "hmac-sha256:new");
        assert_eq!(events[1].data()["client_id"], "INT-1");
        assert_eq!(events[2].data()["kind"], "object_storage");
        assert_eq!(events[2].data()["user_email"], "app@example.com");
        assert_eq!(events[3].data()["client_id"], "INT-1");
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        assert!(events.iter().all(|e| e.event.id.starts_with("msg_")));
    }

    #[test]
    fn thin_bodies_hold_no_secret_and_full_bodies_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let events = {
            let r = report();
            events_for(&r.rotated, &r.failed, "INT-1", &r.trace_id)
        };
        for e in &events {
            let (thin, added) = body(&e.event, None, &state);
            assert!(!added);
            let text = thin.expose_secret();
            assert!(!text.contains(S3_SECRET) && !text.contains(CLIENT_SECRET));
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["type"], e.kind());
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        }
        let snapshot = snapshot();
        let (full, added) = body(&events[0].event, Some(&snapshot), &state);
        assert!(added);
        let v: Value = serde_json::from_str(full.expose_secret()).unwrap();
        assert_eq!(v["data"]["secret_key"], S3_SECRET);
        assert_eq!(v["data"]["access_key"], "CURRENTKEY");
        assert_eq!(v["data"]["s3_url"], "https://eu2.contabostorage.com");
        assert_eq!(
            v["data"]["fingerprint"],
            state.fingerprint(&SecretString::from(S3_SECRET)).text()
        );
        let (full, added) = body(&events[1].event, Some(&snapshot), &state);
        assert!(added);
        let v: Value = serde_json::from_str(full.expose_secret()).unwrap();
        assert_eq!(v["data"]["client_secret"], CLIENT_SECRET);
        // A failure carries no secret, whatever the sink.
        let (failure, added) = body(&events[2].event, Some(&snapshot), &state);
        assert!(!added);
        assert!(!failure.expose_secret().contains(S3_SECRET));
        // A credential gone from the snapshot: sent without a secret.
        let (gone, added) = body(&events[0].event, Some(&Snapshot::default()), &state);
        assert!(!added);
        assert!(!gone.expose_secret().contains("secret_key"));
    }

    #[test]
    fn unannounced_rotations_since_the_queue_began_are_found() {
        let since = Utc::now() - chrono::Duration::hours(1);
        let mut queue = OutboxQueue::new(since);
        let mut records = Records::default();
        let fp = Fingerprint::repeated(1);
        let record = |rotated_at: Option<DateTime<Utc>>, rotation_id| CredentialRecord {
            user_email: "app@example.com".into(),
            first_seen: since - chrono::Duration::days(9),
            rotated_at,
            rotation_id,
            access_key: "K".into(),
            secret_fingerprint: fp,
            verified: None,
        };
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        records.insert(
            &"u-1/os-1/42".parse().unwrap(),
            record(Some(Utc::now()), Some(a)),
        );
        records.insert(
            &"u-1/os-1/43".parse().unwrap(),
            record(Some(since - chrono::Duration::minutes(1)), Some(b)),
        );
        records.insert(&"u-1/os-1/44".parse().unwrap(), record(None, None));
        records.insert(
            &"u-2/os-1/45".parse().unwrap(),
            record(Some(Utc::now()), Some(c)),
        );
        queue.announced.insert(c);
        records.client_secret = Some(ClientSecretRecord {
            first_seen: since,
            rotated_at: Some(Utc::now()),
            rotation_id: Some(Uuid::new_v4()),
            fingerprint: fp,
        });
        let events = unannounced(&queue, &records, &snapshot(), "INT-1");
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].announces, Some(a));
        assert_eq!(events[0].data()["region"], "European Union");
        assert_eq!(events[0].data()["recovered"], true);
        assert_eq!(events[1].kind(), CLIENT_SECRET_ROTATED);
    }
}
