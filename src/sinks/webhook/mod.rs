//! The `webhook` sink: signed events POSTed per
//! [Standard Webhooks](https://www.standardwebhooks.com/), through a
//! durable outbox in the state directory.
//!
//! # Events
//!
//! | type | when | `data` (thin, the default) |
//! | --- | --- | --- |
//! | `object_storage_credential.rotated` | one per rotated S3 credential | `rotation_id`, `rotated_at`, `recovered`, `trace_id`, `user_id`, `user_email`, `object_storage_id`, `object_storage_name`, `region`, `credential_id`, `access_key`, `previous_access_key`, `fingerprint` |
//! | `client_secret.rotated` | the OAuth client secret was rotated | `rotation_id`, `rotated_at`, `recovered`, `trace_id`, `client_id`, `fingerprint` |
//! | `rotation.failed` | one per failed rotation of an S3 credential or the client secret | `kind` (`object_storage` or `client_secret`), `subject`, `error`, `rotation_id` (or null), `failed_at`, `trace_id`, plus the credential's identifiers or the `client_id` |
//!
//! The body is `{"type": "...", "timestamp": "<RFC 3339>", "data": {...}}`;
//! `timestamp` is when the rotation happened. `fingerprint` is the
//! state directory's keyed HMAC of the new secret (`hmac-sha256:<hex>`): it
//! tells two secrets apart and reveals nothing. `recovered` is true when the
//! rotation was finished, or announced, after an interrupted run; such a late
//! event has `trace_id` null and may lack `object_storage_name` and `region`.
//!
//! With `include_secrets = true` (https or loopback URLs only; checked by the
//! configuration and again before each send), a rotation event also carries
//! the secret: `secret_key` and `s3_url` for an S3 credential, or
//! `client_secret`. The outbox never stores a secret, so the value is added
//! at send time from what the API holds **at that moment**: an event re-sent
//! on a later run carries the current value, with the matching current
//! `access_key` and `fingerprint`, even if the secret was rotated again in
//! between (a newer event for that rotation follows). If the secret no
//! longer exists (the credential was deleted, or the client secret is no
//! longer managed), the event is sent without it and a warning is logged.
//! `rotation.failed` never carries a secret.
//!
//! # Request
//!
//! `POST <url>` with `content-type: application/json`, the sink's `headers`,
//! and:
//! - `webhook-id`: `msg_<uuid>`, the same on every attempt and every run
//!   (receivers deduplicate with it: delivery is at least once);
//! - `webhook-timestamp`: the attempt's time, Unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//!   keyed with the base64 after `whsec_`; one space-separated `v1,`
//!   signature per configured signing secret, so keys can be rotated.
//!
//! Redirects are not followed (a 3xx counts as a refusal). The receiver's
//! response body is never read, logged or stored.
//!
//! # Delivery, retries and the outbox
//!
//! A run's events are committed to the outbox in `state.db` (durably,
//! one queue per webhook sink) before the first attempt, then sent
//! oldest first:
//! - **2xx**: delivered, removed from the outbox.
//! - **410 Gone**: the receiver does not want the event: removed, with a
//!   warning in the log and a failure line in the audit log. Not retried.
//! - **429, 5xx, timeout, connection error**: retried within the run with
//!   exponential backoff and jitter (up to `[api] max_retries` retries and
//!   one minute per event), honouring `Retry-After` on 429 and 503; still
//!   failing, the event stays, the rest of the queue waits, and the next run
//!   (or the daemon's start) sends them again.
//! - **any other status**: the event stays in the outbox, is not retried in
//!   this run, and the next event is tried.
//!
//! A webhook with events left in its queue has failed: the run reports it
//! and exits 1, and `status` shows the sink's `pending_events`. The daemon
//! also sends the queues at start-up (sinks with `include_secrets` wait for
//! the first run, which reads the current values; a terminate signal cuts
//! this short, leaving the events queued). A run whose user listing was
//! incomplete queues its events without sending them. A rotation that was
//! recorded but whose event never reached the outbox (the process stopped
//! in between) is announced on the next run, with `recovered: true`;
//! rotations from before the sink was configured are not replayed.
//!
//! In the state files and `status`, a webhook sink is named
//! `webhook:<origin>#<hash of the URL>`: the path and query, which often
//! carry tokens, are never written. Changing the URL starts a new queue;
//! events still queued for the old URL are not sent to the new one.
//!
//! # Verifying an event (Python, `pip install standardwebhooks`)
//!
//! ```python
//! from standardwebhooks import Webhook
//! payload = Webhook("whsec_...").verify(request.body, request.headers)
//! # raises WebhookVerificationError on a bad signature or a timestamp
//! # more than five minutes off; payload["type"], payload["data"]
//! ```

