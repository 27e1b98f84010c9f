//! The simulated account: object storages, users and their S3 credentials,
//! the OAuth2 client, the token store and the log of issued secrets.
//!
//! Everything is generated from one seeded RNG, and later keys, secrets and
//! tokens come from the same RNG, so a run with the same seed and the same
//! requests sees the same values. Secret values live in `SecretString`s.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};

use super::token::TokenStore;
use super::SimulatorOptions;

/// Static facts of one region.
#[derive(Debug)]
pub(super) struct Region {
    /// Long name used in responses and the `regionName` filter.
    pub name: &'static str,
    /// Short code accepted by the `region` filter of `/v1/object-storages`.
    pub code: &'static str,
    /// The region S3 requests to this storage are signed for (SigV4's
    /// credential scope), as the sinks write it.
    pub signing_region: &'static str,
    /// Tag in generated display names ("Object Storage EU 420").
    label: &'static str,
    data_center: &'static str,
    /// The real API returns s3Url with and without a scheme; so do we,
    /// unless the simulator serves S3 itself.
    s3_url: &'static str,
}

pub(super) const REGIONS: [Region; 3] = [
    Region {
        name: "European Union",
        code: "EU",
        signing_region: "eu",
        label: "EU",
        data_center: "European Union 2",
        s3_url: "https://eu2.contabostorage.com",
    },
    Region {
        name: "United States (Central)",
        code: "US-central",
        signing_region: "us-central",
        label: "US",
        data_center: "United States (Central) 1",
        s3_url: "usc1.contabostorage.com",
    },
    Region {
        name: "Asia (Singapore)",
        code: "SIN",
        signing_region: "sin",
        label: "SIN",
        data_center: "Asia (Singapore) 1",
        s3_url: "https://sin1.contabostorage.com",
    },
];

const FIRST_NAMES: [&str; 12] = [
    "Anna", "Lukas", "Sofia", "Jonas", "Mia", "Felix", "Emma", "Noah", "Lena", "Paul", "Clara",
    "Elias",
];
const LAST_NAMES: [&str; 12] = [
    "Müller", "Schmidt", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Smith", "Johnson",
    "Garcia", "Nguyen", "Tan",
];
/// Cycled by user index so `de` and `en-US` appear from two users on.
const LOCALES: [&str; 5] = ["de", "en-US", "en", "de-DE", "es"];

const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_KEY_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+";

/// One purchased object storage.
#[derive(Debug)]
pub(super) struct Storage {
    pub object_storage_id: String,
    pub display_name: String,
    pub region: &'static Region,
    pub s3_tenant_id: String,
    pub created_date: String,
    pub total_purchased_space_tb: f64,
    /// The simulator's own S3 endpoint for this region, or the region's
    /// public host when it serves none.
    pub s3_url: String,
}

impl Storage {
    pub(super) fn data_center(&self) -> &'static str {
        self.region.data_center
    }
}

/// One user of the account.
#[derive(Debug)]
pub(super) struct User {
    pub user_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub email_verified: bool,
    pub enabled: bool,
    pub totp: bool,
    pub locale: String,
    pub owner: bool,
    pub send_invoice_email: bool,
    /// Role ids as sent on create/update; responses list no role objects.
    pub roles: Vec<i64>,
    pub credentials: Vec<Credential>,
}

/// One S3 credential of a user for one storage.
#[derive(Debug)]
pub(super) struct Credential {
    pub credential_id: i64,
    pub object_storage_id: String,
    pub access_key: String,
    pub secret_key: SecretString,
    /// When a regenerate last replaced the pair (the S3 propagation fault
    /// counts from here).
    pub regenerated_at: Option<Instant>,
}

/// A key pair a regenerate replaced: dead at the storage, unless the
/// propagation fault keeps it alive for a while.
#[derive(Debug)]
pub(super) struct RetiredKey {
    pub credential_id: i64,
    pub object_storage_id: String,
    pub access_key: String,
    pub secret_key: SecretString,
    pub retired_at: Instant,
}

/// A validated `POST /v1/users` body.
#[derive(Debug)]
pub(super) struct NewUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub enabled: bool,
    pub totp: bool,
    pub locale: String,
    pub roles: Vec<i64>,
    pub send_invoice_email: bool,
}

/// A validated `PATCH /v1/users/{userId}` body; `None` keeps the value.
#[derive(Debug, Default)]
pub(super) struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub enabled: Option<bool>,
    pub totp: Option<bool>,
    pub locale: Option<String>,
    pub roles: Option<Vec<i64>>,
    pub send_invoice_email: Option<bool>,
}

