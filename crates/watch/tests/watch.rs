//! The watcher against the real filesystem: every kind of change shows up as the expected
//! relative path, directories created and filled without pause are caught up, a burst of
//! thousands of writes is either reported completely or flagged as overflow, and `.git` stays
//! invisible.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use watch::{ChangeBatch, ChangeWatcher};

/// Everything drained so far, merged.
#[derive(Debug, Default)]
struct Seen {
    paths: BTreeSet<PathBuf>,
    overflow: bool,
    reasons: Vec<String>,
    batches: usize,
}

impl Seen {
    fn add(&mut self, batch: ChangeBatch) {
        if batch.is_empty() {
            return;
        }
        self.batches += 1;
        assert!(
            batch.first_change.is_some() && batch.first_change <= batch.last_change,
            "{batch:?}"
        );
        self.paths.extend(batch.paths);
        self.overflow |= batch.overflow;
        self.reasons.extend(batch.overflow_reason);
    }

    fn has_all(&self, want: &[&str]) -> bool {
        want.iter().all(|p| self.paths.contains(Path::new(p)))
    }
}

/// A temporary directory on tmpfs if there is one: file creation there is fast enough to race
/// the watcher hard (and keeps the burst test quick on a busy disk).
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Drains every few milliseconds until `done` holds; panics after `secs`.
fn drain_until(watcher: &ChangeWatcher, seen: &mut Seen, secs: u64, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        seen.add(watcher.drain());
        if done(seen) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out; seen so far: {seen:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `want` have all been reported, and returns everything reported on the way.
fn expect(watcher: &ChangeWatcher, want: &[&str]) -> Seen {
    let mut seen = Seen::default();
    drain_until(watcher, &mut seen, 5, |s| s.has_all(want));
    assert!(!seen.overflow, "unexpected overflow: {:?}", seen.reasons);
    seen
}

/// Makes a change and waits for a sentinel written after it: inotify delivers in order, so
/// everything the change caused has been reported by then.
fn settle(watcher: &ChangeWatcher, root: &Path, seen: &mut Seen, name: &str) {
    fs::write(root.join(name), "").unwrap();
    drain_until(watcher, seen, 5, |s| s.paths.contains(Path::new(name)));
}

#[test]
fn every_kind_of_change_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("modified"), "old").unwrap();
    fs::write(root.join("deleted"), "x").unwrap();
    fs::write(root.join("renamed"), "x").unwrap();
    fs::write(root.join("chmodded"), "x").unwrap();
    fs::create_dir_all(root.join("sub/deep")).unwrap();
    fs::write(root.join("sub/deep/inner"), "x").unwrap();
    fs::create_dir_all(root.join("olddir/nested")).unwrap();
    fs::write(root.join("olddir/nested/file"), "x").unwrap();
    fs::create_dir(root.join("rmdir")).unwrap();
    fs::write(root.join("rmdir/file"), "x").unwrap();

    let watcher = ChangeWatcher::start(root).unwrap();
    assert_eq!(watcher.root(), root);
    assert!(watcher.drain().is_empty(), "the tree at start is not reported");

    fs::write(root.join("created"), "x").unwrap();
    expect(&watcher, &["created"]);
    fs::write(root.join("modified"), "new").unwrap();
    expect(&watcher, &["modified"]);
    fs::write(root.join("sub/deep/inner"), "changed").unwrap();
    expect(&watcher, &["sub/deep/inner"]);
    fs::remove_file(root.join("deleted")).unwrap();
    expect(&watcher, &["deleted"]);
    fs::rename(root.join("renamed"), root.join("sub/renamed-to")).unwrap();
    expect(&watcher, &["renamed", "sub/renamed-to"]);
    fs::set_permissions(root.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    expect(&watcher, &["chmodded"]);
    symlink("created", root.join("link")).unwrap();
    expect(&watcher, &["link"]);
    symlink("nowhere", root.join("sub/dangling")).unwrap();
    expect(&watcher, &["sub/dangling"]);
    fs::remove_dir_all(root.join("rmdir")).unwrap();
    expect(&watcher, &["rmdir", "rmdir/file"]);

    // A directory moved within the tree: both names, and the contents under the new one.
    fs::rename(root.join("olddir"), root.join("newdir")).unwrap();
    expect(&watcher, &["olddir", "newdir", "newdir/nested", "newdir/nested/file"]);
    // ... and it is watched under its new name.
    fs::write(root.join("newdir/nested/file"), "changed").unwrap();
    expect(&watcher, &["newdir/nested/file"]);

    // A directory moved in from outside: reported with its contents, then watched.
    let outside = tempfile::tempdir_in(root.parent().unwrap()).unwrap();
    fs::create_dir(outside.path().join("d")).unwrap();
    fs::write(outside.path().join("d/f"), "x").unwrap();
    fs::rename(outside.path().join("d"), root.join("moved-in")).unwrap();
    expect(&watcher, &["moved-in", "moved-in/f"]);
    fs::write(root.join("moved-in/g"), "x").unwrap();
    expect(&watcher, &["moved-in/g"]);

    // Nothing else is reported: no stray paths.
    settle(&watcher, root, &mut Seen::default(), "sentinel-0");
    let mut seen = Seen::default();
    fs::write(root.join("modified"), "again").unwrap();
    settle(&watcher, root, &mut seen, "sentinel-1");
    seen.paths.retain(|p| !p.starts_with("sentinel-0"));
    assert_eq!(
        seen.paths,
        ["modified", "sentinel-1"].into_iter().map(PathBuf::from).collect()
    );
    assert!(!watcher.is_scanning());
    assert!(watcher.degraded().is_none());
}

#[test]
fn symlinked_root_reports_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    symlink("real", dir.path().join("link")).unwrap();
    let watcher = ChangeWatcher::start(&dir.path().join("link")).unwrap();
    fs::write(dir.path().join("real/f"), "x").unwrap();
    let seen = expect(&watcher, &["f"]);
    assert_eq!(seen.paths.len(), 1);
}