mod config;
mod event;
mod send;
mod signature;

pub use config::{check, WebhookSink};
pub use event::{
    events_for, twin_event, verified_events, NewEvent, CLIENT_SECRET_ROTATED,
    OBJECT_STORAGE_CREDENTIAL_ROTATED, OBJECT_STORAGE_CREDENTIAL_VERIFIED,
    OBJECT_STORAGE_TWIN_RETIRED, OBJECT_STORAGE_TWIN_SWITCHED, ROTATION_FAILED,
};
pub use signature::Signer;

use super::SinkSettings;
use super::{SinkError, Snapshot};
use crate::retry::RetryPolicy;
use crate::state::{AuditEvent, AuditKind, Outbox, OutboxQueue, Records, StateDir, StateError};
use chrono::{DateTime, Utc};
use send::{Outcome, Sender};
use std::time::Duration;

/// What a delivery works with besides the sink.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub state: &'a StateDir,
    /// The values the API holds now; `None` (at start-up) holds back the
    /// sinks with `include_secrets`.
    pub snapshot: Option<&'a Snapshot>,
    /// The rotation records, to announce rotations recorded but never
    /// enqueued. Used with `snapshot` only.
    pub records: Option<&'a Records>,
    /// Names the client secret in its events.
    pub client_id: &'a str,
    pub retry: &'a RetryPolicy,
}

/// The retries of one event within a run: `max_retries` (the `[api]`
/// setting) after the first attempt, backoff from 0.5 s doubling to 10 s,
/// and no retry starting after a minute.
pub fn retry_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(10),
        deadline: Duration::from_secs(60),
    }
}

/// Enqueues `new_events` (and any recorded rotation never announced) in the
/// sink's queue, then sends the queue. Returns the id of the last event
/// delivered, `None` if nothing was delivered (nothing to send, or only
/// dropped events); fails if any event is left in the queue.
pub async fn deliver(
    sink: &WebhookSink,
    sink_id: &str,
    new_events: &[NewEvent],
    ctx: &Context<'_>,
) -> Result<Option<String>, SinkError> {
    let name = sink.describe();
    let fail = |detail: String| SinkError::Write {
        sink: name.clone(),
        detail,
    };
    let state_err = |e: StateError| fail(format!("webhook outbox: {e}"));
    if sink.include_secrets && !sink.may_carry_secrets() {
        return Err(fail(
            "refusing to send secrets to a URL that is neither https nor loopback".into(),
        ));
    }
    let mut outbox = ctx.state.load_outbox().map_err(state_err)?;
    let mut queue = take_queue(&mut outbox, sink_id);
    let mut changed = enqueue(&mut queue, new_events);
    if let (Some(records), Some(snapshot)) = (ctx.records, ctx.snapshot) {
        let late = event::unannounced(&queue, records, snapshot, ctx.client_id);
        for e in &late {
            tracing::info!(sink = %name, webhook_id = %e.event.id, event_type = %e.event.kind, "Announcing a rotation an interrupted run recorded but did not enqueue.");
        }
        changed |= enqueue(&mut queue, &late);
        changed |= prune_announced(&mut queue, records);
    }
    if changed {
        // Saved in place and taken back: the queue's announcements cover
        // every credential, so no copy of it is made.
        outbox.queues.insert(sink_id.to_owned(), queue);
        ctx.state.save_outbox(&outbox).map_err(state_err)?;
        crate::crash::point("webhook-after-enqueue");
        queue = take_queue(&mut outbox, sink_id);
    }
    if queue.events.is_empty() {
        return Ok(None);
    }
    let snapshot = match (sink.include_secrets, ctx.snapshot) {
        (false, _) => None,
        (true, Some(snapshot)) => Some(snapshot),
        (true, None) => {
            return Err(fail(format!(
                "{} wait for the next run, which reads the secret values they carry",
                events_text(queue.events.len())
            )))
        }
    };
    let sender = Sender::new(sink, ctx.retry).map_err(|e| fail(e.to_string()))?;
    let result = send_queue(&sender, &name, &mut queue, snapshot, ctx.state).await;
    let left = queue.events.len();
    outbox.queues.insert(sink_id.to_owned(), queue);
    ctx.state.save_outbox(&outbox).map_err(state_err)?;
    if left == 0 {
        return Ok(result.last_delivered);
    }
    let left = events_text(left);
    Err(fail(match result.first_error {
        Some(err) => format!("{left} not delivered, kept for the next run: {err}"),
        None => format!("{left} not delivered, kept for the next run"),
    }))
}

