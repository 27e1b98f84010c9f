//! `state.db`: the records, the journal, the outbox and the run outcomes in
//! one SQLite database, through `rusqlite` with the bundled SQLite.
//!
//! Durability: the database is in WAL mode with `synchronous = FULL`. In
//! WAL mode, `FULL` syncs the log at every commit, so a committed
//! transaction survives a power loss; `NORMAL` would sync only at
//! checkpoints, and an intent committed before its PATCH could then be
//! lost with the machine (invariant 1). WAL rather than the rollback
//! journal because readers (`status`, the metrics refresh) never wait for
//! the daemon's writes, and a commit costs one fsync of the log instead of
//! two (journal and database).
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] holds
//! the statements that bring a database from each version to the next, run
//! in one transaction each.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};
use rustix::fs::OFlags;

use super::StateError;
use crate::dirfd::Dir;

/// The database's file name in the state directory.
pub(crate) const DB_FILE: &str = "state.db";

/// `MIGRATIONS[n]` brings a database from `user_version` n to n + 1.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the tables of the JSON files this database replaces.
    "CREATE TABLE credentials (
        user_id TEXT NOT NULL,
        object_storage_id TEXT NOT NULL,
        credential_id INTEGER NOT NULL,
        user_email TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        rotated_at TEXT,
        rotation_id TEXT,
        access_key TEXT NOT NULL,
        secret_fingerprint TEXT NOT NULL,
        -- The storage's proof of the key of `verified_rotation_id`.
        verified_at TEXT,
        verified_rotation_id TEXT,
        verified_accepted INTEGER,
        verified_error TEXT,
        PRIMARY KEY (user_id, object_storage_id, credential_id)
    ) WITHOUT ROWID;
    CREATE INDEX credentials_by_id ON credentials (credential_id);
    CREATE TABLE client_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        first_seen TEXT NOT NULL,
        rotated_at TEXT,
        rotation_id TEXT,
        fingerprint TEXT NOT NULL
    );
    CREATE TABLE sinks (
        sink_id TEXT PRIMARY KEY,
        delivered_version TEXT,
        delivered_at TEXT,
        last_error TEXT,
        last_attempt TEXT
    );
    -- Rotations started and not yet settled, in start order.
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY,
        rotation_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        started_at TEXT NOT NULL,
        -- The whole intent as JSON (fingerprints, never secrets).
        intent TEXT NOT NULL
    );
    CREATE TABLE outbox_queues (
        sink_id TEXT PRIMARY KEY,
        since TEXT NOT NULL,
        removed_since TEXT
    );
    CREATE TABLE outbox_announced (
        sink_id TEXT NOT NULL,
        rotation_id TEXT NOT NULL,
        PRIMARY KEY (sink_id, rotation_id)
    ) WITHOUT ROWID;
    -- Events not yet delivered, oldest first.
    CREATE TABLE outbox_events (
        seq INTEGER PRIMARY KEY,
        sink_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        type TEXT NOT NULL,
        -- The whole event as JSON, without the secret (added at send time).
        event TEXT NOT NULL,
        UNIQUE (sink_id, webhook_id)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_run_at TEXT,
        last_run_duration_ms INTEGER,
        last_success_at TEXT,
        last_delivery_success_at TEXT,
        failed_rotations INTEGER NOT NULL DEFAULT 0,
        failed_file_sinks INTEGER NOT NULL DEFAULT 0,
        failed_webhooks INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: twin users (docs/design.md §4): which user each twin's sinks hold, the
    // switch in flight and the retirement due.
    "CREATE TABLE twins (
        name TEXT PRIMARY KEY,
        active_user_id TEXT NOT NULL,
        active_email TEXT NOT NULL,
        -- When the active user's keys were handed over (first sight: seen).
        active_since TEXT NOT NULL,
        last_switch_at TEXT,
        -- The user whose keys were handed over before, until retired.
        previous_user_id TEXT,
        previous_email TEXT,
        retire_at TEXT,
        last_retired_at TEXT,
        -- A switch journalled and not finished: the standby being handed over.
        switch_id TEXT,
        switch_user_id TEXT,
        switch_email TEXT,
        switch_started_at TEXT
    );",
];

/// The schema version this build reads and writes.
pub(crate) fn latest_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// The open database, shared by everything that holds the state directory.
/// One connection behind a mutex: the daemon's writes are short
/// transactions, and SQLite serialises writers anyway.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.path.display())
    }
}

