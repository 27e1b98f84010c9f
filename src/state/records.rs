//! `records.json`: what the daemon knows about each secret it manages and
//! what each sink last received.
//!
//! The Contabo API gives no timestamps, so these records are the only source
//! of "when was this rotated". They hold identifiers, times and
//! [`Fingerprint`]s, never a secret value.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use rustix::fs::OFlags;

use super::fs::{check_version, open_file, read_json, write_atomic_from};
use super::{Fingerprint, StateDir, StateError};
use crate::dirfd::Dir;

/// The `version` this build writes and reads.
pub const RECORDS_VERSION: u32 = 1;

/// Smaller maps are not packed: a few nodes' slack is not worth a rebuild.
const PACK_FROM: usize = 256;

/// The content of `records.json`.
///
/// Compact in memory, because a pass holds one record per credential of
/// the account: a key's user id and a record's e-mail are the caller's
/// copies (in a pass, the user list's, which the sinks' values share too),
/// and the storage ids are shared by the records
/// ([`Records::credential_or_insert_with`]): one allocation per user and
/// per storage rather than three per credential.
///
/// Read whole ([`StateDir::load_records`]) every record is in memory.
/// Opened for a pass ([`StateDir::open_records`]) only the users asked for
/// since the last save are: the others stay in the file and are read back
/// one user at a time ([`Records::credential`]), and a save merges what
/// changed into the file.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct Records {
    /// Format version, [`RECORDS_VERSION`].
    pub version: u32,
    /// Object-storage credentials, serialised by [`CredentialKey::to_string`].
    #[serde(default, deserialize_with = "credentials_in_order")]
    credentials: BTreeMap<CredentialKey, CredentialRecord>,
    /// The account's OAuth client secret, once seen.
    #[serde(default)]
    pub client_secret: Option<ClientSecretRecord>,
    /// Delivery state by a sink id chosen by the sink layer.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkRecord>,
    /// The shared storage ids.
    #[serde(skip)]
    names: Names,
    /// Opened for a pass: where the users not in memory are.
    #[serde(skip)]
    file: Option<OnDisk>,
}

/// The users whose records are in `records.json` and not in memory, each
/// with the span of its lines.
#[derive(Debug)]
struct OnDisk {
    path: PathBuf,
    /// `None` before the first save of a first run (no user is in it).
    file: Option<File>,
    users: BTreeMap<Arc<str>, Span>,
    /// The first failure to read a user back: the records then hold less
    /// than the file, so saves refuse rather than drop that user.
    failed: Option<String>,
}

/// A credential's id and storage id, and when it was last rotated.
pub type RotationTime = (i64, Arc<str>, Option<DateTime<Utc>>);

/// Each user's [`Span`] in the file, by user id.
type Users = BTreeMap<Arc<str>, Span>;

/// Where one user's entries are in the file: from the first key's quote to
/// the last record's closing brace, the entries separated by commas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    len: u64,
}

/// Equal records are equal wherever they are held.
impl PartialEq for OnDisk {
    fn eq(&self, other: &OnDisk) -> bool {
        self.users == other.users
    }
}

impl Eq for OnDisk {}

