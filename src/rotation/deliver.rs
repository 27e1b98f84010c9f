//! Delivery, the last stage of the pipeline: each user's current values go
//! to the sinks that hold them while the pass goes on (docs/design.md §1.7, §4).
//!
//! Every configured sink gets a role for the pass:
//! - **one user's**: a file or template sink whose selection holds the
//!   credentials of exactly one user in scope. It is written as soon as that
//!   user's stage is done, with that user's values.
//! - **aggregate**: a file or template sink holding several users (or none:
//!   the client secret only). It renders from [`Sinks::store`], the one
//!   compact map of current values the pass keeps for the users such sinks
//!   hold, filled before the first regenerate. A change marks it dirty; it
//!   is written `wait` after its first pending change, and once more at the
//!   end of the pass if anything is still pending.
//! - **webhook**: the events of each user go to a worker task that sends
//!   them through the outbox as they come.
//!
//! Writes run as tasks, at most one per sink at a time, so a slow
//! `on_change` holds up neither the other sinks nor the rotations.
//!
//! A sink that cannot be given new values in this pass is **blocked**
//! before any regenerate: its directory does not take a file, it cannot
//! render the current values, or (aggregate) a user it holds could not be
//! listed, so a complete file cannot be rendered. The credentials a blocked
//! sink selects are not regenerated in this pass ([`Gate`]): a regenerate
//! would leave that sink's readers on a dead key.

use super::{Delivery, RunReport};
use crate::config::{Kind, SinkSettings};
use crate::crash;
use crate::inventory::{CredentialEntry, UserRef};
use crate::sinks::snapshot::{
    select_groups, selects_credential, selects_twin, selects_user, Group,
};
use crate::sinks::write::RenderError;
use crate::sinks::{self, file, webhook, SinkError, Snapshot, SnapshotCredential};
use crate::state::{AuditEvent, AuditKind, Records, StateDir};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a sink is in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Role {
    /// Holds the credentials of this one user (by id).
    OneUser(Arc<str>),
    /// Holds several users' credentials, or only the client secret.
    Aggregate,
    Webhook,
}

/// One configured sink during a pass.
struct Slot {
    sink: SinkSettings,
    id: String,
    role: Role,
    /// Whether this pass delivers the sink (start-up recovery delivers only
    /// the sinks that are behind).
    enabled: bool,
    /// Why the sink cannot be given new values in this pass.
    blocked: Option<String>,
    /// When its oldest undelivered change arrived.
    dirty_since: Option<Instant>,
    /// Whether its values (or the client secret) changed since its last
    /// write started: an aggregate sink's next write then renders its
    /// content once, expecting it to differ (`Target::expect_change`).
    /// The last write of a pass is forced, not changed.
    changed: bool,
    in_flight: bool,
    /// The last delivered version, as the records hold it.
    delivered: Option<String>,
    /// A one-user sink's last values (rewritten when the client secret changes).
    last_values: Option<Group>,
    /// `written` once any write of the pass wrote; `failed` if the last failed.
    outcome: Option<&'static str>,
    wait: Duration,
}

impl Slot {
    fn selection(&self) -> Option<&crate::config::Selection> {
        self.sink.select()
    }

    /// Whether the sink holds S3 credentials of user `email`.
    fn holds_user(&self, email: &str) -> bool {
        self.selection().is_some_and(|s| selects_user(s, email))
    }

    /// Whether the sink holds the active keys of twin `name`.
    fn holds_twin(&self, name: &str) -> bool {
        self.selection().is_some_and(|s| selects_twin(s, name))
    }

    fn holds_client(&self) -> bool {
        self.selection()
            .is_some_and(|s| s.includes_kind(Kind::ClientSecret))
    }

    fn is_file(&self) -> bool {
        !matches!(self.role, Role::Webhook)
    }
}

/// A finished write, from its task.
pub(super) struct WriteDone {
    slot: usize,
    credentials: usize,
    result: Result<Option<String>, SinkError>,
}

/// A user in the aggregate store: (e-mail, user id), the records' shared
/// copies.
type UserKey = (Arc<str>, Arc<str>);

/// Twins are kept in the store under this prefix and their name: no
/// e-mail starts with a space.
const TWIN_KEY: &str = " twin ";

/// The current values of the users the aggregate sinks hold, in (e-mail,
/// user id) order: a sorted vector, reserved for the users it will hold
/// before they are listed. Users are listed nearly in order, so an insert
/// lands at or near the end. A `BTreeMap` of them took 0.76 MB at 10,000
/// users (its nodes about half full after inserts in order), the vector
/// 0.48.
#[derive(Default)]
struct Store(Vec<(UserKey, Group)>);

impl Store {
    fn at(&self, email: &str, user_id: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|((e, id), _)| (&**e, &**id).cmp(&(email, user_id)))
    }

    fn insert(&mut self, user: &UserRef, values: Group) {
        match self.at(&user.email, &user.user_id) {
            Ok(at) => self.0[at].1 = values,
            Err(at) => self
                .0
                .insert(at, ((user.email.clone(), user.user_id.clone()), values)),
        }
    }

    fn get(&self, user: &UserRef) -> Option<&Group> {
        let at = self.at(&user.email, &user.user_id).ok()?;
        Some(&self.0[at].1)
    }

    fn values(&self) -> impl Iterator<Item = &Group> {
        self.0.iter().map(|(_, values)| values)
    }
}

