//! The snapshot every sink renders: the current secret values after a run.

use super::{Kind, Selection};
use chrono::{DateTime, Utc};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::formats;

/// An object storage as its credentials name it: one allocation shared by
/// every credential of the storage ([`Interner`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Storage {
    pub id: Box<str>,
    pub name: Box<str>,
    pub region: Box<str>,
    /// [`region_code`](super::formats::region_code) of `region`, found once
    /// per storage rather than twice per credential in every render.
    pub region_code: &'static str,
    pub s3_url: Box<str>,
}

impl Storage {
    pub fn new(id: &str, name: &str, region: &str, s3_url: &str) -> Arc<Storage> {
        Arc::new(Storage {
            id: id.into(),
            name: name.into(),
            region: region.into(),
            region_code: super::formats::region_code(region),
            s3_url: s3_url.into(),
        })
    }
}

/// Shares the [`Storage`] of the credentials of a pass: one per storage
/// (an account has a handful) instead of one per credential.
#[derive(Debug, Default)]
pub struct Interner(Mutex<HashMap<Box<str>, Vec<Arc<Storage>>>>);

impl Interner {
    /// The shared storage of these fields.
    pub fn storage(&self, id: &str, name: &str, region: &str, s3_url: &str) -> Arc<Storage> {
        let mut by_id = self.0.lock().expect("interner lock");
        // Looked up by `&str` first: the id is copied only for a new
        // storage, not for each of its credentials.
        let same =
            |s: &&Arc<Storage>| &*s.name == name && &*s.region == region && &*s.s3_url == s3_url;
        if let Some(shared) = by_id
            .get(id)
            .and_then(|versions| versions.iter().find(same))
        {
            return shared.clone();
        }
        // A storage renamed while the pass runs keeps both versions.
        let shared = Storage::new(id, name, region, s3_url);
        by_id.entry(id.into()).or_default().push(shared.clone());
        shared
    }
}

/// One S3 credential as the API holds it now. The user's fields are
/// shared by the user's credentials, the storage by every credential of
/// the storage ([`Interner`]).
#[derive(Debug, Clone)]
pub struct SnapshotCredential {
    pub user_id: Arc<str>,
    pub user_email: Arc<str>,
    pub storage: Arc<Storage>,
    pub credential_id: i64,
    pub keys: Keys,
    /// When contabo-rotator last rotated it, if it did, to the second (as
    /// much as a sink shows).
    pub rotated_at: Option<DateTime<Utc>>,
    /// Set on the active keys of a twin (`[[object_storage.twins]]`).
    pub twin: Option<Arc<TwinTag>>,
}

/// What a twin's credential carries: the twin's name and its profile
/// name, the same whichever of the two users is active.
#[derive(Debug, PartialEq, Eq)]
pub struct TwinTag {
    pub name: Box<str>,
    /// `<twin>-<region code>`, plus `-<storage name>` when the twin holds
    /// two storages in one region.
    pub profile: Box<str>,
}

impl SnapshotCredential {
    pub fn access_key(&self) -> &str {
        self.keys.access_key()
    }
}

/// A credential's access key and secret key. `Debug` shows the access key
/// alone; the secret is read only through [`ExposeSecret`].
#[derive(Clone)]
pub struct Keys {
    access_key: Box<str>,
    secret_key: SecretString,
}

impl Keys {
    pub fn new(access_key: &str, secret_key: &str) -> Keys {
        Keys {
            access_key: access_key.into(),
            secret_key: SecretString::from(secret_key),
        }
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }
}

impl ExposeSecret<str> for Keys {
    fn expose_secret(&self) -> &str {
        self.secret_key.expose_secret()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key", &self.access_key())
            .field("secret_key", &"[REDACTED]")
            .finish()
    }
}

/// Credentials held together, normally one user's: one allocation for all
/// of them, shared by the pass's store, the sinks' snapshots and the writes
/// in flight. Per credential, a separate `Arc` cost 16 bytes of counts, a
/// glibc header and 8 bytes in every list of them.
pub type Group = Arc<[SnapshotCredential]>;

/// A group of `credentials`, built in place: collecting a filter into an
/// `Arc<[_]>` would go through a vector, and moving the values out of it
/// would leave copies of the secrets in freed memory.
pub fn group<'a>(credentials: impl IntoIterator<Item = &'a SnapshotCredential>) -> Group {
    let picked: Vec<&SnapshotCredential> = credentials.into_iter().collect();
    picked.iter().map(|&c| c.clone()).collect()
}

