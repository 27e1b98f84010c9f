//! What file and template sinks share once their content is rendered:
//! the decision to write, the write itself and the `on_change` command.
//!
//! * **Only on change.** A sink's version is a keyed fingerprint of its
//!   content together with its `mode`, `owner` and `group`. When it equals
//!   the version last delivered and the file exists, nothing is done: the
//!   file keeps its mtime and `on_change` does not run.
//! * **Only where it was asked to.** The target's directory is opened once
//!   per write by walking its path one component at a time
//!   ([`Dir::walk`]): a component that anyone but root, the daemon's user
//!   and the sink's `owner` could replace (a symlinked `~/.aws` planted by
//!   another user, a directory in a shared one) fails the sink, naming the
//!   component. Everything after that is relative to the directory's
//!   handle, so swapping a component mid-write cannot move the write.
//! * **Atomic, never readable by others.** The file is replaced through
//!   [`Dir::replace`]: a temp file beside the target is created with mode
//!   0600, given `owner`/`group` (`fchown`), then `mode` (default 0600),
//!   before its first byte is written, fsync'd and renamed over the target.
//!   A failed write leaves the old file as it was; a temp file left by a
//!   process killed mid-write is removed at the sink's next delivery.
//!   `owner` and `group` are names or numeric ids, resolved at each write;
//!   without them the file belongs to the daemon's user and group.
//! * **`on_change`** runs after the file is in place, once per changed
//!   write: argv as configured, no shell, stdin from `/dev/null`, the
//!   daemon's environment without the variables the configuration reads
//!   secrets from, plus `CONTABO_ROTATOR_SINK_PATH` (the file written), in
//!   its own process group. It has [`ON_CHANGE_TIMEOUT`] (60 s)
//!   to finish; then the whole group is killed. Its stdout and stderr are
//!   logged line by line (the first 64 KiB of each) with every secret value
//!   of the snapshot, in any spelling a sink gives it, replaced by
//!   `[REDACTED]`. A non-zero exit, a signal, a timeout or a program that
//!   cannot be started fails the sink with [`SinkError::OnChange`]: the
//!   file is then in place but its reader may not have picked it up, so the
//!   engine forgets the sink's delivered version and the next run writes
//!   the file again and runs `on_change` again, whatever the content.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use secrecy::zeroize::{Zeroize, Zeroizing};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Redact, SinkError};
use crate::dirfd::{Dir, Perms, Trusted};
use crate::state::StateDir;

/// The name of the empty file a health check creates and removes.
const PROBE_PREFIX: &str = ".contabo-rotator-check-";

/// How long `on_change` may run before its process group is killed.
pub const ON_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of each of `on_change`'s streams is logged.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// How long output is still read once `on_change` has exited (a background
/// child may hold the pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// A file to deliver: where, how, and what to run after.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    /// `file sink /etc/myapp/app.env`, for messages.
    pub name: String,
    pub path: &'a Path,
    pub mode: u32,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub on_change: Option<&'a [String]>,
    /// Environment variables `on_change` does not inherit: those holding
    /// the daemon's own secrets (its output is logged).
    pub hide_env: &'a [String],
    /// The content is expected to differ from what was last delivered
    /// (the sink's values changed): it is rendered once, into the temp
    /// file and the fingerprint together ([`write_once`]), rather than
    /// once to fingerprint and once to write.
    pub expect_change: bool,
}

