//! File-system primitives for crash safety: atomic replacement, the lock
//! file, private-file reads and leftover temp-file cleanup.
//!
//! [`write_atomic`] is the only way this crate replaces a file. The sequence
//! (temp file created with its final mode → write → fsync → rename → fsync of
//! the directory) means a crash at any instant leaves either the old content
//! or the new, never a mix, and never a moment where a secret file is more
//! readable than asked. Sinks reuse it for the files they deliver.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::zeroize::Zeroizing;

use super::StateError;

/// Temp names are `.<target>.tmp-<16 hex digits>`.
const TEMP_MARK: &str = ".tmp-";
const TEMP_RANDOM_LEN: usize = 16;

/// Atomically replaces `path` with `bytes`, the file ending with exactly
/// permission bits `mode` (e.g. `0o600`).
///
/// The content is durable when this returns: the temp file is fsync'd before
/// the rename and the directory after it. On failure the target is untouched
/// and the temp file is removed; the error names `path` and the OS error.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    write_atomic_with(path, bytes, mode, |_| Ok(()))
}

/// [`write_atomic`] with a hook that runs on the temp file before any byte
/// is written, for callers that must set more than the mode without a window
/// where the file is wrong: `|f| std::os::unix::fs::fchown(f, uid, gid)`.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    prepare: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(), StateError> {
    write_atomic_from(path, mode, prepare, |file| file.write_all(bytes))
}

/// A state file as pretty JSON with a trailing newline, written like
/// [`write_atomic`] but serialised straight into the temp file: a large
/// file (records of a big account) is never held whole in memory.
pub(crate) fn write_json_atomic(
    path: &Path,
    value: &impl serde::Serialize,
    mode: u32,
) -> Result<(), StateError> {
    write_atomic_from(
        path,
        mode,
        |_| Ok(()),
        |file| {
            let mut out = io::BufWriter::with_capacity(64 * 1024, file);
            serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
            out.flush()
        },
    )
}

/// [`write_atomic_with`], the content written by `body` into the temp file
/// (content produced as it is written, never held whole).
pub fn write_atomic_from(
    path: &Path,
    mode: u32,
    prepare: impl FnOnce(&File) -> io::Result<()>,
    body: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), StateError> {
    let name = path.file_name().ok_or_else(|| {
        let err = io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name");
        StateError::io("write", path, err)
    })?;
    let dir = parent_dir(path);
    let (temp, mut file) =
        create_temp(dir, name, mode).map_err(|e| StateError::io("write", path, e))?;

    let written = (|| {
        // The umask may have cleared bits the caller asked for; it can never
        // have added any, so this only ever widens to exactly `mode`.
        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
        prepare(&file)?;
        body(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(err) = written {
        // Best effort: a leftover is also removed at the next open.
        let _ = fs::remove_file(&temp);
        return Err(StateError::io("write", path, err));
    }
    sync_dir(dir)
}

/// Removes leftovers of interrupted [`write_atomic`] calls targeting `path`
/// (`.<name>.tmp-*` beside it) and returns how many were removed. Only
/// names this module generates are touched.
pub fn remove_stale_temp_files(path: &Path) -> Result<usize, StateError> {
    let Some(name) = path.file_name() else {
        return Ok(0);
    };
    remove_temps_where(parent_dir(path), |target| target == name)
}

/// Removes every leftover temp file in `dir` (the state directory is ours).
pub(crate) fn remove_all_temp_files(dir: &Path) -> Result<usize, StateError> {
    remove_temps_where(dir, |_| true)
}

fn remove_temps_where(dir: &Path, wanted: impl Fn(&OsStr) -> bool) -> Result<usize, StateError> {
    let entries = fs::read_dir(dir).map_err(|e| StateError::io("list", dir, e))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StateError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(target) = name.to_str().and_then(temp_target) else {
            continue;
        };
        if !wanted(OsStr::new(target)) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io("remove", &path, e)),
        }
    }
    Ok(removed)
}

/// The target name of a temp file name, or `None` if it is not one of ours.
fn temp_target(name: &str) -> Option<&str> {
    let (target, random) = name.strip_prefix('.')?.rsplit_once(TEMP_MARK)?;
    let ours = !target.is_empty()
        && random.len() == TEMP_RANDOM_LEN
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then_some(target)
}

/// Creates a fresh temp file beside the target with `create_new`, so an
/// existing file (or a symlink planted there) is never opened.
fn create_temp(dir: &Path, name: &OsStr, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!("{TEMP_MARK}{:016x}", rand::random::<u64>()));
        let temp = dir.join(temp_name);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&temp);
        match opened {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a rename or a new directory entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io("sync directory", dir, e))
}

/// Creates `dir` and any missing parents with mode 0700. An existing
/// directory is left as it is (systemd's `StateDirectory=` sets its own mode).
pub(crate) fn create_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StateError::io("create directory", dir, e))
}

/// Takes the exclusive lock on `<dir>/lock` and writes our pid into it. The
/// lock lives as long as the returned handle (it is per open file
/// description, so a second open in the same process conflicts too).
pub(crate) fn lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(super::LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the holder's pid must survive until we own the lock
        .mode(0o600)
        .open(&path)
        .map_err(|e| StateError::io("open", &path, e))?;
    // `File::try_lock` is stable since Rust 1.89, above the manifest's
    // `rust-version`; the manifest is to be raised (the lint stays local).
    let locked = file.try_lock();
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                pid: read_pid(&path),
            })
        }
        Err(TryLockError::Error(e)) => return Err(StateError::io("lock", &path, e)),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| StateError::io("write", &path, e))?;
    Ok(file)
}

