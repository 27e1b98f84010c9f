//! The webhook outbox: events not yet delivered, one queue per webhook
//! sink, in the `outbox_*` tables of `state.db`.
//!
//! An event is committed here before its first send attempt and
//! removed once the receiver took it (2xx) or refused it for good (410), so
//! a receiver that is down, or a process that stops, loses nothing: the
//! queue is sent again on the next run and at start-up. Each event keeps its
//! `id` (the `webhook-id` header) across every attempt and run, so receivers
//! can drop duplicates.
//!
//! Like all of `state.db`, the outbox holds no secret: events are stored thin, with a [`SecretSource`] naming the
//! secret that a sink with `include_secrets` adds at send time.

use crate::sorted_set::SortedSet;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use rusqlite::{params, Connection};

use super::db::{from_json, parsed, to_json, Db};
use super::{CredentialKey, StateDir, StateError};

/// The `version` of the outbox file of earlier builds (imported).
pub const OUTBOX_VERSION: u32 = 1;

/// Every webhook sink's queue.
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
    /// converges.
    #[serde(default, deserialize_with = "ids")]
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

/// Reads `announced` (a list of rotation ids) of an earlier version's file.
fn ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SortedSet<Uuid>, D::Error> {
    Vec::<Uuid>::deserialize(d).map(|ids| ids.into_iter().collect())
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
    /// Every queue; an empty outbox when nothing is pending.
    pub fn load_outbox(&self) -> Result<Outbox, StateError> {
        let mut stored = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if stored.is_none() {
            *stored = Some(load(&self.db)?);
        }
        Ok(stored.clone().unwrap_or_default())
    }

    /// Makes the stored outbox equal to `outbox`, in one transaction that
    /// writes only what differs from the stored one. The stored outbox is
    /// also kept in memory (this process alone writes it), so that finding
    /// the difference reads nothing: an announced set covers every
    /// credential of the account, and a pass saves the outbox at every
    /// delivery to a webhook.
    pub fn save_outbox(&self, outbox: &Outbox) -> Result<(), StateError> {
        let mut stored = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let before = match stored.take() {
            Some(before) => before,
            None => load(&self.db)?,
        };
        let written = self.db.write(|tx| put(tx, &before, outbox));
        *stored = Some(if written.is_ok() {
            outbox.clone()
        } else {
            before
        });
        written
    }
}

/// Writes what differs between `before` (stored) and `after`.
pub(crate) fn put(tx: &Connection, before: &Outbox, after: &Outbox) -> rusqlite::Result<()> {
    for gone in before
        .queues
        .keys()
        .filter(|id| !after.queues.contains_key(*id))
    {
        for table in ["outbox_queues", "outbox_announced", "outbox_events"] {
            tx.execute(&format!("DELETE FROM {table} WHERE sink_id = ?1"), [gone])?;
        }
    }
    let empty = OutboxQueue::new(DateTime::<Utc>::UNIX_EPOCH);
    for (sink, queue) in &after.queues {
        let old = before.queues.get(sink);
        if old.is_none_or(|o| (o.since, o.removed_since) != (queue.since, queue.removed_since)) {
            tx.prepare_cached("INSERT OR REPLACE INTO outbox_queues VALUES (?1, ?2, ?3)")?
                .execute(params![sink, queue.since, queue.removed_since])?;
        }
        let old = old.unwrap_or(&empty);
        let mut remove = tx.prepare_cached(
            "DELETE FROM outbox_announced WHERE sink_id = ?1 AND rotation_id = ?2",
        )?;
        for id in old
            .announced
            .iter()
            .filter(|id| !queue.announced.contains(id))
        {
            remove.execute([sink, &id.to_string()])?;
        }
        let mut add = tx.prepare_cached("INSERT INTO outbox_announced VALUES (?1, ?2)")?;
        for id in queue
            .announced
            .iter()
            .filter(|id| !old.announced.contains(id))
        {
            add.execute([sink, &id.to_string()])?;
        }
        let old_events: BTreeMap<&str, &OutboxEvent> =
            old.events.iter().map(|e| (e.id.as_str(), e)).collect();
        let kept: std::collections::HashSet<&str> =
            queue.events.iter().map(|e| e.id.as_str()).collect();
        let mut remove =
            tx.prepare_cached("DELETE FROM outbox_events WHERE sink_id = ?1 AND webhook_id = ?2")?;
        for id in old_events.keys().filter(|id| !kept.contains(*id)) {
            remove.execute([sink.as_str(), id])?;
        }
        for event in &queue.events {
            match old_events.get(event.id.as_str()) {
                Some(old) if *old == event => {}
                Some(_) => {
                    tx.prepare_cached(
                        "UPDATE outbox_events SET event = ?3 WHERE sink_id = ?1 AND webhook_id = ?2",
                    )?
                    .execute(params![sink, event.id, to_json(event)?])?;
                }
                None => {
                    tx.prepare_cached(
                        "INSERT INTO outbox_events (sink_id, webhook_id, type, event)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        sink,
                        event.id,
                        event.kind,
                        to_json(event)?
                    ])?;
                }
            }
        }
    }
    Ok(())
}

/// The outbox in `db` (read-only views too).
pub(crate) fn load(db: &Db) -> Result<Outbox, StateError> {
    db.read(|c| {
        let mut queues = BTreeMap::new();
        let mut stmt =
            c.prepare_cached("SELECT sink_id, since, removed_since FROM outbox_queues")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let queue = OutboxQueue {
                removed_since: r.get(2)?,
                ..OutboxQueue::new(r.get(1)?)
            };
            queues.insert(r.get::<_, String>(0)?, queue);
        }
        for (sink, queue) in &mut queues {
            queue.announced = c
                .prepare_cached("SELECT rotation_id FROM outbox_announced WHERE sink_id = ?1")?
                .query_map([sink], |r| parsed(0, &r.get::<_, String>(0)?))?
                .collect::<rusqlite::Result<_>>()?;
            queue.events = c
                .prepare_cached("SELECT event FROM outbox_events WHERE sink_id = ?1 ORDER BY seq")?
                .query_map([sink], |r| from_json(0, &r.get::<_, String>(0)?))?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(Outbox {
            queues,
            ..Outbox::default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn saves_write_what_differs_and_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load_outbox().unwrap(), Outbox::default());
        let mut outbox = Outbox::default();
        let mut queue = OutboxQueue::new(Utc::now());
        queue.events.push(event());
        queue.events.push(OutboxEvent {
            id: "msg_2".into(),
            ..event()
        });
        queue.announced.insert(Uuid::new_v4());
        outbox
            .queues
            .insert("webhook:https://h.example.com/".into(), queue);
        outbox
            .queues
            .insert("webhook:gone".into(), OutboxQueue::new(Utc::now()));
        state.save_outbox(&outbox).unwrap();
        assert_eq!(state.load_outbox().unwrap(), outbox);
        // One event delivered, one retried, an announcement added, a queue
        // dropped.
        outbox.queues.remove("webhook:gone");
        let queue = outbox.queues.values_mut().next().unwrap();
        queue.events.remove(0);
        queue.events[0].attempts = 3;
        queue.announced.insert(Uuid::new_v4());
        state.save_outbox(&outbox).unwrap();
        assert_eq!(state.load_outbox().unwrap(), outbox);
        let json: String = state
            .db
            .read(|c| c.query_row("SELECT event FROM outbox_events", [], |r| r.get(0)))
            .unwrap();
        assert!(json.contains(r#""kind":"object_storage""#), "{json}");
        assert!(json.contains(r#""key":"u/o/7""#), "{json}");
    }
}