/// A webhook failure restated with what its queue holds now (later events
/// of the pass were queued behind the failed one).
pub fn still_queued(sink_id: &str, state: &StateDir, err: SinkError) -> SinkError {
    let SinkError::Write { sink, detail } = err else {
        return err;
    };
    let marker = " not delivered, kept for the next run";
    let Some((_, cause)) = detail.split_once(marker) else {
        return SinkError::Write { sink, detail };
    };
    let queued = state
        .load_outbox()
        .ok()
        .and_then(|o| o.queues.get(sink_id).map(|q| q.events.len()));
    match queued {
        Some(n) if n > 0 => SinkError::Write {
            sink,
            detail: format!("{}{marker}{cause}", events_text(n)),
        },
        _ => SinkError::Write { sink, detail },
    }
}

/// `1 event`, `2 events`.
fn events_text(n: usize) -> String {
    if n == 1 {
        "1 event".into()
    } else {
        format!("{n} events")
    }
}

/// How long the queue of a webhook sink removed from the configuration is
/// kept (in case the removal was a mistake, or the sink comes back under
/// the same URL) before it is dropped with its events.
pub const REMOVED_QUEUE_GRACE: chrono::Duration = chrono::Duration::days(7);

/// A queue whose sink is no longer configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedQueue {
    pub sink_id: String,
    pub events: usize,
    pub removed_since: DateTime<Utc>,
    /// When it is (or was, if `dropped`) dropped.
    pub drop_after: DateTime<Utc>,
    pub dropped: bool,
}

/// Marks the queues of webhook sinks no longer in `sinks` as removed (from
/// `now`), clears the mark of a sink that came back, and drops queues
/// removed for [`REMOVED_QUEUE_GRACE`]. Returns the removed queues.
pub fn prune_removed(
    sinks: &[SinkSettings],
    state: &StateDir,
    now: DateTime<Utc>,
) -> Result<Vec<RemovedQueue>, StateError> {
    let mut outbox = state.load_outbox()?;
    if outbox.queues.is_empty() {
        return Ok(Vec::new());
    }
    let configured = configured_ids(sinks);
    let mut changed = false;
    let mut removed = Vec::new();
    outbox.queues.retain(|id, queue| {
        if configured.contains(id) {
            changed |= queue.removed_since.take().is_some();
            return true;
        }
        let since = *queue.removed_since.get_or_insert_with(|| {
            changed = true;
            now
        });
        let drop_after = since + REMOVED_QUEUE_GRACE;
        let dropped = now >= drop_after;
        removed.push(RemovedQueue {
            sink_id: id.clone(),
            events: queue.events.len(),
            removed_since: since,
            drop_after,
            dropped,
        });
        changed |= dropped;
        !dropped
    });
    if changed {
        state.save_outbox(&outbox)?;
    }
    Ok(removed)
}

/// The queues of sinks not in `sinks`, as [`prune_removed`] would see them
/// at `now`, without changing anything (for `status`).
pub fn removed_queues(
    sinks: &[SinkSettings],
    outbox: &crate::state::Outbox,
    now: DateTime<Utc>,
) -> Vec<RemovedQueue> {
    let configured = configured_ids(sinks);
    outbox
        .queues
        .iter()
        .filter(|(id, _)| !configured.contains(*id))
        .map(|(id, queue)| {
            let since = queue.removed_since.unwrap_or(now);
            RemovedQueue {
                sink_id: id.clone(),
                events: queue.events.len(),
                removed_since: since,
                drop_after: since + REMOVED_QUEUE_GRACE,
                dropped: false,
            }
        })
        .collect()
}

/// The outbox ids of the configured webhook sinks.
fn configured_ids(sinks: &[SinkSettings]) -> std::collections::HashSet<String> {
    sinks
        .iter()
        .filter(|s| matches!(s, SinkSettings::Webhook(_)))
        .map(super::sink_id)
        .collect()
}

