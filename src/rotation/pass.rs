//! One pass, as a pipeline: users go through their stage ([`super::user`])
//! up to [`users_in_flight`] at a time, and as each finishes it is recorded
//! ([`super::record`]) and handed to delivery ([`super::deliver`]) while the
//! others are still in flight.
//!
//! Order of a pass, which is what makes it crash-safe (docs/design.md §1, §4):
//! 1. intents left in the journal by an interrupted run are resolved first,
//!    by reading the API's current values back;
//! 2. users held by an aggregate sink (or every user, with `max_per_run`,
//!    which is decided over the whole account) are listed before any
//!    regenerate, so that such a sink can be rendered completely, or is
//!    known not to be, before a key it holds dies;
//! 3. before a user's first mutating call its intents are written to the
//!    journal (fsync);
//! 4. a user's new values go to its sinks as soon as it is confirmed;
//!    records are saved in batches, and the intents they settle cleared
//!    after them (a crash in between replays only settled intents);
//! 5. the client secret has its own step at the end, and the sinks holding
//!    it are written right after it.

use super::deliver::Sinks;
use super::user::{self, StageContext, UserOutcome};
use super::verify::{self, Proof, Prover};
use super::{
    client_secret, record, resume, snapshot_values, Engine, PlanItem, RunOptions, RunReport,
    Verified,
};
use crate::contabo::client::new_trace_id;
use crate::inventory::{self, CredentialEntry, UserRef};
use crate::policy;
use crate::state::Records;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Records are saved after this many users, or [`RECORD_INTERVAL`].
const RECORD_BATCH: usize = 256;
const RECORD_INTERVAL: Duration = Duration::from_secs(2);
/// Audit lines gathered before they are appended (unsynced; the log is
/// synced once per batch of records): a batch of 256 users with
/// verification on is about 1 MB of lines, which a pass of 3,000
/// credentials held at its peak.
const AUDIT_BATCH_BYTES: usize = 64 << 10;

/// Which pass this is.
#[derive(Debug, Clone, Default)]
pub(super) enum Mode {
    /// A rotation pass (`--run-now`, a scheduled tick).
    #[default]
    Rotate,
    /// Start-up recovery: deliver these sinks (by id), rotate nothing.
    Deliver(Vec<String>),
    /// A twin's retirement is due between ticks: retire (and finish a
    /// switch left under way), rotate nothing else.
    Retire,
}

