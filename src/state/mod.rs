//! The state directory: the daemon's durable memory.
//!
//! ```text
//! <dir>/                   mode 0700 when created here
//!   lock                   exclusive lock for the process lifetime; holds its pid
//!   state.db               SQLite (WAL, and its -wal and -shm files): the
//!                          rotation and delivery records, the journal of
//!                          rotations in flight, the webhook outbox and the
//!                          run outcomes (no secrets)
//!   audit.log              append-only JSON lines
//!   client-secret.json     the rotated client secret (0600; the only secret here)
//!   fingerprint.key        32 random bytes (0600): the HMAC key of fingerprints
//! ```
//!
//! The database's transactions, and [`fs::write_atomic`] for the other
//! files, mean a crash at any instant leaves the old or the new version. A
//! state file that cannot be read is an error ([`StateError::Corrupt`]),
//! never a silent reset to empty: an empty record set would make every
//! credential look new. A missing database is a first run, or the first
//! start after an upgrade from the JSON files ([`legacy`]).
//!
//! [`StateDir::open`] is for the process that works on the directory (it
//! takes the lock); [`StateDir::open_read_only`] is for `status`, which must
//! neither wait for nor disturb a running daemon.

mod audit;
mod db;
mod error;
mod fingerprint;
mod fs;
mod journal;
mod legacy;
mod outbox;
mod records;
mod runs;
mod secret_store;
mod twins;

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::dirfd::Dir;

use secrecy::ExposeSecret;

pub use audit::{AuditEvent, AuditKind, AuditLines};
pub use error::StateError;
pub use fingerprint::{Fingerprint, FingerprintWriter};
pub use journal::{Intent, IntentKind, Journal, JournalOp, JOURNAL_VERSION};
pub use outbox::{EventData, Outbox, OutboxEvent, OutboxQueue, SecretSource, OUTBOX_VERSION};
pub use records::{
    AllRecords, ClientSecretRecord, CredentialKey, CredentialRecord, ParseCredentialKeyError,
    Records, SinkRecord, Verification,
};
pub use runs::{LastFailures, RunHistory, RUNS_VERSION};
pub use secret_store::{login_secrets, StoredClientSecret};
pub use twins::{PendingSwitch, TwinState, TwinUser};

use fingerprint::FingerprintKey;

use db::Db;

const LOCK_FILE: &str = "lock";
const AUDIT_FILE: &str = "audit.log";
const CLIENT_SECRET_FILE: &str = "client-secret.json";
const KEY_FILE: &str = "fingerprint.key";

/// An open, locked state directory. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateDir {
    dir: Dir,
    /// Held only for its lock, which lasts as long as this handle is open.
    _lock: File,
    /// Keys every [`Fingerprint`] made through [`StateDir::fingerprint`].
    key: FingerprintKey,
    db: Db,
    /// The outbox as stored, once read ([`StateDir::save_outbox`]).
    outbox: std::sync::Mutex<Option<Outbox>>,
}

/// A snapshot of the state read without the lock, for `status`.
#[derive(Debug)]
pub struct StateView {
    /// The directory that was read.
    pub dir: PathBuf,
    /// False if the directory does not exist yet (the daemon never ran);
    /// records, journal and outbox are then empty.
    pub exists: bool,
    pub records: AllRecords,
    pub journal: Journal,
    /// Webhook events not yet delivered.
    pub outbox: Outbox,
    /// How the last runs ended.
    pub runs: RunHistory,
    /// Twin users' states, by name.
    pub twins: Vec<TwinState>,
}

