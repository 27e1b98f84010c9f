//! The walk's verdicts on trees made with other owners (made-up uids, so
//! these tests run as root, as CI does), and a directory swapped mid-write.

use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Made-up users: the sink's owner and someone else.
const OPS: u32 = 64_101;
const OTHER: u32 = 64_102;

fn as_root() {
    assert_eq!(
        euid(),
        0,
        "these tests give files to other users: run them as root (CI does)"
    );
}

fn mkdir(path: &Path, uid: u32, mode: u32) {
    fs::create_dir(path).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(target: &Path, at: &Path, uid: u32) {
    symlink(target, at).unwrap();
    lchown(at, Some(uid), Some(uid)).unwrap();
}

fn refused(path: &Path, trusted: Trusted) -> String {
    let err = Dir::walk(path, &trusted).expect_err("the walk must refuse");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    err.to_string()
}

#[test]
fn a_root_owned_tree_and_root_owned_symlinks_are_walked() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    mkdir(&real, 0, 0o755);
    fs::create_dir(real.join("sub")).unwrap();
    link(&real, &tmp.path().join("abs"), 0);
    link(Path::new("real/sub"), &tmp.path().join("rel"), 0);
    for path in [
        "real/sub",
        "abs/sub",
        "rel",
        "real/sub/../sub",
        "rel/../sub",
    ] {
        let dir = Dir::walk(&tmp.path().join(path), &Trusted::with_owner(None)).unwrap();
        let inode = rustix::fs::fstat(&dir).unwrap().st_ino;
        assert_eq!(
            inode,
            fs::metadata(real.join("sub")).unwrap().ino(),
            "{path}"
        );
    }
}

#[test]
fn a_symlink_owned_by_another_user_is_refused_and_names_the_component() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    let victim = tmp.path().join("victim");
    mkdir(&victim, OTHER, 0o700);
    link(&victim, &home.join(".aws"), OPS);
    let err = refused(&home.join(".aws"), Trusted::with_owner(Some(OPS)));
    assert!(
        err.contains(&home.join(".aws").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&format!("a symlink owned by uid {OPS}")),
        "{err}"
    );
}

#[test]
fn a_directory_of_another_user_is_trusted_only_for_that_owner() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    mkdir(&home.join(".aws"), OPS, 0o700);
    Dir::walk(&home.join(".aws"), &Trusted::with_owner(Some(OPS))).unwrap();
    let err = refused(&home.join(".aws"), Trusted::with_owner(None));
    assert!(err.contains(&format!("belongs to uid {OPS}")), "{err}");
    let err = refused(&home.join(".aws"), Trusted::with_owner(Some(OTHER)));
    assert!(
        err.contains(&home.join(".aws").display().to_string()),
        "{err}"
    );
}

#[test]
fn shared_directories_are_judged_by_their_sticky_bit_and_entries() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    mkdir(&shared, 0, 0o1777);
    mkdir(&shared.join("root-owned"), 0, 0o755);
    mkdir(&shared.join("ops-owned"), OPS, 0o755);
    Dir::walk(&shared.join("root-owned"), &Trusted::with_owner(None)).unwrap();
    let err = refused(&shared.join("ops-owned"), Trusted::with_owner(None));
    assert!(err.contains("shared sticky directory"), "{err}");
    Dir::walk(&shared.join("ops-owned"), &Trusted::with_owner(Some(OPS))).unwrap();

    let open = tmp.path().join("open");
    mkdir(&open, 0, 0o777);
    mkdir(&open.join("sub"), 0, 0o755);
    let err = refused(&open.join("sub"), Trusted::with_owner(None));
    assert!(err.contains("writable by everyone"), "{err}");

    let group = tmp.path().join("group");
    mkdir(&group, 0, 0o775);
    chown(&group, None, Some(OTHER)).unwrap();
    mkdir(&group.join("sub"), 0, 0o755);
    let err = refused(&group.join("sub"), Trusted::with_owner(None));
    assert!(err.contains(&format!("writable by group {OTHER}")), "{err}");
}