/// Enqueues `new_events` in every webhook sink's queue without sending them
/// (for a run that cannot deliver: its snapshot is partial; the next run
/// sends them). A webhook sink without a queue gets one, which starts the
/// clock of the rotations announced to it: the engine calls this with no
/// events before its first rotation, so that a rotation recorded by a run
/// that stops before delivering is still announced by the next.
pub fn enqueue_only(
    sinks: &[SinkSettings],
    new_events: &[NewEvent],
    state: &StateDir,
) -> Result<(), StateError> {
    if !sinks.iter().any(|s| matches!(s, SinkSettings::Webhook(_))) {
        return Ok(());
    }
    let mut outbox = state.load_outbox()?;
    let mut changed = false;
    for sink in sinks {
        if let SinkSettings::Webhook(_) = sink {
            let id = super::sink_id(sink);
            changed |= !outbox.queues.contains_key(&id);
            let mut queue = take_queue(&mut outbox, &id);
            changed |= enqueue(&mut queue, new_events);
            outbox.queues.insert(id, queue);
        }
    }
    if changed {
        state.save_outbox(&outbox)?;
    }
    Ok(())
}

/// Enqueues `new_events` in one sink's queue without sending them (a
/// webhook that already failed in this pass: its events wait for the
/// next attempt, in order).
pub fn enqueue_for(
    sink_id: &str,
    new_events: &[NewEvent],
    state: &StateDir,
) -> Result<(), StateError> {
    let mut outbox = state.load_outbox()?;
    let mut queue = take_queue(&mut outbox, sink_id);
    let changed = enqueue(&mut queue, new_events);
    outbox.queues.insert(sink_id.to_owned(), queue);
    if changed {
        state.save_outbox(&outbox)?;
    }
    Ok(())
}

/// Sends what earlier runs left in the webhook queues, for the daemon's
/// start. Sinks with `include_secrets` are skipped: their events carry the
/// current secret values, which the next run reads. Returns each sink's
/// description and result.
pub async fn resend_pending(
    sinks: &[SinkSettings],
    state: &StateDir,
    client_id: &str,
    retry: &RetryPolicy,
) -> Vec<(String, Result<Option<String>, SinkError>)> {
    let ctx = Context {
        state,
        snapshot: None,
        records: None,
        client_id,
        retry,
    };
    let mut results = Vec::new();
    for sink in sinks {
        let SinkSettings::Webhook(hook) = sink else {
            continue;
        };
        if hook.include_secrets {
            continue;
        }
        let result = deliver(hook, &super::sink_id(sink), &[], &ctx).await;
        results.push((hook.describe(), result));
    }
    results
}

/// `check --online`: a HEAD request to the URL. Any HTTP answer counts as
/// reachable (many receivers answer 405 to HEAD); a connection error or a
/// timeout fails.
pub async fn healthcheck(sink: &WebhookSink) -> Result<(), SinkError> {
    match send::probe(sink).await {
        Ok(status) => {
            tracing::debug!(sink = %sink.describe(), status, "Webhook reachable.");
            Ok(())
        }
        Err(detail) => Err(SinkError::Write {
            sink: sink.describe(),
            detail: format!("not reachable: {detail}"),
        }),
    }
}

/// The sink's queue, taken out of the outbox (a new one if it has none).
fn take_queue(outbox: &mut Outbox, sink_id: &str) -> OutboxQueue {
    outbox
        .queues
        .remove(sink_id)
        .unwrap_or_else(|| OutboxQueue::new(Utc::now()))
}

/// Appends events the queue does not hold yet; says whether it changed.
fn enqueue(queue: &mut OutboxQueue, new_events: &[NewEvent]) -> bool {
    // The ids already queued, looked up once each (a queue behind a slow
    // receiver can hold thousands of events).
    let fresh: Vec<&NewEvent> = {
        let mut seen: std::collections::HashSet<&str> =
            queue.events.iter().map(|q| q.id.as_str()).collect();
        let mut announcing = std::collections::HashSet::new();
        new_events
            .iter()
            .filter(|e| seen.insert(e.event.id.as_str()))
            // A rotation this queue announced already (a run killed after
            // its event was queued and before its record was saved is
            // recovered from the journal): one event per rotation.
            .filter(|e| match &e.announces {
                Some(rotation_id) => {
                    !queue.announced.contains(rotation_id) && announcing.insert(rotation_id)
                }
                None => true,
            })
            .collect()
    };
    for e in &fresh {
        // Cheap: the event's data text is shared, not copied.
        queue.events.push(e.event.clone());
        if let Some(rotation_id) = &e.announces {
            queue.announced.insert(*rotation_id);
        }
    }
    !fresh.is_empty()
}