/// One copy of each text in a set: the storage ids the records hold (an
/// account has a few storages), or while a file is read, every id and
/// e-mail in it. Also the number of credentials the map held when it was
/// last packed ([`Records::credential_or_insert_with`]).
///
/// Not the users' ids and e-mails in a pass: a table of every user's
/// (0.56 MB at 10,000 users) would be held to the pass's end only to find
/// copies the callers already share.
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

    /// `key` with its storage id shared; the user id is the caller's.
    fn key(&mut self, key: &CredentialKey) -> CredentialKey {
        CredentialKey {
            user_id: key.user_id.clone(),
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
    /// The record of `key`, created by `new` when there is none. The
    /// key's storage id shares the text of the others; its user id and the
    /// record's e-mail are kept as given (pass copies shared with the
    /// caller's).
    pub fn credential_or_insert_with(
        &mut self,
        key: &CredentialKey,
        new: impl FnOnce() -> CredentialRecord,
    ) -> &mut CredentialRecord {
        self.read_user(&key.user_id);
        if !self.credentials.contains_key(key) {
            let key = self.names.key(key);
            self.credentials.insert(key.clone(), new());
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
    /// nodes ([`pack`]). Growth by a quarter each time keeps the moves to a
    /// few times the map's final size over a pass.
    fn pack_if_grown(&mut self) {
        let len = self.credentials.len();
        if len < PACK_FROM || len < self.names.packed + self.names.packed / 4 {
            return;
        }
        pack(&mut self.credentials);
        self.names.packed = len;
    }

    /// The record of `key`, read back from the file first when the records
    /// were opened for a pass and its user is not in memory.
    pub fn credential(&mut self, key: &CredentialKey) -> Option<&CredentialRecord> {
        self.read_user(&key.user_id);
        self.credentials.get(key)
    }

    /// [`Records::credential`], to change it.
    pub fn credential_mut(&mut self, key: &CredentialKey) -> Option<&mut CredentialRecord> {
        self.read_user(&key.user_id);
        self.credentials.get_mut(key)
    }

    /// When each credential of `user` was last rotated, by credential id
    /// and storage, read from the file without keeping its records in
    /// memory when they are not there already: delivery's values need only
    /// this, for every user an aggregate sink holds, before the pass gets
    /// to them.
    pub fn rotation_times(&self, user: &str) -> Result<Vec<RotationTime>, StateError> {
        let times = |(k, r): (&CredentialKey, &CredentialRecord)| {
            (k.credential_id, k.object_storage_id.clone(), r.rotated_at)
        };
        match self
            .file
            .as_ref()
            .and_then(|d| Some((d, *d.users.get(user)?)))
        {
            Some((disk, span)) => Ok(disk
                .read(span)
                .map_err(|e| StateError::io("read", &disk.path, e))?
                .iter()
                .map(times)
                .collect()),
            None => Ok(self
                .credentials
                .range(CredentialKey::new(user, "", i64::MIN)..)
                .take_while(|(k, _)| &*k.user_id == user)
                .map(times)
                .collect()),
        }
    }

    /// Sets the record of `key`.
    pub fn insert(&mut self, key: &CredentialKey, record: CredentialRecord) {
        self.read_user(&key.user_id);
        let key = self.names.key(key);
        self.credentials.insert(key, record);
        self.pack_if_grown();
    }

    /// The record of `key` among those in memory: all of them when read
    /// whole ([`StateDir::load_records`]), as `status` and `list` do.
    pub fn get(&self, key: &CredentialKey) -> Option<&CredentialRecord> {
        debug_assert!(self.file.is_none(), "records opened for a pass");
        self.credentials.get(key)
    }

    /// The records in memory in key order: all of them when read whole.
    pub fn iter(&self) -> impl Iterator<Item = (&CredentialKey, &CredentialRecord)> {
        debug_assert!(self.file.is_none(), "records opened for a pass");
        self.credentials.iter()
    }

    /// Calls `f` with every record in key order, those in memory and those
    /// still in the file (read one user at a time, never all at once).
    pub fn scan(
        &self,
        mut f: impl FnMut(&CredentialKey, &CredentialRecord),
    ) -> Result<(), StateError> {
        let Some(disk) = &self.file else {
            self.credentials.iter().for_each(|(k, r)| f(k, r));
            return Ok(());
        };
        let mut memory = self.credentials.iter().peekable();
        for (user, span) in &disk.users {
            while let Some((k, r)) = memory.next_if(|(k, _)| k.user_id < *user) {
                f(k, r);
            }
            let read = disk
                .read(*span)
                .map_err(|e| StateError::io("read", &disk.path, e))?;
            read.iter().for_each(|(k, r)| f(k, r));
        }
        memory.for_each(|(k, r)| f(k, r));
        Ok(())
    }

    /// Moves the records of `user` from the file into memory (opened for a
    /// pass), once. Their keys take the caller's copy of the user id, and
    /// the user's records one copy of an e-mail. A failed read is kept for
    /// the next save to report.
    fn read_user(&mut self, user: &Arc<str>) {
        let Some(disk) = &mut self.file else {
            return;
        };
        let Some(span) = disk.users.remove(&**user) else {
            return;
        };
        match disk.read(span) {
            Ok(read) => {
                let mut email: Option<Arc<str>> = None;
                for (mut key, mut record) in read {
                    match &email {
                        Some(shared) if *shared == record.user_email => {
                            record.user_email = shared.clone();
                        }
                        _ => email = Some(record.user_email.clone()),
                    }
                    if key.user_id == *user {
                        key.user_id = user.clone();
                    }
                    let key = self.names.key(&key);
                    self.credentials.insert(key, record);
                }
            }
            Err(err) => {
                tracing::error!(path = %disk.path.display(), error = %err, "Could not read a user's records back; records.json will not be saved in this pass.");
                disk.failed.get_or_insert_with(|| {
                    format!("a user's records could not be read back: {err}")
                });
            }
        }
    }

    /// A user id as the records' index of `records.json` holds it (a pass
    /// that read the file), else a new copy: the pass's user list keeps it,
    /// and the keys and values share it.
    pub fn user_id_text(&self, user_id: &str) -> Arc<str> {
        match self
            .file
            .as_ref()
            .and_then(|d| d.users.get_key_value(user_id))
        {
            Some((shared, _)) => shared.clone(),
            None => user_id.into(),
        }
    }

    /// Takes the storage ids of records read from a file (shared as they
    /// were read, [`credentials_in_order`]) into the names that new
    /// records share.
    fn remember_names(&mut self) {
        for key in self.credentials.keys() {
            self.names.texts.insert(key.object_storage_id.clone());
        }
        // Read from entries in order: packed already.
        self.names.packed = self.credentials.len();
    }
}

/// Rebuilds `map` with full nodes: `append` of two non-empty maps merges
/// them into a new tree built from the sorted entries, freeing the old
/// nodes as it goes (no second copy of the map is held). A map filled in
/// key order leaves each node a little over half full.
fn pack<K: Ord + Clone, V>(map: &mut BTreeMap<K, V>) {
    let Some(middle) = map.keys().nth(map.len() / 2).cloned() else {
        return;
    };
    let mut tail = map.split_off(&middle);
    map.append(&mut tail);
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
                let key = CredentialKey {
                    user_id: names.get(&key.user_id),
                    object_storage_id: names.get(&key.object_storage_id),
                    credential_id: key.credential_id,
                };
                entries.push((key, record));
            }
            // Sorted (and deduplicated) by `collect` whatever the file's
            // order; a file this build wrote is in order already.
            Ok(entries.into_iter().collect())
        }
    }
    d.deserialize_map(InOrder)
}