/// Everything delivery keeps for a pass.
pub(super) struct Sinks {
    state: Arc<StateDir>,
    hide_env: Arc<Vec<String>>,
    client_id: String,
    trace_id: String,
    slots: Vec<Slot>,
    /// Current values of the users an enabled aggregate sink holds, by
    /// (e-mail, user id): the one copy the pass keeps.
    store: Store,
    /// The client secret, when it is managed and some sink holds it.
    client: Option<(String, SecretString)>,
    /// Writes in flight.
    pub(super) writes: JoinSet<WriteDone>,
    webhooks: Option<WebhookWorker>,
}

impl Sinks {
    /// The sinks of `settings`, with their roles for the users in scope.
    /// `enabled` picks the sinks this pass delivers (all when `None`).
    pub(super) fn plan(
        settings: &crate::config::Settings,
        state: Arc<StateDir>,
        users: &[UserRef],
        records: &Records,
        trace_id: &str,
        enabled: Option<&[String]>,
    ) -> Sinks {
        let mut slots = Vec::new();
        for sink in &settings.sinks {
            let id = sinks::sink_id(sink);
            let (role, wait) = match sink {
                SinkSettings::Webhook(_) => (Role::Webhook, Duration::ZERO),
                SinkSettings::File(f) => (one_user(&f.select, users), f.wait),
                SinkSettings::Template(t) => (one_user(&t.select, users), t.wait),
            };
            slots.push(Slot {
                enabled: enabled.is_none_or(|ids| ids.contains(&id)),
                delivered: records
                    .sinks
                    .get(&id)
                    .and_then(|r| r.delivered_version.clone()),
                sink: sink.clone(),
                id,
                role,
                blocked: None,
                dirty_since: None,
                changed: false,
                in_flight: false,
                last_values: None,
                outcome: None,
                wait,
            });
        }
        Sinks {
            state,
            hide_env: Arc::new(settings.secret_env_vars.clone()),
            client_id: settings.api.client_id.clone(),
            trace_id: trace_id.to_owned(),
            slots,
            store: Store::default(),
            client: None,
            writes: JoinSet::new(),
            webhooks: None,
        }
    }

