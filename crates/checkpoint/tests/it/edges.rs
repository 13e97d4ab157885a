//! Corner cases where a path scan, a full scan or the worktree could disagree.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use checkpoint::{ObjectId, PathScan, Snapshotter};

use crate::oracle::assert_worktree_is;
use crate::support::{Repo, git, paths};

/// A path scan must give the full scan's tree, or ask for a full scan; never another tree,
/// never an error for a worktree git can snapshot.
fn assert_path_scan_agrees(s: &Snapshotter, prev: ObjectId, report: &[PathBuf]) -> ObjectId {
    let scan = s.scan_paths(prev, report.iter().map(PathBuf::as_path));
    let full = s.scan_full().unwrap();
    match scan {
        Ok(PathScan::Tree { tree, .. }) => assert_eq!(
            tree,
            full,
            "path scan of {report:?} differs from the full scan:\npath scan:\n{}\nfull scan:\n{}",
            ls(s, tree),
            ls(s, full)
        ),
        Ok(PathScan::NeedsFullScan(_)) => {}
        Err(e) => panic!("path scan of {report:?} failed: {e}"),
    }
    full
}

fn ls(s: &Snapshotter, tree: ObjectId) -> String {
    git(s.worktree(), &["ls-tree", "-r", &tree.to_string()])
}

#[test]
fn path_scan_of_a_directory_turned_symlink_ignores_stale_children() {
    // `d/f` is tracked; the agent moves `d` away and puts a symlink to a directory that also
    // has an `f` in its place. A watcher reports the deletion of `d/f` and the new `d`.
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("d/f", b"in d\n");
    r.write("other/f", b"in other\n");
    let t0 = s.scan_full().unwrap();
    std::fs::remove_dir_all(r.worktree.join("d")).unwrap();
    std::os::unix::fs::symlink("other", r.worktree.join("d")).unwrap();
    let full = assert_path_scan_agrees(&s, t0, &paths(&["d", "d/f"]));
    assert_worktree_is(&r.main, &r.worktree, full, "full scan");
}

#[test]
fn path_scan_of_a_file_turned_directory_with_stale_reports() {
    // Reports in every order git could see them: the file `p` became a directory `p/q/`.
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("p", b"file\n");
    let t0 = s.scan_full().unwrap();
    std::fs::remove_file(r.worktree.join("p")).unwrap();
    r.write("p/q/r", b"deep\n");
    assert_path_scan_agrees(&s, t0, &paths(&["p/q/r"]));
    assert_path_scan_agrees(&s, t0, &paths(&["p", "p/q/r"]));
    assert_path_scan_agrees(&s, t0, &paths(&["p/q", "p"]));
    // And back: the directory became a file again; the watcher reports the old deep path.
    let t1 = s.scan_full().unwrap();
    std::fs::remove_dir_all(r.worktree.join("p")).unwrap();
    r.write("p", b"file again\n");
    assert_path_scan_agrees(&s, t1, &paths(&["p/q/r", "p"]));
    assert_path_scan_agrees(&s, t1, &paths(&["p/q/r", "p/q", "p"]));
}

#[test]
fn path_scan_after_the_ignore_rules_change() {
    // The agent writes `keep.log` (ignored), then removes `*.log` from `.gitignore`: the file
    // is no longer ignored, but only `.gitignore` changed on disk.
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("keep.log", b"now wanted\n");
    r.write("src/b.txt", b"tracked, soon ignored\n");
    let t0 = s.scan_full().unwrap();
    r.write(".gitignore", b"build/\n*.txt\n");
    let full = assert_path_scan_agrees(&s, t0, &paths(&[".gitignore"]));
    let listing = git(&r.main, &["ls-tree", "-r", "--name-only", &full.to_string()]);
    assert!(listing.contains("keep.log"), "{listing}");
}

