//! Who may write the configuration file. Its `on_change` argv runs as the
//! daemon's user (often root) and its `[api]` section says where the
//! credentials go: whoever can write it holds what the daemon holds.
//!
//! At every load: a file that everyone may write is refused; one that its
//! group may write, or that belongs to someone other than root and the
//! daemon's effective user, is used with a warning naming the fix.

use std::path::Path;

/// What to do with a configuration file, from its mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Trusted,
    /// Used, with this warning (what is wrong, and the fix).
    Warn(String),
    /// Refused with this message (what is wrong, and the fix).
    Refuse(String),
}

/// The verdict on the file at `path` with `mode` and owner `uid`, for a
/// process whose effective user is `euid`.
pub(super) fn judge(path: &Path, mode: u32, uid: u32, euid: u32) -> Verdict {
    let shown = path.display();
    if mode & 0o002 != 0 {
        return Verdict::Refuse(format!(
            "the configuration file is writable by everyone (mode {:04o}): anyone could change \
             the commands the daemon runs (on_change) and where its secrets go; refusing it. \
             Fix: chmod o-w {shown}",
            mode & 0o7777
        ));
    }
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if uid != 0 && uid != euid {
        problems.push(format!(
            "it belongs to uid {uid}, neither root nor the daemon's user (uid {euid})"
        ));
        fixes.push(format!("chown root {shown}"));
    }
    if mode & 0o020 != 0 {
        problems.push(format!(
            "its group may write it (mode {:04o})",
            mode & 0o7777
        ));
        fixes.push(format!("chmod g-w {shown}"));
    }
    if problems.is_empty() {
        return Verdict::Trusted;
    }
    Verdict::Warn(format!(
        "the configuration file can be written by others than root and the daemon's user: \
         {}; they could change the commands the daemon runs (on_change). Fix: {}",
        problems.join(", and "),
        fixes.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_writable_is_refused_group_writable_or_foreign_is_warned() {
        let path = Path::new("/etc/contabo-rotator/config.toml");
        let root = 0;
        let service = 990;
        let other = 1000;
        // (mode, owner, euid, verdict: 0 trusted, 1 warned, 2 refused)
        let cases = [
            (0o100600, root, root, 0),
            (0o100644, root, service, 0),
            (0o100640, service, service, 0),
            (0o100400, service, service, 0),
            (0o100660, root, service, 1),
            (0o100600, other, service, 1),
            (0o100600, other, root, 1),
            (0o100620, service, service, 1),
            (0o100666, root, root, 2),
            (0o100602, service, service, 2),
            (0o100777, other, service, 2),
            (0o102, root, root, 2),
        ];
        for (mode, uid, euid, want) in cases {
            let verdict = judge(path, mode, uid, euid);
            let got = match &verdict {
                Verdict::Trusted => 0,
                Verdict::Warn(_) => 1,
                Verdict::Refuse(_) => 2,
            };
            assert_eq!(got, want, "{mode:o} uid {uid} euid {euid}: {verdict:?}");
        }
        let Verdict::Refuse(message) = judge(path, 0o100666, root, root) else {
            unreachable!()
        };
        assert!(
            message.contains("writable by everyone (mode 0666)"),
            "{message}"
        );
        assert!(
            message.ends_with("Fix: chmod o-w /etc/contabo-rotator/config.toml"),
            "{message}"
        );
        let Verdict::Warn(message) = judge(path, 0o100660, other, service) else {
            unreachable!()
        };
        assert!(
            message
                .contains("it belongs to uid 1000, neither root nor the daemon's user (uid 990)")
                && message.contains("its group may write it (mode 0660)")
                && message.ends_with(
                    "Fix: chown root /etc/contabo-rotator/config.toml and chmod g-w \
                     /etc/contabo-rotator/config.toml"
                ),
            "{message}"
        );
    }
}
