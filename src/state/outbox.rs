//! `outbox.json`: webhook events not yet delivered, one queue per webhook
//! sink.
//!
//! An event is written here (fsync) before its first send attempt and
//! removed once the receiver took it (2xx) or refused it for good (410), so
//! a receiver that is down, or a process that stops, loses nothing: the
//! queue is sent again on the next run and at start-up. Each event keeps its
//! `id` (the `webhook-id` header) across every attempt and run, so receivers
//! can drop duplicates.
//!
//! Like every state file except the client-secret store, the outbox holds
//! no secret: events are stored thin, with a [`SecretSource`] naming the
//! secret that a sink with `include_secrets` adds at send time.

use crate::sorted_set::SortedSet;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::fs::{check_version, read_json, write_json_atomic};
use super::{CredentialKey, StateDir, StateError};
use crate::dirfd::Dir;

/// The `version` this build writes and reads.
pub const OUTBOX_VERSION: u32 = 1;

/// The content of `outbox.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    /// Format version, [`OUTBOX_VERSION`].
    pub version: u32,
    /// By sink id (`sinks::sink_id`).
    #[serde(default)]
    pub queues: BTreeMap<String, OutboxQueue>,
}

impl Default for Outbox {
    /// An empty outbox of the current version.
    fn default() -> Outbox {
        Outbox {
            version: OUTBOX_VERSION,
            queues: BTreeMap::new(),
        }
    }
}

/// One webhook sink's queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxQueue {
    /// When the queue was created. Rotations recorded before it are not
    /// announced to this sink: adding a webhook does not replay history.
    pub since: DateTime<Utc>,
    /// The rotations announced (enqueued) to this sink, by rotation id,
    /// kept while a record names them as a secret's current rotation. A
    /// recorded rotation missing here (the process stopped between
    /// recording and announcing it) is announced late, so the sink
    /// converges. Ids only: the set covers every credential of the account,
    /// and a key per entry would cost several times as much. (Older files
    /// keep a map of secret key to rotation id; its ids are read.)
    #[serde(default, deserialize_with = "announced_ids")]
    pub announced: SortedSet<Uuid>,
    /// Oldest first; sent in this order.
    #[serde(default)]
    pub events: Vec<OutboxEvent>,
    /// When the sink was first found missing from the configuration; the
    /// queue is dropped a grace period later unless the sink comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_since: Option<DateTime<Utc>>,
}

impl OutboxQueue {
    /// An empty queue created at `since`.
    pub fn new(since: DateTime<Utc>) -> OutboxQueue {
        OutboxQueue {
            since,
            announced: SortedSet::new(),
            events: Vec::new(),
            removed_since: None,
        }
    }
}

/// Reads `announced` as a list of rotation ids, or as the map of secret key
/// to rotation id that earlier builds wrote. A visitor rather than an
/// untagged enum: serde buffers an untagged value whole before trying each
/// form, which for an account of 30,000 credentials held 2 MB at once.
fn announced_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SortedSet<Uuid>, D::Error> {
    struct Ids;
    impl<'de> serde::de::Visitor<'de> for Ids {
        type Value = SortedSet<Uuid>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of rotation ids, or a map of credential key to rotation id")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<Uuid>()? {
                ids.push(id);
            }
            Ok(ids.into_iter().collect())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some((_key, id)) = map.next_entry::<serde::de::IgnoredAny, Uuid>()? {
                ids.push(id);
            }
            Ok(ids.into_iter().collect())
        }
    }
    d.deserialize_any(Ids)
}

/// One event, as it will be sent minus the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// The `webhook-id`: `msg_<uuid>`, the same on every attempt.
    pub id: String,
    /// The event type, e.g. `object_storage_credential.rotated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event happened (the payload's `timestamp`).
    pub timestamp: DateTime<Utc>,
    /// The payload's `data`: identifiers, times, fingerprints. Never a secret.
    pub data: EventData,
    /// The secret that `include_secrets` adds at send time, by reference.
    pub secret: Option<SecretSource>,
    pub enqueued_at: DateTime<Utc>,
    /// Attempts so far, over all runs.
    #[serde(default)]
    pub attempts: u32,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last attempt failed: a status code or a connection error,
    /// never the receiver's response body.
    pub last_error: Option<String>,
}

