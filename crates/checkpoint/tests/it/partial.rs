//! A partial rollback touches only the named paths, and a full restore to the snapshot taken
//! just before it undoes it exactly.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use checkpoint::restore;

use crate::oracle::{Listing, all_entries, assert_same, assert_worktree_is, disk_listing, fixed_ignore, tree_listing};
use crate::support::{Repo, paths};

/// What identifies an entry on disk beyond its bytes: kind, mode, inode, mtime.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    mode: u32,
    ino: u64,
    mtime: (i64, i64),
    bytes: Vec<u8>,
}

fn stamps(root: &Path) -> BTreeMap<PathBuf, Stamp> {
    all_entries(root)
        .into_iter()
        .map(|(rel, m)| {
            let abs = root.join(&rel);
            let bytes = if m.file_type().is_symlink() {
                std::fs::read_link(&abs).unwrap().as_os_str().as_bytes().to_vec()
            } else if m.is_file() {
                std::fs::read(&abs).unwrap()
            } else {
                Vec::new()
            };
            let stamp = Stamp {
                mode: m.mode(),
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                bytes,
            };
            (rel, stamp)
        })
        .collect()
}

fn under(p: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| p.starts_with(r))
}

fn restrict(l: &Listing, roots: &[PathBuf], inside: bool) -> Listing {
    l.iter()
        .filter(|(k, _)| {
            let p = Path::new(std::ffi::OsStr::from_bytes(k));
            under(p, roots) == inside
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn partial_rollback_touches_only_the_named_paths_and_is_undone_exactly() {
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("a.txt", b"a v1\n");
    r.write("b.txt", b"b v1\n");
    r.write("dir/one", b"one v1\n");
    r.write("dir/two", b"two v1\n");
    r.write("dir/sub/three", b"three v1\n");
    r.write("keep/k", b"k v1\n");
    r.write("run.sh", b"#!/bin/sh\n");
    std::fs::set_permissions(r.worktree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let t1 = s.scan_full().unwrap();

    // Several changes, inside and outside the paths to roll back.
    r.write("a.txt", b"a v2, longer\n");
    r.write("b.txt", b"b v2\n");
    r.write("dir/one", b"one v2\n");
    std::fs::remove_file(r.worktree.join("dir/two")).unwrap();
    r.write("dir/new", b"new in dir\n");
    std::fs::remove_file(r.worktree.join("dir/sub/three")).unwrap();
    std::os::unix::fs::symlink("../one", r.worktree.join("dir/sub/three")).unwrap();
    r.write("dir/y.log", b"ignored, inside a rolled back dir\n");
    r.write("keep/k", b"k v2\n");
    r.write("c.txt", b"new\n");
    r.write("x.log", b"ignored\n");
    std::fs::set_permissions(r.worktree.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(r.worktree.join("src/lib.rs")).unwrap();
    let pre = s.scan_full().unwrap();
    assert_worktree_is(&r.main, &r.worktree, pre, "pre-rollback snapshot");
    let before = stamps(&r.worktree);

    let named = paths(&["a.txt", "dir"]);
    let rep = restore::restore(&s, pre, t1, &named).unwrap();
    // a.txt, dir/one, dir/two, dir/sub/three written; dir/new removed.
    assert_eq!((rep.written, rep.removed, rep.skipped.len()), (4, 1, 0), "{rep:?}");

    // The named paths hold exactly what t1 has there...
    let disk = disk_listing(&r.worktree, &fixed_ignore);
    assert_same(
        &restrict(&tree_listing(&r.main, t1), &named, true),
        &restrict(&disk, &named, true),
        "named paths after the partial rollback",
    );
    // ...and nothing else changed: same bytes, mode, inode and mtime, nothing appeared or went.
    let after = stamps(&r.worktree);
    let others = |m: &BTreeMap<PathBuf, Stamp>| -> Vec<(PathBuf, String)> {
        m.iter()
            .filter(|(p, _)| !under(p, &named))
            .map(|(p, st)| (p.clone(), format!("{st:?}")))
            .collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "paths outside the rollback are untouched"
    );
    assert_eq!(
        after[Path::new("dir/y.log")],
        before[Path::new("dir/y.log")],
        "an ignored file in a rolled back directory is left alone"
    );
    let mixed = s.scan_full().unwrap();
    assert_same(
        &restrict(&tree_listing(&r.main, pre), &named, false),
        &restrict(&tree_listing(&r.main, mixed), &named, false),
        "the snapshot outside the named paths",
    );

    // Restoring the pre-rollback snapshot undoes it exactly.
    let rep = restore::restore(&s, mixed, pre, &[]).unwrap();
    assert_eq!((rep.written, rep.removed), (4, 1), "{rep:?}");
    assert_worktree_is(&r.main, &r.worktree, pre, "after undoing the partial rollback");
    assert_eq!(s.scan_full().unwrap(), pre);
    let undone = stamps(&r.worktree);
    for (p, st) in &before {
        if !under(p, &named) {
            assert_eq!(Some(st), undone.get(p), "{} untouched by the undo", p.display());
        }
    }
    assert_eq!(undone[Path::new("x.log")].bytes, b"ignored\n");
    // The named paths hold the same content (rewritten, so new inodes).
    let keys: Vec<_> = before.keys().collect();
    assert_eq!(keys, undone.keys().collect::<Vec<_>>());
    for (p, st) in &before {
        assert_eq!(
            (st.mode, &st.bytes),
            (undone[p].mode, &undone[p].bytes),
            "{}",
            p.display()
        );
    }
}

#[test]
fn partial_rollback_of_a_path_whose_type_changed() {
    // The named path is a directory in the checkpoint and a file now, and the reverse.
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("t/inner", b"inner\n");
    r.write("f", b"plain\n");
    let t1 = s.scan_full().unwrap();
    std::fs::remove_dir_all(r.worktree.join("t")).unwrap();
    r.write("t", b"now a file\n");
    std::fs::remove_file(r.worktree.join("f")).unwrap();
    r.write("f/x", b"now a dir\n");
    r.write("other", b"other\n");
    let cur = s.scan_full().unwrap();
    restore::restore(&s, cur, t1, &paths(&["t", "f"])).unwrap();
    assert_eq!(r.read("t/inner"), b"inner\n");
    assert_eq!(r.read("f"), b"plain\n");
    assert_eq!(r.read("other"), b"other\n", "not named, kept");
    let now = s.scan_full().unwrap();
    let expect = restrict(&tree_listing(&r.main, t1), &paths(&["t", "f"]), true);
    assert_same(
        &expect,
        &restrict(&tree_listing(&r.main, now), &paths(&["t", "f"]), true),
        "named",
    );
}
