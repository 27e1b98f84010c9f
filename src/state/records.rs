//! `records.json`: what the daemon knows about each secret it manages and
//! what each sink last received.
//!
//! The Contabo API gives no timestamps, so these records are the only source
//! of "when was this rotated". They hold identifiers, times and
//! [`Fingerprint`]s, never a secret value.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::fs::{check_version, read_json, write_json_atomic};
use super::{Fingerprint, StateDir, StateError};

/// The `version` this build writes and reads.
pub const RECORDS_VERSION: u32 = 1;

/// Smaller maps are not packed: a few nodes' slack is not worth a rebuild.
const PACK_FROM: usize = 256;

/// The content of `records.json`.
///
/// Compact in memory, because a pass holds one record per credential of
/// the account: the keys' user and storage ids and the records' e-mails
/// are shared text ([`Records::credential_or_insert_with`]), one allocation per user and per
/// storage rather than three per credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Format version, [`RECORDS_VERSION`].
    pub version: u32,
    /// Object-storage credentials, serialised by [`CredentialKey::to_string`].
    #[serde(default, deserialize_with = "credentials_in_order")]
    pub credentials: BTreeMap<CredentialKey, CredentialRecord>,
    /// The account's OAuth client secret, once seen.
    #[serde(default)]
    pub client_secret: Option<ClientSecretRecord>,
    /// Delivery state by a sink id chosen by the sink layer.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkRecord>,
    /// The shared text of the keys and e-mails.
    #[serde(skip)]
    names: Names,
}

/// One copy of each user id, storage id and e-mail the records hold, and
/// the number of credentials the map held when it was last packed
/// ([`Records::credential_or_insert_with`]).
#[derive(Clone, Default)]
struct Names {
    texts: HashSet<Arc<str>>,
    packed: usize,
}

impl Names {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.texts.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = text.into();
        self.texts.insert(shared.clone());
        shared
    }

    /// `key` with its ids shared.
    fn key(&mut self, key: &CredentialKey) -> CredentialKey {
        CredentialKey {
            user_id: self.get(&key.user_id),
            object_storage_id: self.get(&key.object_storage_id),
            credential_id: key.credential_id,
        }
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Names({})", self.texts.len())
    }
}

/// The names are a cache of the records' own text: equal records are
/// equal whatever they share.
impl PartialEq for Names {
    fn eq(&self, _: &Names) -> bool {
        true
    }
}

impl Eq for Names {}

impl Records {
    /// The record of `key`, created by `new` when there is none. The key
    /// and the e-mail of a new record share the text of the others.
    pub fn credential_or_insert_with(
        &mut self,
        key: &CredentialKey,
        new: impl FnOnce() -> CredentialRecord,
    ) -> &mut CredentialRecord {
        if !self.credentials.contains_key(key) {
            let key = self.names.key(key);
            let mut record = new();
            record.user_email = self.names.get(&record.user_email);
            self.credentials.insert(key.clone(), record);
            self.pack_if_grown();
            return self.credentials.get_mut(&key).expect("just inserted");
        }
        self.credentials.get_mut(key).expect("just checked")
    }

    /// A first pass inserts its records one by one in about the keys'
    /// order (users are listed by id), and a map grown that way leaves
    /// each node a little over half full: 30,000 records took 10.3 MB
    /// under heaptrack where full nodes take 5.6. Once the map has grown
    /// by a quarter since it was last packed, it is rebuilt with full
    /// nodes: `append` of two non-empty maps merges them into a new tree
    /// built from the sorted entries, freeing the old nodes as it goes
    /// (no second copy of the map is held). Growth by a quarter each time
    /// keeps the moves to a few times the map's final size over a pass.
    fn pack_if_grown(&mut self) {
        let len = self.credentials.len();
        if len < PACK_FROM || len < self.names.packed + self.names.packed / 4 {
            return;
        }
        let mut tail = match self.credentials.keys().nth(len / 2).cloned() {
            Some(middle) => self.credentials.split_off(&middle),
            None => return,
        };
        self.credentials.append(&mut tail);
        self.names.packed = len;
    }

    /// The records' shared copy of `text` (a user or storage id, an
    /// e-mail), for values that live beside them.
    pub fn shared_text(&mut self, text: &str) -> Arc<str> {
        self.names.get(text)
    }

    /// Takes the shared text of records read from a file (shared as they
    /// were read, [`credentials_in_order`]) into the names that new
    /// records share.
    fn remember_names(&mut self) {
        for (key, record) in &self.credentials {
            for text in [&key.user_id, &key.object_storage_id, &record.user_email] {
                self.names.texts.insert(text.clone());
            }
        }
        // Read from entries in order: packed already.
        self.names.packed = self.credentials.len();
    }
}

