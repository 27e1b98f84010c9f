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