    /// Whether an enabled sink holds the client secret (it is then read).
    pub(super) fn wants_client(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.enabled && s.is_file() && s.holds_client())
            || self.has_webhooks()
    }

    pub(super) fn set_client(&mut self, client: Option<(String, SecretString)>) {
        self.client = client;
    }

    /// Whether an enabled aggregate sink holds user `email`: its values are
    /// then listed before any regenerate and kept in the store.
    pub(super) fn aggregate_holds(&self, email: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.enabled && s.role == Role::Aggregate && s.holds_user(email))
    }

    /// Whether an enabled file or template sink holds user `email`.
    pub(super) fn any_holds(&self, email: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.enabled && s.is_file() && s.holds_user(email))
    }

    pub(super) fn has_webhooks(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.enabled && s.role == Role::Webhook)
    }

    /// Before anything is listed: blocks every file or template sink whose
    /// directory does not take a new file (or whose owner or group does not
    /// exist).
    pub(super) fn preflight(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.enabled && s.is_file()) {
            let checked = match &slot.sink {
                SinkSettings::File(f) => file::healthcheck(f),
                SinkSettings::Template(t) => crate::sinks::template::healthcheck(t),
                SinkSettings::Webhook(_) => Ok(()),
            };
            if let Err(err) = checked {
                tracing::warn!(sink = %slot.sink.describe(), error = %err, "The sink cannot be written; the credentials it selects are not rotated in this pass.");
                slot.blocked = Some(err.to_string());
            }
        }
    }

    /// A user whose credentials could not be listed: every aggregate sink
    /// holding it cannot be rendered completely in this pass.
    pub(super) fn user_unlisted(&mut self, email: &str) {
        for slot in &mut self.slots {
            if slot.enabled && slot.role == Role::Aggregate && slot.holds_user(email) {
                slot.blocked.get_or_insert_with(|| {
                    format!(
                        "not delivered: the credentials of {email} could not be listed, and a partial file would drop them"
                    )
                });
            }
        }
    }

    /// Why a sink holding twin `name` cannot be given new keys, if one
    /// cannot (a switch then waits: its keys would reach some sinks only).
    /// A sink that cannot render the twin's current keys cannot render
    /// the standby's either (the same storages, other values).
    pub(super) fn twin_blocked(&self, name: &str) -> Option<String> {
        (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.enabled && s.is_file() && s.holds_twin(name)
            })
            .find_map(|i| {
                let s = &self.slots[i];
                let why = s
                    .blocked
                    .clone()
                    .or_else(|| cannot_render(&s.sink, &self.aggregate_snapshot(i)));
                why.map(|why| format!("{}: {why}", s.sink.describe()))
            })
    }

    /// Twin `name`'s users could not be listed (or do not make a twin): the
    /// aggregate sinks holding it cannot be rendered completely.
    pub(super) fn twin_unlisted(&mut self, name: &str, why: &str) {
        for slot in &mut self.slots {
            if slot.enabled && slot.is_file() && slot.holds_twin(name) {
                slot.blocked
                    .get_or_insert_with(|| format!("not delivered: twin `{name}` {why}"));
            }
        }
    }

    /// Keeps twin `name`'s active keys for the sinks holding it, under the
    /// twin's own key: a switch replaces the other user's keys.
    pub(super) fn store_twin(&mut self, name: &str, values: Group) {
        let key = UserRef {
            email: format!("{TWIN_KEY}{name}").into(),
            user_id: Arc::from(name),
        };
        self.store.insert(&key, values);
    }

    /// Hands twin `name`'s new active keys to every sink holding it and
    /// waits for those writes. `Err` names the sinks that were not written
    /// (the report has their failures).
    pub(super) async fn deliver_twin(
        &mut self,
        name: &str,
        values: Group,
        records: &mut Records,
        report: &mut RunReport,
    ) -> Result<(), String> {
        self.store_twin(name, values);
        let holding: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.enabled && s.is_file() && s.holds_twin(name)
            })
            .collect();
        let mut failed = Vec::new();
        for &i in &holding {
            if let Some(why) = &self.slots[i].blocked {
                failed.push(format!("{} ({why})", self.slots[i].sink.describe()));
                continue;
            }
            self.slots[i].dirty_since = Some(Instant::now());
            self.slots[i].changed = true;
            self.slots[i].outcome = None;
        }
        // Until every holding sink's write of these keys is done: a write
        // in flight (of the values before) is awaited, then this one.
        loop {
            for &i in &holding {
                if self.slots[i].dirty_since.is_some() && !self.slots[i].in_flight {
                    self.write_now(i);
                }
            }
            let pending = holding
                .iter()
                .any(|&i| self.slots[i].in_flight || self.slots[i].dirty_since.is_some());
            if !pending {
                break;
            }
            let Some(joined) = self.writes.join_next().await else {
                break;
            };
            self.write_done(joined.expect("sink write panicked"), records, report);
        }
        for &i in &holding {
            if self.slots[i].blocked.is_none() && self.slots[i].outcome == Some("failed") {
                failed.push(self.slots[i].sink.describe());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join(", "))
        }
    }

    /// Makes room in the store for `users` more users.
    pub(super) fn reserve_store(&mut self, users: usize) {
        self.store.0.reserve_exact(users);
    }

    /// Keeps a listed user's values for the aggregate sinks.
    pub(super) fn store_user(&mut self, user: &UserRef, values: Group) {
        self.store.insert(user, values);
    }

    /// A listed user's credentials, as the store holds them (the user's
    /// stage starts from them instead of listing again).
    pub(super) fn stored_entries(&self, user: &UserRef) -> Option<Vec<CredentialEntry>> {
        let values = self.store.get(user)?;
        Some(values.iter().map(CredentialEntry::from).collect())
    }

    /// Once the store is complete: blocks every aggregate sink that cannot
    /// render the current values (an `env` selection of other than one
    /// credential, a template error).
    pub(super) fn trial_render_aggregates(&mut self) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if !slot.enabled || slot.role != Role::Aggregate || slot.blocked.is_some() {
                continue;
            }
            let snapshot = self.aggregate_snapshot(i);
            if let Some(reason) = cannot_render(&self.slots[i].sink, &snapshot) {
                self.slots[i].blocked = Some(reason);
            }
        }
    }

    /// Why the client secret must not be rotated in this pass: a sink that
    /// holds it cannot be given the new value.
    pub(super) fn client_blocked(&self) -> Option<String> {
        self.slots
            .iter()
            .filter(|s| s.enabled && s.is_file() && s.holds_client())
            .find_map(|s| {
                s.blocked.as_ref().map(|reason| {
                    format!(
                        "not rotated: {} cannot be given its new value in this pass ({reason})",
                        s.sink.describe()
                    )
                })
            })
    }

    /// What the per-user stages consult before they regenerate.
    pub(super) fn gate(&self) -> Gate {
        Gate {
            sinks: self
                .slots
                .iter()
                .filter(|s| s.enabled && s.is_file())
                .map(|s| GateSink {
                    sink: s.sink.clone(),
                    one_user: match &s.role {
                        Role::OneUser(id) => Some(id.clone()),
                        _ => None,
                    },
                    blocked: s.blocked.clone(),
                })
                .collect(),
            client: self.client.clone(),
        }
    }

    /// Opens the webhook worker (before the first regenerate).
    pub(super) fn start_webhooks(&mut self, max_retries: u32) {
        if !self.has_webhooks() {
            return;
        }
        let hooks: Vec<(usize, crate::config::WebhookSink, String)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.enabled)
            .filter_map(|(i, s)| match &s.sink {
                SinkSettings::Webhook(w) => Some((i, w.clone(), s.id.clone())),
                _ => None,
            })
            .collect();
        self.webhooks = Some(WebhookWorker::start(
            hooks,
            self.state.clone(),
            self.client_id.clone(),
            max_retries,
        ));
    }

    /// Sends `events` (with the values they may carry) to the webhooks.
    pub(super) fn announce(&self, events: Vec<webhook::NewEvent>, values: Snapshot) {
        if let Some(w) = &self.webhooks {
            if !events.is_empty() {
                w.backlog.add(events.len());
                // Only `include_secrets` reads the values; otherwise a
                // batch waiting to be sent would keep values the
                // aggregate sinks have replaced since.
                let values = if w.carries_secrets {
                    values
                } else {
                    Snapshot::default()
                };
                let _ = w.tx.send(Batch { events, values });
            }
        }
    }

    /// Whether the webhook worker is [`MAX_WEBHOOK_BACKLOG`] events behind:
    /// the pass then starts no more users until it catches up.
    pub(super) fn webhooks_behind(&self) -> bool {
        self.webhooks
            .as_ref()
            .is_some_and(|w| w.backlog.len() >= MAX_WEBHOOK_BACKLOG)
    }

    /// The pass started its last user: the webhook worker gathers for
    /// [`HURRIED_GATHER`] only from now on.
    pub(super) fn hurry_webhooks(&self) {
        if let Some(w) = &self.webhooks {
            w.backlog.hurry();
        }
    }

    /// The webhook worker's backlog, to wait on while it is full.
    pub(super) fn webhook_backlog(&self) -> Option<Arc<Backlog>> {
        self.webhooks.as_ref().map(|w| w.backlog.clone())
    }

    /// Sends the client secret's events, with its current value.
    pub(super) fn announce_client(&self, events: Vec<webhook::NewEvent>) {
        let values = Snapshot {
            client: self.client.clone(),
            groups: Vec::new(),
        };
        self.announce(events, values);
    }

    /// The events of `rotations` and `failures`, when a webhook exists.
    pub(super) fn events(
        &self,
        rotations: &[super::Rotated],
        failures: &[super::Failed],
    ) -> Vec<webhook::NewEvent> {
        if self.webhooks.is_none() {
            return Vec::new();
        }
        webhook::events_for(rotations, failures, &self.client_id, &self.trace_id)
    }

    /// The follow-up events of keys the storage accepted.
    pub(super) fn verified_events(&self, verified: &[super::Verified]) -> Vec<webhook::NewEvent> {
        if self.webhooks.is_none() {
            return Vec::new();
        }
        webhook::verified_events(verified, &self.trace_id)
    }

    /// One user's stage is done: `values` are what the API holds now.
    /// One-user sinks are written at once; aggregate sinks holding the user
    /// are marked dirty when `changed`.
    pub(super) fn user_done(&mut self, user: &UserRef, values: Group, changed: bool) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if !slot.enabled || slot.blocked.is_some() || !slot.holds_user(&user.email) {
                continue;
            }
            match &slot.role {
                Role::OneUser(id) if *id == user.user_id => {
                    slot.last_values = Some(values.clone());
                    if slot.in_flight {
                        slot.dirty_since.get_or_insert(now);
                    } else {
                        let snapshot = Snapshot {
                            client: self.client.clone(),
                            groups: vec![values.clone()],
                        };
                        self.start_write(i, snapshot);
                    }
                }
                Role::Aggregate if changed => {
                    slot.dirty_since.get_or_insert(now);
                    slot.changed = true;
                }
                _ => {}
            }
        }
        if self.aggregate_holds(&user.email) {
            self.store_user(user, values);
        }
    }

    /// A regenerate answered (before its user is confirmed): the sinks
    /// holding the user gather the new values and write them within their
    /// `wait`.
    pub(super) fn provisional(&mut self, user: &UserRef, values: Group) {
        let now = Instant::now();
        for slot in &mut self.slots {
            if !slot.enabled || slot.blocked.is_some() || !slot.holds_user(&user.email) {
                continue;
            }
            match &slot.role {
                Role::OneUser(id) if *id == user.user_id => {
                    slot.last_values = Some(values.clone());
                    slot.dirty_since.get_or_insert(now);
                }
                Role::Aggregate => {
                    slot.dirty_since.get_or_insert(now);
                    slot.changed = true;
                }
                _ => {}
            }
        }
        if self.aggregate_holds(&user.email) {
            self.store_user(user, values);
        }
    }

    /// The client secret changed: every sink holding it is written at once.
    pub(super) fn client_changed(&mut self, secret: SecretString) {
        if let Some((_, current)) = &mut self.client {
            *current = secret;
        } else {
            self.client = Some((self.client_id.clone(), secret));
        }
        let due = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or_else(Instant::now);
        for slot in &mut self.slots {
            if slot.enabled && slot.is_file() && slot.blocked.is_none() && slot.holds_client() {
                slot.dirty_since = Some(due);
                slot.changed = true;
            }
        }
    }

    /// When the next gathered write is due, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| !s.in_flight)
            .filter_map(|s| s.dirty_since.map(|t| t + s.wait))
            .min()
    }

    /// Starts the writes that are due at `now`.
    pub(super) fn flush_due(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let due = slot.dirty_since.is_some_and(|t| t + slot.wait <= now);
            if due && !slot.in_flight {
                self.write_now(i);
            }
        }
    }

    /// Writes slot `i` with its current values.
    fn write_now(&mut self, i: usize) {
        let snapshot = match &self.slots[i].role {
            Role::OneUser(_) => Snapshot {
                client: self.client.clone(),
                groups: self.slots[i].last_values.iter().cloned().collect(),
            },
            Role::Aggregate => self.aggregate_snapshot(i),
            Role::Webhook => return,
        };
        self.start_write(i, snapshot);
    }

    /// The aggregate sink `i`'s selection of the store.
    fn aggregate_snapshot(&self, i: usize) -> Snapshot {
        let selection = self.slots[i].selection();
        Snapshot {
            client: self.client.clone(),
            groups: select_groups(self.store.values(), |c| {
                selection.is_some_and(|s| selects_credential(s, c))
            }),
        }
    }

    fn start_write(&mut self, i: usize, snapshot: Snapshot) {
        let slot = &mut self.slots[i];
        slot.in_flight = true;
        slot.dirty_since = None;
        let changed = std::mem::take(&mut slot.changed);
        let expect_change = changed && slot.role == Role::Aggregate;
        let sink = slot.sink.clone();
        let delivered = slot.delivered.clone();
        let state = self.state.clone();
        let hide_env = self.hide_env.clone();
        self.writes.spawn(async move {
            let credentials = snapshot.count();
            let result = match &sink {
                SinkSettings::File(f) => {
                    file::deliver(
                        f,
                        &snapshot,
                        &state,
                        delivered.as_deref(),
                        &hide_env,
                        expect_change,
                    )
                    .await
                }
                SinkSettings::Template(t) => {
                    crate::sinks::template::deliver(
                        t,
                        &snapshot,
                        &state,
                        delivered.as_deref(),
                        &hide_env,
                        expect_change,
                    )
                    .await
                }
                SinkSettings::Webhook(_) => Ok(None),
            };
            WriteDone {
                slot: i,
                credentials,
                result,
            }
        });
    }

    /// Records a finished write: the sink's record, the audit log, the report.
    pub(super) fn write_done(
        &mut self,
        done: WriteDone,
        records: &mut Records,
        report: &mut RunReport,
    ) {
        let slot = &mut self.slots[done.slot];
        slot.in_flight = false;
        let outcome = apply_result(
            &slot.sink,
            &slot.id,
            &self.state,
            &self.trace_id,
            records,
            report,
            done.credentials,
            done.result,
        );
        slot.delivered = records
            .sinks
            .get(&slot.id)
            .and_then(|r| r.delivered_version.clone());
        slot.outcome = match (slot.outcome, outcome) {
            (_, "failed") => Some("failed"),
            (Some("written"), _) | (_, "written") => Some("written"),
            _ => Some("unchanged"),
        };
        if matches!(slot.role, Role::OneUser(_)) {
            // A one-user sink written, its record not saved yet.
            crash::point("after-user-sink");
        }
        crash::point("after-sink");
    }

    /// The end of the pass: writes whatever is pending, waits for every
    /// write, finishes the webhooks (announcing rotations recorded but never
    /// enqueued) and reports each sink.
    pub(super) async fn finish(
        &mut self,
        records: &mut Records,
        report: &mut RunReport,
        max_retries: u32,
    ) {
        crash::point("before-delivery");
        // Aggregate sinks get one last write (unchanged content is not
        // rewritten); a one-user sink is written when its user is done.
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.enabled && slot.blocked.is_none() && slot.role == Role::Aggregate {
                self.slots[i].dirty_since.get_or_insert(Instant::now());
            }
        }
        loop {
            for i in 0..self.slots.len() {
                if self.slots[i].dirty_since.is_some() && !self.slots[i].in_flight {
                    self.write_now(i);
                }
            }
            let Some(joined) = self.writes.join_next().await else {
                break;
            };
            self.write_done(joined.expect("sink write panicked"), records, report);
        }
        let webhook_results = match self.webhooks.take() {
            Some(worker) => worker.finish().await,
            None => Vec::new(),
        };
        let retry = webhook::retry_policy(max_retries);
        let store = Snapshot {
            client: self.client.clone(),
            groups: self.store.values().cloned().collect(),
        };
        for (i, result) in webhook_results {
            // A webhook that worked in this pass also announces rotations
            // recorded but never enqueued (a killed run).
            let result = match (result, &self.slots[i].sink) {
                (Ok(last), SinkSettings::Webhook(w)) => {
                    let ctx = webhook::Context {
                        state: &self.state,
                        snapshot: Some(&store),
                        records: Some(records),
                        client_id: &self.client_id,
                        retry: &retry,
                    };
                    webhook::deliver(w, &self.slots[i].id, &[], &ctx)
                        .await
                        .map(|later| later.or(last))
                }
                (result, _) => result,
            };
            let slot = &mut self.slots[i];
            let outcome = apply_result(
                &slot.sink,
                &slot.id,
                &self.state,
                &self.trace_id,
                records,
                report,
                0,
                result,
            );
            slot.outcome = Some(outcome);
            crash::point("after-sink");
        }
        for slot in &self.slots {
            if !slot.enabled {
                continue;
            }
            if let Some(reason) = &slot.blocked {
                report.fail("sink", slot.sink.describe(), reason);
                let record = records.sinks.entry(slot.id.clone()).or_default();
                record.last_attempt = Some(Utc::now());
                record.last_error = Some(reason.clone());
                report.deliveries.push(Delivery {
                    sink: slot.sink.describe(),
                    outcome: "failed",
                });
                continue;
            }
            report.deliveries.push(Delivery {
                sink: slot.sink.describe(),
                outcome: slot.outcome.unwrap_or("unchanged"),
            });
        }
        crash::point("after-delivery");
    }
}