/// Everything a sink may deliver.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Present when the client secret is managed (`[client_secret] rotate`).
    pub client: Option<(String, SecretString)>,
    /// The credentials, by group ([`Group`]), ordered by user e-mail, then
    /// credential id. Shared: a sink's selection and the pass's store hold
    /// the same values, not copies.
    pub groups: Vec<Group>,
}

impl Snapshot {
    /// A snapshot of `credentials`, as one group.
    pub fn new(client: Option<(String, SecretString)>, credentials: &[SnapshotCredential]) -> Self {
        let groups = if credentials.is_empty() {
            Vec::new()
        } else {
            vec![group(credentials)]
        };
        Snapshot { client, groups }
    }

    /// Every credential, in order.
    pub fn credentials(&self) -> impl Iterator<Item = &SnapshotCredential> + '_ {
        self.groups.iter().flat_map(|g| g.iter())
    }

    /// How many credentials it holds.
    pub fn count(&self) -> usize {
        self.groups.iter().map(|g| g.len()).sum()
    }

    /// The credential of `key`, if the snapshot holds it.
    pub fn credential(&self, key: &crate::state::CredentialKey) -> Option<&SnapshotCredential> {
        self.credentials().find(|c| {
            *c.user_id == *key.user_id
                && *c.storage.id == *key.object_storage_id
                && c.credential_id == key.credential_id
        })
    }

    /// The part of the snapshot a sink's `select` asks for.
    /// The snapshot itself when it holds nothing else (as the pass hands an
    /// aggregate sink its selection already): at 30,000 credentials a copy
    /// is 0.24 MB per render.
    pub fn select(&self, selection: &Selection) -> std::borrow::Cow<'_, Snapshot> {
        let wants = |kind: Kind| selection.kinds.is_empty() || selection.kinds.contains(&kind);
        let selected = |c: &SnapshotCredential| selects_credential(selection, c);
        let whole = (self.client.is_none() || wants(Kind::ClientSecret))
            && if wants(Kind::ObjectStorage) {
                self.credentials().all(selected)
            } else {
                self.count() == 0
            };
        if whole {
            return std::borrow::Cow::Borrowed(self);
        }
        let client = if wants(Kind::ClientSecret) {
            self.client.clone()
        } else {
            None
        };
        let groups = if wants(Kind::ObjectStorage) {
            select_groups(&self.groups, selected)
        } else {
            Vec::new()
        };
        std::borrow::Cow::Owned(Snapshot { client, groups })
    }

    /// The snapshot in the shape of docs/design.md §3, for serialising without
    /// copying: the `json` format, and the context templates are rendered
    /// with. Serialising it exposes the secret values.
    pub fn view(&self) -> JsonView<'_> {
        JsonView(self)
    }

    /// The `json` sink format of docs/design.md §3. The returned text holds
    /// secrets, so it stays a [`SecretString`] until written.
    /// [`Snapshot::to_json`] written into `out` as it is produced.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, &self.view())?;
        out.write_all(b"\n")
    }

    pub fn to_json(&self) -> SecretString {
        // Sized up front (a credential takes about 450 bytes): growing a
        // buffer of megabytes by doubling holds up to three times its size.
        let mut bytes = Vec::with_capacity(128 + 512 * self.count());
        serde_json::to_writer_pretty(&mut bytes, &self.view()).expect("the snapshot serialises");
        bytes.push(b'\n');
        SecretString::from(String::from_utf8(bytes).expect("serde_json writes UTF-8"))
    }

    /// A [`Redactor`] for every secret value this snapshot holds, and every
    /// other secret the process knows ([`crate::known_secrets`]).
    pub fn redactor(&self) -> Redactor {
        let known = crate::known_secrets::all();
        let secrets = self
            .client
            .iter()
            .map(|(_, s)| s.expose_secret())
            .chain(self.credentials().map(|c| c.keys.expose_secret()))
            .chain(known.iter().map(|s| s.expose_secret()));
        let mut needles: Vec<Zeroizing<String>> = Vec::new();
        for value in secrets {
            if value.is_empty() {
                continue;
            }
            let json = serde_json::to_string(value).expect("strings serialise");
            let mut spellings = vec![
                value.to_owned(),
                json[1..json.len() - 1].to_owned(),
                unquote(&formats::shell_quote(value)),
            ];
            if let Ok(quoted) = formats::env_quote(value) {
                spellings.push(unquote(&quoted));
            }
            for spelling in spellings {
                if !spelling.is_empty() && !needles.iter().any(|n| **n == spelling) {
                    needles.push(Zeroizing::new(spelling));
                }
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }
}

/// Whether `selection` takes the S3 credential `c`: a twin's through
/// `twins`, any other user's through `users`.
pub fn selects_credential(selection: &Selection, c: &SnapshotCredential) -> bool {
    let held = match &c.twin {
        Some(twin) => selects_twin(selection, &twin.name),
        None => selects_user(selection, &c.user_email),
    };
    held && (selection.regions.is_empty()
        || selection
            .regions
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&c.storage.region)))
}

