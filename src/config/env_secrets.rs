//! `{ env = "VAR" }` secrets, taken out of the process environment at start.
//!
//! A secret handed in through the environment would otherwise stay there
//! for the process's whole life: in `/proc/PID/environ`, readable by the
//! daemon's user (and so by an `on_change` child, through
//! `/proc/$PPID/environ`), and in a core dump. [`take`] runs first thing
//! in `main`, while the process is still single-threaded, before the
//! configuration is loaded for real:
//!
//! 1. it finds the variables that the configuration's `{ env }` secrets
//!    name (with the configuration's own parser) and reads those that are
//!    set into a process-wide store of [`SecretString`]s;
//! 2. `/proc/PID/environ` shows the environment the process was started
//!    with, whatever `unsetenv` does later, so the process executes itself
//!    again (same PID, same arguments, `/proc/self/exe`) without those
//!    variables, handing their values over in an anonymous memory file
//!    (`memfd`) whose descriptor is named by [`HANDOVER_VAR`];
//! 3. the new image (`receive`) reads the memory file into the store,
//!    closes it and removes [`HANDOVER_VAR`].
//!
//! Every later load (`check`, the daemon's SIGHUP reload) looks a variable
//! up in the store first, then in the environment ([`var`]). A variable
//! first named by a configuration loaded later (a reload) is read from the
//! environment and stays there: the daemon is multi-threaded by then.
//! Should executing again fail (no `/proc`), the values are still moved
//! into the store and removed from the environment (`unsetenv`), and the
//! failure is reported by [`Taken::warning`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

/// The variable naming the memory file a process hands its `{ env }`
/// secrets over in when it executes itself again.
pub const HANDOVER_VAR: &str = "CONTABO_ROTATOR_ENV_SECRETS_FD";

/// The memory file's name (shown in `/proc/PID/fd` as `/memfd:NAME`).
const MEMFD_NAME: &str = "contabo-rotator-env-secrets";

/// The `{ env }` secrets taken out of the environment, by variable.
static TAKEN: Mutex<BTreeMap<String, SecretString>> = Mutex::new(BTreeMap::new());

/// The value of environment variable `name` as the configuration sees it:
/// from the secrets taken out of the environment, else the environment.
pub fn var(name: &str) -> Option<String> {
    let taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    match taken.get(name) {
        Some(value) => Some(value.expose_secret().to_owned()),
        None => std::env::var(name).ok(),
    }
}

/// What [`take`] did, for the log once logging is set up.
#[derive(Debug, Default)]
pub struct Taken {
    /// Variables moved out of the environment (names only).
    pub names: Vec<String>,
    /// Why they may still be in `/proc/PID/environ`.
    pub warning: Option<String>,
}

/// Moves the `{ env }` secrets of the configuration at `config` out of
/// the environment (see the module documentation). Must run while the
/// process has one thread. Returns only when this process's environment
/// no longer needs to change, or could not be changed by executing again;
/// a configuration that cannot be read or parsed is left to the real load
/// to report.
pub fn take(config: &Path) -> Taken {
    let handed_over = receive();
    let mut taken = Taken {
        names: handed_over.names,
        warning: handed_over.warning,
    };
    let Ok(text) = std::fs::read_to_string(config) else {
        return taken;
    };
    // A value that is not UTF-8 is left where it is: the load reports the
    // variable as not set, as it always has.
    let found: Vec<(String, SecretString)> = super::secret::env_names_in(&text)
        .into_iter()
        .filter_map(|name| {
            let value = std::env::var(&name).ok()?;
            Some((name, SecretString::from(value)))
        })
        .collect();
    if found.is_empty() {
        return taken;
    }
    if !handed_over.received {
        // Returns only if the process could not execute itself again.
        let err = execute_again(&found);
        taken.warning = Some(format!(
            "could not execute again without the {{ env }} secrets' variables ({err}); \
             they are removed from the environment but /proc/PID/environ still shows them \
             to root"
        ));
    }
    let mut store = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for (name, value) in found {
        std::env::remove_var(&name);
        taken.names.push(name.clone());
        store.insert(name, value);
    }
    taken
}

/// What [`receive`] found.
#[derive(Debug, Default)]
struct Received {
    /// This process was executed again by [`take`].
    received: bool,
    names: Vec<String>,
    warning: Option<String>,
}

/// Reads the secrets a previous image of this process handed over, if it
/// did, into the store; closes the memory file and removes
/// [`HANDOVER_VAR`].
fn receive() -> Received {
    let Some(fd) = std::env::var_os(HANDOVER_VAR) else {
        return Received::default();
    };
    std::env::remove_var(HANDOVER_VAR);
    let mut received = Received {
        received: true,
        ..Received::default()
    };
    match read_handover(&fd.to_string_lossy()) {
        Ok(pairs) => {
            let mut store = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            for (name, value) in pairs {
                received.names.push(name.clone());
                store.insert(name, value);
            }
        }
        Err(err) => {
            received.warning = Some(format!(
                "{HANDOVER_VAR}: cannot read the {{ env }} secrets handed over: {err}"
            ));
        }
    }
    received
}

