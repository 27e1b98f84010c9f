//! The rotation records: what the daemon knows about each secret it
//! manages and what each sink last received, in the `credentials`,
//! `client_secret` and `sinks` tables of `state.db`.
//!
//! The Contabo API gives no timestamps, so these records are the only source
//! of "when was this rotated". They hold identifiers, times and
//! [`Fingerprint`]s, never a secret value.
//!
//! Two types for two ways of reading: [`Records`] is a pass's, which reads
//! a user's records when it reaches that user and writes what it changed
//! in one transaction ([`StateDir::save_records`]); [`AllRecords`] holds
//! every record, for `status`, `list` and the metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::db::{parsed, Db};
use super::{Fingerprint, StateDir, StateError};

/// A credential's id and storage id, and when it was last rotated.
pub type RotationTime = (i64, Arc<str>, Option<DateTime<Utc>>);

/// The records as a pass uses them: the credentials of the users it has
/// reached since the last save are in memory, the rest are read from the
/// database when asked for. The client secret's and the sinks' records
/// (a few) are read at open.
#[derive(Debug, Default)]
pub struct Records {
    /// The records of the users in `loaded`, and new ones.
    credentials: BTreeMap<CredentialKey, CredentialRecord>,
    /// The users whose stored records are in `credentials`.
    loaded: BTreeSet<Arc<str>>,
    /// The account's OAuth client secret, once seen.
    pub client_secret: Option<ClientSecretRecord>,
    /// Delivery state by a sink id chosen by the sink layer.
    pub sinks: BTreeMap<String, SinkRecord>,
    /// `None`: records held in memory only (tests).
    db: Option<Db>,
    /// The first failure to read a user's records: the records of that
    /// user in memory are then not what is stored, so saves refuse rather
    /// than overwrite the stored ones with fresh ones.
    failed: Option<String>,
}

/// Every record at once, for `status`, `list` and the metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AllRecords {
    pub credentials: BTreeMap<CredentialKey, CredentialRecord>,
    pub client_secret: Option<ClientSecretRecord>,
    pub sinks: BTreeMap<String, SinkRecord>,
}

impl AllRecords {
    /// The record of `key`.
    pub fn get(&self, key: &CredentialKey) -> Option<&CredentialRecord> {
        self.credentials.get(key)
    }

    /// Every credential's record in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&CredentialKey, &CredentialRecord)> {
        self.credentials.iter()
    }
}

impl Records {
    /// The record of `key`, created by `new` when there is none. The key's
    /// user id is kept as given (the pass's copy, shared with the caller).
    pub fn credential_or_insert_with(
        &mut self,
        key: &CredentialKey,
        new: impl FnOnce() -> CredentialRecord,
    ) -> &mut CredentialRecord {
        self.read_user(&key.user_id);
        self.credentials.entry(key.clone()).or_insert_with(new)
    }

    /// The record of `key`, read from the database first when its user's
    /// records are not in memory.
    pub fn credential(&mut self, key: &CredentialKey) -> Option<&CredentialRecord> {
        self.read_user(&key.user_id);
        self.credentials.get(key)
    }

    /// [`Records::credential`], to change it.
    pub fn credential_mut(&mut self, key: &CredentialKey) -> Option<&mut CredentialRecord> {
        self.read_user(&key.user_id);
        self.credentials.get_mut(key)
    }

    /// Sets the record of `key`.
    pub fn insert(&mut self, key: &CredentialKey, record: CredentialRecord) {
        self.read_user(&key.user_id);
        self.credentials.insert(key.clone(), record);
    }