pub(super) async fn run(
    engine: &mut Engine,
    options: RunOptions,
    cancel: &CancellationToken,
    mode: Mode,
) -> RunReport {
    let client = engine.client.with_trace_id(new_trace_id());
    // Each pass starts with the circuit breaker closed.
    client.health().reset();
    let mut report = RunReport::new(client.trace_id(), options.dry_run, options.output);
    // A retirement pass rotates no user either.
    let deliver_only = !matches!(mode, Mode::Rotate);
    if !deliver_only {
        tracing::info!(trace_id = %report.trace_id, dry_run = options.dry_run, force = options.force, "Run started.");
    }
    let Some((mut records, mut header)) =
        open(engine, &client, options, deliver_only, &mut report).await
    else {
        return report;
    };
    let write = !options.dry_run;
    let sinks = plan_sinks(
        engine,
        &client,
        &header,
        &records,
        &mode,
        write,
        &mut report,
    )
    .await;
    let now = Utc::now();
    let os = engine.settings.object_storage.clone();
    // Each user's id and e-mail from here on are this list's copies, which
    // the listings, the keys, the values and the store share: one of each
    // per user.
    let users: Vec<UserRef> = std::mem::take(&mut header.users)
        .into_iter()
        .filter(|_| !matches!(mode, Mode::Retire))
        .filter(|u| !deliver_only || sinks.any_holds(&u.email))
        .collect();
    let mut flow = Flow::new(engine, &client, sinks, write, deliver_only);
    let twins = super::twins::prepare(
        engine,
        &client,
        &header,
        &mut flow.sinks,
        &flow.storages,
        write,
        &mut report,
    )
    .await;
    let s3_urls = Arc::new(header.s3_urls);
    let mut ahead = ListedAhead::new(&os, &flow.sinks, &users, write, deliver_only);
    ahead
        .list(
            &client,
            &os,
            &s3_urls,
            &records,
            &mut flow,
            &users,
            &mut report,
        )
        .await;
    flow.not_sent = ahead.not_sent;
    let decided = ahead
        .whole_account
        .then(|| decide_whole_account(&os, options, now, &mut records, &ahead.listed));
    let journal = match engine.state.load_journal() {
        Ok(j) => j,
        Err(err) => {
            report.fail("state", "journal", err);
            return report;
        }
    };
    flow.journal = Arc::new(tokio::sync::Mutex::new(user::JournalFile { journal }));
    let shared_records = Arc::new(Mutex::new(records));
    flow.records = shared_records.clone();
    let (progress, progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(StageContext {
        storages: flow.storages.clone(),
        client: client.clone(),
        scope: os,
        state: engine.state.clone(),
        s3_urls,
        options,
        now,
        records: shared_records.clone(),
        decided,
        gate: flow.sinks.gate(),
        journal: flow.journal.clone(),
        cancel: cancel.clone(),
        deliver_only,
        progress,
    });
    let next = flow
        .drive(&ctx, &users, &mut ahead, progress_rx, cancel, &mut report)
        .await;
    if client.health().is_open() {
        let skipped = flow.not_sent + (next..users.len()).filter(|i| !ahead.unlisted[*i]).count();
        report.fail(
            "api",
            "circuit breaker",
            breaker_failure(engine, skipped, users.len()),
        );
    }
    report.interrupted = cancel.is_cancelled();
    drop(ctx);
    let (mut records, mut sinks) = flow.end(shared_records, &mut report).await;
    if !cancel.is_cancelled() && !client.health().is_open() {
        let work = match mode {
            Mode::Rotate => super::twins::Work::All,
            Mode::Deliver(_) => super::twins::Work::Recover,
            Mode::Retire => super::twins::Work::Retire,
        };
        super::twins::Step::new(engine, &client, &mut sinks, &mut records, &mut report)
            .run(twins, options, work)
            .await;
    }
    conclude(
        engine,
        &client,
        records,
        sinks,
        options,
        now,
        cancel,
        deliver_only,
        report,
    )
    .await
}

/// Why the pass stopped when the circuit breaker opened.
fn breaker_failure(engine: &Engine, skipped: usize, users: usize) -> String {
    format!(
        "the API failed {} times in a row ([api] max_consecutive_failures); the pass stopped: {skipped} of {users} users not attempted",
        engine.settings.api.max_consecutive_failures,
    )
}

/// Opens the records, logs in, resolves the journal (a rotation pass that
/// writes) and lists the users and storages; `None` when the pass cannot
/// go on (the report says why).
async fn open(
    engine: &mut Engine,
    client: &crate::contabo::ContaboClient,
    options: RunOptions,
    deliver_only: bool,
    report: &mut RunReport,
) -> Option<(Records, inventory::Header)> {
    // Only the records of the users the pass is at are in memory; a dry run
    // reads them the same way and never saves them.
    let mut records = match engine.state.open_records() {
        Ok(r) => r,
        Err(err) => {
            report.fail("state", engine.state.path().display().to_string(), err);
            return None;
        }
    };
    if let Err(err) = engine.login(client).await {
        report.fail("login", engine.settings.api.username.clone(), err);
        return None;
    }
    if !options.dry_run && !deliver_only {
        resume::resume(engine, client, &mut records, report).await;
        if !report.rotated.is_empty() {
            super::enqueue_report_events(engine, report);
        }
        report.flush();
    }
    let header = match inventory::header(client, &engine.settings.object_storage).await {
        Ok(h) => h,
        Err(err) => {
            report.fail("inventory", "users and object storages", err);
            return None;
        }
    };
    for email in &header.malformed {
        report.fail("user", email.clone(), crate::inventory::missing_user_id());
    }
    Some((records, header))
}

/// The sinks of this pass (those of `mode`), checked and started when the
/// pass writes.
async fn plan_sinks(
    engine: &Engine,
    client: &crate::contabo::ContaboClient,
    header: &inventory::Header,
    records: &Records,
    mode: &Mode,
    write: bool,
    report: &mut RunReport,
) -> Sinks {
    let enabled = match mode {
        Mode::Rotate | Mode::Retire => None,
        Mode::Deliver(ids) => Some(ids.as_slice()),
    };
    let mut sinks = Sinks::plan(
        &engine.settings,
        engine.state.clone(),
        &header.users,
        records,
        &report.trace_id,
        enabled,
    );
    if write {
        sinks.preflight();
        if enabled.is_none() {
            super::open_webhook_queues(engine, report);
        }
        if engine.settings.client_secret.rotate && sinks.wants_client() {
            sinks.set_client(Some((
                engine.settings.api.client_id.clone(),
                super::client_secret_now(client).await,
            )));
        }
        sinks.start_webhooks(engine.settings.api.max_retries);
    }
    sinks
}

/// The users listed before any regenerate: those an aggregate sink holds
/// (so that it can be rendered completely, or is known not to be, before a
/// key it holds dies), or every user with `max_per_run` (decided over the
/// whole account).
struct ListedAhead {
    whole_account: bool,
    /// Which users an aggregate sink holds, matched once per user.
    held: Vec<bool>,
    prelist: Vec<bool>,
    /// Entries of users listed ahead that the sinks' store does not keep.
    listed: HashMap<Arc<str>, Vec<CredentialEntry>>,
    /// Users whose listing failed (reported already).
    unlisted: Vec<bool>,
    /// Users the circuit breaker kept from being listed (not reported one
    /// by one: the breaker's failure names how many).
    not_sent: usize,
}

impl ListedAhead {
    fn new(
        os: &crate::config::ObjectStorageSettings,
        sinks: &Sinks,
        users: &[UserRef],
        write: bool,
        deliver_only: bool,
    ) -> ListedAhead {
        let whole_account = os.max_per_run.is_some() && !deliver_only;
        let held: Vec<bool> = users
            .iter()
            .map(|u| sinks.aggregate_holds(&u.email))
            .collect();
        let prelist = held
            .iter()
            .map(|&held| whole_account || (write && held))
            .collect();
        ListedAhead {
            whole_account,
            held,
            prelist,
            listed: HashMap::new(),
            unlisted: vec![false; users.len()],
            not_sent: 0,
        }
    }

    /// Lists the users to list ahead; their values go to the sinks' store.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &mut self,
        client: &crate::contabo::ContaboClient,
        os: &crate::config::ObjectStorageSettings,
        s3_urls: &Arc<HashMap<String, String>>,
        records: &Records,
        flow: &mut Flow<'_>,
        users: &[UserRef],
        report: &mut RunReport,
    ) {
        if !self.prelist.iter().any(|p| *p) {
            return;
        }
        let wanted: Vec<(usize, UserRef)> = users
            .iter()
            .enumerate()
            .filter(|(i, _)| self.prelist[*i])
            .map(|(i, u)| (i, u.clone()))
            .collect();
        let sinks = &mut flow.sinks;
        sinks.reserve_store(self.held.iter().filter(|&&held| held).count());
        // Each user's entries are taken as they arrive: held all at once,
        // 30,000 credentials' entries were 17 MB, the pass's peak.
        let mut failures = Vec::new();
        let (held, whole_account, listed) = (&self.held, self.whole_account, &mut self.listed);
        let storages = &flow.storages;
        list_users(client, os, s3_urls, wanted, |i, result| {
            let user = &users[i];
            match result {
                Ok(entries) => {
                    if held[i] {
                        sinks.store_user(user, snapshot_values(&entries, records, storages));
                        if !whole_account {
                            // The store holds them; the user's stage gets
                            // them back from it (one copy, not two).
                            return;
                        }
                    }
                    listed.insert(user.user_id.clone(), entries);
                }
                Err(err) => failures.push((i, err)),
            }
        })
        .await;
        // Failures are reported in the users' order, whatever order the
        // listings finished in.
        failures.sort_by_key(|(i, _)| *i);
        for (i, err) in failures {
            let user = &users[i];
            if matches!(err, crate::contabo::ApiError::CircuitOpen { .. }) {
                self.not_sent += 1;
            } else {
                tracing::warn!(user = %user.email, error = %err, "Could not list the user's credentials.");
                report.fail("user", user.email.to_string(), &err);
            }
            sinks.user_unlisted(&user.email);
            self.unlisted[i] = true;
        }
        if flow.write {
            sinks.trial_render_aggregates();
        }
    }
}