#[test]
fn start_fails_without_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ChangeWatcher::start(&dir.path().join("missing")).is_err());
    fs::write(dir.path().join("file"), "x").unwrap();
    assert!(ChangeWatcher::start(&dir.path().join("file")).is_err());
}

/// Files written into directories the instant they are created, before any watch can exist on
/// them, are still reported.
#[test]
fn new_directories_are_caught_up() {
    let dir = fast_tempdir();
    let root = dir.path();
    let watcher = ChangeWatcher::start(root).unwrap();
    let mut want = Vec::new();
    for i in 0..20 {
        let top = format!("t{i}");
        fs::create_dir_all(root.join(format!("{top}/b/c"))).unwrap();
        for level in ["", "b/", "b/c/"] {
            for n in 0..10 {
                let file = format!("{top}/{level}f{n}");
                fs::write(root.join(&file), "x").unwrap();
                want.push(file);
            }
        }
        want.extend([top.clone(), format!("{top}/b"), format!("{top}/b/c")]);
    }
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    expect(&watcher, &want);

    // And the new directories are watched from then on.
    fs::write(root.join("t7/b/c/later.txt"), "x").unwrap();
    expect(&watcher, &["t7/b/c/later.txt"]);
}

/// 5,000 files in 50 new directories as fast as possible: every one is reported, or a batch
/// says overflow.
#[test]
fn burst_is_complete_or_overflows() {
    let dir = fast_tempdir();
    let root = dir.path();
    let watcher = ChangeWatcher::start(root).unwrap();
    let mut want = BTreeSet::new();
    for d in 0..50 {
        fs::create_dir(root.join(format!("d{d}"))).unwrap();
        want.insert(PathBuf::from(format!("d{d}")));
        for f in 0..100 {
            let rel = PathBuf::from(format!("d{d}/f{f}"));
            fs::write(root.join(&rel), "x").unwrap();
            want.insert(rel);
        }
    }
    let mut seen = Seen::default();
    drain_until(&watcher, &mut seen, 8, |s| s.overflow || want.is_subset(&s.paths));
    if !seen.overflow {
        let missing: Vec<_> = want.difference(&seen.paths).collect();
        assert!(missing.is_empty(), "missing without overflow: {missing:?}");
        assert_eq!(seen.paths, want, "nothing but the burst is reported");
    } else {
        eprintln!("burst overflowed: {:?}", seen.reasons);
    }
    eprintln!(
        "burst: {} paths in {} batches, overflow {}",
        seen.paths.len(),
        seen.batches,
        seen.overflow
    );
}

#[test]
fn git_directories_are_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join(".git/objects/ab")).unwrap();
    fs::create_dir_all(root.join("vendor/dep/.git/refs")).unwrap();
    let watcher = ChangeWatcher::start(root).unwrap();

    let mut seen = Seen::default();
    // Existing .git directories, at the root and nested.
    fs::write(root.join(".git/index"), "x").unwrap();
    fs::write(root.join(".git/objects/ab/cdef"), "x").unwrap();
    fs::write(root.join("vendor/dep/.git/refs/main"), "x").unwrap();
    fs::remove_file(root.join(".git/index")).unwrap();
    // New ones, created with contents (the new-directory walk must skip them too).
    fs::create_dir_all(root.join("newdep/.git/objects")).unwrap();
    fs::write(root.join("newdep/.git/objects/x"), "x").unwrap();
    fs::write(root.join("newdep/file"), "x").unwrap();
    fs::create_dir_all(root.join("sub/.git")).unwrap();
    fs::write(root.join("sub/.git/HEAD"), "x").unwrap();
    // A worktree-style .git file.
    fs::write(root.join(".git-not"), "x").unwrap();
    fs::create_dir(root.join("wt")).unwrap();
    fs::write(root.join("wt/.git"), "gitdir: elsewhere").unwrap();
    settle(&watcher, root, &mut seen, "sentinel");
    drain_until(&watcher, &mut seen, 5, |s| {
        s.has_all(&["newdep/file", "wt"]) && !watcher.is_scanning()
    });
    seen.add(watcher.drain());

    let git: Vec<_> = seen
        .paths
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == ".git"))
        .collect();
    assert!(git.is_empty(), "reported .git paths: {git:?}");
    assert!(
        seen.has_all(&["newdep", "newdep/file", "sub", "wt", ".git-not", "sentinel"]),
        "{seen:?}"
    );
    assert!(!seen.overflow);
}
