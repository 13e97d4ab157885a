//! Full scans, path scans and restores agree with each other and with git.

use std::path::PathBuf;

use checkpoint::{PathScan, restore};

use crate::support::{Repo, git, git_path, paths};

#[test]
fn path_scan_equals_full_scan() {
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    assert_eq!(
        t0,
        s.tree_of(r.base).unwrap(),
        "a fresh worktree snapshots to its base tree"
    );
    r.write("src/lib.rs", b"fn b() {}\n");
    r.write("new dir/with space/é.txt", b"unicode\n");
    r.write("debug.log", b"ignored\n");
    r.write("build/out.bin", b"\0\x01\x02");
    std::fs::remove_file(r.worktree.join("src/deep/x.txt")).unwrap();
    std::os::unix::fs::symlink("README.md", r.worktree.join("link")).unwrap();
    let changed = paths(&[
        "src/lib.rs",
        "new dir",
        "debug.log",
        "build/out.bin",
        "src/deep/x.txt",
        "src/deep",
        "link",
    ]);
    let scan = s.scan_paths(t0, changed.iter().map(PathBuf::as_path)).unwrap();
    let full = s.scan_full().unwrap();
    assert_eq!(
        scan,
        PathScan::Tree {
            tree: full,
            paths_read: 3
        }
    );
    let listing = git(&r.worktree, &["ls-tree", "-r", "--name-only", &full.to_string()]);
    assert!(
        !listing.contains("debug.log") && !listing.contains("build/"),
        "{listing}"
    );
    assert!(
        listing.contains("new dir/with space/é.txt") || listing.contains("\\303\\251"),
        "{listing}"
    );
}

#[test]
fn restore_round_trip_and_agent_index_untouched() {
    let r = Repo::new();
    let s = r.snapshotter();
    let index_before = std::fs::read(git_path(&r.worktree, "index")).unwrap();
    let head_before = git(&r.worktree, &["rev-parse", "HEAD"]);
    let t0 = s.scan_full().unwrap();
    r.write("a.sh", b"#!/bin/sh\n");
    std::fs::set_permissions(
        r.worktree.join("a.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::remove_dir_all(r.worktree.join("src")).unwrap();
    r.write("src", b"now a file\n");
    let t1 = s.scan_full().unwrap();
    assert_ne!(t0, t1);
    let rep = restore::restore(&s, t1, t0, &[]).unwrap();
    assert!(rep.written >= 2 && rep.removed >= 2, "{rep:?}");
    assert_eq!(s.scan_full().unwrap(), t0);
    assert_eq!(std::fs::read(git_path(&r.worktree, "index")).unwrap(), index_before);
    assert_eq!(git(&r.worktree, &["rev-parse", "HEAD"]), head_before);
    // Partial: only a.sh comes back.
    let rep = restore::restore(&s, t0, t1, &paths(&["a.sh"])).unwrap();
    assert_eq!((rep.written, rep.removed), (1, 0));
    assert!(r.worktree.join("src/lib.rs").exists());
}