/// Why a mutation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    NotFound,
    /// A user with this e-mail exists already.
    DuplicateEmail,
    /// The account owner cannot be deleted.
    OwnerUndeletable,
}

/// The whole mutable state, behind one mutex in `Shared`.
#[derive(Debug)]
pub(super) struct State {
    pub tenant_id: String,
    pub customer_id: String,
    pub client_id: String,
    /// `ClientResponse.id`, the client's internal UUID.
    pub client_uuid: String,
    pub client_secret: SecretString,
    pub password: SecretString,
    pub api_user_id: String,
    /// `iss` of issued tokens: the simulator's realm URL.
    pub issuer: String,
    pub shared_credentials: bool,
    pub page_size_cap: usize,
    pub unstable_order: bool,
    /// Shifts unordered lists (see `SimulatorOptions::unstable_order`).
    pub order_shift: std::sync::atomic::AtomicUsize,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub storages: Vec<Storage>,
    /// Users in creation order; the API user is first.
    pub users: Vec<User>,
    pub tokens: TokenStore,
    /// Pairs replaced by regenerates, oldest first.
    pub retired: Vec<RetiredKey>,
    next_credential_id: i64,
    rng: StdRng,
    /// Every secret value configured or issued, for leak tests.
    issued: Vec<SecretString>,
}

impl State {
    /// Builds the account described by `opts`; `s3_urls`, one per region
    /// of `REGIONS` when the simulator serves S3, become the storages'
    /// `s3Url`s.
    pub(super) fn generate(opts: &SimulatorOptions, issuer: String, s3_urls: &[String]) -> State {
        let customer_id = opts
            .client_id
            .split_once('-')
            .map(|(_, n)| n)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("10000001")
            .to_owned();
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let next_credential_id = rng.random_range(10_000..60_000);
        let mut st = State {
            tenant_id: "INT".to_owned(),
            customer_id,
            client_id: opts.client_id.clone(),
            client_uuid: String::new(),
            client_secret: opts.client_secret.clone(),
            password: opts.password.clone(),
            api_user_id: String::new(),
            issuer,
            shared_credentials: opts.shared_credentials,
            page_size_cap: opts.page_size_cap,
            unstable_order: opts.unstable_order,
            order_shift: Default::default(),
            access_token_ttl: opts.access_token_ttl,
            refresh_token_ttl: opts.refresh_token_ttl,
            storages: Vec::new(),
            users: Vec::new(),
            tokens: TokenStore::default(),
            retired: Vec::new(),
            next_credential_id,
            rng,
            issued: vec![opts.client_secret.clone(), opts.password.clone()],
        };
        st.client_uuid = st.uuid();
        for i in 0..opts.credentials_per_user {
            let storage = st.generate_storage(i, s3_urls);
            st.storages.push(storage);
        }
        for i in 0..opts.users.max(1) {
            let (first_name, last_name) = st.random_name();
            let new = NewUser {
                first_name,
                last_name,
                email: if i == 0 {
                    opts.username.clone()
                } else {
                    format!("user{i:03}@example.com")
                },
                enabled: true,
                totp: i != 0 && st.rng.random_bool(0.25),
                locale: LOCALES[i % LOCALES.len()].to_owned(),
                roles: Vec::new(),
                send_invoice_email: i == 0,
            };
            let id = st.insert_user(new, i == 0);
            if i == 0 {
                st.api_user_id = id;
            } else if let Some(u) = st.users.last_mut() {
                u.email_verified = st.rng.random_bool(0.75);
            }
        }
        st
    }

    fn generate_storage(&mut self, index: usize, s3_urls: &[String]) -> Storage {
        let region = &REGIONS[index % REGIONS.len()];
        let s3_url = s3_urls
            .get(index % REGIONS.len())
            .map_or_else(|| region.s3_url.to_owned(), Clone::clone);
        let number: u32 = self.rng.random_range(100..1000);
        let created = DateTime::<Utc>::from_timestamp(1_609_459_200, 0).unwrap_or_default()
            + chrono::Duration::milliseconds(self.rng.random_range(0..94_000_000_000));
        let sizes = [0.25, 0.5, 1.0, 2.0, 6.25];
        Storage {
            object_storage_id: self.uuid(),
            display_name: format!("Object Storage {} {number}", region.label),
            region,
            s3_tenant_id: self.uuid().replace('-', ""),
            created_date: created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            total_purchased_space_tb: sizes[self.rng.random_range(0..sizes.len())],
            s3_url,
        }
    }

