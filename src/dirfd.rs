//! Directory handles: the filesystem side of the trust boundary
//! (invariant 9).
//!
//! The daemon often runs as root and writes into directories that other
//! users own. A path string is resolved by the kernel anew at every call, so
//! a user who can replace one of its components between two calls decides
//! where the next one lands. Every file the daemon writes, reads or replaces
//! is therefore reached through a handle of its directory ([`Dir`]), opened
//! once, and every call after that (create, `fchown`, write, rename, the
//! existence check, the stale-temp cleanup) is relative to that handle.
//!
//! * [`Dir::walk`] opens a sink's directory one component at a time
//!   (`openat` with `O_PATH|O_NOFOLLOW`, then `fstat` of what was opened),
//!   refusing a component that someone less trusted could replace, as
//!   systemd's `chase()` does with `CHASE_SAFE`. Trusted are root, the
//!   daemon's user and the sink's `owner`. A component (the target file
//!   included, [`Dir::walk_parent`]) is unsafe when its directory belongs
//!   to someone else, is writable by its group or by others without being
//!   sticky (a POSIX ACL granting a named user or group write shows as the
//!   group's write bit, its mask), or, in a sticky directory (`/tmp`), when
//!   the component belongs to someone else. A symlink is followed only when
//!   root or the daemon's user owns it and no one else, the sink's owner
//!   included, can move it: not below a directory the owner can change.
//! * [`Dir::open_private`] opens the state directory, walked the same way
//!   with no owner: it must belong to the daemon's user and be closed to
//!   group and others for writing. Its files are opened with
//!   [`Dir::open_owned`]: never through a symlink, and only when they
//!   belong to the daemon's user.
//! * [`read_trusted`] reads a file the configuration names (a secret, a
//!   template, a CA): reached the same way with no owner, a regular file of
//!   root's or the daemon's that group and others cannot write, of bounded
//!   size, so that no other user can have root read a file of their choice
//!   into a sink.
//!
//! Written by hand over `rustix`'s system calls: `openat2` with
//! `RESOLVE_NO_SYMLINKS` cannot follow the symlinks root owns, and the
//! crates that sandbox paths (`cap-std`) confine a path below a directory
//! rather than judge who could replace each component.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid, CWD};
use secrecy::zeroize::Zeroizing;

/// The most [`read_trusted`] reads of a file the configuration names: far
/// more than a secret, a template or a CA bundle needs.
pub const READ_LIMIT: u64 = 4 << 20;

/// How many symlinks one walk follows before it gives up (the kernel's
/// own limit).
const MAX_SYMLINKS: usize = 40;

/// The users whose power over a path component is no threat: root, the
/// daemon's effective user and, for a sink, its `owner`.
#[derive(Debug, Clone, Copy)]
pub struct Trusted {
    daemon: u32,
    owner: Option<u32>,
}

impl Trusted {
    /// Root and the daemon's effective user, plus `owner` when given.
    pub fn with_owner(owner: Option<u32>) -> Trusted {
        Trusted {
            daemon: euid(),
            owner,
        }
    }

    fn contains(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon || Some(uid) == self.owner
    }

    /// Root or the daemon's own user: whose symlinks are followed.
    fn may_link(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon
    }

    /// Root and the daemon's user only.
    fn without_owner(&self) -> Trusted {
        Trusted {
            owner: None,
            ..*self
        }
    }
}

/// The daemon's effective uid.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// An open directory; everything below it is reached relative to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The path it was opened by, for messages only (never resolved again).
    path: PathBuf,
}

impl Dir {
    /// Walks `path` to a directory, one component at a time, refusing
    /// components that someone outside `trusted` could replace (see the
    /// module documentation). The error names the component and why.
    pub fn walk(path: &Path, trusted: &Trusted) -> io::Result<Dir> {
        walk(path, trusted, false)
    }