#[test]
fn a_missing_or_non_directory_component_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("file"), b"").unwrap();
    let err = Dir::walk(&tmp.path().join("file/sub"), &Trusted::with_owner(None)).unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    let err = Dir::walk(&tmp.path().join("absent/sub"), &Trusted::with_owner(None)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn a_symlink_loop_ends() {
    let tmp = tempfile::tempdir().unwrap();
    symlink("b", tmp.path().join("a")).unwrap();
    symlink("a", tmp.path().join("b")).unwrap();
    let err = Dir::walk(&tmp.path().join("a"), &Trusted::with_owner(None)).unwrap_err();
    assert!(
        err.to_string().contains("too many levels of symlinks"),
        "{err}"
    );
}

/// The owner of `~/.aws` can already replace what is in it; swapping the
/// directory for a symlink (or another directory) while the daemon writes
/// must give them nothing more: the write stays in the directory that was
/// checked, and nothing outside it changes.
#[test]
fn swapping_the_directory_mid_write_moves_nothing_outside_it() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    let aws = home.join(".aws");
    mkdir(&aws, OPS, 0o700);
    let victim = tmp.path().join("victim");
    mkdir(&victim, OTHER, 0o700);
    fs::write(victim.join("credentials"), b"victim's own").unwrap();
    chown(victim.join("credentials"), Some(OTHER), Some(OTHER)).unwrap();

    let target = aws.join("credentials");
    for swap in ["symlink", "directory"] {
        let (dir, name) = Dir::walk_parent(&target, &Trusted::with_owner(Some(OPS))).unwrap();
        let perms = Perms {
            mode: 0o600,
            uid: Some(OPS),
            gid: Some(OPS),
        };
        let moved = home.join(format!(".aws-{swap}"));
        dir.replace(name, perms, |file| {
            // What the owner can do at this instant: move the directory
            // away and put something else in its place.
            fs::rename(&aws, &moved)?;
            match swap {
                "symlink" => link(&victim, &aws, OPS),
                _ => mkdir(&aws, OPS, 0o700),
            }
            io::Write::write_all(file, b"[app]\n")
        })
        .unwrap();
        let written = moved.join("credentials");
        assert_eq!(fs::read(&written).unwrap(), b"[app]\n", "{swap}");
        assert_eq!(fs::metadata(&written).unwrap().uid(), OPS);
        assert_eq!(
            fs::read(victim.join("credentials")).unwrap(),
            b"victim's own"
        );
        let meta = fs::metadata(victim.join("credentials")).unwrap();
        assert_eq!(meta.uid(), OTHER, "{swap}");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1, "{swap}");
        if swap == "symlink" {
            fs::remove_file(&aws).unwrap();
        } else {
            assert_eq!(fs::read_dir(&aws).unwrap().count(), 0, "{swap}");
            fs::remove_dir(&aws).unwrap();
        }
        fs::rename(&moved, &aws).unwrap();
    }
}

#[test]
fn the_temp_file_is_the_owners_before_any_other_bit_is_set() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir::walk(tmp.path(), &Trusted::with_owner(None)).unwrap();
    let perms = Perms {
        mode: 0o640,
        uid: Some(OPS),
        gid: Some(OTHER),
    };
    dir.replace(OsStr::new("out"), perms, |file| {
        // By the first byte, the file is already exactly what it ends as.
        let meta = file.metadata()?;
        assert_eq!((meta.uid(), meta.gid()), (OPS, OTHER));
        assert_eq!(meta.mode() & 0o7777, 0o640);
        io::Write::write_all(file, b"x")
    })
    .unwrap();
    let meta = fs::metadata(tmp.path().join("out")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (OPS, OTHER, 0o640)
    );
}

/// A root-owned symlink is safe only where no one but root and the daemon
/// can move it: the sink's owner may not bring one into a directory of
/// theirs (`mv ~/www ~/.aws`, where `www` is a link root once made).
#[test]
fn a_root_symlink_the_owner_could_move_is_not_followed() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    let rootdir = tmp.path().join("rootdir");
    mkdir(&rootdir, 0, 0o755);
    link(&rootdir, &home.join(".aws"), 0);
    let err = refused(&home.join(".aws"), Trusted::with_owner(Some(OPS)));
    assert!(err.contains("the sink's owner could move there"), "{err}");
    // Below a component only the owner makes safe, too.
    mkdir(&home.join("sub"), 0, 0o755);
    link(&rootdir, &home.join("sub/link"), 0);
    refused(&home.join("sub/link"), Trusted::with_owner(Some(OPS)));
}

#[test]
fn a_group_writable_directory_is_refused_whatever_its_group() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    // root:root 0775, as a POSIX ACL granting a named user write shows it
    // (the group bits are the ACL's mask).
    let shared = tmp.path().join("acl");
    mkdir(&shared, 0, 0o775);
    mkdir(&shared.join("app"), 0, 0o755);
    let err = refused(&shared.join("app"), Trusted::with_owner(None));
    assert!(err.contains("writable by group 0"), "{err}");
}

