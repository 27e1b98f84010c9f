//! The rotation engine: one pass (`run_once`) that resumes interrupted work,
//! then streams the account user by user through the pipeline's stages:
//!
//! - [`user`]: list the user's credentials, decide, journal, regenerate,
//!   confirm;
//! - [`record`]: fold the outcome into the records and the report;
//! - [`deliver`]: hand the user's current values to the sinks holding them.
//!
//! [`pass`] drives them, [`resume`] resolves an interrupted run's journal,
//! [`client_secret`] is the client secret's own step, and
//! [`Engine::recover`] is the daemon's start-up recovery.
//!
//! `--run-now` and each scheduled tick call the same [`Engine::run_once`].
//! Cancellation is checked between credentials, never between "rotated at
//! the API" and "recorded and delivered".

mod client_secret;
mod deliver;
mod pass;
mod record;
mod report;
mod resume;
mod twins;
mod user;
pub(crate) mod verify;

/// How a request to a storage is signed (the tests' readers sign with it).
pub use verify::signed_headers;

pub use report::{
    CredentialRef, Delivery, Failed, PlanItem, ReportItem, ReportOutput, ReportWriter, Rotated,
    RunReport, Totals, TwinOutcome, Verified,
};

use crate::config::Settings;
use crate::contabo::{ApiError, ClientConfig, ContaboClient};
use crate::inventory::CredentialEntry;
use crate::policy::History;
use crate::sinks::{self, webhook, SnapshotCredential};
use crate::state::{CredentialKey, CredentialRecord, Records, StateDir, StateError};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a pass behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Plan only: no mutating API call, no state or sink write.
    pub dry_run: bool,
    /// Rotate every selected secret, due or not.
    pub force: bool,
    /// Where the report streams as the pass goes (`--run-now`; `cli`
    /// supplies the writer).
    pub output: Option<ReportOutput>,
}

/// Errors that stop the engine from being built at all.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The engine: settings, the locked state directory and the API client.
pub struct Engine {
    settings: Settings,
    /// Shared with the per-user rotation tasks.
    state: Arc<StateDir>,
    client: ContaboClient,
    /// Client secrets to try, in order, when a login is refused: the stored
    /// one (after a rotation) and the configured one.
    login_secrets: Vec<SecretString>,
}