/// With `max_per_run`, each listed credential's decision, limited over the
/// whole account, by credential key.
fn decide_whole_account(
    os: &crate::config::ObjectStorageSettings,
    options: RunOptions,
    now: chrono::DateTime<Utc>,
    records: &mut Records,
    listed: &HashMap<Arc<str>, Vec<CredentialEntry>>,
) -> HashMap<String, policy::Reason> {
    let all: Vec<&CredentialEntry> = listed.values().flatten().collect();
    let mut decisions: Vec<_> = all
        .iter()
        .map(|e| {
            let reason = user::decide_one(os, options, now, records, e);
            let h = super::history(records.credential(&super::key_of(e)));
            (reason, h.rotated_at.or(h.first_seen))
        })
        .collect();
    policy::limit(&mut decisions, os.max_per_run);
    all.iter()
        .zip(decisions)
        .map(|(e, (reason, _))| (super::key_of(e).to_string(), reason))
        .collect()
}

/// After the users: the client secret's own step (or, in a dry run, its
/// plan), then the sinks' last writes, and the records saved.
#[allow(clippy::too_many_arguments)]
async fn conclude(
    engine: &mut Engine,
    client: &crate::contabo::ContaboClient,
    mut records: Records,
    mut sinks: Sinks,
    options: RunOptions,
    now: chrono::DateTime<Utc>,
    cancel: &CancellationToken,
    deliver_only: bool,
    mut report: RunReport,
) -> RunReport {
    if options.dry_run {
        plan_client_secret(engine, &records, options, now, &mut report);
        report.flush();
        tracing::info!(trace_id = %report.trace_id, "Dry run finished; nothing was changed.");
        return report;
    }
    if !deliver_only
        && plan_client_secret(engine, &records, options, now, &mut report)
        && !cancel.is_cancelled()
    {
        let before = report.rotated.len();
        let failed_before = report.failed.len();
        if let Some(reason) = sinks.client_blocked() {
            report.fail(
                "client_secret",
                engine.settings.api.client_id.clone(),
                reason,
            );
        } else if let Some(new_secret) =
            client_secret::rotate(engine, client, &mut records, &mut report).await
        {
            engine.login_secrets = vec![
                new_secret.clone(),
                engine.settings.api.client_secret.clone(),
            ];
            sinks.client_changed(new_secret);
        }
        let events = sinks.events(&report.rotated[before..], &report.failed[failed_before..]);
        sinks.announce_client(events);
        report.flush();
    }
    sinks
        .finish(&mut records, &mut report, engine.settings.api.max_retries)
        .await;
    if let Err(err) = engine.state.save_records(&mut records) {
        report.fail("state", "records", err);
    }
    if !deliver_only {
        tracing::info!(
            trace_id = %report.trace_id,
            rotated = report.rotated_count(),
            failed = report.failed.len(),
            "Run finished."
        );
    }
    report
}

