//! Inventory: every selected user's object-storage credentials, as the API
//! holds them now, joined with each storage's S3 endpoint.
//!
//! Users come from `GET /v1/users` (all pages), credentials from one list call
//! per user, run concurrently (the client bounds how many are in flight).
//! One user's failure does not stop the others: it is recorded and reported.

use crate::config::ObjectStorageSettings;
use crate::contabo::models::{normalize_s3_url, Credential, CredentialFilter, UserFilter};
use crate::contabo::{ApiError, ContaboClient};
use crate::policy;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One credential in scope, with what sinks and listings need.
#[derive(Debug, Clone)]
pub struct CredentialEntry {
    pub user_id: String,
    pub user_email: String,
    pub object_storage_id: String,
    pub object_storage_name: String,
    pub region: String,
    /// With a scheme; empty when the storage list did not know the storage.
    pub s3_url: String,
    pub credential_id: i64,
    pub access_key: String,
    pub secret_key: SecretString,
}

/// A user whose credentials could not be listed.
#[derive(Debug)]
pub struct UserFailure {
    pub user_email: String,
    pub error: ApiError,
}

/// The result of one inventory pass.
#[derive(Debug, Default)]
pub struct Inventory {
    /// The API user's id (the token's `sub`).
    pub api_user_id: String,
    /// Users seen in total, selected or not.
    pub users_seen: usize,
    /// Users in scope.
    pub users_selected: usize,
    /// Credentials in scope, ordered by user e-mail then credential id.
    pub credentials: Vec<CredentialEntry>,
    pub failures: Vec<UserFailure>,
}

/// Lists users, their credentials and the storages' S3 URLs.
pub async fn collect(
    client: &ContaboClient,
    scope: &ObjectStorageSettings,
) -> Result<Inventory, ApiError> {
    let api_user_id = client.api_user_id().await?;
    let users = client.list_users(&UserFilter::default()).await?;
    let storages = client.list_object_storages().await?;
    let s3_urls: HashMap<String, String> = storages
        .iter()
        .map(|s| (s.object_storage_id.clone(), s.s3_endpoint()))
        .collect();

    let users_seen = users.len();
    let selected: Vec<_> = users
        .into_iter()
        .filter(|u| !u.user_id.is_empty() && policy::user_selected(scope, &u.email))
        .collect();
    let users_selected = selected.len();

    // A task is spawned only when a slot is free: a thousand pending list
    // calls would each hold their whole (large) future in memory.
    let slots = Arc::new(Semaphore::new(client.concurrency()));
    let mut tasks = JoinSet::new();
    for user in selected {
        let client = client.clone();
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _slot = slot;
            let listed = client
                .list_credentials(&user.user_id, &CredentialFilter::default())
                .await;
            (user, listed)
        });
    }

    let mut credentials = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (user, listed) = joined.expect("inventory task panicked");
        match listed {
            Ok(list) => credentials.extend(
                list.into_iter()
                    .filter(|c| {
                        policy::storage_selected(
                            scope,
                            &c.region,
                            &c.object_storage_id,
                            &c.display_name,
                        )
                    })
                    .map(|c| entry(&user.user_id, &user.email, c, &s3_urls)),
            ),
            Err(error) => {
                tracing::warn!(user = %user.email, %error, "Could not list the user's credentials.");
                failures.push(UserFailure {
                    user_email: user.email,
                    error,
                });
            }
        }
    }
    credentials.sort_by(|a, b| {
        (a.user_email.as_str(), a.credential_id).cmp(&(b.user_email.as_str(), b.credential_id))
    });
    failures.sort_by(|a, b| a.user_email.cmp(&b.user_email));
    Ok(Inventory {
        api_user_id,
        users_seen,
        users_selected,
        credentials,
        failures,
    })
}

fn entry(
    user_id: &str,
    email: &str,
    c: Credential,
    s3_urls: &HashMap<String, String>,
) -> CredentialEntry {
    CredentialEntry {
        user_id: user_id.to_owned(),
        user_email: email.to_owned(),
        s3_url: s3_urls
            .get(&c.object_storage_id)
            .cloned()
            .unwrap_or_else(|| normalize_s3_url("")),
        object_storage_id: c.object_storage_id,
        object_storage_name: c.display_name,
        region: c.region,
        credential_id: c.credential_id,
        access_key: c.access_key,
        secret_key: c.secret_key,
    }
}
