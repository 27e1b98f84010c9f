//! The change records delivery is handed: one per rotation or failure of a
//! secret. The engine produces them, the run report lists them and the
//! webhook sink builds its events from them; they hold ids, access keys and
//! fingerprints only, never a secret.

use serde::Serialize;

/// Which S3 credential a rotation or failure is about.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialRef {
    pub user_id: String,
    pub user_email: String,
    pub object_storage_id: String,
    pub object_storage_name: String,
    pub region: String,
    pub credential_id: i64,
}

/// One secret rotated in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub kind: super::Kind,
    pub subject: String,
    /// The credential, for `object_storage` rotations.
    pub credential: Option<CredentialRef>,
    /// When the rotation happened.
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub at: chrono::DateTime<chrono::Utc>,
    pub rotation_id: uuid::Uuid,
    pub old_access_key: Option<String>,
    pub new_access_key: Option<String>,
    pub old_fingerprint: String,
    pub new_fingerprint: String,
    /// True when it was finished from the journal of an interrupted run.
    pub recovered: bool,
}

/// One thing that failed (a credential, a user listing, a sink, the run).
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub kind: &'static str,
    pub subject: String,
    pub error: String,
    /// The credential, when an S3 credential failed.
    pub credential: Option<CredentialRef>,
    /// The rotation id, when a rotation had started.
    pub rotation_id: Option<uuid::Uuid>,
}

/// A rotated S3 key the storage accepted (`[object_storage] verify =
/// "s3"`); a key it kept refusing is a [`Failed`] instead.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub kind: super::Kind,
    pub subject: String,
    pub credential: CredentialRef,
    pub rotation_id: uuid::Uuid,
    /// The new access key, as the probe signed with it.
    pub access_key: String,
    /// How it was proven: `s3` (a signed ListBuckets at the storage).
    pub method: &'static str,
    /// Probes with the new key until the storage accepted it.
    pub attempts: u32,
    /// From the first probe to the accepted one.
    pub elapsed_ms: u64,
    /// Whether the storage refused the old key right after (`None`: that
    /// probe got no answer). A figure, not a failure.
    pub old_key_refused: Option<bool>,
    #[serde(serialize_with = "crate::json_time::serialize")]
    pub at: chrono::DateTime<chrono::Utc>,
}
