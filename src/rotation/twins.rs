//! Twin users: zero-downtime rotation (docs/design.md §1.10, §4 "Twin users").
//!
//! Contabo regenerates an S3 secret in place, so a consumer that has not
//! re-read its sink holds a dead key from the PATCH on. A twin is two users
//! with the same storage access: the sinks hold one (the active user); a
//! switch regenerates the other (the standby), proves its new keys at every
//! storage (ListBuckets, then each `probe_buckets` bucket), hands them to
//! every sink holding the twin, and records the switch. The keys handed
//! over before stay valid until `retire_after`; then they are regenerated
//! and the values discarded (written nowhere, logged by fingerprint).
//!
//! A pass meets twins twice:
//! 1. [`prepare`], before the users stream: both users of each twin are
//!    listed, the pair checked (every storage of one is a storage of the
//!    other), and the active user's keys put in the sinks' store, so an
//!    aggregate sink renders completely from its first write;
//! 2. [`run`], after the users: a switch a stopped run left under way is
//!    finished or abandoned, an overdue retirement done, and a due twin
//!    switched (or reported deferred while its grace period lasts).
//!
//! Crash safety: the switch is journalled in the twin's row before the
//! standby's first regenerate. Whatever the instant of a kill, the sinks
//! hold the active user's keys (untouched) or the standby's current ones,
//! both valid: recovery proves the standby's current keys and, if the
//! storage takes them, delivers them and records the switch; otherwise it
//! hands the active keys back to every sink and forgets the switch. The
//! active user is never retired: only a recorded switch names a previous
//! user.

use super::deliver::Sinks;
use super::verify::{Job, Prover};
use super::{Engine, RunOptions, RunReport, TwinOutcome};
use crate::config::{TwinSettings, Verify};
use crate::contabo::ContaboClient;
use crate::inventory::{self, CredentialEntry, Header, UserRef};
use crate::sinks::snapshot::{Group, TwinTag};
use crate::sinks::{self, webhook, SnapshotCredential};
use crate::state::{AuditEvent, AuditKind, PendingSwitch, Records, TwinState, TwinUser};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// The twins of a pass, as [`prepare`] found them.
#[derive(Default)]
pub(super) struct Twins(Vec<Twin>);

struct Twin {
    settings: TwinSettings,
    /// Both users, in the configuration's order.
    users: [UserRef; 2],
    /// Each user's credentials in scope, as listed at the pass's start (or
    /// after a regenerate).
    listed: [Vec<CredentialEntry>; 2],
    state: TwinState,
}

impl Twin {
    fn index_of(&self, user_id: &str) -> usize {
        usize::from(*self.users[1].user_id == *user_id)
    }