/// Why a sink's content could not be produced: a value the format cannot
/// hold (nothing is written then), or the writer failed.
#[derive(Debug)]
pub enum RenderError {
    Content(String),
    Io(io::Error),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Content(detail) => f.write_str(detail),
            RenderError::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for RenderError {
    fn from(err: io::Error) -> RenderError {
        RenderError::Io(err)
    }
}

/// A sink's content, produced into a writer. [`deliver`] calls it twice:
/// once into a fingerprint (is the file already current? can the content
/// be produced at all?), then into the temp file. Rendering twice costs
/// CPU; holding the body would cost its size in memory (15 MB of JSON for
/// 30,000 credentials), twice over while it was written.
pub type Render<'a> = dyn Fn(&mut dyn io::Write) -> Result<(), RenderError> + Sync + 'a;

/// Writes the content `render` produces unless `delivered` says the file
/// already holds it, then runs `on_change`. Returns the new version when
/// it wrote. A content error leaves the file untouched.
pub(crate) async fn deliver(
    target: &Target<'_>,
    render: &Render<'_>,
    state: &StateDir,
    delivered: Option<&str>,
    redactor: &dyn Redact,
) -> Result<Option<String>, SinkError> {
    // Rendering and writing megabytes is CPU and disk work: off the
    // runtime's worker, so the pass's other tasks keep running.
    let Some(version) = blocking(|| write_file(target, render, state, delivered))? else {
        return Ok(None);
    };
    tracing::debug!(sink = %target.name, "Wrote the sink's file.");
    if let Some(argv) = target.on_change {
        run_on_change(argv, target, ON_CHANGE_TIMEOUT, redactor)
            .await
            .map_err(|err| SinkError::OnChange {
                sink: target.name.clone(),
                detail: err.to_string(),
            })?;
    }
    Ok(Some(version))
}

/// Renders and writes the file unless `delivered` says it already holds
/// the content; the new version when it wrote.
fn write_file(
    target: &Target<'_>,
    render: &Render<'_>,
    state: &StateDir,
    delivered: Option<&str>,
) -> Result<Option<String>, SinkError> {
    let (uid, gid) = owner_ids(target)?;
    let (dir, name) = Dir::walk_parent(target.path, &Trusted::with_owner(uid))
        .map_err(|e| write_error(target, e.to_string()))?;
    // A write killed before its rename left a temp file (holding a secret)
    // beside the target; nothing else would ever remove it. A directory
    // that cannot be listed is reported by the write below.
    if let Ok(removed @ 1..) = dir.remove_temps_where(uid, |t| t == name) {
        tracing::info!(sink = %target.name, removed, "Removed temp files left by an interrupted write.");
    }
    let perms = Perms {
        mode: target.mode,
        uid,
        gid,
    };
    let file = File { dir, name, perms };
    if target.expect_change {
        return write_once(target, &file, render, state, delivered);
    }
    let version = version(target, render, state).map_err(|err| SinkError::Content {
        sink: target.name.clone(),
        detail: err.to_string(),
    })?;
    if delivered == Some(version.as_str()) && file.exists() {
        return Ok(None);
    }
    let body = |file: &mut std::fs::File| {
        crate::crash::point("sink-temp-created");
        let mut out = SecretBuf::new(file);
        render(&mut out).map_err(|err| match err {
            RenderError::Io(e) => e,
            // The fingerprint pass produced it: rendering is deterministic.
            RenderError::Content(detail) => io::Error::other(detail),
        })?;
        io::Write::flush(&mut out)
    };
    file.replace(body)
        .map_err(|e| write_error(target, e.to_string()))?;
    Ok(Some(version))
}

/// The file a sink writes, reached through its directory's handle.
struct File<'a> {
    dir: Dir,
    name: &'a OsStr,
    perms: Perms,
}

impl File<'_> {
    /// Whether the target exists (a symlink there counts: it is replaced).
    fn exists(&self) -> bool {
        matches!(self.dir.stat(self.name), Ok(Some(_)))
    }

    /// [`Dir::replace`] of the target; the error names the target's path.
    fn replace(&self, body: impl FnOnce(&mut std::fs::File) -> io::Result<()>) -> io::Result<()> {
        self.dir.replace(self.name, self.perms, body).map_err(|e| {
            let path = self.dir.shown(self.name);
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })
    }
}

/// A failed write of `target`'s file.
fn write_error(target: &Target<'_>, detail: String) -> SinkError {
    SinkError::Write {
        sink: target.name.clone(),
        detail,
    }
}