/// The pairs in the memory file at descriptor `fd`, which is then closed.
/// Only a memory file of ours is read (a descriptor the variable names by
/// mistake is neither read nor closed).
fn read_handover(fd: &str) -> Result<Vec<(String, SecretString)>, String> {
    let fd: i32 = fd
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("`{fd}` is not a descriptor"))?;
    let link = format!("/proc/self/fd/{fd}");
    let target = std::fs::read_link(&link).map_err(|e| format!("{link}: {e}"))?;
    if !target
        .to_string_lossy()
        .starts_with(&format!("/memfd:{MEMFD_NAME}"))
    {
        return Err(format!("descriptor {fd} is not the memory file"));
    }
    let file = std::fs::File::open(&link).map_err(|e| format!("{link}: {e}"));
    // The inherited descriptor is not close-on-exec: close it whatever
    // happens, or an on_change child would inherit it.
    let _ = nix::unistd::close(fd);
    let mut bytes = Zeroizing::new(Vec::new());
    file?
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{link}: {e}"))?;
    decode(&bytes).ok_or_else(|| "the memory file is not a list of pairs".to_owned())
}

/// `NAME\0VALUE\0` for each pair.
fn encode(pairs: &[(String, SecretString)]) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::new());
    for (name, value) in pairs {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.expose_secret().as_bytes());
        bytes.push(0);
    }
    bytes
}

/// The pairs of [`encode`]; `None` when `bytes` is not such a list.
fn decode(bytes: &[u8]) -> Option<Vec<(String, SecretString)>> {
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return bytes.is_empty().then(Vec::new);
    };
    let fields: Vec<&[u8]> = body.split(|b| *b == 0).collect();
    if !fields.len().is_multiple_of(2) {
        return None;
    }
    fields
        .chunks(2)
        .map(|pair| {
            let name = std::str::from_utf8(pair[0]).ok()?;
            let value = std::str::from_utf8(pair[1]).ok()?;
            Some((name.to_owned(), SecretString::from(value.to_owned())))
        })
        .collect()
}

/// Executes `/proc/self/exe` with this process's arguments, without the
/// variables of `found` and with their values in a memory file. Returns
/// only on failure.
fn execute_again(found: &[(String, SecretString)]) -> std::io::Error {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // Not close-on-exec: the new image inherits it.
    let memfd = match nix::sys::memfd::memfd_create(MEMFD_NAME, nix::sys::memfd::MFdFlags::empty())
    {
        Ok(fd) => fd,
        Err(errno) => return std::io::Error::from(errno),
    };
    let mut file = std::fs::File::from(memfd);
    if let Err(err) = file.write_all(&encode(found)) {
        return err;
    }
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    for (name, _) in found {
        command.env_remove(name);
    }
    command.env(HANDOVER_VAR, file.as_raw_fd().to_string());
    // The memory file is closed when `file` drops, after a failed exec.
    command.exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_a_bad_list_is_refused() {
        let pairs = vec![
            ("A".to_owned(), SecretString::from("one")),
            ("B_2".to_owned(), SecretString::from("t=w o\n")),
        ];
        let decoded = decode(&encode(&pairs)).unwrap();
        let shown: Vec<(&str, &str)> = decoded
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(shown, [("A", "one"), ("B_2", "t=w o\n")]);
        assert!(decode(b"").unwrap().is_empty());
        assert!(decode(b"A\0").is_none(), "a name without a value");
        assert!(decode(b"A\0one").is_none(), "not terminated");
    }

    #[test]
    fn the_store_comes_before_the_environment() {
        // Set by cargo for every test process.
        let real = std::env::var("CARGO_PKG_NAME").unwrap();
        assert_eq!(var("CARGO_PKG_NAME").as_deref(), Some(real.as_str()));
        TAKEN.lock().unwrap().insert(
            "CONTABO_ROTATOR_TEST_TAKEN".to_owned(),
            SecretString::from("from-the-store"),
        );
        assert_eq!(
            var("CONTABO_ROTATOR_TEST_TAKEN").as_deref(),
            Some("from-the-store")
        );
        assert_eq!(var("CONTABO_ROTATOR_TEST_NOT_SET_ANYWHERE"), None);
    }

    #[test]
    fn a_descriptor_that_is_not_the_memory_file_is_neither_read_nor_closed() {
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let err = read_handover(&fd.to_string()).unwrap_err();
        assert!(err.contains("is not the memory file"), "{err}");
        // Still open.
        assert!(std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
        assert!(read_handover("1").is_err());
        assert!(read_handover("x").is_err());
    }
}