    fn active(&self) -> usize {
        self.index_of(&self.state.active.user_id)
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn twin_user(&self, i: usize) -> TwinUser {
        TwinUser {
            user_id: self.users[i].user_id.to_string(),
            email: self.users[i].email.to_string(),
        }
    }

    /// User `i`'s keys as the sinks get them: tagged with the twin and its
    /// profile names.
    /// `rotated_at`: when the keys were handed over (none on first sight).
    fn group(
        &self,
        i: usize,
        storages: &sinks::Interner,
        rotated_at: Option<DateTime<Utc>>,
    ) -> Group {
        let entries = &self.listed[i];
        let regions = |region: &str| entries.iter().filter(|e| e.region == region).count();
        entries
            .iter()
            .map(|c| SnapshotCredential {
                twin: Some(Arc::new(TwinTag {
                    name: self.name().into(),
                    profile: sinks::formats::twin_profile_name(
                        self.name(),
                        &c.region,
                        (regions(&c.region) > 1).then_some(c.object_storage_name.as_str()),
                    )
                    .into(),
                })),
                ..super::snapshot_credential(c, storages, rotated_at)
            })
            .collect()
    }
}

/// Lists each twin's users, checks the pair, reads (or starts) its state,
/// and puts the active user's keys in the sinks' store. A twin that
/// cannot be used is a failure of that twin, and the sinks holding it are
/// blocked for the pass (a partial file would drop its keys).
pub(super) async fn prepare(
    engine: &Engine,
    client: &ContaboClient,
    header: &Header,
    sinks: &mut Sinks,
    storages: &sinks::Interner,
    write: bool,
    report: &mut RunReport,
) -> Twins {
    let configured = &engine.settings.object_storage.twins;
    if configured.is_empty() {
        return Twins::default();
    }
    let saved = match engine.state.load_twins() {
        Ok(saved) => saved,
        Err(err) => {
            for t in configured {
                report.fail("twin", t.name.clone(), &err);
                sinks.twin_unlisted(&t.name, "could not be read from the state");
            }
            return Twins::default();
        }
    };
    let mut twins = Vec::new();
    for settings in configured {
        let saved = saved.iter().find(|s| s.name == settings.name);
        match load(engine, client, header, settings, saved).await {
            Ok(twin) => {
                if write && saved != Some(&twin.state) {
                    if let Err(err) = engine.state.save_twin(&twin.state) {
                        report.fail("twin", settings.name.clone(), &err);
                        sinks.twin_unlisted(&settings.name, "could not be saved to the state");
                        continue;
                    }
                }
                let values = twin.group(twin.active(), storages, twin.state.last_switch_at);
                sinks.store_twin(&settings.name, values);
                twins.push(twin);
            }
            Err(why) => {
                tracing::warn!(twin = %settings.name, error = %why, "The twin cannot be used in this pass.");
                sinks.twin_unlisted(&settings.name, &why);
                report.fail("twin", settings.name.clone(), why);
            }
        }
    }
    Twins(twins)
}

/// One twin's users, credentials and state.
async fn load(
    engine: &Engine,
    client: &ContaboClient,
    header: &Header,
    settings: &TwinSettings,
    saved: Option<&TwinState>,
) -> Result<Twin, String> {
    let find = |email: &str| {
        header
            .twin_users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
            .ok_or_else(|| format!("has no user {email} in the account"))
    };
    let users = [find(&settings.users[0])?, find(&settings.users[1])?];
    let scope = &engine.settings.object_storage;
    let listed = tokio::try_join!(
        inventory::list_user(client, scope, &users[0], &header.s3_urls),
        inventory::list_user(client, scope, &users[1], &header.s3_urls),
    )
    .map_err(|err| format!("could not be listed: {err}"))?;
    let listed = [listed.0, listed.1];
    check_pair(&users, &listed)?;
    let is_ours = |u: &TwinUser| users.iter().any(|o| *o.user_id == u.user_id);
    let state = match saved {
        Some(s) if is_ours(&s.active) => {
            let mut s = s.clone();
            if s.previous.as_ref().is_some_and(|p| !is_ours(p)) {
                (s.previous, s.retire_at) = (None, None);
            }
            if s.switch.as_ref().is_some_and(|p| !is_ours(&p.to)) {
                s.switch = None;
            }
            s
        }
        _ => {
            // First sight (or the configured users changed): the first
            // user is active, its keys delivered as they are.
            let first = TwinUser {
                user_id: users[0].user_id.to_string(),
                email: users[0].email.to_string(),
            };
            TwinState::first_sight(&settings.name, first, Utc::now())
        }
    };
    Ok(Twin {
        settings: settings.clone(),
        users,
        listed,
        state,
    })
}

/// Both users hold a credential on the same storages, and at least one.
fn check_pair(users: &[UserRef; 2], listed: &[Vec<CredentialEntry>; 2]) -> Result<(), String> {
    if listed[0].is_empty() && listed[1].is_empty() {
        return Err("has no credential in scope".to_owned());
    }
    for (a, b) in [(0, 1), (1, 0)] {
        if let Some(missing) = listed[a].iter().find(|e| {
            !listed[b]
                .iter()
                .any(|o| o.object_storage_id == e.object_storage_id)
        }) {
            return Err(format!(
                "is not a pair: {} has no credential on {} ({}), which {} has",
                users[b].email, missing.object_storage_name, missing.region, users[a].email
            ));
        }
    }
    Ok(())
}

/// What a pass does with its twins after the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// Finish switches left under way, retire, switch the due twins.
    All,
    /// Start-up recovery: finish switches left under way, nothing else.
    Recover,
    /// A retirement between ticks: finish switches, retire, no switch.
    Retire,
}

/// What a step of a twin needs from the pass.
pub(super) struct Step<'a> {
    engine: &'a Engine,
    client: &'a ContaboClient,
    sinks: &'a mut Sinks,
    records: &'a mut Records,
    report: &'a mut RunReport,
    storages: sinks::Interner,
    prover: Option<Prover>,
    now: DateTime<Utc>,
}