/// `target`'s `owner` and `group` as ids, resolved at each write.
fn owner_ids(target: &Target<'_>) -> Result<(Option<u32>, Option<u32>), SinkError> {
    let uid = resolve_owner(target.owner).map_err(|d| write_error(target, d))?;
    let gid = resolve_group(target.group).map_err(|d| write_error(target, d))?;
    Ok((uid.map(Uid::as_raw), gid.map(Gid::as_raw)))
}

/// [`write_file`] for content expected to have changed: one render, into
/// the temp file and the fingerprint at once. A sink holding every
/// credential of a large account is rewritten every `wait` while a pass
/// runs: rendering it once instead of twice took a 30,000-credential
/// pass from 57.05 to 48.11 s of CPU (0 ms latency; 139.6 to 101.6 s at
/// 20 ms and concurrency 8). When the content turns out to be what the file
/// holds, the temp file is removed and nothing else happens; a content
/// error likewise leaves the file untouched (only the temp file existed).
fn write_once(
    target: &Target<'_>,
    file: &File<'_>,
    render: &Render<'_>,
    state: &StateDir,
    delivered: Option<&str>,
) -> Result<Option<String>, SinkError> {
    /// What the render found, beside the write's own result.
    enum Found {
        Version(String),
        Unchanged,
        Content(String),
    }
    let mut found = None;
    let exists = file.exists();
    let body = |out_file: &mut std::fs::File| {
        crate::crash::point("sink-temp-created");
        let mut fingerprint = state.fingerprint_writer();
        let mut out = SecretBuf::new(Tee {
            file: out_file,
            fingerprint: &mut fingerprint,
        });
        match render(&mut out) {
            Ok(()) => io::Write::flush(&mut out)?,
            Err(RenderError::Io(e)) => return Err(e),
            Err(RenderError::Content(detail)) => {
                found = Some(Found::Content(detail));
                return Err(io::Error::other("the content could not be rendered"));
            }
        }
        drop(out);
        let version = fingerprint.finish(metadata(target).as_bytes()).text();
        if delivered == Some(version.as_str()) && exists {
            found = Some(Found::Unchanged);
            return Err(io::Error::other("the content is unchanged"));
        }
        found = Some(Found::Version(version));
        Ok(())
    };
    let written = file.replace(body);
    match (written, found) {
        (Ok(()), Some(Found::Version(version))) => Ok(Some(version)),
        (Err(_), Some(Found::Unchanged)) => Ok(None),
        (Err(_), Some(Found::Content(detail))) => Err(SinkError::Content {
            sink: target.name.clone(),
            detail,
        }),
        (Err(err), _) => Err(write_error(target, err.to_string())),
        (Ok(()), _) => unreachable!("a body that succeeded found the version"),
    }
}

/// Writes to the file and into the fingerprint the same bytes.
struct Tee<'a> {
    file: &'a mut std::fs::File,
    fingerprint: &'a mut crate::state::FingerprintWriter,
}

impl io::Write for Tee<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.fingerprint.write_all(&bytes[..written])?;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Runs `work` where blocking is allowed: in place on a multi-thread
/// runtime (its other tasks move to another worker), inline otherwise.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The keyed fingerprint of what the file should be: content and metadata,
/// hashed as the content is produced (it may be megabytes).
fn version(
    target: &Target<'_>,
    render: &Render<'_>,
    state: &StateDir,
) -> Result<String, RenderError> {
    let mut fingerprint = state.fingerprint_writer();
    render(&mut fingerprint)?;
    Ok(fingerprint.finish(metadata(target).as_bytes()).text())
}

/// What the version covers besides the content.
fn metadata(target: &Target<'_>) -> String {
    format!(
        "\0mode={:o}\0owner={}\0group={}",
        target.mode,
        target.owner.unwrap_or(""),
        target.group.unwrap_or("")
    )
}