/// A sink holding exactly one user in scope is that user's.
fn one_user(selection: &crate::config::Selection, users: &[UserRef]) -> Role {
    if !selection.twins.is_empty() {
        return Role::Aggregate;
    }
    let mut held = users.iter().filter(|u| selects_user(selection, &u.email));
    match (held.next(), held.next()) {
        (Some(only), None) => Role::OneUser(only.user_id.clone()),
        _ => Role::Aggregate,
    }
}

/// Renders a file or template sink's content for `snapshot` without
/// writing it.
fn render(sink: &SinkSettings, snapshot: &Snapshot) -> Result<(), RenderError> {
    match sink {
        SinkSettings::File(f) => file::check_renders(f.format, &snapshot.select(&f.select)),
        // Off the runtime's worker, as a delivery's render is: a template
        // may render for long (until its fuel or a terminate signal ends
        // it), and with every worker held by one the runtime would not
        // even see the signal.
        SinkSettings::Template(t) => crate::sinks::write::blocking(|| {
            t.compiled.render_into(
                &crate::sinks::template::Context::new(&snapshot.select(&t.select)),
                &mut std::io::sink(),
                &crate::sinks::LazyRedactor::new(snapshot),
            )
        }),
        SinkSettings::Webhook(_) => Ok(()),
    }
}

