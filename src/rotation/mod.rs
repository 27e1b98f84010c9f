//! The rotation engine: one pass (`run_once`) that resumes interrupted work,
//! takes stock of the account, rotates what policy says is due, and delivers
//! the current values to every sink.
//!
//! Order of a pass, which is what makes it crash-safe (DESIGN.md §1, §4):
//! 1. intents left in the journal by an interrupted run are resolved first,
//!    by reading the API's current values back;
//! 2. before each mutating call an intent is written to the journal (fsync);
//! 3. a new client secret is stored (0600, fsync) before anything else;
//! 4. records are saved, then the intents cleared, then sinks written.
//!
//! `--run-now` and each scheduled tick call the same [`Engine::run_once`].
//! Cancellation is checked between credentials, never between "rotated at
//! the API" and "recorded and delivered".

mod client_secret;
pub mod crash;
mod deliver;
mod report;
mod resume;
mod s3;

pub use report::{CredentialRef, Delivery, Failed, PlanItem, Rotated, RunReport};

use crate::config::{OnFirstSight, Settings};
use crate::contabo::client::new_trace_id;
use crate::contabo::{ApiError, ClientConfig, ContaboClient};
use crate::inventory::{self, CredentialEntry};
use crate::policy::{self, History, Reason};
use crate::state::{CredentialKey, CredentialRecord, Records, StateDir, StateError};
use chrono::Utc;
use secrecy::SecretString;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a pass behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Plan only: no mutating API call, no state or sink write.
    pub dry_run: bool,
    /// Rotate every selected secret, due or not.
    pub force: bool,
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
        let (client, login_secrets) = login_client(&settings, self.state.path())?;
        self.client = client;
        self.login_secrets = login_secrets;
        self.settings = settings;
        Ok(())
    }

    /// One pass. Never returns early with `?`: every failure is in the report.
    pub async fn run_once(&mut self, options: RunOptions, cancel: &CancellationToken) -> RunReport {
        let client = self.client.with_trace_id(new_trace_id());
        let mut report = RunReport {
            trace_id: client.trace_id().to_owned(),
            dry_run: options.dry_run,
            ..RunReport::default()
        };
        tracing::info!(trace_id = %report.trace_id, dry_run = options.dry_run, force = options.force, "Run started.");
        let mut records = match self.state.load_records() {
            Ok(r) => r,
            Err(err) => {
                report.fail("state", self.state.path().display().to_string(), err);
                return report;
            }
        };
        if let Err(err) = self.login(&client).await {
            report.fail("login", self.settings.api.username.clone(), err);
            return report;
        }
        if !options.dry_run {
            resume::resume(self, &client, &mut records, &mut report).await;
        }
        let inventory = match inventory::collect(&client, &self.settings.object_storage).await {
            Ok(inv) => inv,
            Err(err) => {
                report.fail("inventory", "users and object storages", err);
                return report;
            }
        };
        for failure in &inventory.failures {
            report.fail("user", failure.user_email.clone(), &failure.error);
        }
        let mut credentials = inventory.credentials;
        let now = Utc::now();
        let due = self.plan(&credentials, &records, options, now, &mut report);
        let client_secret_due = self.plan_client_secret(&records, options, now, &mut report);
        if options.dry_run {
            tracing::info!(trace_id = %report.trace_id, "Dry run finished; nothing was changed.");
            return report;
        }
        remember_first_sight(&self.state, &mut records, &credentials, now);
        if let Err(err) = self.state.save_records(&records) {
            report.fail("state", "records.json", err);
            return report;
        }
        deliver::open_webhook_queues(self, &mut report);

        s3::rotate_due(
            self,
            &client,
            &mut records,
            &mut credentials,
            due,
            cancel,
            &mut report,
        )
        .await;
        if client_secret_due && !cancel.is_cancelled() {
            if let Some(new_secret) =
                client_secret::rotate(self, &client, &mut records, &mut report).await
            {
                self.login_secrets = vec![new_secret, self.settings.api.client_secret.clone()];
            }
        }
        report.interrupted = cancel.is_cancelled();
        report.rotated.sort_by(|a, b| a.subject.cmp(&b.subject));

        if inventory.failures.is_empty() {
            deliver::deliver_all(self, &client, &mut records, &credentials, &mut report).await;
        } else {
            deliver::enqueue_webhook_events(self, &mut report);
            report.fail(
                "sinks",
                "all sinks",
                "not delivered: some users' credentials could not be listed, and a partial snapshot would drop them from the sinks",
            );
        }
        if let Err(err) = self.state.save_records(&records) {
            report.fail("state", "records.json", err);
        }
        tracing::info!(
            trace_id = %report.trace_id,
            rotated = report.rotated.len(),
            failed = report.failed.len(),
            "Run finished."
        );
        report
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

    /// Decides every credential; returns the indexes to rotate.
    fn plan(
        &self,
        credentials: &[CredentialEntry],
        records: &Records,
        options: RunOptions,
        now: chrono::DateTime<Utc>,
        report: &mut RunReport,
    ) -> Vec<usize> {
        let os = &self.settings.object_storage;
        let adopt = os.on_first_sight == OnFirstSight::Adopt;
        let mut decisions: Vec<(Reason, Option<chrono::DateTime<Utc>>)> = credentials
            .iter()
            .map(|c| {
                let history = history(records.credentials.get(&key_of(c).to_string()));
                let reason =
                    policy::decide(now, history, os.rotate, os.max_age, adopt, options.force);
                (reason, history.rotated_at.or(history.first_seen))
            })
            .collect();
        policy::limit(&mut decisions, os.max_per_run);
        let mut due = Vec::new();
        for (i, (c, (reason, _))) in credentials.iter().zip(&decisions).enumerate() {
            if reason.rotates() {
                due.push(i);
            }
            report.plan.push(PlanItem {
                kind: "object_storage",
                subject: subject_of(c),
                access_key: Some(c.access_key.clone()),
                rotate: reason.rotates(),
                reason: reason.to_string(),
                reason_code: Some(*reason),
            });
        }
        due
    }

    fn plan_client_secret(
        &self,
        records: &Records,
        options: RunOptions,
        now: chrono::DateTime<Utc>,
        report: &mut RunReport,
    ) -> bool {
        let cs = &self.settings.client_secret;
        if !cs.rotate {
            return false;
        }
        let record = records.client_secret.as_ref();
        let history = History {
            first_seen: record.map(|r| r.first_seen),
            rotated_at: record.and_then(|r| r.rotated_at),
        };
        // The client secret is opt-in: a first sight rotates it.
        let reason = policy::decide(now, history, true, cs.max_age, false, options.force);
        report.plan.push(PlanItem {
            kind: "client_secret",
            subject: self.settings.api.client_id.clone(),
            access_key: None,
            rotate: reason.rotates(),
            reason: reason.to_string(),
            reason_code: Some(reason),
        });
        reason.rotates()
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
    let mut config = ClientConfig::from_settings(&settings.api);
    config.credentials.client_secret = secrets[0].clone();
    Ok((ContaboClient::new(config)?, secrets))
}

/// What the records say about a credential's history, for the policy.
pub fn history(record: Option<&CredentialRecord>) -> History {
    History {
        first_seen: record.map(|r| r.first_seen),
        rotated_at: record.and_then(|r| r.rotated_at),
    }
}

/// The state key of a credential.
pub fn key_of(c: &CredentialEntry) -> CredentialKey {
    CredentialKey {
        user_id: c.user_id.clone(),
        object_storage_id: c.object_storage_id.clone(),
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

/// Records a first sight for credentials the state has never seen.
fn remember_first_sight(
    state: &StateDir,
    records: &mut Records,
    credentials: &[CredentialEntry],
    now: chrono::DateTime<Utc>,
) {
    for c in credentials {
        records
            .credentials
            .entry(key_of(c).to_string())
            .or_insert_with(|| new_record(c, state, now));
    }
}

/// A record for a credential first seen `now`, never rotated.
pub(crate) fn new_record(
    c: &CredentialEntry,
    state: &StateDir,
    now: chrono::DateTime<Utc>,
) -> CredentialRecord {
    CredentialRecord {
        user_email: c.user_email.clone(),
        first_seen: now,
        rotated_at: None,
        rotation_id: None,
        access_key: c.access_key.clone(),
        secret_fingerprint: state.fingerprint(&c.secret_key),
    }
}