impl OnDisk {
    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no file"))?;
        file.read_exact_at(buf, at)
    }

    /// The records in `span` of the file.
    fn read(&self, span: Span) -> io::Result<BTreeMap<CredentialKey, CredentialRecord>> {
        let len = usize::try_from(span.len).map_err(io::Error::other)?;
        let mut text = vec![0; len + 2];
        text[0] = b'{';
        text[len + 1] = b'}';
        self.read_at(&mut text[1..=len], span.start)?;
        serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the entries at byte {} are not valid records (column {})",
                    span.start,
                    e.column()
                ),
            )
        })
    }
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
            file: None,
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
    /// Reads `records.json` whole; a missing file means a first run (empty
    /// records).
    pub fn load_records(&self) -> Result<Records, StateError> {
        load(self.handle())
    }

    /// Opens `records.json` for a pass: the records stay in the file until
    /// a user's are asked for. A file in another layout (an earlier build's,
    /// or edited by hand) is read whole and rewritten in this one first.
    pub fn open_records(&self) -> Result<Records, StateError> {
        let path = self.handle().shown(super::RECORDS_FILE.as_ref());
        let file = match open_file(self.handle(), super::RECORDS_FILE, OFlags::RDONLY, 0) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Records {
                    file: Some(OnDisk::new(path, None, BTreeMap::new())),
                    ..Records::default()
                })
            }
            Err(e) => return Err(StateError::io("read", &path, e)),
        };
        let scanned = scan_layout(&file).map_err(|e| StateError::io("read", &path, e))?;
        if let Some((mut records, users)) = scanned {
            check_version(&path, records.version, RECORDS_VERSION)?;
            records.file = Some(OnDisk::new(path, Some(file), users));
            return Ok(records);
        }
        let mut records = load(self.handle())?;
        records.file = Some(OnDisk::new(path, None, BTreeMap::new()));
        self.save_records(&mut records)?;
        Ok(records)
    }

    /// Atomically replaces `records.json`. Records opened for a pass are
    /// merged into the file and leave memory.
    pub fn save_records(&self, records: &mut Records) -> Result<(), StateError> {
        let path = self.handle().shown(super::RECORDS_FILE.as_ref());
        if let Some(failed) = records.file.as_ref().and_then(|d| d.failed.as_ref()) {
            let err = io::Error::other(format!("not rewritten: {failed}"));
            return Err(StateError::io("write", &path, err));
        }
        let mut users = BTreeMap::new();
        write_atomic_from(self.handle(), super::RECORDS_FILE, 0o600, |file| {
            let mut out = Counting {
                inner: io::BufWriter::with_capacity(64 * 1024, file),
                at: 0,
            };
            users = records.write(&mut out)?;
            out.flush()
        })?;
        if let Some(disk) = &mut records.file {
            let file = open_file(self.handle(), super::RECORDS_FILE, OFlags::RDONLY, 0)
                .map_err(|e| StateError::io("read", &path, e))?;
            // Filled in order: 0.61 MB at 10,000 users, 0.33 packed.
            pack(&mut users);
            *disk = OnDisk::new(path, Some(file), users);
            records.credentials = BTreeMap::new();
            records.names.packed = 0;
        }
        Ok(())
    }
}

