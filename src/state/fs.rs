//! State files, each reached through the state directory's handle
//! ([`Dir`]): never through a symlink, and only when it belongs to the
//! daemon's user (invariant 9).
//!
//! [`write_atomic`] is the only way a state file is replaced. The sequence
//! (temp file created 0600 → write → fsync → rename → fsync of the
//! directory, [`Dir::replace`]) means a crash at any instant leaves either
//! the old content or the new, never a mix, and never a moment where a
//! secret file is more readable than asked.

use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::OFlags;
use secrecy::zeroize::Zeroizing;

use super::StateError;
use crate::dirfd::{Dir, Perms};

/// Atomically replaces `name` in `dir` with `bytes`, the file ending with
/// exactly permission bits `mode`. Durable when this returns; on failure
/// the file is untouched and the error names it and the OS error.
pub(crate) fn write_atomic(
    dir: &Dir,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), StateError> {
    dir.replace(OsStr::new(name), Perms::mode(mode), |file| {
        file.write_all(bytes)
    })
    .map_err(|e| StateError::io("write", &dir.shown(OsStr::new(name)), e))
}

/// Removes every leftover temp file in the state directory (it is ours).
pub(crate) fn remove_all_temp_files(dir: &Dir) -> Result<usize, StateError> {
    dir.remove_temps_where(None, |_| true)
        .map_err(|e| StateError::io("clean up", dir.path(), e))
}

/// Opens the state directory, creating it and any missing parents (0700)
/// when `create` says so; an existing directory must belong to the daemon's
/// user and be closed to group and others for writing, and so must the
/// path to it ([`Dir::open_private`]).
pub(crate) fn open_dir(dir: &Path, create: bool) -> Result<Dir, StateError> {
    Dir::open_private(dir, create).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => StateError::Unsafe {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        },
        _ => StateError::io("open", dir, e),
    })
}

/// Opens `name` in the state directory ([`Dir::open_owned`]).
pub(crate) fn open_file(dir: &Dir, name: &str, flags: OFlags, mode: u32) -> io::Result<File> {
    dir.open_owned(OsStr::new(name), flags, mode)
}

/// Takes the exclusive lock on `<dir>/lock` and writes our pid into it. The
/// lock lives as long as the returned handle (it is per open file
/// description, so a second open in the same process conflicts too).
pub(crate) fn lock(dir: &Dir) -> Result<File, StateError> {
    let name = super::LOCK_FILE;
    let path = dir.shown(OsStr::new(name));
    // Not truncated: the holder's pid must survive until we own the lock.
    let mut file = open_file(dir, name, OFlags::RDWR | OFlags::CREATE, 0o600)
        .map_err(|e| StateError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.path().to_path_buf(),
                pid: read_pid(&mut file),
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
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Opens a state file for reading, `None` if it does not exist.
fn open_read(dir: &Dir, name: &str) -> Result<Option<File>, StateError> {
    match open_file(dir, name, OFlags::RDONLY, 0) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("read", &dir.shown(OsStr::new(name)), e)),
    }
}

/// Reads a whole file, `None` if it does not exist.
pub(crate) fn read_optional(dir: &Dir, name: &str) -> Result<Option<Vec<u8>>, StateError> {
    let Some(mut file) = open_read(dir, name)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| StateError::io("read", &dir.shown(OsStr::new(name)), e))?;
    Ok(Some(bytes))
}

/// Reads a file that holds a secret into a buffer zeroed on drop, `None` if
/// it does not exist. Refuses it if group or others have any access: the
/// mode is checked on the opened file, not on the name, so it cannot change
/// between check and read.
pub(crate) fn read_private(
    dir: &Dir,
    name: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StateError> {
    let path = dir.shown(OsStr::new(name));
    let Some(mut file) = open_read(dir, name)? else {
        return Ok(None);
    };
    let meta = file
        .metadata()
        .map_err(|e| StateError::io("inspect", &path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions { path, mode });
    }
    // Sized up front so the buffer never reallocates and leaves copies behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.read_to_end(&mut bytes)
        .map_err(|e| StateError::io("read", &path, e))?;
    Ok(Some(bytes))
}

/// Parses a state file as JSON, `None` if it does not exist. Empty and
/// unparsable files are [`StateError::Corrupt`]: never silently reset.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Dir,
    name: &str,
) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_optional(dir, name)? else {
        return Ok(None);
    };
    parse_json(&dir.shown(OsStr::new(name)), &bytes).map(Some)
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
    use std::fs;
    use std::fs::Permissions;
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

    fn open(dir: &tempfile::TempDir) -> Dir {
        open_dir(dir.path(), true).unwrap()
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(&tmp);
        write_atomic(&dir, "records.json", b"first", 0o600).unwrap();
        write_atomic(&dir, "records.json", b"second", 0o600).unwrap();
        let path = tmp.path().join("records.json");
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(names(tmp.path()), ["records.json"]);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn write_atomic_sets_exactly_the_requested_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(&tmp);
        let path = tmp.path().join("app.env");
        write_atomic(&dir, "app.env", b"A=1\n", 0o640).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        // Replacing a looser file tightens it.
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        write_atomic(&dir, "app.env", b"A=2\n", 0o600).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn temp_files_are_all_removed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(".records.json.tmp-0123456789abcdef"), b"x").unwrap();
        fs::write(tmp.path().join(".records.json.tmp-mine"), b"x").unwrap();
        let removed = remove_all_temp_files(&open(&tmp)).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(names(tmp.path()), [".records.json.tmp-mine"]);
    }

    #[test]
    fn read_private_refuses_group_or_world_access() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open(&tmp);
        write_atomic(&dir, "secret", b"s", 0o600).unwrap();
        assert_eq!(
            read_private(&dir, "secret").unwrap().unwrap().as_slice(),
            b"s"
        );
        let path = tmp.path().join("secret");
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let err = read_private(&dir, "secret").unwrap_err();
        assert!(
            matches!(err, StateError::Permissions { mode: 0o640, .. }),
            "{err:?}"
        );
        assert!(read_private(&dir, "absent").unwrap().is_none());
    }

    #[test]
    fn a_symlinked_state_file_is_never_read_or_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"untouched").unwrap();
        for name in ["lock", "records.json", "audit.log"] {
            std::os::unix::fs::symlink(&victim, tmp.path().join(name)).unwrap();
        }
        let dir = open(&tmp);
        let err = lock(&dir).unwrap_err().to_string();
        assert!(err.contains("lock is a symlink"), "{err}");
        let err = read_optional(&dir, "records.json").unwrap_err().to_string();
        assert!(err.contains("records.json is a symlink"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    }

    #[test]
    fn an_open_state_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o770, 0o707, 0o777] {
            fs::set_permissions(tmp.path(), Permissions::from_mode(mode)).unwrap();
            let err = open_dir(tmp.path(), false).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StateError::Unsafe { .. }), "{text}");
            assert!(text.contains("chmod go-w"), "{text}");
            assert!(text.contains(&tmp.path().display().to_string()), "{text}");
        }
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o750)).unwrap();
        open_dir(tmp.path(), false).unwrap();
    }
}