/// Reads the credentials' map sharing each user's and storage's ids and
/// each e-mail, and builds it from its entries at once: from entries in
/// order the map gets full nodes, where inserting them one by one (as a
/// plain map reads them) leaves each node a little over half full, and
/// the half-full map is never held. For 30,000 credentials the map takes
/// 5.6 MB instead of 10.3 under heaptrack.
fn credentials_in_order<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<CredentialKey, CredentialRecord>, D::Error> {
    struct InOrder;
    impl<'de> serde::de::Visitor<'de> for InOrder {
        type Value = BTreeMap<CredentialKey, CredentialRecord>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of credential key to record")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut names = Names::default();
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((key, mut record)) =
                map.next_entry::<CredentialKey, CredentialRecord>()?
            {
                record.user_email = names.get(&record.user_email);
                entries.push((names.key(&key), record));
            }
            // Sorted (and deduplicated) by `collect` whatever the file's
            // order; a file this build wrote is in order already.
            Ok(entries.into_iter().collect())
        }
    }
    d.deserialize_map(InOrder)
}

impl Default for Records {
    /// Empty records of the current version (a first run).
    fn default() -> Records {
        Records {
            version: RECORDS_VERSION,
            credentials: BTreeMap::new(),
            client_secret: None,
            sinks: BTreeMap::new(),
            names: Names::default(),
        }
    }
}

/// Identifies one S3 credential: `user_id/object_storage_id/credential_id`.
/// Serialised as that string. The ids are shared text ([`Records`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub user_id: Arc<str>,
    pub object_storage_id: Arc<str>,
    pub credential_id: i64,
}

impl CredentialKey {
    pub fn new(user_id: &str, object_storage_id: &str, credential_id: i64) -> CredentialKey {
        CredentialKey {
            user_id: user_id.into(),
            object_storage_id: object_storage_id.into(),
            credential_id,
        }
    }
}

impl fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.user_id, self.object_storage_id, self.credential_id
        )
    }
}

/// A string that is not `user_id/object_storage_id/credential_id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a credential key is \"user_id/object_storage_id/credential_id\" with a numeric credential id"
)]
pub struct ParseCredentialKeyError;

impl FromStr for CredentialKey {
    type Err = ParseCredentialKeyError;

    fn from_str(s: &str) -> Result<CredentialKey, ParseCredentialKeyError> {
        let mut parts = s.split('/');
        let (Some(user_id), Some(object_storage_id), Some(credential_id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseCredentialKeyError);
        };
        if user_id.is_empty() || object_storage_id.is_empty() {
            return Err(ParseCredentialKeyError);
        }
        Ok(CredentialKey::new(
            user_id,
            object_storage_id,
            credential_id.parse().map_err(|_| ParseCredentialKeyError)?,
        ))
    }
}

impl Serialize for CredentialKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CredentialKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<CredentialKey, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What is known about one object-storage credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// The owning user's e-mail, for humans reading status and audit.
    pub user_email: Arc<str>,
    /// When the daemon first saw the credential (the clock for "adopt").
    pub first_seen: DateTime<Utc>,
    /// When the daemon last rotated it; `None` if it never did.
    pub rotated_at: Option<DateTime<Utc>>,
    /// The rotation that produced the current secret (the API `x-request-id`).
    pub rotation_id: Option<Uuid>,
    /// The current access key (not a secret: it names the key pair).
    pub access_key: Box<str>,
    /// Fingerprint of the current secret key, to notice out-of-band changes.
    pub secret_fingerprint: Fingerprint,
    /// The storage's proof of the key of `rotation_id` (`verify = "s3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verification>,
}

/// How the storage answered a rotated key (`verify = "s3"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub at: DateTime<Utc>,
    /// The rotation whose key was probed.
    pub rotation_id: Uuid,
    /// Whether the storage accepted the key within `verify_timeout`.
    pub accepted: bool,
    /// The storage's last error code when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<str>>,
}

/// What is known about the account's OAuth client secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretRecord {
    pub first_seen: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub rotation_id: Option<Uuid>,
    pub fingerprint: Fingerprint,
}

/// Delivery state of one sink: converged when `delivered_version` equals the
/// version of the current content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkRecord {
    /// Opaque version (e.g. a fingerprint of the content) last delivered.
    pub delivered_version: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last failure's message, cleared by the sink layer on success.
    pub last_error: Option<String>,
    pub last_attempt: Option<DateTime<Utc>>,
}

impl StateDir {
    /// Reads `records.json`; a missing file means a first run (empty records).
    pub fn load_records(&self) -> Result<Records, StateError> {
        load(self.path())
    }

    /// Atomically replaces `records.json`.
    pub fn save_records(&self, records: &Records) -> Result<(), StateError> {
        let path = self.path().join(super::RECORDS_FILE);
        write_json_atomic(&path, records, 0o600)
    }
}