impl OnDisk {
    fn new(path: PathBuf, file: Option<File>, users: BTreeMap<Arc<str>, Span>) -> OnDisk {
        OnDisk {
            path,
            file,
            users,
            failed: None,
        }
    }
}

/// Counts the bytes written through it (the users' spans).
struct Counting<W> {
    inner: W,
    at: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layout [`Records::write`] writes, line by line.
const HEAD: &str = "{\n";
const CREDENTIALS: &str = "  \"credentials\": {";
const INDENT: &str = "    ";

impl Records {
    /// Writes the file: one credential per line, in key order, so that a
    /// pass can read one user's lines back ([`scan_layout`]). The users
    /// still in the file are copied from it as they are. Returns each
    /// user's span.
    fn write<W: Write>(&self, out: &mut Counting<W>) -> io::Result<BTreeMap<Arc<str>, Span>> {
        write!(out, "{HEAD}  \"version\": {},\n{CREDENTIALS}", self.version)?;
        let mut users = BTreeMap::new();
        let mut first = true;
        // Before each entry; returns where the entry starts.
        let separate = |out: &mut Counting<W>, first: &mut bool| {
            let sep: &[u8] = if *first { b"\n" } else { b",\n" };
            *first = false;
            out.write_all(sep)?;
            out.write_all(INDENT.as_bytes())?;
            Ok::<u64, io::Error>(out.at)
        };
        let mut memory = self.credentials.iter().peekable();
        let on_disk = self.file.as_ref().map(|d| &d.users);
        let mut disk = on_disk.into_iter().flatten().peekable();
        let mut copy = Vec::new();
        loop {
            let from_memory = match (memory.peek(), disk.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some((user, _))) => k.user_id <= **user,
            };
            if from_memory {
                let user = memory.peek().expect("peeked").0.user_id.clone();
                // A user read back is no longer in the file's list.
                let mut start = None;
                while let Some((key, record)) = memory.next_if(|(k, _)| k.user_id == user) {
                    let at = separate(out, &mut first)?;
                    start.get_or_insert(at);
                    serde_json::to_writer(&mut *out, key)?;
                    out.write_all(b": ")?;
                    serde_json::to_writer(&mut *out, record)?;
                }
                let start = start.expect("one entry at least");
                users.insert(
                    user,
                    Span {
                        start,
                        len: out.at - start,
                    },
                );
            } else {
                let (user, span) = disk.next().expect("peeked");
                copy.resize(usize::try_from(span.len).map_err(io::Error::other)?, 0);
                let from = self.file.as_ref().expect("users on disk");
                from.read_at(&mut copy, span.start)?;
                let start = separate(out, &mut first)?;
                out.write_all(&copy)?;
                users.insert(
                    user.clone(),
                    Span {
                        start,
                        len: span.len,
                    },
                );
            }
        }
        out.write_all(if first { b"}" } else { b"\n  }" })?;
        out.write_all(b",\n  \"client_secret\": ")?;
        serde_json::to_writer(&mut *out, &self.client_secret)?;
        out.write_all(b",\n  \"sinks\": ")?;
        serde_json::to_writer(&mut *out, &self.sinks)?;
        out.write_all(b"\n}\n")?;
        Ok(users)
    }
}

