//! The snapshot every sink renders: the current secret values after a run.

use crate::config::{Kind, Selection};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

/// One S3 credential as the API holds it now.
#[derive(Debug, Clone)]
pub struct SnapshotCredential {
    pub user_id: String,
    pub user_email: String,
    pub object_storage_id: String,
    pub object_storage_name: String,
    pub region: String,
    pub s3_url: String,
    pub credential_id: i64,
    pub access_key: String,
    pub secret_key: SecretString,
    /// When contabo-rotator last rotated it; `None` if it never did.
    pub rotated_at: Option<DateTime<Utc>>,
}

/// Everything a sink may deliver.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Present when the client secret is managed (`[client_secret] rotate`).
    pub client: Option<(String, SecretString)>,
    /// Ordered by user e-mail, then credential id.
    pub credentials: Vec<SnapshotCredential>,
}

impl Snapshot {
    /// The part of the snapshot a sink's `select` asks for.
    pub fn select(&self, selection: &Selection) -> Snapshot {
        let wants = |kind: Kind| selection.kinds.is_empty() || selection.kinds.contains(&kind);
        let client = if wants(Kind::ClientSecret) {
            self.client.clone()
        } else {
            None
        };
        let credentials = if wants(Kind::ObjectStorage) {
            self.credentials
                .iter()
                .filter(|c| {
                    selection
                        .users
                        .as_ref()
                        .is_none_or(|g| g.is_match(&c.user_email))
                })
                .filter(|c| {
                    selection.regions.is_empty()
                        || selection
                            .regions
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(&c.region))
                })
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Snapshot {
            client,
            credentials,
        }
    }

    /// The `json` sink format of DESIGN.md §3. The returned text holds
    /// secrets, so it stays a [`SecretString`] until written.
    pub fn to_json(&self) -> SecretString {
        let mut root = serde_json::Map::new();
        if let Some((client_id, secret)) = &self.client {
            root.insert(
                "client".into(),
                serde_json::json!({
                    "client_id": client_id,
                    "client_secret": secret.expose_secret(),
                }),
            );
        }
        let credentials: Vec<serde_json::Value> = self
            .credentials
            .iter()
            .map(|c| {
                serde_json::json!({
                    "user_id": c.user_id,
                    "user_email": c.user_email,
                    "object_storage_id": c.object_storage_id,
                    "object_storage_name": c.object_storage_name,
                    "region": c.region,
                    "s3_url": c.s3_url,
                    "credential_id": c.credential_id,
                    "access_key": c.access_key,
                    "secret_key": c.secret_key.expose_secret(),
                    "rotated_at": c.rotated_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                })
            })
            .collect();
        root.insert(
            "object_storage_credentials".into(),
            serde_json::Value::Array(credentials),
        );
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(root))
            .expect("JSON values serialise");
        text.push('\n');
        SecretString::from(text)
    }
}