/// Reads `<dir>/records.json` without a [`StateDir`] (read-only views too).
pub(crate) fn load(dir: &Path) -> Result<Records, StateError> {
    let path = dir.join(super::RECORDS_FILE);
    let Some(mut records) = read_json::<Records>(&path)? else {
        return Ok(Records::default());
    };
    check_version(&path, records.version, RECORDS_VERSION)?;
    records.remember_names();
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CredentialKey {
        CredentialKey::new(
            "6f2a6f36-0d9e-4e0a-9f0c-6a1b2c3d4e5f",
            "a1b2c3d4-aaaa-bbbb-cccc-1234567890ab",
            12345,
        )
    }

    #[test]
    fn credential_key_round_trips_as_a_string() {
        let key = key();
        let text = key.to_string();
        assert_eq!(
            text,
            "6f2a6f36-0d9e-4e0a-9f0c-6a1b2c3d4e5f/a1b2c3d4-aaaa-bbbb-cccc-1234567890ab/12345"
        );
        assert_eq!(text.parse::<CredentialKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<CredentialKey>(&json).unwrap(), key);
    }

    #[test]
    fn credential_key_rejects_malformed_strings() {
        for bad in ["", "a/b", "a/b/c", "a/b/1/2", "/b/1", "a//1", "a/b/"] {
            assert_eq!(
                bad.parse::<CredentialKey>(),
                Err(ParseCredentialKeyError),
                "{bad}"
            );
        }
        assert_eq!("a/b/-1".parse::<CredentialKey>().unwrap().credential_id, -1);
    }

    #[test]
    fn records_share_the_text_of_their_keys_and_e_mails() {
        let record = |email: &str| CredentialRecord {
            user_email: email.into(),
            first_seen: Utc::now(),
            rotated_at: None,
            rotation_id: None,
            access_key: "AK".into(),
            secret_fingerprint: Fingerprint::repeated(3),
            verified: None,
        };
        let mut records = Records::default();
        for id in [1, 2] {
            let key = CredentialKey::new("u-1", "os-1", id);
            records.credential_or_insert_with(&key, || record("a@example.com"));
        }
        let text = serde_json::to_string(&records).unwrap();
        assert!(text.contains(r#""u-1/os-1/1":"#), "{text}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::state::RECORDS_FILE), &text).unwrap();
        for records in [records, load(dir.path()).unwrap()] {
            let keys: Vec<_> = records.credentials.keys().collect();
            assert_eq!(keys.len(), 2);
            assert!(Arc::ptr_eq(&keys[0].user_id, &keys[1].user_id));
            assert!(Arc::ptr_eq(
                &keys[0].object_storage_id,
                &keys[1].object_storage_id
            ));
            let emails: Vec<_> = records
                .credentials
                .values()
                .map(|r| &r.user_email)
                .collect();
            assert!(Arc::ptr_eq(emails[0], emails[1]));
        }
    }

    #[test]
    fn records_inserted_one_by_one_keep_every_entry_through_the_packs() {
        let record = |n: i64| CredentialRecord {
            user_email: format!("user{}@example.com", n % 7).into(),
            first_seen: Utc::now(),
            rotated_at: None,
            rotation_id: None,
            access_key: format!("AK{n}").into(),
            secret_fingerprint: Fingerprint::repeated(3),
            verified: None,
        };
        let key = |n: i64| CredentialKey::new(&format!("u-{:04}", n % 7), "os-1", n);
        let mut records = Records::default();
        let mut expected = BTreeMap::new();
        // Ascending ids for most, a few out of order (users answered late).
        let ids: Vec<i64> = (0..3_000).chain([-5, 1_500, 4_000, 7]).collect();
        for n in ids {
            let inserted = records.credential_or_insert_with(&key(n), || record(n));
            inserted.rotated_at = Some(Utc::now());
            expected
                .entry(key(n))
                .or_insert_with(|| record(n))
                .rotated_at = inserted.rotated_at;
        }
        assert_eq!(records.credentials.len(), 3_002);
        assert!(
            records.names.packed >= 3_002 * 4 / 5,
            "{}",
            records.names.packed
        );
        assert!(records.credentials.keys().eq(expected.keys()));
        for (k, v) in &expected {
            let got = &records.credentials[k];
            assert_eq!(
                (&got.access_key, got.rotated_at),
                (&v.access_key, v.rotated_at)
            );
        }
        // Still sharing the text after the packs.
        let emails: Vec<_> = records
            .credentials
            .values()
            .map(|r| &r.user_email)
            .collect();
        let last = emails.len() - 1;
        assert!(Arc::ptr_eq(emails[last], emails[last - 1]));
    }

    #[test]
    fn default_records_are_of_the_current_version() {
        assert_eq!(Records::default().version, RECORDS_VERSION);
    }
}