#[test]
fn path_scan_of_a_new_directory_with_its_own_ignore_rules() {
    // A new directory arrives whole (reported as one path) with a `.gitignore` of its own.
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    r.write("sub/.gitignore", b"*.txt\n!keep.txt\nout/\n");
    r.write("sub/a.txt", b"ignored by sub/.gitignore\n");
    r.write("sub/keep.txt", b"re-included\n");
    r.write("sub/out/x", b"ignored directory\n");
    r.write("sub/code.rs", b"kept\n");
    let full = assert_path_scan_agrees(&s, t0, &paths(&["sub"]));
    let listing = ls(&s, full);
    assert!(
        listing.contains("sub/code.rs") && listing.contains("sub/keep.txt"),
        "{listing}"
    );
    assert!(
        !listing.contains("sub/a.txt") && !listing.contains("sub/out"),
        "{listing}"
    );
    // Then the directory's rules change: a full scan is needed, or the same tree.
    r.write("sub/.gitignore", b"out/\n");
    assert_path_scan_agrees(&s, full, &paths(&["sub/.gitignore"]));
    assert_path_scan_agrees(&s, full, &paths(&["sub"]));
}

#[test]
fn path_scan_of_names_git_refuses() {
    // Git never records `.GIT/…` (any case), `.git.` or NTFS short names of `.git`; a path scan
    // must not fail (or record them) because an agent created one.
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    r.write("ok.txt", b"fine\n");
    r.write(".GIT/config", b"[core]\n");
    r.write("GIT~1", b"short name\n");
    r.write(".git.", b"trailing dot\n");
    r.write("sub/.Git", b"a file named like a gitfile\n");
    std::os::unix::fs::symlink("ok.txt", r.worktree.join(".gitmodules")).unwrap();
    let full = s.scan_full().unwrap();
    let mut failures = Vec::new();
    for report in [
        paths(&["ok.txt", ".GIT/config"]),
        paths(&["ok.txt", ".GIT"]),
        paths(&["ok.txt", "GIT~1"]),
        paths(&["ok.txt", ".git."]),
        paths(&["ok.txt", "sub"]),
        paths(&["ok.txt", ".gitmodules"]),
    ] {
        match s.scan_paths(t0, report.iter().map(PathBuf::as_path)) {
            Ok(PathScan::Tree { tree, .. }) if tree == full => {}
            Ok(PathScan::NeedsFullScan(_)) => {}
            other => failures.push(format!("{report:?}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "full scan:\n{}\nfailures:\n{}",
        ls(&s, full),
        failures.join("\n")
    );
}

/// Sets the modification time of `p` (not following symlinks is not needed here).
fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn first_full_scan_sees_a_change_made_in_the_second_of_the_agents_git_add() {
    // The agent runs `git add f` and rewrites `f` (same size) within the same second: its
    // index entry is "racily clean", which git detects by comparing the entry's mtime with the
    // index file's. The first full scan seeds the private index from a copy of that index.
    let r = Repo::new();
    let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let f = r.worktree.join("f.txt");
    std::fs::write(&f, b"AAAA\n").unwrap();
    set_mtime(&f, second);
    git(&r.worktree, &["add", "f.txt"]);
    let agent_index = crate::support::git_path(&r.worktree, "index");
    set_mtime(&agent_index, second);
    std::fs::write(&f, b"BBBB\n").unwrap();
    set_mtime(&f, second);
    // Git itself sees the change.
    let status = git(&r.worktree, &["--no-optional-locks", "status", "--porcelain"]);
    assert_eq!(status, "AM f.txt");
    let s = r.snapshotter();
    let full = s.scan_full().unwrap();
    assert_eq!(
        r.blob(full, "f.txt"),
        b"BBBB\n",
        "the checkpoint records what is on disk"
    );
}

/// Sleeps into the next wall-clock second (with a margin for the file system's coarser clock).
fn next_second() {
    let secs = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = secs();
    while secs() == start {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// `core.trustctime=false` and `core.checkStat=minimal` are ordinary repository settings; a
/// same-size rewrite that keeps the mtime (`cp -p`, `rsync -t`, `touch -r`) must still be
/// recorded.
fn check_mtime_preserving_rewrite(setting: Option<(&str, &str)>) {
    let r = Repo::new();
    if let Some((key, value)) = setting {
        git(&r.main, &["config", key, value]);
    }
    let s = r.snapshotter();
    let f = r.worktree.join("src/lib.rs");
    // Written well before the scan, as most files are.
    let before = SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&f, before);
    s.scan_full().unwrap();
    // In a later second than the last change: git compares times to the second, and
    // within one second nothing but content can tell (git status has the same limit).
    next_second();
    std::fs::write(&f, b"fn z() {}\n").unwrap();
    set_mtime(&f, before);
    let full = s.scan_full().unwrap();
    assert_eq!(r.blob(full, "src/lib.rs"), b"fn z() {}\n", "with {setting:?}");
}

#[test]
fn full_scan_sees_an_mtime_preserving_rewrite() {
    check_mtime_preserving_rewrite(None);
}

#[test]
fn full_scan_sees_an_mtime_preserving_rewrite_without_trustctime() {
    check_mtime_preserving_rewrite(Some(("core.trustctime", "false")));
}

#[test]
fn full_scan_sees_an_mtime_preserving_rewrite_with_minimal_checkstat() {
    check_mtime_preserving_rewrite(Some(("core.checkStat", "minimal")));
}

#[test]
fn restore_never_writes_through_a_symlink_out_of_the_worktree() {
    // The checkpoint has a directory `out/`; now `out` is a symlink to a directory outside the
    // worktree holding files of the same names. Neither a whole nor a partial rollback may
    // write or delete there.
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("out/x", b"checkpointed\n");
    r.write("out/y", b"checkpointed\n");
    let t1 = s.scan_full().unwrap();
    let outside = r.scratch("outside");
    std::fs::write(outside.join("x"), b"outside, must survive\n").unwrap();
    std::fs::write(outside.join("z"), b"outside, must survive\n").unwrap();
    std::fs::remove_dir_all(r.worktree.join("out")).unwrap();
    std::os::unix::fs::symlink(&outside, r.worktree.join("out")).unwrap();
    let before = crate::oracle::disk_listing(&outside, &|_, _| false);
    for named in [paths(&["out/x"]), paths(&["out"]), Vec::new()] {
        let cur = s.scan_full().unwrap();
        checkpoint::restore::restore(&s, cur, t1, &named).unwrap();
        assert_eq!(
            crate::oracle::disk_listing(&outside, &|_, _| false),
            before,
            "after restoring {named:?}"
        );
        assert_eq!(r.read("out/x"), b"checkpointed\n");
        // Put the symlink back for the next round.
        std::fs::remove_dir_all(r.worktree.join("out")).unwrap();
        std::os::unix::fs::symlink(&outside, r.worktree.join("out")).unwrap();
    }
}

#[test]
fn a_file_reported_inside_a_nested_repository_asks_for_a_full_scan() {
    // The agent clones or inits a repository inside its worktree; the watcher reports only a
    // file deep inside it. Git records a nested repository as a gitlink (or not at all), never
    // its files: a path scan must not record `vendor/lib/src/x.rs` as an ordinary file.
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    let nested = r.worktree.join("vendor/lib");
    std::fs::create_dir_all(nested.join("src")).unwrap();
    git(&nested, &["init", "-q"]);
    r.write("vendor/lib/src/x.rs", b"fn x() {}\n");
    let scan = s
        .scan_paths(t0, paths(&["vendor/lib/src/x.rs"]).iter().map(PathBuf::as_path))
        .unwrap();
    assert_eq!(
        scan,
        PathScan::NeedsFullScan("nested repository at vendor/lib".to_owned())
    );
    let full = assert_path_scan_agrees(&s, t0, &paths(&["vendor/lib/src/x.rs"]));
    assert!(!ls(&s, full).contains("x.rs"), "{}", ls(&s, full));
}