/// The coordinator's side of the pipeline.
struct Flow<'a> {
    engine: &'a Engine,
    client: &'a crate::contabo::ContaboClient,
    sinks: Sinks,
    records: Arc<Mutex<Records>>,
    journal: Arc<tokio::sync::Mutex<user::JournalFile>>,
    /// Intents whose outcome the in-memory records hold, not yet saved.
    settled: Vec<uuid::Uuid>,
    audit: crate::state::AuditLines,
    /// Whether lines were appended since the log was last synced.
    audit_unsynced: bool,
    users_since_save: usize,
    last_save: tokio::time::Instant,
    write: bool,
    /// Users not listed because the circuit breaker was open.
    not_sent: usize,
    /// Shares the storages' fields between the values of every user.
    storages: Arc<crate::sinks::Interner>,
    /// Proves rotated keys at the storage (`verify = "s3"`).
    prover: Option<Prover>,
    /// Proofs under way, beside delivery.
    proofs: JoinSet<Proof>,
    /// How many proofs may be under way ([`verify::proof_slots`]).
    proof_slots: usize,
    /// Proofs waiting for one of the `proof_slots`. While
    /// [`verify::MAX_PROOF_BACKLOG`] wait, the pass starts no more users:
    /// memory stays bounded when the API rotates faster than the storage
    /// proves (the rotated keys are delivered already).
    proof_queue: std::collections::VecDeque<verify::Job>,
}