/// Reads a file in [`Records::write`]'s layout without holding its
/// credentials: each line is parsed (and dropped) to check it, and the
/// users' spans are noted. `None` when the file is in another layout, or a
/// line does not parse or is out of order: the caller then reads it whole,
/// which names the problem.
fn scan_layout(file: &File) -> io::Result<Option<(Records, Users)>> {
    let mut reader = io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut at = 0u64;
    let mut next = |line: &mut Vec<u8>| -> io::Result<Option<u64>> {
        line.clear();
        let start = at;
        let n = reader.read_until(b'\n', line)?;
        at += n as u64;
        Ok((n > 0).then_some(start))
    };
    let mut rest = String::from("{\n");
    if next(&mut line)?.is_none() || line != HEAD.as_bytes() {
        return Ok(None);
    }
    // The version line, kept for the rest's parse.
    if next(&mut line)?.is_none() || !line.starts_with(b"  \"version\": ") {
        return Ok(None);
    }
    let Ok(version_line) = std::str::from_utf8(&line) else {
        return Ok(None);
    };
    rest.push_str(version_line);
    if next(&mut line)?.is_none() {
        return Ok(None);
    }
    let mut users: BTreeMap<Arc<str>, Span> = BTreeMap::new();
    if line != format!("{CREDENTIALS}}},\n").as_bytes() {
        if line != format!("{CREDENTIALS}\n").as_bytes() {
            return Ok(None);
        }
        let mut last: Option<CredentialKey> = None;
        // Whether the line before ended with a comma: every entry's but the
        // last's does (the file as a whole is then valid JSON).
        let mut comma = false;
        loop {
            let Some(start) = next(&mut line)? else {
                return Ok(None);
            };
            if line == b"  },\n" {
                if comma || last.is_none() {
                    return Ok(None);
                }
                break;
            }
            if last.is_some() && !comma {
                return Ok(None);
            }
            let Some(entry) = line.strip_prefix(INDENT.as_bytes()) else {
                return Ok(None);
            };
            let entry = entry.strip_suffix(b"\n").unwrap_or(entry);
            let (entry, ends) = match entry.strip_suffix(b",") {
                Some(entry) => (entry, true),
                None => (entry, false),
            };
            comma = ends;
            let mut text = Vec::with_capacity(entry.len() + 2);
            text.push(b'{');
            text.extend_from_slice(entry);
            text.push(b'}');
            let Ok(one) =
                serde_json::from_slice::<BTreeMap<CredentialKey, CredentialRecord>>(&text)
            else {
                return Ok(None);
            };
            if one.len() != 1 {
                return Ok(None);
            }
            let Some((key, _)) = one.into_iter().next() else {
                return Ok(None);
            };
            if last.as_ref().is_some_and(|last| *last >= key) {
                return Ok(None);
            }
            let start = start + INDENT.len() as u64;
            let end = start + entry.len() as u64;
            match users.get_mut(&*key.user_id) {
                Some(span) => span.len = end - span.start,
                None => {
                    users.insert(
                        key.user_id.clone(),
                        Span {
                            start,
                            len: end - start,
                        },
                    );
                }
            }
            last = Some(key);
        }
    }
    rest.push_str("  \"credentials\": {},\n");
    loop {
        if next(&mut line)?.is_none() {
            break;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            return Ok(None);
        };
        rest.push_str(text);
    }
    let Ok(records) = serde_json::from_str::<Records>(&rest) else {
        return Ok(None);
    };
    pack(&mut users);
    Ok(Some((records, users)))
}