    fn random_name(&mut self) -> (String, String) {
        let first = FIRST_NAMES[self.rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[self.rng.random_range(0..LAST_NAMES.len())];
        (first.to_owned(), last.to_owned())
    }

    /// Records a secret value for `issued_secrets`.
    pub(super) fn record_secret(&mut self, secret: &SecretString) {
        self.issued.push(secret.clone());
    }

    pub(super) fn issued_secrets(&self) -> &[SecretString] {
        &self.issued
    }

    /// A UUIDv4 string drawn from the seeded RNG.
    pub(super) fn uuid(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Random bytes from the seeded RNG (token signatures).
    pub(super) fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.random()).collect()
    }

    fn random_string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.rng.random_range(0..alphabet.len())]))
            .collect()
    }

    /// A fresh S3 key pair; the secret is recorded.
    fn new_key_pair(&mut self) -> (String, SecretString) {
        let access = self.random_string(ACCESS_KEY_ALPHABET, 20);
        let secret = SecretString::from(self.random_string(SECRET_KEY_ALPHABET, 40));
        self.record_secret(&secret);
        (access, secret)
    }

    /// Adds a user with one credential per storage and returns its id.
    fn insert_user(&mut self, new: NewUser, owner: bool) -> String {
        let user_id = self.uuid();
        let shared = self.shared_credentials.then(|| self.new_key_pair());
        let mut credentials = Vec::with_capacity(self.storages.len());
        for i in 0..self.storages.len() {
            let (access_key, secret_key) = match &shared {
                Some((a, s)) => (a.clone(), s.clone()),
                None => self.new_key_pair(),
            };
            self.next_credential_id += self.rng.random_range(1..=7);
            credentials.push(Credential {
                credential_id: self.next_credential_id,
                object_storage_id: self.storages[i].object_storage_id.clone(),
                access_key,
                secret_key,
                regenerated_at: None,
            });
        }
        self.users.push(User {
            user_id: user_id.clone(),
            first_name: new.first_name,
            last_name: new.last_name,
            email: new.email,
            email_verified: owner,
            enabled: new.enabled,
            totp: new.totp,
            locale: new.locale,
            owner,
            send_invoice_email: new.send_invoice_email,
            roles: new.roles,
            credentials,
        });
        user_id
    }

    pub(super) fn user(&self, user_id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.user_id == user_id)
    }

    fn user_mut(&mut self, user_id: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| u.user_id == user_id)
    }

    /// The user whose e-mail is `email`, compared case-insensitively.
    pub(super) fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    pub(super) fn storage(&self, object_storage_id: &str) -> Option<&Storage> {
        self.storages
            .iter()
            .find(|s| s.object_storage_id == object_storage_id)
    }

    /// `POST /v1/users`: refuses a duplicate e-mail.
    pub(super) fn create_user(&mut self, new: NewUser) -> Result<String, Refusal> {
        if self.user_by_email(&new.email).is_some() {
            return Err(Refusal::DuplicateEmail);
        }
        Ok(self.insert_user(new, false))
    }

    /// `PATCH /v1/users/{userId}`.
    pub(super) fn update_user(&mut self, user_id: &str, patch: UserPatch) -> Result<(), Refusal> {
        let user = self.user_mut(user_id).ok_or(Refusal::NotFound)?;
        if let Some(v) = patch.first_name {
            user.first_name = v;
        }
        if let Some(v) = patch.last_name {
            user.last_name = v;
        }
        if let Some(v) = patch.enabled {
            user.enabled = v;
        }
        if let Some(v) = patch.totp {
            user.totp = v;
        }
        if let Some(v) = patch.locale {
            user.locale = v;
        }
        if let Some(v) = patch.roles {
            user.roles = v;
        }
        if let Some(v) = patch.send_invoice_email {
            user.send_invoice_email = v;
        }
        Ok(())
    }

    /// `DELETE /v1/users/{userId}`: the user and its credentials go.
    pub(super) fn delete_user(&mut self, user_id: &str) -> Result<(), Refusal> {
        let idx = self
            .users
            .iter()
            .position(|u| u.user_id == user_id)
            .ok_or(Refusal::NotFound)?;
        if self.users[idx].owner {
            return Err(Refusal::OwnerUndeletable);
        }
        self.users.remove(idx);
        Ok(())
    }

    /// The credential at this path, if user, storage and id all match.
    pub(super) fn credential(
        &self,
        user_id: &str,
        object_storage_id: &str,
        credential_id: i64,
    ) -> Option<&Credential> {
        self.user(user_id)?
            .credentials
            .iter()
            .find(|c| c.credential_id == credential_id && c.object_storage_id == object_storage_id)
    }

    /// `PATCH …/credentials/{credentialId}`: new access and secret key. With
    /// shared credentials every credential of the user gets the new pair.
    /// The pair a regenerate last replaced for `credential_id`, if any (for
    /// the stale-read fault).
    pub(super) fn previous_pair(&self, credential_id: i64) -> Option<(&str, &SecretString)> {
        self.retired
            .iter()
            .rev()
            .find(|k| k.credential_id == credential_id)
            .map(|k| (k.access_key.as_str(), &k.secret_key))
    }

    pub(super) fn regenerate_credential(
        &mut self,
        user_id: &str,
        object_storage_id: &str,
        credential_id: i64,
    ) -> Result<(), Refusal> {
        if self
            .credential(user_id, object_storage_id, credential_id)
            .is_none()
        {
            return Err(Refusal::NotFound);
        }
        let (access, secret) = self.new_key_pair();
        let shared = self.shared_credentials;
        let now = Instant::now();
        let mut retired = Vec::new();
        let user = self.user_mut(user_id).ok_or(Refusal::NotFound)?;
        for c in &mut user.credentials {
            if shared || c.credential_id == credential_id {
                retired.push(RetiredKey {
                    credential_id: c.credential_id,
                    object_storage_id: c.object_storage_id.clone(),
                    access_key: std::mem::replace(&mut c.access_key, access.clone()),
                    secret_key: std::mem::replace(&mut c.secret_key, secret.clone()),
                    retired_at: now,
                });
                c.regenerated_at = Some(now);
            }
        }
        self.retired.extend(retired);
        Ok(())
    }

    /// `PUT /v1/users/client/secret`: a new UUIDv4 secret replaces the old.
    pub(super) fn rotate_client_secret(&mut self) -> SecretString {
        let secret = SecretString::from(self.uuid());
        self.record_secret(&secret);
        self.client_secret = secret.clone();
        secret
    }

    /// True when `candidate` is the current client secret.
    pub(super) fn client_secret_matches(&self, candidate: &str) -> bool {
        self.client_secret.expose_secret() == candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(opts: &SimulatorOptions) -> State {
        State::generate(opts, "http://sim/auth/realms/contabo".to_owned(), &[])
    }

    #[test]
    fn generation_is_deterministic_and_well_formed() {
        let opts = SimulatorOptions {
            users: 5,
            ..SimulatorOptions::default()
        };
        let a = state(&opts).snapshot();
        let b = state(&opts).snapshot();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.users.len(), 5);
        assert_eq!(a.users[0].email, opts.username);
        assert_eq!(a.users[1].email, "user001@example.com");
        let mut ids = Vec::new();
        for user in &a.users {
            assert!(uuid::Uuid::parse_str(&user.user_id).is_ok());
            assert_eq!(user.credentials.len(), 3);
            for c in &user.credentials {
                ids.push(c.credential_id);
                assert_eq!(c.access_key.len(), 20);
                assert!(c
                    .access_key
                    .bytes()
                    .all(|b| ACCESS_KEY_ALPHABET.contains(&b)));
                let secret = c.secret_key.expose_secret();
                assert_eq!(secret.len(), 40);
                assert!(secret.bytes().all(|b| SECRET_KEY_ALPHABET.contains(&b)));
            }
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "credential ids are unique");
        let regions: Vec<_> = a.users[0]
            .credentials
            .iter()
            .map(|c| c.region.as_str())
            .collect();
        assert_eq!(
            regions,
            [
                "European Union",
                "United States (Central)",
                "Asia (Singapore)"
            ]
        );
        let other = state(&SimulatorOptions {
            seed: 99,
            ..opts.clone()
        });
        assert_ne!(other.api_user_id, state(&opts).api_user_id);
    }

    #[test]
    fn duplicate_email_and_owner_deletion_are_refused() {
        let mut st = state(&SimulatorOptions::default());
        let new = |email: &str| NewUser {
            first_name: "A".into(),
            last_name: "B".into(),
            email: email.into(),
            enabled: true,
            totp: false,
            locale: "en".into(),
            roles: vec![],
            send_invoice_email: false,
        };
        assert_eq!(
            st.create_user(new("USER001@example.com")),
            Err(Refusal::DuplicateEmail)
        );
        let id = st.create_user(new("new@example.com")).unwrap();
        assert_eq!(st.user(&id).unwrap().credentials.len(), 3);
        let owner = st.api_user_id.clone();
        assert_eq!(st.delete_user(&owner), Err(Refusal::OwnerUndeletable));
        assert_eq!(st.delete_user(&id), Ok(()));
        assert_eq!(st.delete_user(&id), Err(Refusal::NotFound));
    }
}