/// The pid written by the lock's holder, if it wrote one yet.
fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads a whole file, `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("read", path, e)),
    }
}

/// Reads a file that holds a secret into a buffer zeroed on drop, `None` if
/// it does not exist. Refuses it if group or others have any access: the
/// mode is checked on the opened file, not on the name, so it cannot change
/// between check and read.
pub(crate) fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| StateError::io("inspect", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // Sized up front so the buffer never reallocates and leaves copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut bytes)
        .map_err(|e| StateError::io("read", path, e))?;
    Ok(Some(bytes))
}

/// Parses a state file as JSON, `None` if it does not exist. Empty and
/// unparsable files are [`StateError::Corrupt`]: never silently reset.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, StateError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io("read", path, e)),
    };
    // Parsed as it is read: a large file (records of a big account) is
    // never held whole in memory beside what it parses into.
    let mut reader = Blank {
        inner: io::BufReader::with_capacity(64 * 1024, file),
        blank: true,
    };
    match serde_json::from_reader(&mut reader) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_io() => Err(StateError::io(
            "read",
            path,
            e.io_error_kind().map_or_else(
                || io::Error::other("read failed"),
                |kind| io::Error::new(kind, e.to_string()),
            ),
        )),
        Err(_) if reader.blank => Err(StateError::corrupt(path, "the file is empty")),
        Err(e) => Err(StateError::json(path, &e)),
    }
}

/// A reader that notes whether anything but whitespace went through it.
struct Blank<R> {
    inner: R,
    blank: bool,
}

impl<R: Read> Read for Blank<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.blank && !buf[..n].iter().all(u8::is_ascii_whitespace) {
            self.blank = false;
        }
        Ok(n)
    }
}

/// Parses bytes read from `path`, describing failures without content.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, StateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StateError::corrupt(path, "the file is empty"));
    }
    serde_json::from_slice(bytes).map_err(|e| StateError::json(path, &e))
}

/// Checks a state file's format version against the one this build reads.
pub(crate) fn check_version(path: &Path, found: u32, supported: u32) -> Result<(), StateError> {
    if found == supported {
        return Ok(());
    }
    Err(StateError::corrupt(
        path,
        format!(
            "format version {found} is not supported (this contabo-rotator reads version \
             {supported}; if a newer release wrote it, run that release instead)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        write_atomic(&path, b"first", 0o600).unwrap();
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names(dir.path()), ["records.json"]);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn write_atomic_sets_exactly_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        write_atomic(&path, b"A=1\n", 0o640).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        // Replacing a looser file tightens it.
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"A=2\n", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn write_atomic_runs_the_hook_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let err = write_atomic_with(&path, b"x", 0o600, |_| {
            Err(io::Error::other("hook says no"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("hook says no"), "{err}");
        assert!(
            names(dir.path()).is_empty(),
            "target and temp must be absent"
        );
    }

    #[test]
    fn write_atomic_failure_names_the_path_even_for_root() {
        // A parent that is a regular file fails with ENOTDIR for every user,
        // root included, unlike a read-only directory.
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"").unwrap();
        let path = blocker.join("records.json");
        let err = write_atomic(&path, b"{}", 0o600).unwrap_err();
        assert!(matches!(err, StateError::Io { op: "write", .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: Not a directory (os error 20)",
                path.display()
            )
        );
    }

    #[test]
    fn write_atomic_into_a_read_only_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        fs::write(&probe, b"").unwrap();
        if fs::metadata(&probe).unwrap().uid() == 0 {
            // Root bypasses directory permissions, so there is nothing to
            // observe; the ENOTDIR test above covers the error path for root.
            return;
        }
        fs::set_permissions(dir.path(), Permissions::from_mode(0o500)).unwrap();
        let path = dir.path().join("records.json");
        let err = write_atomic(&path, b"{}", 0o600).unwrap_err();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn temp_names_are_recognised_strictly() {
        assert_eq!(
            temp_target(".records.json.tmp-0123456789abcdef"),
            Some("records.json")
        );
        assert_eq!(
            temp_target(".a.tmp-b.tmp-0123456789abcdef"),
            Some("a.tmp-b")
        );
        assert_eq!(temp_target("records.json.tmp-0123456789abcdef"), None);
        assert_eq!(temp_target(".records.json.tmp-0123"), None);
        assert_eq!(temp_target(".records.json.tmp-0123456789abcdeg"), None);
        assert_eq!(temp_target("..tmp-0123456789abcdef"), None);
    }

    #[test]
    fn stale_temp_files_of_one_target_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".app.env.tmp-0123456789abcdef"), b"x").unwrap();
        fs::write(dir.path().join(".other.tmp-0123456789abcdef"), b"x").unwrap();
        fs::write(dir.path().join(".app.env.tmp-mine"), b"x").unwrap();
        let removed = remove_stale_temp_files(&dir.path().join("app.env")).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            names(dir.path()),
            [".app.env.tmp-mine", ".other.tmp-0123456789abcdef"]
        );
    }

    #[test]
    fn read_private_refuses_group_or_world_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_atomic(&path, b"s", 0o600).unwrap();
        assert_eq!(read_private(&path).unwrap().unwrap().as_slice(), b"s");
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&path).unwrap_err();
        assert!(
            matches!(err, StateError::Permissions { mode: 0o640, .. }),
            "{err:?}"
        );
        assert!(read_private(&dir.path().join("absent")).unwrap().is_none());
    }
}