impl<'a> Step<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        client: &'a ContaboClient,
        sinks: &'a mut Sinks,
        records: &'a mut Records,
        report: &'a mut RunReport,
    ) -> Step<'a> {
        Step {
            engine,
            client,
            sinks,
            records,
            report,
            storages: sinks::Interner::default(),
            prover: None,
            now: Utc::now(),
        }
    }

    /// After the users: finishes a switch left under way, retires overdue
    /// keys, and switches every due twin (a dry run only reports its
    /// plan). What else is done depends on `work`.
    pub(super) async fn run(&mut self, twins: Twins, options: RunOptions, work: Work) {
        if twins.0.is_empty() {
            return;
        }
        let os = &self.engine.settings.object_storage;
        self.prover = (os.verify == Verify::S3 && !options.dry_run)
            .then(|| Prover::new(os.verify_timeout, os.verify_requests_per_second));
        for mut twin in twins.0 {
            if options.dry_run {
                plan(&twin, options, self.now, self.report, os.max_age, os.rotate);
                continue;
            }
            if let Some(switch) = twin.state.switch.clone() {
                self.recover(&mut twin, switch).await;
                continue;
            }
            if work == Work::Recover {
                continue;
            }
            if twin.state.retire_at.is_some_and(|at| at <= self.now) {
                self.retire(&mut twin).await;
            }
            if work == Work::Retire || !os.rotate {
                continue;
            }
            let due = options.force || is_due(&twin.state, self.now, os.max_age);
            match twin.state.retire_at {
                Some(at) if due => self.report.twins.push(TwinOutcome {
                    twin: twin.name().to_owned(),
                    action: "deferred",
                    user_email: twin.state.active.email.clone(),
                    at: Some(at),
                    recovered: false,
                }),
                None if due => self.switch(&mut twin).await,
                _ => {}
            }
            self.report.flush();
        }
        if let Some(prover) = &self.prover {
            self.report.s3_probes += prover.probes();
            self.report.s3_slow_downs += prover.slow_downs();
        }
    }
}

/// Whether the active keys are older than `max_age`.
fn is_due(state: &TwinState, now: DateTime<Utc>, max_age: std::time::Duration) -> bool {
    chrono::Duration::from_std(max_age).is_ok_and(|age| state.active_since + age <= now)
}

/// A dry run's line for `twin`.
fn plan(
    twin: &Twin,
    options: RunOptions,
    now: DateTime<Utc>,
    report: &mut RunReport,
    max_age: std::time::Duration,
    rotate: bool,
) {
    let due = rotate && (options.force || is_due(&twin.state, now, max_age));
    let (action, at) = match twin.state.retire_at {
        Some(at) if due => ("deferred", Some(at)),
        _ if due => ("due", None),
        _ => ("kept", None),
    };
    report.twins.push(TwinOutcome {
        twin: twin.name().to_owned(),
        action,
        user_email: twin.state.active.email.clone(),
        at,
        recovered: false,
    });
}