    /// [`Dir::walk`] to the directory holding the file `path`, and the
    /// file's name in it.
    pub fn walk_parent<'p>(path: &'p Path, trusted: &Trusted) -> io::Result<(Dir, &'p OsStr)> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            )
        })?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = Dir::walk(parent, trusted)?;
        // The file itself is a component too: whoever could replace it in
        // its directory decides what its readers get.
        let dir_stat = rustix::fs::fstat(&dir.fd)?;
        let entry_uid = dir.stat(name)?.map_or(trusted.daemon, |s| s.st_uid);
        if let Some(why) = replaceable(&dir_stat, entry_uid, trusted) {
            return Err(unsafe_component(&parent.join(name), &why));
        }
        Ok((dir, name))
    }

    /// Opens the state directory `path`, walked with no owner trusted and
    /// created (0700, parents too) when `create` says so: it must be a
    /// directory belonging to the daemon's user, closed to group and others
    /// for writing.
    pub fn open_private(path: &Path, create: bool) -> io::Result<Dir> {
        let Dir { fd, .. } = walk(path, &Trusted::with_owner(None), create)?;
        let stat = rustix::fs::fstat(&fd)?;
        let me = euid();
        if stat.st_uid != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "it belongs to uid {}, not to the daemon's user (uid {me}); run `chown {me} {}`",
                    stat.st_uid,
                    path.display()
                ),
            ));
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "its mode {mode:04o} lets group or others write it; run `chmod go-w {}` \
                     (0700 is best)",
                    path.display()
                ),
            ));
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory, for messages.
    pub fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` with `flags` (and `mode` when it creates), never
    /// through a symlink.
    pub fn open(&self, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))
            .map_err(|e| symlink_error(e.into(), &self.shown(name)))?;
        Ok(File::from(fd))
    }

    /// [`Dir::open`] for a state file: it must also be a regular file that
    /// belongs to the daemon's user and that group and others cannot write.
    pub fn open_owned(&self, name: &OsStr, flags: OFlags, mode: u32) -> io::Result<File> {
        let file = self.open(name, flags, mode)?;
        let stat = rustix::fs::fstat(&file)?;
        let path = self.shown(name);
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let me = euid();
        if stat.st_uid != me {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to the daemon's user (uid {me}); every file in \
                     the state directory must be the daemon's",
                    path.display(),
                    stat.st_uid
                ),
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} has mode {:04o}: group or others can write it; run `chmod go-w {}`",
                    path.display(),
                    stat.st_mode & 0o7777,
                    path.display()
                ),
            ));
        }
        Ok(file)
    }

    /// What `name` is, without following a symlink; `None` if absent.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the file `name` (never a directory); absent is fine.
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The names in this directory (`.` and `..` left out).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let name = OsStr::from_bytes(entry?.file_name().to_bytes()).to_os_string();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Makes renames and new entries in this directory durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// Atomically replaces `name` with what `body` writes, the file ending
    /// with `perms`. The temp file is created beside it with `O_EXCL`
    /// (never an existing file or a symlink) and mode 0600, given its
    /// owner and group, then its mode, and only then written; it is
    /// fsync'd, renamed over `name`, and the directory fsync'd. A crash
    /// leaves the old content or the new one; on failure the temp file is
    /// removed and `name` is untouched.
    pub fn replace(
        &self,
        name: &OsStr,
        perms: Perms,
        body: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let (temp, mut file) = self.create_temp(name)?;
        let written = (|| {
            set_owner_and_mode(&file, perms.uid, perms.gid, perms.mode)?;
            body(&mut file)?;
            file.sync_all()?;
            drop(file);
            self.rename(&temp, name)
        })();
        if let Err(err) = written {
            // Best effort: a leftover is also removed at the next write.
            let _ = self.remove(&temp);
            return Err(err);
        }
        self.sync()
    }

    /// Removes the leftovers of interrupted [`Dir::replace`] calls whose
    /// target name passes `wanted`; how many were removed. Only names this
    /// module makes are touched, and only regular files the daemon's user
    /// or `owner` (to whom a sink's temp file is given) owns: in a shared
    /// directory, root would otherwise remove anyone's file of that name.
    pub fn remove_temps_where(
        &self,
        owner: Option<u32>,
        wanted: impl Fn(&OsStr) -> bool,
    ) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.names()? {
            let Some(target) = name.to_str().and_then(temp_target) else {
                continue;
            };
            if wanted(OsStr::new(target)) && self.is_own_file(&name, owner)? {
                self.remove(&name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether `name` is a regular file of the daemon's user or of `owner`.
    pub fn is_own_file(&self, name: &OsStr, owner: Option<u32>) -> io::Result<bool> {
        Ok(self.stat(name)?.is_some_and(|stat| {
            FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                && (stat.st_uid == euid() || Some(stat.st_uid) == owner)
        }))
    }

    /// A fresh temp file for `name`: `.<name>.tmp-<16 hex digits>`.
    fn create_temp(&self, name: &OsStr) -> io::Result<(OsString, File)> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        let mut attempts = 0;
        loop {
            let mut temp = OsString::from(".");
            temp.push(name);
            temp.push(format!("{TEMP_MARK}{:016x}", rand::random::<u64>()));
            match self.open(&temp, flags, 0o600) {
                Ok(file) => return Ok((temp, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a replaced file ends with: exactly `mode`, and `uid`/`gid` when
/// given (else the daemon's).
#[derive(Debug, Clone, Copy)]
pub struct Perms {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Perms {
    /// `mode`, owned by the daemon.
    pub fn mode(mode: u32) -> Perms {
        Perms {
            mode,
            uid: None,
            gid: None,
        }
    }
}

/// Temp names are `.<target>.tmp-<16 hex digits>`.
const TEMP_MARK: &str = ".tmp-";
const TEMP_RANDOM_LEN: usize = 16;

/// The target name of a temp file name, or `None` if it is not one of ours.
pub(crate) fn temp_target(name: &str) -> Option<&str> {
    let (target, random) = name.strip_prefix('.')?.rsplit_once(TEMP_MARK)?;
    let ours = !target.is_empty()
        && random.len() == TEMP_RANDOM_LEN
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then_some(target)
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads the file at `path`, which the configuration names (a secret, a
/// template, a CA bundle), into a buffer zeroed on drop. Its path is walked
/// with no owner trusted (a symlink root or the daemon's user owns is
/// followed, the last component included), and the file must be a regular
/// file of root's or the daemon's that group and others cannot write, of at
/// most `limit` bytes: no other user can have the daemon read a file of
/// their choice (into a sink), or hang it on a FIFO. Also returns the
/// file's permission bits.
pub fn read_trusted(path: &Path, limit: u64) -> io::Result<(Zeroizing<Vec<u8>>, u32)> {
    let trusted = Trusted::with_owner(None);
    let mut path = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        let (dir, name) = Dir::walk_parent(&path, &trusted)?;
        let stat = dir.stat(name)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )
        })?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
            if !trusted.may_link(stat.st_uid) {
                return Err(foreign_symlink(&path, stat.st_uid));
            }
            let target = rustix::fs::readlinkat(&dir, name, Vec::new())?;
            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
            path = path.parent().unwrap_or(Path::new("/")).join(target);
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
        let mut file = dir.open(name, flags, 0)?;
        let stat = rustix::fs::fstat(&file)?;
        let refuse = |why: String| Err(unsafe_component(&path, &why));
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return refuse("it is not a regular file".into());
        }
        if !trusted.may_link(stat.st_uid) {
            return refuse(format!(
                "it belongs to uid {}; files the configuration names must be root's or the \
                 daemon's user's",
                stat.st_uid
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return refuse(format!(
                "its mode {:04o} lets group or others write it",
                stat.st_mode & 0o7777
            ));
        }
        let size = stat.st_size as u64;
        if size > limit {
            return refuse(format!("it is larger than {limit} bytes"));
        }
        // Sized up front so the buffer never reallocates and leaves copies
        // behind; `take` bounds a file that grows meanwhile.
        let mut bytes = Zeroizing::new(Vec::with_capacity(size as usize + 1));
        io::Read::read_to_end(&mut io::Read::take(&mut file, limit + 1), &mut bytes)?;
        if bytes.len() as u64 > limit {
            return refuse(format!("it is larger than {limit} bytes"));
        }
        return Ok((bytes, stat.st_mode & 0o7777));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symlinks", path.display()),
    ))
}

/// Gives `file` its owner and group, then exactly `mode`: the order that
/// never lets the wrong group read it (a file created 0600 by the daemon is
/// readable by no one else until both are set).
pub fn set_owner_and_mode(
    file: &File,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: u32,
) -> io::Result<()> {
    if uid.is_some() || gid.is_some() {
        rustix::fs::fchown(file, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot give the new file its owner and group: {e}"),
            )
        })?;
    }
    let current = rustix::fs::fstat(file)?.st_mode & 0o7777;
    if current != mode & 0o7777 {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode & 0o7777)).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot give the new file mode {:04o}: {e}", mode & 0o7777),
            )
        })?;
    }
    Ok(())
}

/// Why someone outside `trusted` could replace an entry owned by
/// `entry_uid` in `dir`, if someone could.
fn replaceable(dir: &Stat, entry_uid: u32, trusted: &Trusted) -> Option<String> {
    if !trusted.contains(dir.st_uid) {
        return Some(format!(
            "its directory belongs to uid {}, who could replace it",
            dir.st_uid
        ));
    }
    let sticky = dir.st_mode & 0o1000 != 0;
    // With a POSIX ACL, the group bits are its mask: a named user or group
    // allowed to write shows here too.
    let group_writable = dir.st_mode & 0o020 != 0;
    let other_writable = dir.st_mode & 0o002 != 0;
    if !sticky && other_writable {
        return Some("its directory is writable by everyone, who could replace it".into());
    }
    if !sticky && group_writable {
        return Some(format!(
            "its directory is writable by group {} (or by an ACL entry), whose members could \
             replace it",
            dir.st_gid
        ));
    }
    if sticky && (group_writable || other_writable) && !trusted.contains(entry_uid) {
        return Some(format!(
            "it belongs to uid {entry_uid} in a shared sticky directory"
        ));
    }
    None
}

/// Walks `path` to a directory (see [`Dir::walk`]), creating missing
/// components (0700) when `create` is set.
fn walk(path: &Path, trusted: &Trusted, create: bool) -> io::Result<Dir> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_components(&mut todo, &absolute);
    let root = open_path(CWD, Path::new("/"))?;
    let root_stat = rustix::fs::fstat(&root)?;
    // The directories from `/` down to where the walk stands, each the one
    // its successor was opened in (`..` pops one), and whether it is below
    // a component only the sink's owner (besides root and the daemon)
    // could change: no symlink is followed there.
    let mut stack = vec![Step {
        fd: root,
        stat: root_stat,
        path: PathBuf::from("/"),
        owners: false,
    }];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let here = stack.last().expect("the root stays");
        let shown = here.path.join(&name);
        let fd = match open_path(&here.fd, Path::new(&name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                // Made only where no one else could replace it.
                if let Some(why) = replaceable(&here.stat, trusted.daemon, trusted) {
                    return Err(unsafe_component(&shown, &why));
                }
                rustix::fs::mkdirat(&here.fd, &name, Mode::from_raw_mode(0o700))?;
                open_path(&here.fd, Path::new(&name))
            }
            opened => opened,
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                io::Error::new(e.kind(), format!("{} does not exist", shown.display()))
            }
            _ => io::Error::new(e.kind(), format!("{}: {e}", shown.display())),
        })?;
        let stat = rustix::fs::fstat(&fd)?;
        if let Some(why) = replaceable(&here.stat, stat.st_uid, trusted) {
            return Err(unsafe_component(&shown, &why));
        }
        let owners =
            here.owners || replaceable(&here.stat, stat.st_uid, &trusted.without_owner()).is_some();
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => stack.push(Step {
                fd,
                stat,
                path: shown,
                owners,
            }),
            FileType::Symlink => {
                if !trusted.may_link(stat.st_uid) {
                    return Err(foreign_symlink(&shown, stat.st_uid));
                }
                if owners {
                    let why = "it is a symlink the sink's owner could move there; symlinks are \
                               followed only where no one but root and the daemon's user can \
                               change them";
                    return Err(unsafe_component(&shown, why));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{}: too many levels of symlinks", shown.display()),
                    ));
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    stack.truncate(1);
                }
                let mut rest = VecDeque::new();
                push_components(&mut rest, &target);
                rest.append(&mut todo);
                todo = rest;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", shown.display()),
                ))
            }
        }
    }
    let last = stack.pop().expect("the root stays");
    // A directory the daemon may search but not list (0711) still serves
    // to open, stat and read what is in it: the path handle is kept then.
    let fd = match reopen_dir(&last.fd) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => last.fd,
        reopened => reopened?,
    };
    Ok(Dir {
        fd,
        path: path.to_path_buf(),
    })
}

/// One directory of a walk.
struct Step {
    fd: OwnedFd,
    stat: Stat,
    /// As walked, for messages.
    path: PathBuf,
    /// At or below a component only the sink's owner made safe.
    owners: bool,
}

/// A symlink owned by someone whose symlinks are not followed.
fn foreign_symlink(path: &Path, uid: u32) -> io::Error {
    let why = format!(
        "it is a symlink owned by uid {uid}; only symlinks owned by root or the daemon's user \
         are followed"
    );
    unsafe_component(path, &why)
}

fn unsafe_component(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing the path through {}: {why}", path.display()),
    )
}

/// Appends `path`'s components to `todo` (`/` and `.` dropped).
fn push_components(todo: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components() {
        match component {
            Component::Normal(name) => todo.push_back(name.to_os_string()),
            Component::ParentDir => todo.push_back("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// Opens `name` in `dir` as a path handle, not following a symlink there.
fn open_path(dir: impl AsFd, name: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// A directory's path handle as one that can be listed and fsync'd.
fn reopen_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(fd, ".", flags, Mode::empty())?)
}

/// `ELOOP` from an `O_NOFOLLOW` open, in words.
fn symlink_error(err: io::Error, path: &Path) -> io::Error {
    if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symlink, which is never followed here",
                path.display()
            ),
        );
    }
    err
}

#[cfg(test)]
mod tests;