/// Why `sink` cannot be delivered `snapshot`, if it cannot be rendered.
fn cannot_render(sink: &SinkSettings, snapshot: &Snapshot) -> Option<String> {
    let err = render(sink, snapshot).err()?;
    Some(format!("{}: cannot be rendered: {err}", sink.describe()))
}

/// Folds one delivery attempt into the sink's record, the audit log and the
/// report's failures; returns `written`, `unchanged` or `failed`.
#[allow(clippy::too_many_arguments)]
fn apply_result(
    sink: &SinkSettings,
    id: &str,
    state: &StateDir,
    trace_id: &str,
    records: &mut Records,
    report: &mut RunReport,
    credentials: usize,
    result: Result<Option<String>, SinkError>,
) -> &'static str {
    let record = records.sinks.entry(id.to_owned()).or_default();
    let now = Utc::now();
    record.last_attempt = Some(now);
    match result {
        Ok(Some(version)) => {
            record.delivered_version = Some(version);
            record.delivered_at = Some(now);
            record.last_error = None;
            let _ = state.audit(&AuditEvent {
                at: now,
                event: AuditKind::Delivery,
                rotation_id: None,
                trace_id: Some(trace_id.to_owned()),
                subject: sink.describe(),
                detail: serde_json::json!({ "credentials": credentials }),
            });
            tracing::info!(sink = %sink.describe(), credentials, "Delivered to sink.");
            "written"
        }
        Ok(None) => {
            record.last_error = None;
            if record.delivered_at.is_none() {
                record.delivered_at = Some(now);
            }
            "unchanged"
        }
        Err(err) => {
            if matches!(err, SinkError::OnChange { .. }) {
                // The file is in place but its reader was not told: forget
                // the version so the next run writes it and runs on_change
                // again, whatever the content.
                record.delivered_version = None;
            }
            record.last_error = Some(err.to_string());
            let _ = state.audit(&AuditEvent {
                at: now,
                event: AuditKind::Failure,
                rotation_id: None,
                trace_id: Some(trace_id.to_owned()),
                subject: sink.describe(),
                detail: serde_json::json!({ "error": err.to_string() }),
            });
            report.fail("sink", sink.describe(), err);
            "failed"
        }
    }
}