    /// When each credential of `user` was last rotated, by credential id
    /// and storage, without keeping its records in memory when they are not
    /// there already: delivery's values need only this, for every user an
    /// aggregate sink holds, before the pass gets to them.
    pub fn rotation_times(&self, user: &str) -> Result<Vec<RotationTime>, StateError> {
        let db = match &self.db {
            Some(db) if !self.loaded.contains(user) => db,
            _ => {
                return Ok(self
                    .credentials
                    .range(CredentialKey::new(user, "", i64::MIN)..)
                    .take_while(|(k, _)| &*k.user_id == user)
                    .map(|(k, r)| (k.credential_id, k.object_storage_id.clone(), r.rotated_at))
                    .collect())
            }
        };
        db.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT credential_id, object_storage_id, rotated_at FROM credentials
                 WHERE user_id = ?1 ORDER BY object_storage_id, credential_id",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok((r.get(0)?, r.get::<_, String>(1)?.into(), r.get(2)?))
            })?;
            rows.collect()
        })
    }

    /// Calls `f` with every record in key order: those in memory, and the
    /// stored ones of the other users, read one row at a time.
    pub fn scan(
        &self,
        mut f: impl FnMut(&CredentialKey, &CredentialRecord),
    ) -> Result<(), StateError> {
        let Some(db) = &self.db else {
            self.credentials.iter().for_each(|(k, r)| f(k, r));
            return Ok(());
        };
        let mut memory = self.credentials.iter().peekable();
        db.read(|c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT} ORDER BY {ORDER}"))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let (key, record) = from_row(row)?;
                while let Some((k, r)) = memory.next_if(|(k, _)| **k < key) {
                    f(k, r);
                }
                if !self.loaded.contains(&key.user_id) {
                    f(&key, &record);
                }
            }
            Ok(())
        })?;
        memory.for_each(|(k, r)| f(k, r));
        Ok(())
    }

    /// Reads the stored records of `user` into memory, once until the
    /// next save. Their keys take the caller's copy of the user id. A
    /// failed read is kept for the next save to report.
    fn read_user(&mut self, user: &Arc<str>) {
        let Some(db) = &self.db else {
            return;
        };
        if self.loaded.contains(user) {
            return;
        }
        let read = db.read(|c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT} WHERE user_id = ?1"))?;
            let rows = stmt.query_map([&**user], from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        });
        match read {
            Ok(read) => {
                for (mut key, record) in read {
                    key.user_id = user.clone();
                    self.credentials.entry(key).or_insert(record);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "Could not read a user's records; they will not be saved in this pass.");
                self.failed
                    .get_or_insert_with(|| format!("a user's records could not be read: {err}"));
            }
        }
        self.loaded.insert(user.clone());
    }
}

/// The credentials' columns, in [`from_row`]'s order.
const SELECT: &str = "SELECT user_id, object_storage_id, credential_id, user_email, first_seen,
    rotated_at, rotation_id, access_key, secret_fingerprint, verified_at, verified_rotation_id,
    verified_accepted, verified_error FROM credentials";
/// [`CredentialKey`]'s order (SQLite compares text bytewise, as `str` does).
const ORDER: &str = "user_id, object_storage_id, credential_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(CredentialKey, CredentialRecord)> {
    let key = CredentialKey {
        user_id: r.get::<_, String>(0)?.into(),
        object_storage_id: r.get::<_, String>(1)?.into(),
        credential_id: r.get(2)?,
    };
    let uuid = |i: usize| -> rusqlite::Result<Option<Uuid>> {
        r.get::<_, Option<String>>(i)?
            .map(|t| parsed(i, &t))
            .transpose()
    };
    let verified = match r.get::<_, Option<DateTime<Utc>>>(9)? {
        None => None,
        Some(at) => Some(Verification {
            at,
            rotation_id: uuid(10)?.unwrap_or_default(),
            accepted: r.get::<_, Option<bool>>(11)?.unwrap_or(false),
            error: r.get::<_, Option<String>>(12)?.map(Into::into),
        }),
    };
    let record = CredentialRecord {
        user_email: r.get::<_, String>(3)?.into(),
        first_seen: r.get(4)?,
        rotated_at: r.get(5)?,
        rotation_id: uuid(6)?,
        access_key: r.get::<_, String>(7)?.into(),
        secret_fingerprint: parsed(8, &r.get::<_, String>(8)?)?,
        verified,
    };
    Ok((key, record))
}

