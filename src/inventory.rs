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
    /// The user's id and e-mail are the user list's copies ([`UserRef`]),
    /// shared by the records' keys and the sinks' values.
    pub user_id: Arc<str>,
    pub user_email: Arc<str>,
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

/// A selected user of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub user_id: Arc<str>,
    pub email: Arc<str>,
}

/// What a pass learns before it lists any user's credentials.
#[derive(Debug, Default)]
pub struct Header {
    /// The API user's id (the token's `sub`).
    pub api_user_id: String,
    /// Users seen in total, selected or not.
    pub users_seen: usize,
    /// Users in scope, ordered by e-mail.
    pub users: Vec<UserRef>,
    /// E-mails of users in scope that the API listed without a `userId`:
    /// a malformed answer for each of them, reported as its failure.
    pub malformed: Vec<String>,
    /// S3 endpoint of each object storage, by `objectStorageId`.
    pub s3_urls: HashMap<String, String>,
    /// The users of `[[object_storage.twins]]` found in the account, ordered
    /// by e-mail: never in `users` (twin users are not rotated as ordinary
    /// users), whatever `users` and `exclude_users` say.
    pub twin_users: Vec<UserRef>,
}

/// The failure of a user listed without a `userId`.
pub fn missing_user_id() -> ApiError {
    ApiError::Malformed {
        op: "listUsers",
        detail: "the user has no userId".into(),
    }
}

/// Lists the users in scope and the storages' S3 URLs.
pub async fn header(
    client: &ContaboClient,
    scope: &ObjectStorageSettings,
) -> Result<Header, ApiError> {
    let api_user_id = client.api_user_id().await?;
    // Independent lists: asked together.
    let all_users = UserFilter::default();
    let (users, storages) =
        tokio::try_join!(client.list_users(&all_users), client.list_object_storages())?;
    let s3_urls: HashMap<String, String> = storages
        .iter()
        .map(|s| (s.object_storage_id.clone(), s.s3_endpoint()))
        .collect();
    let users_seen = users.len();
    let (mut selected, mut malformed, mut twin_users) = (Vec::new(), Vec::new(), Vec::new());
    for u in users {
        let twin = scope.twin_of(&u.email).is_some();
        if !twin && !policy::user_selected(scope, &u.email) {
            continue;
        }
        if u.user_id.is_empty() {
            malformed.push(u.email);
            continue;
        }
        let user = UserRef {
            user_id: u.user_id.into(),
            email: u.email.into(),
        };
        if twin {
            twin_users.push(user);
        } else {
            selected.push(user);
        }
    }
    twin_users.sort_by(|a, b| a.email.cmp(&b.email));
    malformed.sort();
    selected.sort_by(|a, b| (&a.email, &a.user_id).cmp(&(&b.email, &b.user_id)));
    // Grown by doubling; the pass keeps this list to its end.
    selected.shrink_to_fit();
    Ok(Header {
        api_user_id,
        users_seen,
        users: selected,
        malformed,
        s3_urls,
        twin_users,
    })
}

/// One user's credentials in scope, ordered by credential id.
pub async fn list_user(
    client: &ContaboClient,
    scope: &ObjectStorageSettings,
    user: &UserRef,
    s3_urls: &HashMap<String, String>,
) -> Result<Vec<CredentialEntry>, ApiError> {
    let list = client
        .list_credentials(&user.user_id, &CredentialFilter::default())
        .await?;
    let mut entries: Vec<CredentialEntry> = list
        .into_iter()
        .filter(|c| {
            policy::storage_selected(scope, &c.region, &c.object_storage_id, &c.display_name)
        })
        .map(|c| entry(user, c, s3_urls))
        .collect();
    entries.sort_by_key(|c| c.credential_id);
    Ok(entries)
}

/// Lists users, their credentials and the storages' S3 URLs (for `list`).
pub async fn collect(
    client: &ContaboClient,
    scope: &ObjectStorageSettings,
) -> Result<Inventory, ApiError> {
    let header = header(client, scope).await?;
    let users_selected = header.users.len();
    let s3_urls = Arc::new(header.s3_urls);
    // A task is spawned only when a slot is free: a thousand pending list
    // calls would each hold their whole (large) future in memory.
    let slots = Arc::new(Semaphore::new(client.concurrency()));
    let mut tasks = JoinSet::new();
    // Twin users too: `list` shows them, with their twin.
    for user in header.users.into_iter().chain(header.twin_users) {
        let client = client.clone();
        let scope = scope.clone();
        let s3_urls = s3_urls.clone();
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _slot = slot;
            let listed = list_user(&client, &scope, &user, &s3_urls).await;
            (user, listed)
        });
    }

    let mut credentials = Vec::new();
    let mut failures: Vec<UserFailure> = header
        .malformed
        .into_iter()
        .map(|user_email| UserFailure {
            user_email,
            error: missing_user_id(),
        })
        .collect();
    while let Some(joined) = tasks.join_next().await {
        let (user, listed) = joined.expect("inventory task panicked");
        match listed {
            Ok(list) => credentials.extend(list),
            Err(error) => {
                tracing::warn!(user = %user.email, %error, "Could not list the user's credentials.");
                failures.push(UserFailure {
                    user_email: user.email.to_string(),
                    error,
                });
            }
        }
    }
    credentials
        .sort_by(|a, b| (&*a.user_email, a.credential_id).cmp(&(&*b.user_email, b.credential_id)));
    failures.sort_by(|a, b| a.user_email.cmp(&b.user_email));
    Ok(Inventory {
        api_user_id: header.api_user_id,
        users_seen: header.users_seen,
        users_selected,
        credentials,
        failures,
    })
}

fn entry(user: &UserRef, c: Credential, s3_urls: &HashMap<String, String>) -> CredentialEntry {
    CredentialEntry {
        user_id: user.user_id.clone(),
        user_email: user.email.clone(),
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