/// What the per-user stages check before they regenerate: a credential is
/// regenerated only when every sink that selects it can be given its new
/// value in this pass.
pub(super) struct Gate {
    sinks: Vec<GateSink>,
    client: Option<(String, SecretString)>,
}

struct GateSink {
    sink: SinkSettings,
    one_user: Option<Arc<str>>,
    blocked: Option<String>,
}

impl Gate {
    /// For each of a user's credentials (current values), why it must not be
    /// regenerated now, if it must not.
    pub(super) fn held_back(
        &self,
        user: &UserRef,
        values: &[SnapshotCredential],
    ) -> Vec<Option<String>> {
        let mut reasons: Vec<Option<String>> = vec![None; values.len()];
        for g in &self.sinks {
            let Some(selection) = g.sink.select() else {
                continue;
            };
            if !selects_user(selection, &user.email) {
                continue;
            }
            // A one-user sink must render this user's values (a trial
            // with the current ones: an `env` sink over two credentials
            // would fail after the regenerate as well as before).
            let reason = g.blocked.clone().or_else(|| {
                (g.one_user.as_deref() == Some(&*user.user_id))
                    .then(|| cannot_render(&g.sink, &Snapshot::new(self.client.clone(), values)))
                    .flatten()
            });
            let Some(reason) = reason else { continue };
            for (c, slot) in values.iter().zip(reasons.iter_mut()) {
                if slot.is_none() && selects_credential(selection, c) {
                    *slot = Some(format!(
                        "not rotated: {} cannot be given its new value in this pass ({reason})",
                        g.sink.describe()
                    ));
                }
            }
        }
        reasons
    }
}