/// Forgets announcements of rotations no record holds as current any more
/// (a later rotation, or a secret gone).
fn prune_announced(queue: &mut OutboxQueue, records: &Records) -> bool {
    let mut current = Vec::new();
    let scanned = records.scan(|_, r| current.extend(r.rotation_id));
    if scanned.is_err() {
        // Kept: an announcement is forgotten only on a full reading.
        return false;
    }
    current.extend(records.client_secret.as_ref().and_then(|r| r.rotation_id));
    // Sorted once: 16 bytes per rotation, where a hash set took about 36.
    let current: crate::sorted_set::SortedSet<_> = current.into_iter().collect();
    let before = queue.announced.len();
    queue.announced.retain(|id| current.contains(id));
    queue.announced.len() != before
}

struct Sent {
    last_delivered: Option<String>,
    first_error: Option<String>,
}

/// Sends the queue oldest first; stops at the first event the receiver is
/// unavailable for, so the rest keep their order for the next run.
async fn send_queue(
    sender: &Sender<'_>,
    name: &str,
    queue: &mut OutboxQueue,
    snapshot: Option<&Snapshot>,
    state: &StateDir,
) -> Sent {
    let mut sent = Sent {
        last_delivered: None,
        first_error: None,
    };
    // The queue is taken apart and the events kept put back, rather than
    // each sent event removed from the front: a receiver back after a long
    // outage may have tens of thousands queued, and every `remove(0)`
    // moved all the others. (If this future is dropped, the queue is not
    // saved: the outbox on disk still holds every event.)
    let mut events = std::mem::take(&mut queue.events).into_iter();
    let mut kept = Vec::new();
    for mut event in events.by_ref() {
        let (body, with_secret) = event::body(&event, snapshot, state);
        if snapshot.is_some() && event.secret.is_some() && !with_secret {
            tracing::warn!(sink = %name, webhook_id = %event.id, event_type = %event.kind, "The secret of this event no longer exists; sending the event without it.");
        }
        let mut attempts = 0;
        let outcome = sender.send(&event.id, &body, || attempts += 1).await;
        drop(body);
        event.attempts += attempts;
        event.last_attempt = Some(Utc::now());
        match outcome {
            Outcome::Delivered => {
                tracing::info!(sink = %name, webhook_id = %event.id, event_type = %event.kind, attempts, "Delivered webhook event.");
                sent.last_delivered = Some(event.id.clone());
                crate::crash::point("webhook-after-post");
            }
            Outcome::Gone => {
                tracing::warn!(sink = %name, webhook_id = %event.id, event_type = %event.kind, "The webhook answered 410 Gone; dropped the event.");
                let _ = state.audit(&AuditEvent {
                    at: Utc::now(),
                    event: AuditKind::Failure,
                    rotation_id: event
                        .data
                        .value()
                        .get("rotation_id")
                        .and_then(|v| v.as_str())
                        .and_then(|s| s.parse().ok()),
                    trace_id: None,
                    subject: name.to_owned(),
                    detail: serde_json::json!({
                        "webhook_id": event.id,
                        "type": event.kind,
                        "status": 410,
                        "dropped": true,
                    }),
                });
            }
            Outcome::Rejected(err) => {
                tracing::warn!(sink = %name, webhook_id = %event.id, error = %err, "The webhook refused the event; keeping it for the next run.");
                event.last_error = Some(err.to_string());
                sent.first_error.get_or_insert_with(|| err.to_string());
                kept.push(event);
            }
            Outcome::Unavailable(err) => {
                tracing::warn!(sink = %name, webhook_id = %event.id, error = %err, "The webhook is unavailable; keeping its events for the next run.");
                event.last_error = Some(err.to_string());
                sent.first_error.get_or_insert_with(|| err.to_string());
                kept.push(event);
                break;
            }
        }
    }
    kept.extend(events);
    queue.events = kept;
    sent
}

#[cfg(test)]
mod tests;