impl Step<'_> {
    /// Hands the standby's freshly regenerated, proven keys to every sink
    /// holding the twin, then records the switch.
    async fn switch(&mut self, twin: &mut Twin) {
        if let Some(why) = self.sinks.twin_blocked(twin.name()) {
            let why = format!("not switched: {why}");
            self.fail(twin, why);
            return;
        }
        let standby = 1 - twin.active();
        let switch = PendingSwitch {
            switch_id: Uuid::new_v4(),
            to: twin.twin_user(standby),
            started_at: self.now,
        };
        twin.state.switch = Some(switch.clone());
        if let Err(err) = self.engine.state.save_twin(&twin.state) {
            twin.state.switch = None;
            self.fail(
                twin,
                format!("not switched: the switch could not be journalled: {err}"),
            );
            return;
        }
        crate::crash::point("twin-after-intent");
        tracing::info!(twin = %twin.name(), to = %switch.to.email, switch_id = %switch.switch_id, "Switching the twin.");
        if let Err(why) = self.regenerate(twin, standby, switch.switch_id).await {
            // No sink has the standby's keys yet: the switch is abandoned.
            self.forget_switch(twin);
            self.fail(twin, format!("not switched: {why}"));
            return;
        }
        crate::crash::point("twin-after-regenerate");
        self.finish_switch(twin, switch, false).await;
    }

    /// Regenerates user `i`'s credentials and re-reads them; `listed[i]`
    /// holds the new values after.
    async fn regenerate(&mut self, twin: &mut Twin, i: usize, request: Uuid) -> Result<(), String> {
        let user = &twin.users[i];
        for e in &twin.listed[i] {
            self.client
                .regenerate_credential(
                    &user.user_id,
                    &e.object_storage_id,
                    e.credential_id,
                    Some(request),
                )
                .await
                .map_err(|err| format!("regenerating {}: {err}", super::subject_of(e)))?;
        }
        let scope = &self.engine.settings.object_storage;
        let header_urls: HashMap<String, String> = twin.listed[i]
            .iter()
            .map(|e| (e.object_storage_id.clone(), e.s3_url.clone()))
            .collect();
        let reread = inventory::list_user(self.client, scope, user, &header_urls)
            .await
            .map_err(|err| format!("re-reading the credentials of {}: {err}", user.email))?;
        twin.listed[i] = reread;
        Ok(())
    }

    /// Proves the standby's current keys, delivers them and records the
    /// switch; abandons the switch when the storage refuses a key.
    async fn finish_switch(&mut self, twin: &mut Twin, switch: PendingSwitch, recovered: bool) {
        let standby = twin.index_of(&switch.to.user_id);
        if let Err(why) = self.prove(twin, standby, switch.switch_id).await {
            if recovered {
                // Some sinks may hold the standby's keys: the active
                // user's, untouched, go back to every one.
                let values = twin.group(twin.active(), &self.storages, twin.state.last_switch_at);
                let _ = self
                    .sinks
                    .deliver_twin(twin.name(), values, self.records, self.report)
                    .await;
            }
            self.forget_switch(twin);
            self.fail(twin, format!("not switched: {why}"));
            return;
        }
        // The grace period counts from the handover, not from the start.
        let handed_over = Utc::now();
        let values = twin.group(standby, &self.storages, Some(handed_over));
        if let Err(failed) = self
            .sinks
            .deliver_twin(twin.name(), values, self.records, self.report)
            .await
        {
            // Recorded anyway: some sinks hold the new keys. The previous
            // user is not retired while a sink holding the twin is behind.
            tracing::warn!(twin = %twin.name(), sinks = %failed, "Some sinks holding the twin were not given the new keys.");
        }
        crate::crash::point("twin-after-delivery");
        let previous = twin.state.active.clone();
        twin.state.switched(handed_over, twin.settings.retire_after);
        if let Err(err) = self.engine.state.save_twin(&twin.state) {
            // The row still says "under way": the next start finishes it.
            self.fail(twin, format!("the switch could not be recorded: {err}"));
            return;
        }
        let data = json!({
            "twin": twin.name(),
            "switch_id": switch.switch_id,
            "switched_at": twin.state.last_switch_at.map(crate::json_time::format),
            "recovered": recovered,
            "trace_id": self.report.trace_id,
            "user_id": twin.state.active.user_id,
            "user_email": twin.state.active.email,
            "previous_user_email": previous.email,
            "retire_at": twin.state.retire_at.map(crate::json_time::format),
            "credentials": self.credentials_data(twin, standby),
        });
        let kind = webhook::OBJECT_STORAGE_TWIN_SWITCHED;
        self.announce(twin, kind, switch.switch_id, data);
        self.report.twins.push(TwinOutcome {
            twin: twin.name().to_owned(),
            action: "switched",
            user_email: twin.state.active.email.clone(),
            at: twin.state.retire_at,
            recovered,
        });
    }

    /// A switch a stopped run left under way: finished if the standby's
    /// current keys are proven, abandoned otherwise.
    async fn recover(&mut self, twin: &mut Twin, switch: PendingSwitch) {
        tracing::info!(twin = %twin.name(), to = %switch.to.email, "Finishing the twin switch a stopped run left under way.");
        self.finish_switch(twin, switch, true).await;
    }

    /// Proves user `i`'s keys at their storages (ListBuckets, then each
    /// probe bucket), all at once; `Err` names the first refusal.
    async fn prove(&mut self, twin: &Twin, i: usize, switch_id: Uuid) -> Result<(), String> {
        let Some(prover) = &self.prover else {
            return Ok(());
        };
        let jobs = twin.listed[i].iter().map(|e| {
            let mut job = Job::new(switch_id, e, &e.access_key, &e.secret_key);
            job.probe_buckets = twin.settings.probe_buckets.clone();
            // No old-key check: the standby's earlier keys were retired.
            job.old_access_key = String::new();
            prover.prove(job)
        });
        let proofs = futures_util::future::join_all(jobs).await;
        for proof in proofs {
            if let Some(error) = proof.outcome.error() {
                return Err(format!(
                    "the storage did not accept the new key of {} ({}): {error}",
                    twin.users[i].email, proof.job.subject
                ));
            }
        }
        Ok(())
    }

    /// Regenerates the previous user's keys and discards the values,
    /// unless a sink holding the twin has not been given the active keys.
    async fn retire(&mut self, twin: &mut Twin) {
        let Some(previous) = twin.state.previous.clone() else {
            return;
        };
        if let Some(behind) = self.sink_behind(twin.name()) {
            self.fail(
                twin,
                format!(
                    "the keys of {} are not retired: {behind} has not been given the keys of {}",
                    previous.email, twin.state.active.email
                ),
            );
            return;
        }
        let i = twin.index_of(&previous.user_id);
        let retirement = Uuid::new_v4();
        if let Err(why) = self.regenerate(twin, i, retirement).await {
            self.fail(
                twin,
                format!("the keys of {} are not retired: {why}", previous.email),
            );
            return;
        }
        twin.state.retired(self.now);
        if let Err(err) = self.engine.state.save_twin(&twin.state) {
            self.fail(twin, format!("the retirement could not be recorded: {err}"));
            return;
        }
        let data = json!({
            "twin": twin.name(),
            "retirement_id": retirement,
            "retired_at": crate::json_time::format(self.now),
            "trace_id": self.report.trace_id,
            "user_id": previous.user_id,
            "user_email": previous.email,
            "credentials": self.credentials_data(twin, i),
        });
        self.announce(twin, webhook::OBJECT_STORAGE_TWIN_RETIRED, retirement, data);
        self.report.twins.push(TwinOutcome {
            twin: twin.name().to_owned(),
            action: "retired",
            user_email: previous.email,
            at: None,
            recovered: false,
        });
    }

    /// A file or template sink holding twin `name` whose last delivery
    /// failed.
    fn sink_behind(&self, name: &str) -> Option<String> {
        self.engine
            .settings
            .sinks
            .iter()
            .filter(|s| {
                s.select()
                    .is_some_and(|sel| sel.twins.iter().any(|t| t == name))
            })
            .find(|s| {
                self.records
                    .sinks
                    .get(&sinks::sink_id(s))
                    .is_none_or(|r| r.last_error.is_some() || r.delivered_version.is_none())
            })
            .map(|s| s.describe())
    }

    /// Clears a switch that did not happen.
    fn forget_switch(&mut self, twin: &mut Twin) {
        twin.state.switch = None;
        if let Err(err) = self.engine.state.save_twin(&twin.state) {
            tracing::warn!(twin = %twin.name(), error = %err, "Could not clear the abandoned switch; the next run retries it.");
        }
    }

    fn fail(&mut self, twin: &Twin, why: String) {
        self.report.fail("twin", twin.name().to_owned(), &why);
        let events = self
            .sinks
            .events(&[], &self.report.failed[self.report.failed.len() - 1..]);
        self.sinks.announce(events, Default::default());
        self.audit(twin, AuditKind::Failure, None, json!({ "error": why }));
        self.report.flush();
    }

    /// User `i`'s credentials as a switch or retirement event names them:
    /// identifiers, access keys and fingerprints, never a secret.
    fn credentials_data(&self, twin: &Twin, i: usize) -> serde_json::Value {
        twin.listed[i]
            .iter()
            .map(|e| {
                json!({
                    "object_storage_id": e.object_storage_id,
                    "object_storage_name": e.object_storage_name,
                    "region": e.region,
                    "credential_id": e.credential_id,
                    "access_key": e.access_key,
                    "fingerprint": self.engine.state.fingerprint(&e.secret_key),
                })
            })
            .collect()
    }

    /// The audit line and the webhook event (`kind`) of a switch or a
    /// retirement.
    fn announce(&mut self, twin: &Twin, kind: &str, id: Uuid, data: serde_json::Value) {
        self.audit(twin, AuditKind::Rotation, Some(id), data.clone());
        let event = webhook::twin_event(kind, self.now, data);
        self.sinks.announce(vec![event], Default::default());
    }

    fn audit(&self, twin: &Twin, event: AuditKind, id: Option<Uuid>, detail: serde_json::Value) {
        let line = AuditEvent {
            at: Utc::now(),
            event,
            rotation_id: id,
            trace_id: Some(self.report.trace_id.clone()),
            subject: format!("twin {}", twin.name()),
            detail,
        };
        if let Err(err) = self.engine.state.audit(&line) {
            tracing::warn!(error = %err, "Could not append to the audit log.");
        }
    }
}