/// An event's `data`, kept as its compact JSON text: a queue of thousands
/// of events (a receiver slower than the pass) costs their text, not a
/// parsed map per event. Shared, not copied, when an event is queued for
/// a webhook sink (the text is most of an event's size).
#[derive(Clone, Debug)]
pub struct EventData(std::sync::Arc<serde_json::value::RawValue>);

impl Serialize for EventData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(|raw| EventData(raw.into()))
    }
}

impl EventData {
    pub fn new(value: &serde_json::Value) -> EventData {
        let raw = serde_json::value::to_raw_value(value).expect("a JSON value serialises");
        EventData(raw.into())
    }

    /// The data parsed (for a send, which may add a secret to it).
    pub fn value(&self) -> serde_json::Value {
        // An outbox that parsed holds valid JSON here; a value that does
        // not parse back (never seen) is sent as null.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &EventData) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Which secret an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SecretSource {
    ObjectStorage { key: CredentialKey },
    ClientSecret,
}

impl StateDir {
    /// Reads `outbox.json`; a missing file is an empty outbox.
    pub fn load_outbox(&self) -> Result<Outbox, StateError> {
        load(self.handle())
    }

    /// Atomically replaces `outbox.json` (0600).
    pub fn save_outbox(&self, outbox: &Outbox) -> Result<(), StateError> {
        write_json_atomic(self.handle(), super::OUTBOX_FILE, outbox, 0o600)
    }
}

/// Reads `<dir>/outbox.json` without a [`StateDir`] (read-only views too).
pub(crate) fn load(dir: &Dir) -> Result<Outbox, StateError> {
    let path = dir.shown(super::OUTBOX_FILE.as_ref());
    let Some(outbox) = read_json::<Outbox>(dir, super::OUTBOX_FILE)? else {
        return Ok(Outbox::default());
    };
    check_version(&path, outbox.version, OUTBOX_VERSION)?;
    Ok(outbox)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn event() -> OutboxEvent {
        OutboxEvent {
            id: "msg_1".into(),
            kind: "client_secret.rotated".into(),
            timestamp: Utc::now(),
            data: EventData::new(&serde_json::json!({ "client_id": "INT-1" })),
            secret: Some(SecretSource::ObjectStorage {
                key: "u/o/7".parse().unwrap(),
            }),
            enqueued_at: Utc::now(),
            attempts: 0,
            last_attempt: None,
            last_error: None,
        }
    }

    #[test]
    fn round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load_outbox().unwrap(), Outbox::default());
        let mut outbox = Outbox::default();
        let mut queue = OutboxQueue::new(Utc::now());
        queue.events.push(event());
        queue.announced.insert(Uuid::new_v4());
        outbox
            .queues
            .insert("webhook:https://h.example.com/".into(), queue);
        state.save_outbox(&outbox).unwrap();
        assert_eq!(state.load_outbox().unwrap(), outbox);
        let path = dir.path().join(crate::state::OUTBOX_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""kind": "object_storage""#), "{text}");
        assert!(text.contains(r#""key": "u/o/7""#), "{text}");
    }

    #[test]
    fn announcements_of_earlier_builds_are_read_as_ids() {
        let id = Uuid::new_v4();
        let text = format!(
            r#"{{"version": 1, "queues": {{"webhook:x": {{"since": "2026-01-01T00:00:00Z", "announced": {{"u/o/7": "{id}"}}}}}}}}"#
        );
        let outbox: Outbox = serde_json::from_str(&text).unwrap();
        assert_eq!(
            outbox.queues["webhook:x"].announced,
            SortedSet::from_iter([id])
        );
    }

    #[test]
    fn corrupt_or_future_outbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let path = dir.path().join(crate::state::OUTBOX_FILE);
        for (text, want) in [
            ("", "is empty"),
            ("{\"version\": 1, \"queues\": ", "ends early"),
            ("{\"version\": 2}", "version"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = state.load_outbox().unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
            assert!(err.to_string().contains(want), "{err}");
            assert!(err.to_string().contains("outbox.json"), "{err}");
        }
    }
}