/// The credentials of `groups` that `keep` takes: a group taken whole is
/// shared, not copied.
pub fn select_groups<'a>(
    groups: impl IntoIterator<Item = &'a Group>,
    keep: impl Fn(&SnapshotCredential) -> bool,
) -> Vec<Group> {
    let groups = groups.into_iter();
    // Sized for every group, not grown by doubling from nothing (an
    // aggregate sink usually takes them all): at 10,000 users, 160 KB per
    // write in flight instead of up to 256.
    let mut picked = Vec::with_capacity(groups.size_hint().1.unwrap_or(0));
    for g in groups {
        if g.iter().all(&keep) {
            picked.push(g.clone());
        } else if g.iter().any(&keep) {
            picked.push(group(g.iter().filter(|c| keep(c))));
        }
    }
    if picked.len() < picked.capacity() / 2 {
        picked.shrink_to_fit();
    }
    picked
}

/// Whether `selection` takes S3 credentials of user `email` (in some
/// region), a user in no twin. A selection of twins without `users` takes
/// no such user.
pub fn selects_user(selection: &Selection, email: &str) -> bool {
    selection.includes_kind(Kind::ObjectStorage)
        && match &selection.users {
            Some(globs) => globs.is_match(email),
            None => selection.twins.is_empty(),
        }
}

/// Whether `selection` takes the active keys of twin `name`.
pub fn selects_twin(selection: &Selection, name: &str) -> bool {
    selection.includes_kind(Kind::ObjectStorage) && selection.twins.iter().any(|t| t == name)
}

/// A borrowed view of a [`Snapshot`] that serialises to the json format:
/// `{"client": {...}, "object_storage_credentials": [...]}`, streamed
/// without an intermediate JSON tree (a sweep of thousands of credentials
/// would otherwise hold the snapshot twice).
pub struct JsonView<'a>(&'a Snapshot);

#[derive(serde::Serialize)]
struct ClientView<'a> {
    client_id: &'a str,
    client_secret: &'a str,
}

#[derive(serde::Serialize)]
struct CredentialView<'a> {
    user_id: &'a str,
    user_email: &'a str,
    object_storage_id: &'a str,
    object_storage_name: &'a str,
    region: &'a str,
    s3_url: &'a str,
    credential_id: i64,
    access_key: &'a str,
    secret_key: &'a str,
    rotated_at: Option<crate::json_time::Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    twin: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'a str>,
}

impl serde::Serialize for JsonView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Credentials<'a>(&'a Snapshot);
        impl serde::Serialize for Credentials<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.count()))?;
                for c in self.0.credentials() {
                    seq.serialize_element(&CredentialView {
                        user_id: &c.user_id,
                        user_email: &c.user_email,
                        object_storage_id: &c.storage.id,
                        object_storage_name: &c.storage.name,
                        region: &c.storage.region,
                        s3_url: &c.storage.s3_url,
                        credential_id: c.credential_id,
                        access_key: c.access_key(),
                        secret_key: c.keys.expose_secret(),
                        rotated_at: c.rotated_at.map(crate::json_time::Rfc3339),
                        twin: c.twin.as_ref().map(|t| &*t.name),
                        profile: c.twin.as_ref().map(|t| &*t.profile),
                    })?;
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        if let Some((client_id, secret)) = &self.0.client {
            map.serialize_entry(
                "client",
                &ClientView {
                    client_id,
                    client_secret: secret.expose_secret(),
                },
            )?;
        }
        map.serialize_entry("object_storage_credentials", &Credentials(self.0))?;
        map.end()
    }
}

/// `'abc'` → `abc`: a quoted spelling without its outer quotes.
fn unquote(quoted: &str) -> String {
    quoted[1..quoted.len() - 1].to_owned()
}

/// Replaces every secret value of a snapshot by `[REDACTED]` in text that
/// is about to be logged (`on_change` output, template errors), including
/// the spellings the sinks give a value (JSON-escaped, env- and
/// shell-quoted), so that a hook printing the file it was handed leaks
/// nothing.
pub struct Redactor {
    /// Longest first.
    needles: Vec<Zeroizing<String>>,
}

impl Redactor {
    /// `text` with every secret spelling replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), "[REDACTED]");
            }
        }
        crate::known_secrets::redact_retired(&text)
    }
}