/// Writes (inserts or replaces) one credential's record.
pub(crate) fn put_credential(
    tx: &Connection,
    key: &CredentialKey,
    r: &CredentialRecord,
) -> rusqlite::Result<()> {
    let v = r.verified.as_ref();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO credentials VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        &*key.user_id,
        &*key.object_storage_id,
        key.credential_id,
        &*r.user_email,
        r.first_seen,
        r.rotated_at,
        r.rotation_id.map(|id| id.to_string()),
        &*r.access_key,
        r.secret_fingerprint.to_string(),
        v.map(|v| v.at),
        v.map(|v| v.rotation_id.to_string()),
        v.map(|v| v.accepted),
        v.and_then(|v| v.error.as_deref()),
    ])?;
    Ok(())
}

/// Replaces the client secret's record and the sinks' records.
pub(crate) fn put_others(
    tx: &Connection,
    client_secret: Option<&ClientSecretRecord>,
    sinks: &BTreeMap<String, SinkRecord>,
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM client_secret", [])?;
    if let Some(c) = client_secret {
        tx.execute(
            "INSERT INTO client_secret VALUES (1, ?1, ?2, ?3, ?4)",
            params![
                c.first_seen,
                c.rotated_at,
                c.rotation_id.map(|id| id.to_string()),
                c.fingerprint.to_string()
            ],
        )?;
    }
    tx.execute("DELETE FROM sinks", [])?;
    let mut stmt = tx.prepare_cached("INSERT INTO sinks VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (id, s) in sinks {
        stmt.execute(params![
            id,
            s.delivered_version,
            s.delivered_at,
            s.last_error,
            s.last_attempt
        ])?;
    }
    Ok(())
}

/// The client secret's and the sinks' records.
type Others = (Option<ClientSecretRecord>, BTreeMap<String, SinkRecord>);