/// A webhook sink's (slot index) result for the pass.
type HookResult = (usize, Result<Option<String>, SinkError>);

/// How long the webhook worker gathers events before it queues and sends them.
const WEBHOOK_GATHER: Duration = Duration::from_millis(500);
/// The same once the pass started its last user ([`Backlog::hurry`]): short,
/// so that the last events are not held back, and not zero, so that
/// proofs finishing one by one do not cost an outbox write each.
const HURRIED_GATHER: Duration = Duration::from_millis(20);

/// At most this many events wait for the webhook worker in memory (and at
/// most this many, plus one user's, are in the batch it sends); then the
/// pass starts no more users until the worker catches up. A receiver slower
/// than the API thus slows the pass instead of growing its memory with the
/// account (a receiver that fails is only queued to for the rest of the
/// pass, which is fast). Each event holds its data text (about 0.5 KB) and
/// the values it may carry.
pub(super) const MAX_WEBHOOK_BACKLOG: usize = 512;

/// One user's events, with the values `include_secrets` sinks add.
struct Batch {
    events: Vec<webhook::NewEvent>,
    values: Snapshot,
}

/// Sends webhook events as they come, through the outbox, in one task so
/// that the outbox has one writer. A webhook that fails once in a pass only
/// queues the rest of the pass's events (its retries took their time
/// already); the next run, or the daemon's start, sends them.
struct WebhookWorker {
    tx: mpsc::UnboundedSender<Batch>,
    /// Whether a webhook sink sends secrets (`include_secrets`).
    carries_secrets: bool,
    task: tokio::task::JoinHandle<Vec<HookResult>>,
    backlog: Arc<Backlog>,
}

/// Events handed to the webhook worker and not yet taken into a batch.
#[derive(Default)]
pub(super) struct Backlog {
    events: AtomicUsize,
    /// Signalled whenever the worker took events.
    drained: Notify,
    /// Set when the pass started its last user: from then on the worker
    /// gathers for [`HURRIED_GATHER`] only (see [`Backlog::hurry`]).
    hurry: AtomicBool,
    hurry_signal: Notify,
}