impl<'a> Flow<'a> {
    /// The coordinator of a pass over `sinks`; its records and journal are
    /// handed to it once the users listed ahead are decided.
    fn new(
        engine: &'a Engine,
        client: &'a crate::contabo::ContaboClient,
        sinks: Sinks,
        write: bool,
        deliver_only: bool,
    ) -> Flow<'a> {
        let os = &engine.settings.object_storage;
        Flow {
            engine,
            client,
            sinks,
            records: Arc::default(),
            journal: Arc::new(tokio::sync::Mutex::new(user::JournalFile {
                journal: Default::default(),
            })),
            settled: Vec::new(),
            audit: crate::state::AuditLines::default(),
            audit_unsynced: false,
            users_since_save: 0,
            last_save: tokio::time::Instant::now(),
            write,
            not_sent: 0,
            storages: Arc::default(),
            prover: (write && !deliver_only && os.verify == crate::config::Verify::S3)
                .then(|| Prover::new(os.verify_timeout, os.verify_requests_per_second)),
            proofs: JoinSet::new(),
            proof_slots: verify::proof_slots(engine.settings.api.concurrency.max(1)),
            proof_queue: std::collections::VecDeque::new(),
        }
    }

    /// Runs the users through their stages, up to [`users_in_flight`] at a
    /// time, recording each as it finishes while delivery and proofs go on
    /// beside them, until every user is done or the pass stops (shutdown,
    /// circuit breaker). Returns how many users were started.
    async fn drive(
        &mut self,
        ctx: &Arc<StageContext>,
        users: &[UserRef],
        ahead: &mut ListedAhead,
        mut progress_rx: tokio::sync::mpsc::UnboundedReceiver<user::Progress>,
        cancel: &CancellationToken,
        report: &mut RunReport,
    ) -> usize {
        let client = self.client;
        let concurrency = self.engine.settings.api.concurrency.max(1);
        let mut tasks: JoinSet<UserOutcome> = JoinSet::new();
        let mut next = 0;
        loop {
            let stopped = cancel.is_cancelled() || client.health().is_open();
            // Whether a backlog held users back in this round. The wait below
            // is on that observation, not on a second reading of the backlog:
            // the webhook worker may drain it in between, and a second reading
            // would then wait on nothing and never start the remaining users.
            let mut held_back = false;
            while tasks.len() < users_in_flight(concurrency) && next < users.len() && !stopped {
                if !self.may_start_users() {
                    held_back = true;
                    break;
                }
                let i = next;
                next += 1;
                if ahead.unlisted[i] {
                    continue;
                }
                let user = users[i].clone();
                let pre = ahead.listed.remove(&user.user_id).or_else(|| {
                    ahead.prelist[i]
                        .then(|| self.sinks.stored_entries(&user))
                        .flatten()
                });
                tasks.spawn(user::run(ctx.clone(), user, pre));
            }
            // Checked before waiting: a pass with no user to start (a
            // retirement pass) has nothing to wait for.
            if tasks.is_empty()
                && self.proofs.is_empty()
                && self.proof_queue.is_empty()
                && (next >= users.len() || cancel.is_cancelled() || client.health().is_open())
            {
                break;
            }
            if next >= users.len() {
                self.sinks.hurry_webhooks();
            }
            let due = self.sinks.next_due();
            let backlog = self.sinks.webhook_backlog();
            tokio::select! {
                // A user's regenerate answers come before its outcome: the
                // confirmed values are applied last.
                biased;
                Some(p) = progress_rx.recv() => {
                    if self.write {
                        self.sinks.provisional(&p.user, p.values);
                    }
                }
                joined = tasks.join_next(), if !tasks.is_empty() => {
                    let outcome = joined.expect("checked non-empty").expect("user stage panicked");
                    self.user_done(outcome, report).await;
                }
                Some(proof) = self.proofs.join_next(), if !self.proofs.is_empty() => {
                    match proof {
                        Ok(proof) => self.proved(proof, report),
                        Err(err) if err.is_cancelled() => {}
                        Err(err) => panic!("a verification panicked: {err}"),
                    }
                    self.start_proofs();
                }
                Some(done) = self.sinks.writes.join_next() => {
                    let done = done.expect("sink write panicked");
                    let mut records = self.records.lock().expect("records lock");
                    self.sinks.write_done(done, &mut records, report);
                }
                () = sleep_until(due), if due.is_some() => {
                    self.sinks.flush_due(tokio::time::Instant::now());
                }
                // Users wait for a webhook worker that fell behind (a proof
                // backlog is waited out by the proofs' branch). The worker's
                // signal is kept if it came after the users were held back.
                () = drained(backlog.as_deref()), if held_back => {}
                else => break,
            }
            if cancel.is_cancelled() && !(self.proofs.is_empty() && self.proof_queue.is_empty()) {
                // A shutdown does not wait out `verify_timeout`: the rotations
                // stand, only their proof is abandoned.
                tracing::warn!(
                    pending = self.proofs.len() + self.proof_queue.len(),
                    "Shutting down; verifications still running are abandoned."
                );
                self.proofs.abort_all();
                self.proof_queue.clear();
            }
        }
        next
    }

    /// Saves what is left once the users are done, and gives back the
    /// records (every stage is done with them) and the sinks.
    async fn end(
        mut self,
        shared_records: Arc<Mutex<Records>>,
        report: &mut RunReport,
    ) -> (Records, Sinks) {
        report.s3_probes = self.prover.as_ref().map_or(0, Prover::probes);
        report.s3_slow_downs = self.prover.as_ref().map_or(0, Prover::slow_downs);
        if let Some(slow_downs) = self.prover.as_ref().map(Prover::slow_downs) {
            if slow_downs > 0 {
                tracing::info!(
                    slow_downs,
                    s3_probes = report.s3_probes,
                    "The storage answered some proofs with SlowDown; they were paced down."
                );
            }
        }
        self.save(report).await;
        // The coordinator's handle goes first: a partial move would keep it
        // alive to the end of the function, and the unwrap below would copy
        // the records.
        let Flow { sinks, records, .. } = self;
        drop(records);
        let records = Arc::try_unwrap(shared_records)
            .map(|m| m.into_inner().expect("records lock"))
            .unwrap_or_else(|shared| {
                tracing::debug!(
                    "The records are still shared at the end of the pass; taking them."
                );
                std::mem::take(&mut *shared.lock().expect("records lock"))
            });
        (records, sinks)
    }

    /// Records one user and hands its values to delivery.
    async fn user_done(&mut self, outcome: UserOutcome, report: &mut RunReport) {
        let user = outcome.user.clone();
        if let Err(err) = &outcome.listed {
            if matches!(err, crate::contabo::ApiError::CircuitOpen { .. }) {
                self.not_sent += 1;
            } else {
                report.fail("user", user.email.to_string(), err);
            }
            return;
        }
        report.plan.extend(outcome.plan.iter().cloned());
        if !self.write {
            report.flush();
            return;
        }
        // One lock: record the outcome, then read the values delivery gets.
        let (recorded, values) = {
            let mut records = self.records.lock().expect("records lock");
            let recorded = record::record(
                &self.engine.state,
                self.client,
                &mut records,
                outcome,
                report,
                self.prover.is_some(),
            );
            let values = snapshot_values(&recorded.entries, &records, &self.storages);
            (recorded, values)
        };
        let events = self.sinks.events(&recorded.rotated, &recorded.failed);
        if !events.is_empty() {
            self.sinks.announce(
                events,
                crate::sinks::Snapshot {
                    client: None,
                    groups: vec![values.clone()],
                },
            );
        }
        self.sinks.user_done(&user, values, recorded.changed);
        if self.prover.is_some() {
            self.proof_queue.extend(recorded.proofs);
            self.start_proofs();
        }
        report.flush();
        self.settled.extend(recorded.settled);
        for event in &recorded.audit {
            self.push_audit(event);
        }
        self.users_since_save += 1;
        if self.users_since_save >= RECORD_BATCH || self.last_save.elapsed() >= RECORD_INTERVAL {
            self.save(report).await;
        }
    }

    /// Starts waiting proofs while a slot is free.
    fn start_proofs(&mut self) {
        let Some(prover) = &self.prover else {
            return;
        };
        while self.proofs.len() < self.proof_slots {
            let Some(job) = self.proof_queue.pop_front() else {
                break;
            };
            let prover = prover.clone();
            self.proofs.spawn(async move { prover.prove(job).await });
        }
    }

    /// Whether the pass may start another user: neither the proof backlog
    /// nor the webhook worker's is full.
    fn may_start_users(&self) -> bool {
        self.proof_queue.len() < verify::MAX_PROOF_BACKLOG && !self.sinks.webhooks_behind()
    }

    /// Reports a finished proof: a `verified` item and its follow-up event,
    /// or a failure of the credential with a `rotation.failed` event; both
    /// go to the audit log and the credential's record.
    fn proved(&mut self, proof: Proof, report: &mut RunReport) {
        let Proof {
            job,
            outcome,
            attempts,
            elapsed,
        } = proof;
        let now = Utc::now();
        let c = &job.credential;
        let key =
            crate::state::CredentialKey::new(&c.user_id, &c.object_storage_id, c.credential_id);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let (accepted, error, old_key_refused) = match &outcome {
            verify::Outcome::Accepted { old_key_refused } => (true, None, *old_key_refused),
            verify::Outcome::Refused { .. } => (false, outcome.error(), None),
        };
        if let Some(record) = self
            .records
            .lock()
            .expect("records lock")
            .credential_mut(&key)
        {
            if record.rotation_id == Some(job.rotation_id) {
                record.verified = Some(crate::state::Verification {
                    at: now,
                    rotation_id: job.rotation_id,
                    accepted,
                    error: error.as_deref().map(Into::into),
                });
            }
        }
        self.push_audit(&crate::state::AuditEvent {
            at: now,
            event: crate::state::AuditKind::Verification,
            rotation_id: Some(job.rotation_id),
            trace_id: Some(self.client.trace_id().to_owned()),
            subject: job.subject.clone(),
            detail: serde_json::json!({
                "kind": "object_storage",
                "method": "s3",
                "access_key": job.access_key,
                "accepted": accepted,
                "error": error,
                "attempts": attempts,
                "elapsed_ms": elapsed_ms,
                "old_key_refused": old_key_refused,
            }),
        });
        let events = match error {
            None => {
                tracing::info!(rotation_id = %job.rotation_id, credential_id = c.credential_id, attempts, elapsed_ms, "The storage accepts the new key.");
                let verified = Verified {
                    kind: crate::sinks::Kind::ObjectStorage,
                    subject: job.subject.clone(),
                    credential: job.credential.clone(),
                    rotation_id: job.rotation_id,
                    access_key: job.access_key.clone(),
                    method: "s3",
                    attempts,
                    elapsed_ms,
                    old_key_refused,
                    at: now,
                };
                let events = self.sinks.verified_events(std::slice::from_ref(&verified));
                report.verified.push(verified);
                events
            }
            Some(code) => {
                let timeout = self.engine.settings.object_storage.verify_timeout;
                report.totals.verify_refused += 1;
                report.fail(
                    "object_storage",
                    job.subject.clone(),
                    format!(
                        "the storage did not accept the new key {} within {} ([object_storage] verify_timeout): {code} after {attempts} attempts",
                        job.access_key,
                        humantime::format_duration(timeout)
                    ),
                );
                let failed = report.failed.last_mut().expect("just pushed");
                failed.credential = Some(job.credential.clone());
                failed.rotation_id = Some(job.rotation_id);
                let failed = failed.clone();
                self.sinks.events(&[], std::slice::from_ref(&failed))
            }
        };
        if !events.is_empty() {
            self.sinks
                .announce(events, crate::sinks::Snapshot::default());
        }
        report.flush();
    }

    /// Gathers an audit line, appending the lines to the log (unsynced)
    /// once they hold [`AUDIT_BATCH_BYTES`].
    fn push_audit(&mut self, event: &crate::state::AuditEvent) {
        self.audit.push(event);
        if self.audit.len() >= AUDIT_BATCH_BYTES {
            if let Err(err) = self.engine.state.audit_lines_unsynced(&self.audit) {
                tracing::warn!(error = %err, "Could not append to the audit log.");
            }
            self.audit.clear();
            self.audit_unsynced = true;
        }
    }

    /// Appends the lines gathered and syncs the log (once per batch of
    /// records, however many appends it took).
    fn append_audit(&mut self) {
        if self.audit.is_empty() && !self.audit_unsynced {
            return;
        }
        if let Err(err) = self.engine.state.audit_lines(&self.audit) {
            tracing::warn!(error = %err, "Could not append to the audit log.");
        }
        self.audit.clear();
        self.audit_unsynced = false;
    }

    /// Saves the records, then clears the intents they settle; appends the
    /// audit lines gathered so far.
    async fn save(&mut self, report: &mut RunReport) {
        if !self.write {
            return;
        }
        self.users_since_save = 0;
        self.last_save = tokio::time::Instant::now();
        self.append_audit();
        let saved = {
            let mut records = self.records.lock().expect("records lock");
            self.engine.state.save_records(&mut records)
        };
        if let Err(err) = saved {
            report.fail("state", "records", err);
            return;
        }
        if self.settled.is_empty() {
            return;
        }
        crate::crash::point("s3-after-record");
        let ops = self
            .settled
            .drain(..)
            .map(crate::state::JournalOp::Finish)
            .collect();
        let mut journal = self.journal.lock().await;
        if let Err(err) = journal.write(&self.engine.state, ops) {
            report.fail("state", "journal", err);
        }
    }
}