/// Reads `<dir>/records.json` whole without a [`StateDir`] (read-only views
/// too).
pub(crate) fn load(dir: &Dir) -> Result<Records, StateError> {
    let path = dir.shown(super::RECORDS_FILE.as_ref());
    let Some(mut records) = read_json::<Records>(dir, super::RECORDS_FILE)? else {
        return Ok(Records::default());
    };
    check_version(&path, records.version, RECORDS_VERSION)?;
    records.remember_names();
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `records` are saved as.
    fn written(records: &Records) -> String {
        let mut out = Counting {
            inner: Vec::new(),
            at: 0,
        };
        records.write(&mut out).unwrap();
        String::from_utf8(out.inner).unwrap()
    }

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
    fn records_keep_the_callers_ids_and_e_mails_and_share_storage_ids() {
        let record = |email: &Arc<str>| CredentialRecord {
            user_email: email.clone(),
            first_seen: Utc::now(),
            rotated_at: None,
            rotation_id: None,
            access_key: "AK".into(),
            secret_fingerprint: Fingerprint::repeated(3),
            verified: None,
        };
        let (user, email): (Arc<str>, Arc<str>) = ("u-1".into(), "a@example.com".into());
        let mut records = Records::default();
        for id in [1, 2] {
            // A new copy of the storage id each time, as a listing gives.
            let key = CredentialKey {
                user_id: user.clone(),
                ..CredentialKey::new("u-1", "os-1", id)
            };
            records.credential_or_insert_with(&key, || record(&email));
        }
        assert!(records
            .credentials
            .keys()
            .all(|k| Arc::ptr_eq(&k.user_id, &user)));
        assert!(records
            .credentials
            .values()
            .all(|r| Arc::ptr_eq(&r.user_email, &email)));
        let text = written(&records);
        assert!(text.contains(r#""u-1/os-1/1": "#), "{text}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::state::RECORDS_FILE), &text).unwrap();
        let handle = super::super::fs::open_dir(dir.path(), false).unwrap();
        for records in [records, load(&handle).unwrap()] {
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
        // Still sharing the storage ids after the packs.
        let keys: Vec<_> = records.credentials.keys().collect();
        let last = keys.len() - 1;
        assert!(Arc::ptr_eq(
            &keys[last].object_storage_id,
            &keys[0].object_storage_id
        ));
    }

    #[test]
    fn default_records_are_of_the_current_version() {
        assert_eq!(Records::default().version, RECORDS_VERSION);
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
            verified: None,
        };
        (key, record)
    }

    /// Every record, read whole from the file.
    fn on_file(state: &StateDir) -> BTreeMap<CredentialKey, CredentialRecord> {
        let mut all = BTreeMap::new();
        let whole = state.load_records().unwrap();
        whole
            .scan(|k, r| {
                all.insert(k.clone(), r.clone());
            })
            .unwrap();
        all
    }

    #[test]
    fn opened_records_read_users_back_and_merge_what_changed_into_the_file() {
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
        records.client_secret = None;
        state.save_records(&mut records).unwrap();
        assert!(records.credentials.is_empty(), "saved records leave memory");
        assert_eq!(on_file(&state), expected);
        let text = std::fs::read_to_string(dir.path().join(crate::state::RECORDS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 7 + expected.len(), "{text}");

        // Opened again: nothing in memory, each user read back when asked.
        let mut records = state.open_records().unwrap();
        assert!(records.credentials.is_empty());
        let times = records.rotation_times("u-2").unwrap();
        assert_eq!(times.len(), 2);
        assert!(records.credentials.is_empty(), "times are read, not kept");
        let (k21, _) = sample("u-2", 1);
        assert_eq!(records.credential(&k21), expected.get(&k21));
        assert_eq!(records.credentials.len(), 2, "one user's records read");
        // They take the asker's copy of the user id, and one of the e-mail.
        let read: Vec<_> = records.credentials.iter().collect();
        assert!(read
            .iter()
            .all(|(k, _)| Arc::ptr_eq(&k.user_id, &k21.user_id)));
        assert!(Arc::ptr_eq(&read[0].1.user_email, &read[1].1.user_email));
        // A user in the file's index gets the index's copy of its id.
        let index = |r: &Records, user| r.user_id_text(user);
        assert!(Arc::ptr_eq(
            &index(&records, "u-3"),
            &index(&records, "u-3")
        ));
        assert!(!Arc::ptr_eq(
            &index(&records, "u-8"),
            &index(&records, "u-8")
        ));
        records.credential_mut(&k21).unwrap().rotated_at = Some(Utc::now());
        let times = records.rotation_times("u-2").unwrap();
        assert!(times.contains(&(
            1,
            "os-1".into(),
            records.credential(&k21).unwrap().rotated_at
        )));
        expected.get_mut(&k21).unwrap().rotated_at = records.credential(&k21).unwrap().rotated_at;
        let (k0, r0) = sample("u-0", 7);
        records.insert(&k0, r0.clone());
        expected.insert(k0, r0);
        let (k4, r4) = sample("u-4", 1);
        records.insert(&k4, r4.clone());
        expected.insert(k4, r4);
        let mut scanned = Vec::new();
        records.scan(|k, _| scanned.push(k.clone())).unwrap();
        assert!(scanned.iter().eq(expected.keys()), "{scanned:?}");
        state.save_records(&mut records).unwrap();
        assert_eq!(on_file(&state), expected);

        // Users copied from the file are read back as well as those written.
        let mut records = state.open_records().unwrap();
        for (k, r) in &expected {
            assert_eq!(records.credential(k), Some(r), "{k}");
        }
        let (missing, _) = sample("u-9", 1);
        assert_eq!(records.credential(&missing), None);
    }

    #[test]
    fn an_earlier_layout_is_read_whole_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let path = dir.path().join(crate::state::RECORDS_FILE);
        let (k, r) = sample("u-1", 1);
        let pretty = serde_json::to_string_pretty(&serde_json::json!({
            "version": RECORDS_VERSION,
            "credentials": { k.to_string(): r },
            "client_secret": null,
            "sinks": {},
        }))
        .unwrap();
        std::fs::write(&path, &pretty).unwrap();
        let mut records = state.open_records().unwrap();
        assert_ne!(std::fs::read_to_string(&path).unwrap(), pretty, "rewritten");
        assert_eq!(records.credential(&k), Some(&r));
        assert_eq!(on_file(&state), BTreeMap::from([(k, r)]));
    }

    #[test]
    fn a_bad_line_is_named_and_the_file_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let path = dir.path().join(crate::state::RECORDS_FILE);
        let mut records = state.open_records().unwrap();
        for user in ["u-1", "u-2"] {
            let (k, r) = sample(user, 1);
            records.insert(&k, r);
        }
        state.save_records(&mut records).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        // Out of order, then not JSON.
        let lines: Vec<&str> = good.lines().collect();
        let (first, second) = (lines[3].trim_end_matches(','), format!("{},", lines[4]));
        let swapped = [&lines[..3], &[second.as_str(), first], &lines[5..]]
            .concat()
            .join("\n");
        let broken = good.replace("\"AK1\"", "AK1");
        // Each line parses, but the file is not JSON: read whole, which
        // names the line.
        let no_comma = good.replacen("},\n", "}\n", 1);
        std::fs::write(&path, &no_comma).unwrap();
        let err = state.open_records().unwrap_err().to_string();
        assert!(
            err.contains("records.json") && err.contains("line 5"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), no_comma);
        // Out of order is still valid JSON: read whole and rewritten.
        std::fs::write(&path, &swapped).unwrap();
        state.open_records().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        std::fs::write(&path, &broken).unwrap();
        let err = state.open_records().unwrap_err().to_string();
        assert!(
            err.contains("records.json") && err.contains("line 4"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    }

    #[test]
    fn a_user_that_cannot_be_read_back_stops_the_saves() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let path = dir.path().join(crate::state::RECORDS_FILE);
        let mut records = state.open_records().unwrap();
        let (k, r) = sample("u-1", 1);
        records.insert(&k, r);
        state.save_records(&mut records).unwrap();
        let mut records = state.open_records().unwrap();
        // The same file, cut short behind the pass's back.
        let saved = std::fs::read(&path).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(20)
            .unwrap();
        assert_eq!(records.credential(&k), None);
        let err = state.save_records(&mut records).unwrap_err().to_string();
        assert!(
            err.contains("records.json") && err.contains("could not be read back"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), saved[..20]);
    }
}