impl Backlog {
    fn add(&self, n: usize) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }

    fn take(&self, n: usize) {
        self.events.fetch_sub(n, Ordering::Relaxed);
        self.drained.notify_one();
    }

    pub(super) fn len(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Resolves when the worker took events (at once if it did since the
    /// last call).
    pub(super) async fn drained(&self) {
        self.drained.notified().await;
    }

    /// The pass started its last user. The events still to come are those
    /// of the users in flight and their proofs, so a batch gathered for up
    /// to [`WEBHOOK_GATHER`] would only hold them back: the worker gathers
    /// for [`HURRIED_GATHER`] from then on (a few more outbox writes, at
    /// the end of the pass only). Without this, the end of a pass waited
    /// for the POSTs of up to half a second of events (about 50 ms of a
    /// 1.4-s pass of 300 credentials).
    fn hurry(&self) {
        if !self.hurry.swap(true, Ordering::Relaxed) {
            self.hurry_signal.notify_one();
        }
    }

    fn hurried(&self) -> bool {
        self.hurry.load(Ordering::Relaxed)
    }
}

/// The batch the webhook worker sends next: `first`, and what arrives
/// within [`WEBHOOK_GATHER`] ([`HURRIED_GATHER`] once the pass hurries
/// it), at most [`MAX_WEBHOOK_BACKLOG`] events and one user's more.
///
/// One outbox write per sink for many users: the outbox names every
/// credential announced, so a write per user would cost the account's size
/// each time. An event not yet in the outbox when the process dies is
/// announced by the next run from the records or the journal. Events taken
/// here leave the backlog: the pass goes on while they are sent.
async fn gather(first: Batch, rx: &mut mpsc::UnboundedReceiver<Batch>, backlog: &Backlog) -> Batch {
    backlog.take(first.events.len());
    let Batch {
        mut events,
        mut values,
    } = first;
    let window = if backlog.hurried() {
        HURRIED_GATHER
    } else {
        WEBHOOK_GATHER
    };
    let deadline = tokio::time::sleep(window);
    tokio::pin!(deadline);
    while events.len() < MAX_WEBHOOK_BACKLOG {
        tokio::select! {
            () = &mut deadline => break,
            () = backlog.hurry_signal.notified() => {
                let soon = tokio::time::Instant::now() + HURRIED_GATHER;
                if soon < deadline.deadline() {
                    deadline.as_mut().reset(soon);
                }
            }
            more = rx.recv() => match more {
                Some(more) => {
                    backlog.take(more.events.len());
                    events.extend(more.events);
                    values.groups.extend(more.values.groups);
                    if more.values.client.is_some() {
                        values.client = more.values.client;
                    }
                }
                None => break,
            },
        }
    }
    Batch { events, values }
}

impl WebhookWorker {
    fn start(
        hooks: Vec<(usize, crate::config::WebhookSink, String)>,
        state: Arc<StateDir>,
        client_id: String,
        max_retries: u32,
    ) -> WebhookWorker {
        let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
        let carries_secrets = hooks.iter().any(|(_, hook, _)| hook.include_secrets);
        let backlog = Arc::new(Backlog::default());
        let taken = backlog.clone();
        let task = tokio::spawn(async move {
            let retry = webhook::retry_policy(max_retries);
            let mut results: Vec<Result<Option<String>, SinkError>> =
                hooks.iter().map(|_| Ok(None)).collect();
            while let Some(first) = rx.recv().await {
                let Batch { events, values } = gather(first, &mut rx, &taken).await;
                for ((_, hook, id), result) in hooks.iter().zip(results.iter_mut()) {
                    if result.is_err() {
                        if let Err(err) = webhook::enqueue_for(id, &events, &state) {
                            tracing::warn!(sink = %hook.describe(), error = %err, "Could not queue webhook events.");
                        }
                        continue;
                    }
                    let ctx = webhook::Context {
                        state: &state,
                        snapshot: Some(&values),
                        records: None,
                        client_id: &client_id,
                        retry: &retry,
                    };
                    let sent = webhook::deliver(hook, id, &events, &ctx).await;
                    *result = match (sent, result.as_ref().ok().cloned().flatten()) {
                        (Ok(None), last) => Ok(last),
                        (sent, _) => sent,
                    };
                }
            }
            hooks
                .iter()
                .zip(results)
                .map(|((i, _, id), result)| {
                    (*i, result.map_err(|e| webhook::still_queued(id, &state, e)))
                })
                .collect()
        });
        WebhookWorker {
            tx,
            carries_secrets,
            task,
            backlog,
        }
    }

    /// Closes the channel and waits for the last sends.
    async fn finish(self) -> Vec<HookResult> {
        drop(self.tx);
        self.task.await.expect("webhook worker panicked")
    }
}

// Conversions between the listing's and the sinks' types live here, in
// delivery, so that neither `inventory` nor `sinks` imports the other.

/// The change record's name for a listed credential.
impl From<&CredentialEntry> for sinks::change::CredentialRef {
    fn from(c: &CredentialEntry) -> Self {
        sinks::change::CredentialRef {
            user_id: c.user_id.to_string(),
            user_email: c.user_email.to_string(),
            object_storage_id: c.object_storage_id.to_string(),
            object_storage_name: c.object_storage_name.to_string(),
            region: c.region.to_string(),
            credential_id: c.credential_id,
        }
    }
}

/// A credential as a sink's snapshot holds it, back as a listing entry.
impl From<&SnapshotCredential> for CredentialEntry {
    fn from(c: &SnapshotCredential) -> Self {
        CredentialEntry {
            user_id: c.user_id.clone(),
            user_email: c.user_email.clone(),
            object_storage_id: c.storage.id.to_string(),
            object_storage_name: c.storage.name.to_string(),
            region: c.storage.region.to_string(),
            s3_url: c.storage.s3_url.to_string(),
            credential_id: c.credential_id,
            access_key: c.access_key().to_owned(),
            secret_key: SecretString::from(c.keys.expose_secret()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn batch() -> Batch {
        Batch {
            events: Vec::new(),
            values: Snapshot::default(),
        }
    }

    /// Paused clock: the times below are the runtime's, exact.
    #[tokio::test(start_paused = true)]
    async fn the_worker_stops_gathering_once_the_pass_hurries_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let backlog = Backlog::default();

        // A pass in full flow: the batch waits out the whole window.
        let started = Instant::now();
        gather(batch(), &mut rx, &backlog).await;
        assert_eq!(started.elapsed(), WEBHOOK_GATHER);

        // The pass starts its last user 100 ms into a window: the batch
        // goes HURRIED_GATHER later, not at the window's end.
        let started = Instant::now();
        let hurry = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            backlog.hurry();
        };
        tokio::join!(gather(batch(), &mut rx, &backlog), hurry);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100) + HURRIED_GATHER
        );

        // From then on, every batch gathers for HURRIED_GATHER only.
        let started = Instant::now();
        gather(batch(), &mut rx, &backlog).await;
        assert_eq!(started.elapsed(), HURRIED_GATHER);

        // The end of the pass (the channel closed) ends a window at once.
        drop(tx);
        let started = Instant::now();
        gather(batch(), &mut rx, &backlog).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