/// Sleeps until `at` (never called with `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the webhook worker took events from its backlog (at once
/// if it did since the last call).
async fn drained(backlog: Option<&super::deliver::Backlog>) {
    match backlog {
        Some(b) => b.drained().await,
        None => std::future::pending().await,
    }
}

/// How many users are in their stage at once: half as many again as
/// requests may be in flight (`[api] concurrency`, which the client
/// enforces). A user has no request in flight while it writes its journal
/// or between its regenerates and its re-read; with exactly as many users
/// as slots, those moments left slots idle. Measured at 20 ms latency and
/// concurrency 8 (with a user's regenerates sent together): 3,000
/// credentials 13.35-13.41 s with as many users as slots, 13.10-13.19 s
/// with half as many again, 13.06-13.14 s with twice as many (for up to
/// 0.4 MiB more); 300 credentials 1.40 s, 1.38-1.39 s and 1.38 s.
fn users_in_flight(concurrency: usize) -> usize {
    concurrency + concurrency / 2
}

/// Lists the given users' credentials, `[api] concurrency` at a time,
/// handing each user's result to `each` as it arrives (by the user's index).
async fn list_users(
    client: &crate::contabo::ContaboClient,
    scope: &crate::config::ObjectStorageSettings,
    s3_urls: &Arc<HashMap<String, String>>,
    users: Vec<(usize, UserRef)>,
    mut each: impl FnMut(usize, Result<Vec<CredentialEntry>, crate::contabo::ApiError>),
) {
    let mut tasks = JoinSet::new();
    let mut pending = users.into_iter();
    loop {
        while tasks.len() < client.concurrency() {
            let Some((i, user)) = pending.next() else {
                break;
            };
            let client = client.clone();
            let scope = scope.clone();
            let s3_urls = s3_urls.clone();
            tasks.spawn(async move {
                (
                    i,
                    inventory::list_user(&client, &scope, &user, &s3_urls).await,
                )
            });
        }
        match tasks.join_next().await {
            Some(joined) => {
                let (i, result) = joined.expect("listing task panicked");
                each(i, result);
            }
            None => break,
        }
    }
}

/// Adds the client secret to the plan; whether it is due.
fn plan_client_secret(
    engine: &Engine,
    records: &Records,
    options: RunOptions,
    now: chrono::DateTime<Utc>,
    report: &mut RunReport,
) -> bool {
    let cs = &engine.settings.client_secret;
    if !cs.rotate {
        return false;
    }
    let record = records.client_secret.as_ref();
    let history = policy::History {
        first_seen: record.map(|r| r.first_seen),
        rotated_at: record.and_then(|r| r.rotated_at),
    };
    // The client secret is opt-in: a first sight rotates it.
    let reason = policy::decide(now, history, true, cs.max_age, false, options.force);
    report.plan.push(PlanItem {
        kind: crate::sinks::Kind::ClientSecret,
        subject: engine.settings.api.client_id.clone(),
        access_key: None,
        rotate: reason.rotates(),
        reason: reason.to_string(),
        reason_code: Some(reason),
    });
    reason.rotates()
}