fn read_others(c: &Connection) -> rusqlite::Result<Others> {
    let mut stmt = c.prepare_cached(
        "SELECT first_seen, rotated_at, rotation_id, fingerprint FROM client_secret",
    )?;
    let mut rows = stmt.query([])?;
    let client_secret = match rows.next()? {
        None => None,
        Some(r) => Some(ClientSecretRecord {
            first_seen: r.get(0)?,
            rotated_at: r.get(1)?,
            rotation_id: r
                .get::<_, Option<String>>(2)?
                .map(|t| parsed(2, &t))
                .transpose()?,
            fingerprint: parsed(3, &r.get::<_, String>(3)?)?,
        }),
    };
    let mut stmt = c.prepare_cached(
        "SELECT sink_id, delivered_version, delivered_at, last_error, last_attempt FROM sinks",
    )?;
    let sinks = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                SinkRecord {
                    delivered_version: r.get(1)?,
                    delivered_at: r.get(2)?,
                    last_error: r.get(3)?,
                    last_attempt: r.get(4)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((client_secret, sinks))
}

/// Every record in `db` (read-only views).
pub(crate) fn load_all(db: &Db) -> Result<AllRecords, StateError> {
    db.read(|c| {
        let mut stmt = c.prepare(&format!("{SELECT} ORDER BY {ORDER}"))?;
        let credentials = stmt
            .query_map([], from_row)?
            .collect::<rusqlite::Result<_>>()?;
        let (client_secret, sinks) = read_others(c)?;
        Ok(AllRecords {
            credentials,
            client_secret,
            sinks,
        })
    })
}

impl StateDir {
    /// Every record at once.
    pub fn load_records(&self) -> Result<AllRecords, StateError> {
        load_all(&self.db)
    }

    /// The records for a pass: each user's are read when it is reached.
    pub fn open_records(&self) -> Result<Records, StateError> {
        let (client_secret, sinks) = self.db.read(read_others)?;
        Ok(Records {
            client_secret,
            sinks,
            db: Some(self.db.clone()),
            ..Records::default()
        })
    }

    /// Writes the records in memory in one transaction; the credentials'
    /// then leave memory (they are read again when asked for).
    pub fn save_records(&self, records: &mut Records) -> Result<(), StateError> {
        if let Some(failed) = &records.failed {
            let err = std::io::Error::other(format!("not saved: {failed}"));
            return Err(StateError::io("write", self.db.path(), err));
        }
        self.db.write(|tx| {
            for (key, record) in &records.credentials {
                put_credential(tx, key, record)?;
            }
            put_others(tx, records.client_secret.as_ref(), &records.sinks)
        })?;
        if records.db.is_some() {
            records.credentials = BTreeMap::new();
            records.loaded = BTreeSet::new();
        }
        Ok(())
    }
}

/// Identifies one S3 credential: `user_id/object_storage_id/credential_id`.
/// Serialised as that string (in intents and events).
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

    fn sample(user: &str, id: i64) -> (CredentialKey, CredentialRecord) {
        let key = CredentialKey::new(user, "os-1", id);
        let record = CredentialRecord {
            user_email: format!("{user}@example.com").into(),
            first_seen: Utc::now(),
            rotated_at: None,
            rotation_id: Some(Uuid::new_v4()),
            access_key: format!("AK{id}").into(),
            secret_fingerprint: Fingerprint::repeated(3),
            verified: (id % 2 == 0).then(|| Verification {
                at: Utc::now(),
                rotation_id: Uuid::new_v4(),
                accepted: false,
                error: Some("InvalidAccessKeyId".into()),
            }),
        };
        (key, record)
    }

    #[test]
    fn a_pass_reads_each_user_when_reached_and_saves_what_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut expected = BTreeMap::new();
        let mut records = state.open_records().unwrap();
        for user in ["u-3", "u-1", "u-2"] {
            for id in [2, 1] {
                let (k, r) = sample(user, id);
                records.insert(&k, r.clone());
                expected.insert(k, r);
            }
        }
        records
            .sinks
            .insert("file:/x".into(), SinkRecord::default());
        state.save_records(&mut records).unwrap();
        assert!(records.credentials.is_empty(), "saved records leave memory");
        assert_eq!(state.load_records().unwrap().credentials, expected);

        let mut records = state.open_records().unwrap();
        assert!(records.credentials.is_empty());
        assert_eq!(records.sinks.len(), 1);
        let times = records.rotation_times("u-2").unwrap();
        assert_eq!(times.len(), 2);
        assert!(records.credentials.is_empty(), "times are read, not kept");
        let (k21, _) = sample("u-2", 1);
        assert_eq!(records.credential(&k21), expected.get(&k21));
        assert_eq!(records.credentials.len(), 2, "one user's records read");
        assert!(records
            .credentials
            .keys()
            .all(|k| Arc::ptr_eq(&k.user_id, &k21.user_id)));
        let at = Some(Utc::now());
        records.credential_mut(&k21).unwrap().rotated_at = at;
        expected.get_mut(&k21).unwrap().rotated_at = at;
        assert!(records
            .rotation_times("u-2")
            .unwrap()
            .contains(&(1, "os-1".into(), at)));
        let (k0, r0) = sample("u-0", 7);
        records.insert(&k0, r0.clone());
        expected.insert(k0, r0);
        let mut scanned = Vec::new();
        records.scan(|k, _| scanned.push(k.clone())).unwrap();
        assert!(scanned.iter().eq(expected.keys()), "{scanned:?}");
        state.save_records(&mut records).unwrap();
        let all = state.load_records().unwrap();
        assert_eq!(all.credentials, expected);
        let (missing, _) = sample("u-9", 1);
        assert_eq!(state.open_records().unwrap().credential(&missing), None);
    }

    #[test]
    fn a_user_that_cannot_be_read_stops_the_saves() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut records = state.open_records().unwrap();
        let (k, r) = sample("u-1", 1);
        records.insert(&k, r.clone());
        state.save_records(&mut records).unwrap();
        // A value no build writes, put there behind the pass's back.
        state
            .db
            .write(|tx| tx.execute("UPDATE credentials SET secret_fingerprint = 'x'", []))
            .unwrap();
        let mut records = state.open_records().unwrap();
        assert_eq!(records.credential(&k), None);
        let err = state.save_records(&mut records).unwrap_err().to_string();
        assert!(err.contains("could not be read"), "{err}");
        assert!(err.contains("state.db"), "{err}");
    }
}
