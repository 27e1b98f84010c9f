//! Read-only snapshots of the simulated account, for test assertions.
//!
//! Secrets stay `SecretString`s here too, so printing a snapshot with
//! `{:?}` shows no secret value.

use secrecy::SecretString;

use super::state::State;

/// A read-only copy of the account for assertions. Its `Debug` output
/// redacts every secret.
#[derive(Debug, Clone)]
pub struct SimSnapshot {
    pub client_id: String,
    /// The current client secret.
    pub client_secret: SecretString,
    /// All users, the API user first.
    pub users: Vec<SimUser>,
}

/// One user and its S3 credentials.
#[derive(Debug, Clone)]
pub struct SimUser {
    pub user_id: String,
    pub email: String,
    /// One per object storage, ordered by credential id.
    pub credentials: Vec<SimCredential>,
}

/// One S3 credential with the object storage it belongs to.
#[derive(Debug, Clone)]
pub struct SimCredential {
    pub credential_id: i64,
    pub object_storage_id: String,
    pub display_name: String,
    pub region: String,
    pub s3_url: String,
    pub access_key: String,
    pub secret_key: SecretString,
}

impl State {
    /// Copies the current client, users and credentials.
    pub(super) fn snapshot(&self) -> SimSnapshot {
        let users = self
            .users
            .iter()
            .map(|u| SimUser {
                user_id: u.user_id.clone(),
                email: u.email.clone(),
                credentials: u
                    .credentials
                    .iter()
                    .map(|c| {
                        let storage = self.storage(&c.object_storage_id);
                        SimCredential {
                            credential_id: c.credential_id,
                            object_storage_id: c.object_storage_id.clone(),
                            display_name: storage
                                .map(|s| s.display_name.clone())
                                .unwrap_or_default(),
                            region: storage
                                .map(|s| s.region.name.to_owned())
                                .unwrap_or_default(),
                            s3_url: storage.map(|s| s.s3_url.clone()).unwrap_or_default(),
                            access_key: c.access_key.clone(),
                            secret_key: c.secret_key.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        SimSnapshot {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            users,
        }
    }
}