/// Text redaction, built when first needed: a sink write needs it only if
/// `on_change` prints or a render fails, and a redactor of thousands of
/// secrets is a copy of each in several spellings.
pub trait Redact: Sync {
    /// `text` with every secret spelling replaced.
    fn redact(&self, text: &str) -> String;
}

impl Redact for Redactor {
    fn redact(&self, text: &str) -> String {
        Redactor::redact(self, text)
    }
}

/// A [`Redactor`] for a snapshot's secrets, built on first use.
pub struct LazyRedactor<'a> {
    snapshot: &'a Snapshot,
    built: std::sync::OnceLock<Redactor>,
}

impl<'a> LazyRedactor<'a> {
    pub fn new(snapshot: &'a Snapshot) -> LazyRedactor<'a> {
        LazyRedactor {
            snapshot,
            built: std::sync::OnceLock::new(),
        }
    }
}

impl Redact for LazyRedactor<'_> {
    fn redact(&self, text: &str) -> String {
        self.built
            .get_or_init(|| self.snapshot.redactor())
            .redact(text)
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} spellings)", self.needles.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn keys_give_back_both_values() {
        let keys = Keys::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG");
        assert_eq!(keys.access_key(), "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(keys.clone().expose_secret(), "wJalrXUtnFEMI/K7MDENG");
    }

    #[test]
    fn keys_debug_shows_the_access_key_only() {
        let keys = Keys::new("AKVISIBLE", "hidden-secret-value");
        let shown = format!(
            "{keys:?} {:?}",
            credential("a@example.com", "EU", 1, "s3cr3t-value")
        );
        assert!(shown.contains("AKVISIBLE"), "{shown}");
        assert!(!shown.contains("hidden-secret-value"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    /// A credential for tests: access key `AK<id>`, the EU endpoint.
    pub(crate) fn credential(
        email: &str,
        region: &str,
        id: i64,
        secret: &str,
    ) -> SnapshotCredential {
        SnapshotCredential {
            user_id: format!("user-{email}").into(),
            user_email: email.into(),
            storage: Storage::new(
                &format!("storage-{id}"),
                &format!("Object Storage {id}"),
                region,
                "https://eu2.contabostorage.com",
            ),
            credential_id: id,
            keys: Keys::new(&format!("AK{id}"), secret),
            rotated_at: None,
            twin: None,
        }
    }

    #[test]
    fn redactor_hides_every_spelling_of_every_secret() {
        let snapshot = Snapshot::new(
            Some(("INT-1".into(), SecretString::from("client-s3cret"))),
            &[
                credential("a@example.com", "European Union", 1, "ab/c+d"),
                credential("b@example.com", "European Union", 2, "it's \"$x\"\n2"),
            ],
        );
        let redactor = snapshot.redactor();
        let text = format!(
            "{} {} {}",
            snapshot.to_json().expose_secret(),
            formats::env_quote("it's \"$x\"\n2").unwrap(),
            formats::shell_quote("it's \"$x\"\n2"),
        );
        let shown = redactor.redact(&text);
        for secret in ["client-s3cret", "ab/c+d", "it's", "$x", "\\\"", "ab\\/c"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("[REDACTED]") && shown.contains("AK1"),
            "{shown}"
        );
        assert!(!format!("{redactor:?}").contains("s3cret"));
    }

    #[test]
    fn a_selection_holding_everything_is_the_snapshot_itself() {
        let snapshot = Snapshot::new(
            Some(("INT-1".into(), SecretString::from("client-s3cret"))),
            &[
                credential("a@example.com", "European Union", 1, "s1"),
                credential("b@example.com", "United States (Central)", 2, "s2"),
            ],
        );
        let every = Selection {
            users: None,
            regions: Vec::new(),
            kinds: Vec::new(),
            twins: Vec::new(),
        };
        assert!(matches!(
            snapshot.select(&every),
            std::borrow::Cow::Borrowed(_)
        ));
        let eu = Selection {
            regions: vec!["european union".into()],
            ..every.clone()
        };
        let picked = snapshot.select(&eu);
        assert!(matches!(picked, std::borrow::Cow::Owned(_)));
        let ids: Vec<i64> = picked.credentials().map(|c| c.credential_id).collect();
        assert_eq!((ids, picked.client.is_some()), (vec![1], true));
        // What was picked is whole for the same selection.
        assert!(matches!(picked.select(&eu), std::borrow::Cow::Borrowed(_)));
        let s3_only = Selection {
            kinds: vec![Kind::ObjectStorage],
            ..every
        };
        let picked = snapshot.select(&s3_only);
        assert!(picked.client.is_none() && picked.count() == 2);
    }
}