impl Db {
    /// The database of the locked state directory `dir`. When there is
    /// none, one is built under a temp name (0600, the latest schema, then
    /// `init`, which imports an earlier version's files) and renamed into
    /// place only once complete, so a stop or a failure at any point leaves
    /// no database, or a whole one. A `state.db` that exists is therefore
    /// always one this daemon completed: an empty one is damage, refused
    /// like any other rather than taken for a first run.
    pub(crate) fn open(
        dir: &Dir,
        init: impl FnOnce(&Db) -> Result<(), StateError>,
    ) -> Result<Db, StateError> {
        let path = dir.shown(OsStr::new(DB_FILE));
        // Through the directory's handle first: never a symlink, and only
        // a file of the daemon's user.
        match dir.open_owned(OsStr::new(DB_FILE), OFlags::RDONLY, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(dir, init)?,
            Err(e) => return Err(StateError::io("open", &path, e)),
        }
        let db = Db::connect(&path, OpenFlags::empty())?;
        // Before anything writes to it (WAL mode writes the header).
        if db.version()? == 0 {
            return Err(StateError::corrupt(&db.path, "it is empty (no schema)"));
        }
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    /// A connection to the file at `path` (no symlink, never created).
    fn connect(path: &Path, flags: OpenFlags) -> Result<Db, StateError> {
        let flags = flags
            | OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| db_err(path, e))?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// The database of `dir` opened for reading only (`status`, the
    /// metrics), `None` when there is none yet.
    pub(crate) fn open_read_only(dir: &Dir) -> Result<Option<Db>, StateError> {
        let path = dir.shown(OsStr::new(DB_FILE));
        match dir.open_owned(OsStr::new(DB_FILE), OFlags::RDONLY, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::io("open", &path, e)),
        }
        // Read-write without create, then `query_only`: a reader of a WAL
        // database must be able to update the shared-memory index, which a
        // read-only connection cannot do when the daemon is not running.
        let db = Db::connect(&path, OpenFlags::empty())?;
        db.configure()?;
        let version = db.version()?;
        if version != latest_version() {
            return Err(StateError::corrupt(
                &db.path,
                format!(
                    "its schema is version {version} and this build reads version {}; \
                     start the daemon of the matching version once to upgrade it",
                    latest_version()
                ),
            ));
        }
        db.lock()
            .execute_batch("PRAGMA query_only = ON;")
            .map_err(|e| db.err(e))?;
        Ok(Some(db))
    }

    /// An empty database in memory, of the current schema: the read-only
    /// view of a state directory not yet imported ([`super::legacy`]).
    pub(crate) fn in_memory(path: &Path) -> Result<Db, StateError> {
        let conn = Connection::open_in_memory().map_err(|e| db_err(path, e))?;
        let db = Db {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        };
        db.migrate()?;
        Ok(db)
    }

    fn configure(&self) -> Result<(), StateError> {
        let conn = self.lock();
        // See the module's comment for why WAL and FULL.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateError::corrupt(
                &self.path,
                format!("SQLite kept journal mode {mode:?} instead of WAL"),
            ));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
            .map_err(|e| self.err(e))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if check != "ok" {
            return Err(StateError::corrupt(
                &self.path,
                format!("SQLite's quick_check found damage ({check})"),
            ));
        }
        Ok(())
    }

    fn version(&self) -> Result<u32, StateError> {
        self.lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Brings the schema to [`latest_version`], one transaction per step.
    /// A database of a newer build is refused, never written.
    fn migrate(&self) -> Result<(), StateError> {
        let version = self.version()?;
        if version > latest_version() {
            return Err(StateError::corrupt(
                &self.path,
                format!(
                    "its schema is version {version}, written by a newer contabo-rotator; \
                     this build knows versions up to {}",
                    latest_version()
                ),
            ));
        }
        for (from, statements) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            self.write(|tx| {
                tx.execute_batch(statements)?;
                tx.pragma_update(None, "user_version", from as u32 + 1)
            })?;
        }
        Ok(())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held left no transaction open
        // (rusqlite rolls back on drop), so the connection is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one write transaction, committed (and durable) when this
    /// returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let value = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(value)
    }

    /// Runs `f` on the connection (reads: one statement is one snapshot).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&self.lock()).map_err(|e| self.err(e))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> StateError {
        db_err(&self.path, e)
    }
}

/// Builds a complete database under a temp name and renames it to
/// [`DB_FILE`] (see [`Db::open`]). The temp file's rollback journal is kept
/// in memory: a temp file that is not complete is never used (a leftover is
/// removed at the next start with the other temp files), so only its final
/// fsync matters.
fn create(dir: &Dir, init: impl FnOnce(&Db) -> Result<(), StateError>) -> Result<(), StateError> {
    let temp = format!(".{DB_FILE}.tmp-{:016x}", rand::random::<u64>());
    let temp = OsStr::new(&temp);
    let shown = dir.shown(temp);
    let file = dir
        .open_owned(temp, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, 0o600)
        .map_err(|e| StateError::io("create", &shown, e))?;
    let built = (|| {
        let db = Db::connect(&shown, OpenFlags::empty())?;
        db.lock()
            .execute_batch("PRAGMA journal_mode = MEMORY; PRAGMA synchronous = OFF;")
            .map_err(|e| db.err(e))?;
        db.migrate()?;
        init(&db)?;
        drop(db);
        file.sync_all()
            .and_then(|()| dir.rename(temp, OsStr::new(DB_FILE)))
            .and_then(|()| dir.sync())
            .map_err(|e| StateError::io("create", &dir.shown(OsStr::new(DB_FILE)), e))
    })();
    if built.is_err() {
        let _ = dir.remove(temp);
    }
    built
}