impl Engine {
    /// Builds the engine; logs in with the stored client secret when the
    /// configuration still holds the one it replaced.
    pub fn new(settings: Settings, state: StateDir) -> Result<Engine, EngineError> {
        let (client, login_secrets) = login_client(&settings, state.path())?;
        Ok(Engine {
            settings,
            state: Arc::new(state),
            client,
            login_secrets,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Swaps in a new validated configuration (SIGHUP); the state dir stays.
    pub fn reload(&mut self, settings: Settings) -> Result<(), EngineError> {
        let mut login_secrets =
            crate::state::login_secrets(self.state.path(), &settings.api.client_secret)?;
        // A rotated secret whose store failed lives only in memory (its
        // intent is pending): it stays first, or the reload would lock the
        // daemon out.
        let in_use = self.client.auth().client_secret();
        let in_use_fp = self.state.fingerprint(&in_use);
        if !login_secrets
            .iter()
            .any(|s| self.state.fingerprint(s) == in_use_fp)
        {
            tracing::warn!(
                "Keeping the client secret in use, which is not stored yet, across the reload."
            );
            login_secrets.insert(0, in_use);
        }
        self.client = client_with(&settings, &login_secrets[0])?;
        self.login_secrets = login_secrets;
        self.settings = settings;
        Ok(())
    }

    /// One pass. Never returns early with `?`: every failure is in the report.
    pub async fn run_once(&mut self, options: RunOptions, cancel: &CancellationToken) -> RunReport {
        pass::run(self, options, cancel, pass::Mode::Rotate).await
    }

    /// The twins' retirements between ticks (docs/design.md §4): retires every
    /// overdue one, rotates nothing else.
    pub async fn retire_twins(&mut self, cancel: &CancellationToken) -> RunReport {
        pass::run(self, RunOptions::default(), cancel, pass::Mode::Retire).await
    }

    /// The file and template sinks holding a twin whose switch a stopped
    /// run left under way.
    fn twin_switch_sinks(&self) -> Vec<String> {
        let pending: Vec<String> = match self.state.load_twins() {
            Ok(states) => states
                .into_iter()
                .filter(|s| s.switch.is_some())
                .map(|s| s.name)
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "Could not read the twins' state.");
                Vec::new()
            }
        };
        self.settings
            .sinks
            .iter()
            .filter(|s| {
                s.select()
                    .is_some_and(|sel| sel.twins.iter().any(|t| pending.contains(t)))
            })
            .map(sinks::sink_id)
            .collect()
    }

    /// When the next retirement of a configured twin is due, if any.
    pub fn next_retirement(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let twins = &self.settings.object_storage.twins;
        if twins.is_empty() {
            return None;
        }
        let states = self.state.load_twins().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "Could not read the twins' state.");
            Vec::new()
        });
        states
            .iter()
            .filter(|s| twins.iter().any(|t| t.name == s.name))
            .filter_map(|s| s.retire_at)
            .min()
    }

    /// Reports a finished run (not a dry run) to the metrics and keeps its
    /// outcome in the state database (`runs`), then refreshes the
    /// state gauges when `state_series` (the metrics are served or written:
    /// two series per credential are not built for nobody).
    pub fn record_run(
        &self,
        report: &RunReport,
        duration: std::time::Duration,
        state_series: bool,
    ) {
        let mut runs = self.state.load_runs().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "Ignoring the run history.");
            crate::state::RunHistory::default()
        });
        let tally = report.tally(duration);
        runs.record(report.failures(), duration, chrono::Utc::now());
        crate::metrics::metrics().record_run(&tally, &outcomes(&runs));
        if let Err(err) = self.state.save_runs(&runs) {
            tracing::warn!(error = %err, "Could not save the run history.");
        }
        if state_series {
            self.report_state();
        }
    }

    /// Sets the metrics that the state directory decides (at start, and
    /// after each run): the last run's outcome, rotation timestamps,
    /// pending intents and the outbox depth.
    pub fn restore_metrics(&self) {
        match self.state.load_runs() {
            Ok(runs) => crate::metrics::metrics().restore(&outcomes(&runs)),
            Err(err) => tracing::warn!(error = %err, "Ignoring the run history."),
        }
        self.report_state();
    }

    fn report_state(&self) {
        let view = match StateDir::open_read_only(self.state.path()) {
            Ok(view) => view,
            Err(err) => {
                tracing::warn!(error = %err, "Could not read the state for the metrics.");
                return;
            }
        };
        crate::metrics::metrics().record_state(&state_figures(&self.settings, &view));
    }

    /// The daemon's start-up recovery, before it waits for its first tick
    /// (docs/design.md §1.7): resolves the journal, recovers a client secret an
    /// interrupted rotation left unstored (while the saved token is valid),
    /// re-delivers every file or template sink that is behind or whose last
    /// delivery failed, and sends pending webhook events. Rotates nothing.
    pub async fn recover(&mut self, cancel: &CancellationToken) -> RunReport {
        let mut report = RunReport::default();
        let records = match self.state.open_records() {
            Ok(r) => r,
            Err(err) => {
                report.fail("state", self.state.path().display().to_string(), err);
                return report;
            }
        };
        let journal_pending = self
            .state
            .load_journal()
            .map(|j| !j.intents.is_empty())
            .unwrap_or(true);
        let behind = behind_sinks(&self.settings, &records);
        // A twin switch a stopped run left under way is finished (or
        // abandoned) now, with the sinks holding the twin.
        let twin_sinks = self.twin_switch_sinks();
        if journal_pending || !behind.is_empty() || !twin_sinks.is_empty() {
            tracing::info!(
                journal = journal_pending,
                sinks = behind.len(),
                "Finishing the work an earlier run left before waiting for the schedule."
            );
            let client = self
                .client
                .with_trace_id(crate::contabo::client::new_trace_id());
            report.trace_id = client.trace_id().to_owned();
            let mut records = records;
            match self.login(&client).await {
                Ok(()) => {
                    resume::resume(self, &client, &mut records, &mut report).await;
                    if !report.rotated.is_empty() {
                        enqueue_report_events(self, &report);
                    }
                }
                Err(err) => {
                    report.fail("login", self.settings.api.username.clone(), err);
                    return report;
                }
            }
            crate::crash::point("startup-after-resume");
            // Sinks behind now, the journal's recoveries included.
            let mut behind = behind_sinks(&self.settings, &records);
            for id in twin_sinks {
                if !behind.contains(&id) {
                    behind.push(id);
                }
            }
            if !behind.is_empty() && !cancel.is_cancelled() {
                let delivered = pass::run(
                    self,
                    RunOptions::default(),
                    cancel,
                    pass::Mode::Deliver(behind),
                )
                .await;
                report.absorb(delivered);
            }
        }
        self.resend_pending_webhooks().await;
        report
    }

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

    /// Logs in, falling back to the other known client secret when refused,
    /// then to reading back the secret of an interrupted rotation.
    async fn login(&mut self, client: &ContaboClient) -> Result<(), ApiError> {
        let mut last = None;
        for (i, secret) in self.login_secrets.iter().enumerate() {
            if i > 0 {
                tracing::warn!("Login refused; trying the other known client secret.");
                client.auth().set_client_secret(secret.clone()).await;
            }
            match client.auth().access_token().await {
                Ok(_) => return Ok(()),
                Err(err @ ApiError::LoginRefused { .. }) => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        let refused = last.expect("at least one login secret");
        let Some(recovered) = client_secret::recover_refused(self, client).await else {
            return Err(refused);
        };
        self.login_secrets = vec![recovered, self.settings.api.client_secret.clone()];
        client.auth().access_token().await.map(drop)
    }
}

/// The API client for `settings`, logging in with the first of the known
/// client secrets (see [`crate::state::login_secrets`], read without the
/// lock), and all of them in the order to try.
pub fn login_client(
    settings: &Settings,
    state_dir: &std::path::Path,
) -> Result<(ContaboClient, Vec<SecretString>), EngineError> {
    let secrets = crate::state::login_secrets(state_dir, &settings.api.client_secret)?;
    Ok((client_with(settings, &secrets[0])?, secrets))
}

/// The API client for `settings`, logging in with `client_secret`.
fn client_with(
    settings: &Settings,
    client_secret: &SecretString,
) -> Result<ContaboClient, EngineError> {
    let mut config = ClientConfig::from_settings(&settings.api);
    config.credentials.client_secret = client_secret.clone();
    config.observer = std::sync::Arc::new(crate::metrics::ApiMetrics);
    Ok(ContaboClient::new(config)?)
}

/// What the records say about a credential's history, for the policy.
pub fn history(record: Option<&CredentialRecord>) -> History {
    History {
        first_seen: record.map(|r| r.first_seen),
        rotated_at: record.and_then(|r| r.rotated_at),
    }
}

/// The state key of a credential, with the user list's copy of the user's
/// id.
pub fn key_of(c: &CredentialEntry) -> CredentialKey {
    CredentialKey {
        user_id: c.user_id.clone(),
        object_storage_id: c.object_storage_id.as_str().into(),
        credential_id: c.credential_id,
    }
}

/// How a credential is named in reports and logs.
pub(crate) fn subject_of(c: &CredentialEntry) -> String {
    format!(
        "{}/{}/{}",
        c.user_email, c.object_storage_name, c.credential_id
    )
}

/// A record for a credential first seen `now`, never rotated.
pub(crate) fn new_record(
    c: &CredentialEntry,
    state: &StateDir,
    now: chrono::DateTime<chrono::Utc>,
) -> CredentialRecord {
    CredentialRecord {
        user_email: c.user_email.clone(),
        first_seen: now,
        rotated_at: None,
        rotation_id: None,
        access_key: c.access_key.as_str().into(),
        secret_fingerprint: state.fingerprint(&c.secret_key),
        verified: None,
    }
}

/// A user's credentials as delivery sees them, with when each was rotated.
/// The user's id and e-mail are the user list's copies.
pub(crate) fn snapshot_values(
    entries: &[CredentialEntry],
    records: &Records,
    storages: &crate::sinks::Interner,
) -> crate::sinks::snapshot::Group {
    // Read without moving the user's records into memory: a pass values
    // every user an aggregate sink holds before it gets to them.
    let mut times: Option<(&str, Vec<_>)> = None;
    entries
        .iter()
        .map(|c| {
            if times.as_ref().is_none_or(|(user, _)| *user != &*c.user_id) {
                let read = records.rotation_times(&c.user_id).unwrap_or_else(|err| {
                    tracing::warn!(user = %c.user_email, error = %err, "Could not read when the user's credentials were rotated.");
                    Vec::new()
                });
                times = Some((&c.user_id, read));
            }
            let rotated_at = times.as_ref().and_then(|(_, read)| {
                read.iter()
                    .find(|(id, storage, _)| *id == c.credential_id && **storage == *c.object_storage_id)
                    .and_then(|(_, _, at)| *at)
            });
            snapshot_credential(c, storages, rotated_at)
        })
        .collect()
}

/// `c` as a sink holds it (no twin), its storage shared through `storages`.
pub(crate) fn snapshot_credential(
    c: &CredentialEntry,
    storages: &crate::sinks::Interner,
    rotated_at: Option<chrono::DateTime<chrono::Utc>>,
) -> SnapshotCredential {
    SnapshotCredential {
        user_id: c.user_id.clone(),
        user_email: c.user_email.clone(),
        storage: storages.storage(
            &c.object_storage_id,
            &c.object_storage_name,
            &c.region,
            &c.s3_url,
        ),
        credential_id: c.credential_id,
        keys: crate::sinks::Keys::new(&c.access_key, c.secret_key.expose_secret()),
        rotated_at,
        twin: None,
    }
}

/// The client secret as the API holds it now (the one in use if it cannot
/// be read back).
async fn client_secret_now(client: &ContaboClient) -> SecretString {
    match client.get_client().await {
        Ok(api_client) => api_client.secret,
        Err(err) => {
            tracing::warn!(error = %err, "Could not read the client back; delivering the secret in use.");
            client.auth().client_secret()
        }
    }
}

/// Before the first rotation of a run: gives every webhook sink its outbox
/// queue, so that rotations recorded from now on are announced even if the
/// run stops before delivering.
fn open_webhook_queues(engine: &Engine, report: &mut RunReport) {
    if let Err(err) = webhook::enqueue_only(&engine.settings.sinks, &[], &engine.state) {
        report.fail("state", "outbox", err);
    }
    let now = chrono::Utc::now();
    match webhook::prune_removed(&engine.settings.sinks, &engine.state, now) {
        Ok(removed) => {
            for q in removed {
                let drop_after = crate::json_time::format(q.drop_after);
                if q.dropped {
                    tracing::warn!(sink = %q.sink_id, events = q.events, "Dropped the queue of a webhook sink removed from the configuration; its events were never delivered.");
                } else if q.removed_since == now {
                    tracing::warn!(sink = %q.sink_id, events = q.events, drop_after = %drop_after, "A webhook sink with queued events is no longer configured; its queue is kept until drop_after, then dropped.");
                }
            }
        }
        Err(err) => report.fail("state", "outbox", err),
    }
}

/// Queues the events of what `report` holds so far (rotations recovered
/// from the journal) for every webhook sink.
fn enqueue_report_events(engine: &Engine, report: &RunReport) {
    let events = webhook::events_for(
        &report.rotated,
        &report.failed,
        &engine.settings.api.client_id,
        &report.trace_id,
    );
    if let Err(err) = webhook::enqueue_only(&engine.settings.sinks, &events, &engine.state) {
        tracing::warn!(error = %err, "Could not queue webhook events.");
    }
}

/// The file and template sinks that are behind: never delivered, last
/// delivery failed, or a secret they may hold was rotated after their last
/// delivery. Conservative: a sink whose user globs match a rotated
/// credential's user counts, whatever its regions (the records keep no
/// region); re-rendering an up-to-date sink writes nothing.
pub fn behind_sinks(settings: &Settings, records: &Records) -> Vec<String> {
    let mut behind = Vec::new();
    for sink in &settings.sinks {
        let Some(selection) = sink.select() else {
            continue;
        };
        let id = sinks::sink_id(sink);
        let record = records.sinks.get(&id);
        let delivered_at = record.and_then(|r| r.delivered_at);
        let failed = record.is_none_or(|r| r.last_error.is_some() || r.delivered_version.is_none());
        let newer = |at: Option<chrono::DateTime<chrono::Utc>>| match (at, delivered_at) {
            (Some(at), Some(delivered)) => at > delivered,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut s3_behind = false;
        let scanned = records.scan(|_, c| {
            s3_behind = s3_behind
                || (crate::sinks::snapshot::selects_user(selection, &c.user_email)
                    && newer(c.rotated_at));
        });
        // A sink is behind unless the records say otherwise.
        s3_behind |= scanned.is_err();
        let client_behind = settings.client_secret.rotate
            && selection.includes_kind(crate::config::Kind::ClientSecret)
            && records
                .client_secret
                .as_ref()
                .is_some_and(|c| newer(c.rotated_at));
        if failed || s3_behind || client_behind {
            behind.push(id);
        }
    }
    behind
}

/// The state gauges' figures from a read of the state directory.
fn state_figures(
    settings: &Settings,
    view: &crate::state::StateView,
) -> crate::metrics::StateFigures {
    let due = |since: chrono::DateTime<chrono::Utc>, max_age: std::time::Duration| {
        chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|d| since.checked_add_signed(d))
    };
    let os_max_age = settings.object_storage.max_age;
    let credentials = view
        .records
        .iter()
        .map(|(key, r)| crate::metrics::SecretTimes {
            labels: vec![
                ("credential_id", key.credential_id.to_string()),
                ("user", r.user_email.to_string()),
                ("object_storage", key.object_storage_id.to_string()),
            ],
            last: r.rotated_at,
            next: due(r.rotated_at.unwrap_or(r.first_seen), os_max_age),
        })
        .collect();
    let cs = &settings.client_secret;
    let client_secret = view
        .records
        .client_secret
        .as_ref()
        .map(|r| crate::metrics::SecretTimes {
            labels: Vec::new(),
            last: r.rotated_at,
            next: if cs.rotate {
                due(r.rotated_at.unwrap_or(r.first_seen), cs.max_age)
            } else {
                None
            },
        });
    crate::metrics::StateFigures {
        credentials,
        client_secret,
        pending_intents: view.journal.intents.len() as u64,
        outbox_events: view
            .outbox
            .queues
            .values()
            .map(|q| q.events.len() as u64)
            .sum(),
        twins: view
            .twins
            .iter()
            .map(|t| crate::metrics::TwinFigures {
                twin: t.name.clone(),
                active_user_email: t.active.email.clone(),
                last_switch: t.last_switch_at,
                retire_at: t.retire_at,
            })
            .collect(),
    }
}

/// The run history as the metrics' outcome series show it.
fn outcomes(runs: &crate::state::RunHistory) -> crate::metrics::Outcomes {
    crate::metrics::Outcomes {
        last_run_at: runs.last_run_at,
        last_run_duration_ms: runs.last_run_duration_ms,
        last_success_at: runs.last_success_at,
        last_delivery_success_at: runs.last_delivery_success_at,
        last_failures: runs.last_failures.into(),
    }
}

impl From<crate::state::LastFailures> for crate::metrics::Failures {
    fn from(f: crate::state::LastFailures) -> Self {
        crate::metrics::Failures {
            rotation: f.rotation,
            file_sinks: f.file_sinks,
            webhooks: f.webhooks,
        }
    }
}