/// The target file is a component too: a directory others can write lets
/// them swap what its readers get.
#[test]
fn the_target_directory_is_judged_too() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    mkdir(&open, 0, 0o775);
    let err = Dir::walk_parent(&open.join("creds.json"), &Trusted::with_owner(None)).unwrap_err();
    assert!(err.to_string().contains("creds.json"), "{err}");
    let shared = tmp.path().join("sticky");
    mkdir(&shared, 0, 0o1777);
    Dir::walk_parent(&shared.join("creds.json"), &Trusted::with_owner(None)).unwrap();
    fs::write(shared.join("creds.json"), b"").unwrap();
    chown(shared.join("creds.json"), Some(OTHER), None).unwrap();
    let err = Dir::walk_parent(&shared.join("creds.json"), &Trusted::with_owner(None)).unwrap_err();
    assert!(err.to_string().contains("shared sticky directory"), "{err}");
}

#[test]
fn the_state_directory_is_walked_and_created_privately() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("a/b/state");
    let dir = Dir::open_private(&state, true).unwrap();
    assert_eq!(dir.path(), state);
    for made in ["a", "a/b", "a/b/state"] {
        let mode = fs::metadata(tmp.path().join(made)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{made}");
    }
    // Reached through a directory or a symlink someone else controls.
    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    let err = Dir::open_private(&home.join("state"), true).unwrap_err();
    assert!(
        err.to_string().contains(&format!("belongs to uid {OPS}")),
        "{err}"
    );
    assert!(!home.join("state").exists(), "nothing made there");
    link(&state, &tmp.path().join("link"), OPS);
    let err = Dir::open_private(&tmp.path().join("link"), false).unwrap_err();
    assert!(err.to_string().contains("symlink owned by uid"), "{err}");
}

#[test]
fn files_the_configuration_names_are_read_only_from_trusted_places() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    fs::write(&secret, b"s3cret\n").unwrap();
    let (bytes, _) = read_trusted(&secret, READ_LIMIT).unwrap();
    assert_eq!(&bytes[..], b"s3cret\n");
    // A root-owned symlink is followed, as the last component too.
    link(&secret, &tmp.path().join("alias"), 0);
    read_trusted(&tmp.path().join("alias"), READ_LIMIT).unwrap();

    let home = tmp.path().join("ops");
    mkdir(&home, OPS, 0o755);
    link(&secret, &home.join("tpl.j2"), OPS);
    let err = read_trusted(&home.join("tpl.j2"), READ_LIMIT).unwrap_err();
    assert!(
        err.to_string().contains(&format!("belongs to uid {OPS}")),
        "{err}"
    );
    link(&secret, &tmp.path().join("their-link"), OPS);
    let err = read_trusted(&tmp.path().join("their-link"), READ_LIMIT).unwrap_err();
    assert!(err.to_string().contains("symlink owned by uid"), "{err}");

    let theirs = tmp.path().join("theirs");
    fs::write(&theirs, b"x").unwrap();
    chown(&theirs, Some(OPS), None).unwrap();
    let err = read_trusted(&theirs, READ_LIMIT).unwrap_err();
    assert!(err.to_string().contains("must be root's"), "{err}");

    let fifo = tmp.path().join("fifo");
    rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    let err = read_trusted(&fifo, READ_LIMIT).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");

    let err = read_trusted(&secret, 3).unwrap_err();
    assert!(err.to_string().contains("larger than 3 bytes"), "{err}");
}

#[test]
fn only_the_daemons_own_temp_files_are_cleaned_up() {
    as_root();
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join(".out.tmp-0123456789abcdef");
    let given = tmp.path().join(".out.tmp-1123456789abcdef");
    let theirs = tmp.path().join(".out.tmp-2123456789abcdef");
    for path in [&mine, &given, &theirs] {
        fs::write(path, b"").unwrap();
    }
    chown(&given, Some(OPS), None).unwrap();
    chown(&theirs, Some(OTHER), None).unwrap();
    let dir = Dir::walk(tmp.path(), &Trusted::with_owner(None)).unwrap();
    assert_eq!(dir.remove_temps_where(Some(OPS), |_| true).unwrap(), 2);
    assert!(theirs.exists() && !mine.exists() && !given.exists());
}