/// A database error as a state error on `path`. SQLite's messages name
/// tables and constraints, never values (queries bind their parameters).
fn db_err(path: &Path, e: rusqlite::Error) -> StateError {
    use rusqlite::ffi::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StateError::corrupt(path, format!("SQLite: {e}"))
        }
        _ => StateError::io("use", path, io::Error::other(format!("SQLite: {e}"))),
    }
}

/// A value stored as JSON text: an intent or an event.
pub(crate) fn to_json(value: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

/// Reads back a column written by [`to_json`].
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    column: usize,
    text: &str,
) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        // The category and position only: serde's message may quote content.
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!(
                "stored JSON does not parse (line {}, column {})",
                e.line(),
                e.column()
            )
            .into(),
        )
    })
}

/// Reads back a column written with `to_string` (ids, fingerprints).
pub(crate) fn parsed<T: std::str::FromStr>(column: usize, text: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("not a valid value: {e}").into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tables(db: &Db) -> Vec<String> {
        db.read(|c| {
            let mut stmt =
                c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
            let names = stmt.query_map([], |r| r.get(0))?.collect();
            names
        })
        .unwrap()
    }

    #[test]
    fn created_private_in_wal_mode_with_full_sync_and_the_latest_schema() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Dir::open_private(dir.path(), false).unwrap();
        let mut created = false;
        let db = Db::open(&handle, |_| {
            created = true;
            Ok(())
        })
        .unwrap();
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (journal, sync): (String, i64) = db
            .read(|c| {
                Ok((
                    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?,
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((journal.as_str(), sync), ("wal", 2));
        assert_eq!(db.version().unwrap(), latest_version());
        assert!(tables(&db).contains(&"journal".to_owned()));
        drop(db);
        Db::open(&handle, |_| panic!("built again")).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n.to_str().unwrap().starts_with("state.db")),
            "{names:?}"
        );
    }

    #[test]
    fn each_migration_applies_to_the_version_before_it() {
        for target in 1..=MIGRATIONS.len() {
            let conn = Connection::open_in_memory().unwrap();
            for (n, step) in MIGRATIONS[..target - 1].iter().enumerate() {
                conn.execute_batch(step).unwrap();
                conn.pragma_update(None, "user_version", n as u32 + 1)
                    .unwrap();
            }
            let db = Db {
                conn: Arc::new(Mutex::new(conn)),
                path: "mem".into(),
            };
            db.migrate().unwrap();
            assert_eq!(db.version().unwrap(), latest_version(), "from {target}");
            let check: String = db
                .read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
                .unwrap();
            assert_eq!(check, "ok");
        }
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Dir::open_private(dir.path(), false).unwrap();
        let db = Db::open(&handle, |_| Ok(())).unwrap();
        db.lock()
            .pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        drop(db);
        let err = Db::open(&handle, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("newer contabo-rotator"), "{err}");
        assert!(err.contains("state.db"), "{err}");
        let err = Db::open_read_only(&handle).unwrap_err().to_string();
        assert!(err.contains("state.db"), "{err}");
    }

    #[test]
    fn a_symlink_an_empty_file_or_one_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Dir::open_private(dir.path(), false).unwrap();
        let target = dir.path().join("elsewhere.db");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(DB_FILE)).unwrap();
        assert!(Db::open(&handle, |_| Ok(())).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        std::fs::remove_file(dir.path().join(DB_FILE)).unwrap();
        for content in [vec![], vec![7u8; 4096]] {
            std::fs::write(dir.path().join(DB_FILE), &content).unwrap();
            let err = Db::open(&handle, |_| panic!("not a first run")).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
            let left = std::fs::read(dir.path().join(DB_FILE)).unwrap();
            assert!(left == content, "{} bytes changed", content.len());
        }
    }

    #[test]
    fn a_failed_build_leaves_no_database() {
        let dir = tempfile::tempdir().unwrap();
        let handle = Dir::open_private(dir.path(), false).unwrap();
        let err = Db::open(&handle, |db| Err(StateError::corrupt(db.path(), "no"))).unwrap_err();
        assert!(err.to_string().contains("no"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