/// A buffered writer whose buffer is zeroed after every flush and on drop:
/// what goes through it holds secrets, and std's `BufWriter` would leave
/// them in freed memory.
struct SecretBuf<W: io::Write> {
    inner: W,
    buf: Zeroizing<Vec<u8>>,
}

impl<W: io::Write> SecretBuf<W> {
    const CAPACITY: usize = 64 * 1024;

    fn new(inner: W) -> SecretBuf<W> {
        SecretBuf {
            inner,
            buf: Zeroizing::new(Vec::with_capacity(Self::CAPACITY)),
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        let written = self.inner.write_all(&self.buf);
        // Zeroes the whole buffer and empties it; the capacity stays.
        self.buf.zeroize();
        written
    }
}

impl<W: io::Write> io::Write for SecretBuf<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > Self::CAPACITY {
            self.write_out()?;
        }
        if bytes.len() >= Self::CAPACITY {
            return self.inner.write(bytes);
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

/// A user name or numeric uid; `None` when no owner is configured.
pub(crate) fn resolve_owner(owner: Option<&str>) -> Result<Option<Uid>, String> {
    let Some(owner) = owner else { return Ok(None) };
    if let Ok(id) = owner.parse::<u32>() {
        return Ok(Some(Uid::from_raw(id)));
    }
    match User::from_name(owner) {
        Ok(Some(user)) => Ok(Some(user.uid)),
        Ok(None) => Err(format!("owner `{owner}`: no such user")),
        Err(e) => Err(format!("owner `{owner}`: cannot look up the user: {e}")),
    }
}

/// A group name or numeric gid; `None` when no group is configured.
pub(crate) fn resolve_group(group: Option<&str>) -> Result<Option<Gid>, String> {
    let Some(group) = group else { return Ok(None) };
    if let Ok(id) = group.parse::<u32>() {
        return Ok(Some(Gid::from_raw(id)));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid)),
        Ok(None) => Err(format!("group `{group}`: no such group")),
        Err(e) => Err(format!("group `{group}`: cannot look up the group: {e}")),
    }
}

/// `check --online`: the parent directory exists and takes a new file (one
/// is created and removed), the target is not a directory, and the owner
/// and group exist.
pub(crate) fn healthcheck(target: &Target<'_>) -> Result<(), SinkError> {
    let fail = |detail: String| SinkError::Write {
        sink: target.name.clone(),
        detail,
    };
    let uid = resolve_owner(target.owner).map_err(fail)?;
    resolve_group(target.group).map_err(fail)?;
    let trusted = Trusted::with_owner(uid.map(Uid::as_raw));
    let (dir, name) = Dir::walk_parent(target.path, &trusted).map_err(|e| fail(e.to_string()))?;
    let is_dir = |stat: rustix::fs::Stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory
    };
    if matches!(dir.stat(name), Ok(Some(stat)) if is_dir(stat)) {
        return Err(fail(format!("{} is a directory", target.path.display())));
    }
    // A process killed between creating its probe and removing it left
    // one behind (empty, never a secret): nothing else would remove it.
    // Only names of exactly that form that are the daemon's own.
    let is_probe = |name: &str| {
        name.strip_prefix(PROBE_PREFIX)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    for stale in dir.names().unwrap_or_default() {
        let ours = stale.to_str().is_some_and(is_probe);
        if ours && dir.is_own_file(&stale, None).unwrap_or(false) {
            let _ = dir.remove(&stale);
        }
    }
    let probe = format!("{PROBE_PREFIX}{:016x}", rand::random::<u64>());
    let flags = rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL;
    dir.open(OsStr::new(&probe), flags, 0o600)
        .and_then(|_| dir.remove(OsStr::new(&probe)))
        .map_err(|e| {
            let shown = dir.path().display();
            fail(format!("cannot create a file in {shown}: {e}"))
        })?;
    Ok(())
}