impl StateDir {
    /// Opens `dir` for exclusive use: creates it (mode 0700, parents too) if
    /// missing, takes the lock, removes temp files left by a crash, ends a
    /// torn audit line, loads (or creates) the fingerprint key and opens
    /// (or creates) the database, importing the JSON files of an earlier
    /// version first ([`legacy`]).
    ///
    /// Fails with [`StateError::Locked`] if another process holds the lock.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        let handle = fs::open_dir(dir, true)?;
        let lock = fs::lock(&handle)?;
        let removed = fs::remove_all_temp_files(&handle)?;
        if removed > 0 {
            tracing::info!(
                dir = %dir.display(),
                removed,
                "Removed temp files left by an interrupted write."
            );
        }
        audit::repair_tail(&handle)?;
        let key = FingerprintKey::load_or_create(&handle)?;
        // A new database takes in the files of an earlier version before
        // it is put in place; the files are set aside after.
        let db = Db::open(&handle, |db| {
            if legacy::present(&handle)?.is_empty() {
                return Ok(());
            }
            let read = legacy::read(&handle)?;
            db.write(|tx| legacy::write(tx, &read))
        })?;
        set_aside_imported(&handle, &db)?;
        Ok(StateDir {
            dir: handle,
            _lock: lock,
            key,
            db,
            outbox: std::sync::Mutex::new(None),
        })
    }

    /// Reads the records and the journal without taking the lock and without
    /// writing anything. A missing directory is an empty view; one that is
    /// not closed to other users is refused, as [`StateDir::open`] does.
    pub fn open_read_only(dir: &Path) -> Result<StateView, StateError> {
        let Some(handle) = Self::open_existing(dir)? else {
            return Ok(StateView {
                dir: dir.to_path_buf(),
                exists: false,
                records: AllRecords::default(),
                journal: Journal::default(),
                outbox: Outbox::default(),
                runs: RunHistory::default(),
                twins: Vec::new(),
            });
        };
        let db = match Db::open_read_only(&handle)? {
            Some(db) => db,
            // Not imported yet (the daemon of this version never started
            // here): the earlier version's files, read as the import would.
            None => {
                let db = Db::in_memory(&handle.shown(std::ffi::OsStr::new(db::DB_FILE)))?;
                let read = legacy::read(&handle)?;
                db.write(|tx| legacy::write(tx, &read))?;
                db
            }
        };
        Ok(StateView {
            dir: dir.to_path_buf(),
            exists: true,
            records: records::load_all(&db)?,
            journal: journal::load(&db)?,
            outbox: outbox::load(&db)?,
            // Only what the metrics and `status` show: a damaged row is
            // reported and read as empty, never a reason to stop.
            runs: runs::load(&db).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "Ignoring the run history.");
                RunHistory::default()
            }),
            twins: twins::load(&db)?,
        })
    }

    /// Opens `dir` for reading without the lock if it exists, checking
    /// that it is closed to other users (`check` and `list` call this too,
    /// so that every command refuses an open directory before any request).
    pub fn open_existing(dir: &Path) -> Result<Option<Dir>, StateError> {
        match fs::open_dir(dir, false) {
            Ok(handle) => Ok(Some(handle)),
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The directory this handle locks.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory's handle: its files are reached through it.
    pub(crate) fn handle(&self) -> &Dir {
        &self.dir
    }

    /// `hmac-sha256:<hex>` of `secret` under this directory's key: stable
    /// for the same secret, useless for recovering it.
    pub fn fingerprint(&self, secret: &impl ExposeSecret<str>) -> Fingerprint {
        self.key.fingerprint(secret)
    }

    /// The fingerprint of the concatenation of `parts`, without copying
    /// them into one buffer (a sink's content can be large).
    pub fn fingerprint_parts(&self, parts: &[&[u8]]) -> Fingerprint {
        self.key.fingerprint_parts(parts)
    }

    /// A writer fingerprinting what goes through it, as
    /// [`StateDir::fingerprint_parts`] of its concatenation.
    pub fn fingerprint_writer(&self) -> FingerprintWriter {
        self.key.writer()
    }
}

/// Renames the files of an earlier version once `db` holds them; files
/// beside a database that did not import them are refused.
fn set_aside_imported(dir: &Dir, db: &Db) -> Result<(), StateError> {
    let found = legacy::present(dir)?;
    if found.is_empty() {
        return Ok(());
    }
    if !db.read(legacy::imported)? {
        return Err(StateError::corrupt(
            db.path(),
            format!(
                "the directory holds both this database and {} of an earlier version, \
                 which it did not import; move one or the other aside",
                found.join(", ")
            ),
        ));
    }
    tracing::info!(
        dir = %dir.path().display(),
        files = %found.join(", "),
        "The state of an earlier version is in state.db; renaming its files to *.imported."
    );
    legacy::set_aside(dir, &found)
}

#[cfg(test)]
mod tests;