/// Runs `argv` (see the module documentation); `Err` says why it failed.
/// Why an `on_change` command failed.
#[derive(Debug, thiserror::Error)]
enum OnChangeError {
    #[error("on_change: cannot start `{program}`: {source}")]
    Start { program: String, source: io::Error },
    #[error("on_change `{program}`: {source}")]
    Wait { program: String, source: io::Error },
    #[error("on_change `{program}` failed: {status}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
    },
    #[error(
        "on_change `{program}` did not finish within {} and was killed",
        humantime::format_duration(*.limit)
    )]
    TimedOut { program: String, limit: Duration },
}

async fn run_on_change(
    argv: &[String],
    target: &Target<'_>,
    limit: Duration,
    redactor: &dyn Redact,
) -> Result<(), OnChangeError> {
    let program = &argv[0];
    let mut command = tokio::process::Command::new(program);
    for name in target.hide_env {
        command.env_remove(name);
    }
    let mut child = command
        .args(&argv[1..])
        .env("CONTABO_ROTATOR_SINK_PATH", target.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| OnChangeError::Start {
            program: program.clone(),
            source,
        })?;
    let pgid = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let stdout = tokio::spawn(read_limited(child.stdout.take()));
    let stderr = tokio::spawn(read_limited(child.stderr.take()));
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Some(status.map_err(|source| OnChangeError::Wait {
            program: program.clone(),
            source,
        })?),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            None
        }
    };
    for (stream, task) in [("stdout", stdout), ("stderr", stderr)] {
        let abort = task.abort_handle();
        let output = match tokio::time::timeout(OUTPUT_GRACE, task).await {
            Ok(Ok(bytes)) => bytes,
            _ => {
                abort.abort();
                Vec::new()
            }
        };
        let text = redactor.redact(&String::from_utf8_lossy(&output));
        for line in text.lines() {
            tracing::info!(sink = %target.name, stream, line, "on_change output.");
        }
    }
    match status {
        Some(status) if status.success() => {
            tracing::info!(sink = %target.name, program = %program, "Ran on_change.");
            Ok(())
        }
        Some(status) => Err(OnChangeError::Failed {
            program: program.clone(),
            status,
        }),
        None => Err(OnChangeError::TimedOut {
            program: program.clone(),
            limit,
        }),
    }
}

/// The whole lines within the first [`OUTPUT_LIMIT`] bytes of a stream,
/// reading it to its end. A line cut by the limit is dropped: it could end
/// in the first part of a secret, which redaction would not recognise.
async fn read_limited(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                truncated |= n > room;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    if truncated {
        let whole = kept.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        kept.truncate(whole);
        kept.extend_from_slice(b"[output truncated]\n");
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Snapshot;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn target<'a>(path: &'a Path, on_change: Option<&'a [String]>) -> Target<'a> {
        Target {
            name: format!("file sink {}", path.display()),
            path,
            mode: 0o640,
            owner: None,
            group: None,
            on_change,
            hide_env: &[],
            expect_change: false,
        }
    }

    /// Fixed content, as a sink renders it.
    fn text(
        content: &'static str,
    ) -> impl Fn(&mut dyn io::Write) -> Result<(), RenderError> + Sync {
        move |out: &mut dyn io::Write| Ok(out.write_all(content.as_bytes())?)
    }

    fn argv(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn writes_once_with_its_mode_and_runs_on_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let path = dir.path().join("out.env");
        let count = dir.path().join("count");
        let hook = argv(&format!("echo run >> {}", count.display()));
        let t = target(&path, Some(&hook));
        let content = text("A='1'\n");
        let redactor = Snapshot::default().redactor();
        let v1 = deliver(&t, &content, &state, None, &redactor)
            .await
            .unwrap()
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_to_string(&path).unwrap(), "A='1'\n");
        let again = deliver(&t, &content, &state, Some(&v1), &redactor).await;
        assert!(matches!(again, Ok(None)), "unchanged: {again:?}");
        assert_eq!(fs::read_to_string(&count).unwrap(), "run\n");
        // A new mode is a change even with the same content.
        let t2 = Target { mode: 0o600, ..t };
        let v2 = deliver(&t2, &content, &state, Some(&v1), &redactor)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&count).unwrap(), "run\nrun\n");
    }

    #[tokio::test]
    async fn owner_and_group_are_set_by_id_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let path = dir.path().join("owned");
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            // Non-root can only give its own ids; still exercises the path.
            let uid = me.as_raw().to_string();
            let t = Target {
                owner: Some(&uid),
                ..target(&path, None)
            };
            let redactor = Snapshot::default().redactor();
            deliver(&t, &text("x"), &state, None, &redactor)
                .await
                .unwrap();
            return;
        }
        let t = Target {
            owner: Some("4242"),
            group: Some("daemon"),
            ..target(&path, None)
        };
        let redactor = Snapshot::default().redactor();
        deliver(&t, &text("x"), &state, None, &redactor)
            .await
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.uid(), 4242);
        assert_eq!(
            meta.gid(),
            Group::from_name("daemon").unwrap().unwrap().gid.as_raw()
        );
        let t = Target {
            owner: Some("no-such-user-xyz"),
            ..target(&path, None)
        };
        let err = deliver(&t, &text("y"), &state, None, &redactor)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("owner `no-such-user-xyz`: no such user"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "x", "old file kept");
    }

    #[tokio::test]
    async fn content_is_streamed_through_a_zeroed_buffer_and_a_failed_render_writes_nothing() {
        for expect_change in [false, true] {
            streamed_and_failed_render(expect_change).await;
        }
    }

    /// Rendered once (`expect_change`) or twice, the same file, the same
    /// version, and a failed render leaves the file as it was.
    async fn streamed_and_failed_render(expect_change: bool) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let path = dir.path().join("big");
        let t = Target {
            expect_change,
            ..target(&path, None)
        };
        let redactor = Snapshot::default().redactor();
        // Pieces that straddle the 64 KiB buffer, and one larger than it.
        let render = |out: &mut dyn io::Write| -> Result<(), RenderError> {
            for i in 0..3000u32 {
                writeln!(out, "line {i:05} {}", "x".repeat(40))?;
            }
            out.write_all(&vec![b'y'; 200 * 1024])?;
            Ok(())
        };
        let mut want = String::new();
        for i in 0..3000u32 {
            want.push_str(&format!("line {i:05} {}\n", "x".repeat(40)));
        }
        want.push_str(&"y".repeat(200 * 1024));
        let v1 = deliver(&t, &render, &state, None, &redactor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), want);
        assert_eq!(
            v1,
            state
                .fingerprint_parts(&[want.as_bytes(), b"\0mode=640\0owner=\0group="])
                .text(),
            "the streamed fingerprint is that of the whole content"
        );
        // A content error halfway: the file keeps its old content.
        let failing = |out: &mut dyn io::Write| -> Result<(), RenderError> {
            out.write_all(b"half")?;
            Err(RenderError::Content("cannot hold this".into()))
        };
        let err = deliver(&t, &failing, &state, Some(&v1), &redactor)
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Content { .. }), "{err:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), want);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left"
        );
    }

    /// A sink expected to change is rendered once; when its content turns
    /// out to be what the file holds, nothing is written (same file, no
    /// `on_change`, no temp file left), as on the two-render path.
    #[tokio::test]
    async fn an_expected_change_renders_once_and_an_unchanged_content_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let path = dir.path().join("out.json");
        let count = dir.path().join("count");
        let hook = argv(&format!("echo run >> {}", count.display()));
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let content = |body: &'static str| {
            let renders = &renders;
            move |out: &mut dyn io::Write| -> Result<(), RenderError> {
                renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(out.write_all(body.as_bytes())?)
            }
        };
        let redactor = Snapshot::default().redactor();
        let twice = target(&path, Some(&hook));
        let once = Target {
            expect_change: true,
            ..target(&path, Some(&hook))
        };
        let v1 = deliver(&twice, &content("one"), &state, None, &redactor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renders.swap(0, std::sync::atomic::Ordering::SeqCst), 2);
        let v2 = deliver(&once, &content("two"), &state, Some(&v1), &redactor)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renders.swap(0, std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        // The version is the one the two-render path computes.
        let dir2 = tempfile::tempdir().unwrap();
        let path2 = dir2.path().join("out.json");
        let v2_twice = deliver(
            &target(&path2, None),
            &content("two"),
            &state,
            None,
            &redactor,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(v2, v2_twice);
        let inode = fs::metadata(&path).unwrap().ino();
        let unchanged = deliver(&once, &content("two"), &state, Some(&v2), &redactor).await;
        assert!(matches!(unchanged, Ok(None)), "{unchanged:?}");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "not replaced");
        assert_eq!(fs::read_to_string(&count).unwrap(), "run\nrun\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp file left: {names:?}");
    }

    #[tokio::test]
    async fn on_change_failures_and_timeouts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let redactor = Snapshot::default().redactor();
        let fail = argv("echo oops >&2; exit 3");
        let t = target(&path, Some(&fail));
        let err = run_on_change(&fail, &t, Duration::from_secs(10), &redactor)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sh` failed: exit status: 3"), "{err}");
        // A background grandchild holding the pipes does not hang the run.
        let slow = argv("sleep 30 & sleep 30");
        let started = std::time::Instant::now();
        let err = run_on_change(&slow, &t, Duration::from_millis(300), &redactor)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let missing = vec!["/nonexistent/hook".to_owned()];
        let err = run_on_change(&missing, &t, Duration::from_secs(1), &redactor)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot start `/nonexistent/hook`"), "{err}");
        let env = argv("test \"$CONTABO_ROTATOR_SINK_PATH\" = \"$1\"");
        let mut env = env;
        env.push("sh".into());
        env.push(path.display().to_string());
        run_on_change(&env, &t, Duration::from_secs(10), &redactor)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn on_change_does_not_inherit_the_hidden_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let redactor = Snapshot::default().redactor();
        // Set by cargo for every test process.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let check = argv("test -z \"${CARGO_MANIFEST_DIR+set}\"");
        let hidden = ["CARGO_MANIFEST_DIR".to_owned()];
        let t = Target {
            hide_env: &hidden,
            ..target(&path, Some(&check))
        };
        run_on_change(&check, &t, Duration::from_secs(10), &redactor)
            .await
            .unwrap();
        let t = target(&path, Some(&check));
        run_on_change(&check, &t, Duration::from_secs(10), &redactor)
            .await
            .unwrap_err();
    }

    #[tokio::test]
    async fn long_output_is_cut_at_a_line_boundary() {
        let mut text = "x".repeat(OUTPUT_LIMIT - 10);
        text.push('\n');
        text.push_str("a-secret-cut-by-the-limit\nmore\n");
        let kept = read_limited(Some(text.as_bytes())).await;
        let kept = String::from_utf8(kept).unwrap();
        assert!(
            kept.ends_with("x\n[output truncated]\n"),
            "{}",
            &kept[kept.len() - 40..]
        );
        assert!(!kept.contains("a-secret"));
        let short = read_limited(Some(&b"one\ntwo"[..])).await;
        assert_eq!(short, b"one\ntwo");
    }

    #[test]
    fn healthcheck_finds_unusable_directories() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("out.json");
        healthcheck(&target(&ok, None)).unwrap();
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 0, "the probe file is removed");
        let missing = dir.path().join("nope/out.json");
        let err = healthcheck(&target(&missing, None)).unwrap_err();
        assert!(err.to_string().contains("nope does not exist"), "{err}");
        fs::write(dir.path().join("file"), "").unwrap();
        let under_file = dir.path().join("file/out.json");
        let err = healthcheck(&target(&under_file, None)).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        let t = Target {
            group: Some("no-such-group-xyz"),
            ..target(&ok, None)
        };
        let err = healthcheck(&t).unwrap_err();
        assert!(err.to_string().contains("no such group"), "{err}");
    }
}
