//! Watching directories and listing them, watch first: [`scan`] adds a (non-recursive) inotify
//! watch on a directory and only then lists it, recursively, so an entry created at any moment is
//! either seen by the listing or reported by the watch. The scanner thread ([`run_scanner`]) owns
//! the notify watcher and runs every scan after `start`: for directories that appeared (created
//! or moved in) and for the full re-watch after lost events.
//!
//! We manage recursion ourselves instead of using notify's recursive mode because notify adds
//! watches for a new directory only after the event batch that announced it, and gives up on the
//! rest of a subtree, silently, when one directory in it vanishes before its watch is added. Here
//! every watch failure is seen and either is harmless (the directory is gone, and its removal is
//! itself an event) or degrades the watcher.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

use crate::shared::{Job, Shared, watch_limit_hint};

/// Found paths are handed over in chunks of this size, so a caller sees progress in big trees.
const CHUNK: usize = 1024;

/// The scanner thread: runs jobs until the watcher is shut down, then drops notify's watcher.
pub(crate) fn run_scanner(mut watcher: RecommendedWatcher, shared: &Shared) {
    while let Some(job) = shared.next_job() {
        match job {
            Job::Scan(dirs) => {
                for dir in dirs {
                    scan(&mut watcher, shared, dir, true);
                }
            }
            Job::Rewatch(reason) => {
                scan(&mut watcher, shared, shared.root.clone(), false);
                shared.rewatched(reason);
            }
        }
    }
}

/// Watches `top` and every directory below it (skipping `.git`, not following symlinks); with
/// `report`, records every entry found below `top` as changed.
pub(crate) fn scan(watcher: &mut RecommendedWatcher, shared: &Shared, top: PathBuf, report: bool) {
    let mut stack = vec![top];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        if shared.is_shut_down() {
            return;
        }
        // A directory replaced by a symlink must not be followed (inotify and read_dir would).
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => continue,
            Err(err) if is_gone(&err) => continue,
            Err(err) => {
                shared.overflow(format!("cannot inspect {}: {err}", dir.display()));
                continue;
            }
        }
        if !watch(watcher, shared, &dir) {
            continue;
        }
        list(shared, &dir, report, &mut found, &mut stack);
        if found.len() >= CHUNK {
            shared.add_found(found.drain(..));
        }
    }
    shared.add_found(found);
}

/// Adds a watch on `dir`; false if `dir` is gone (nothing to list).
fn watch(watcher: &mut RecommendedWatcher, shared: &Shared, dir: &Path) -> bool {
    let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) else {
        return true;
    };
    match &err.kind {
        notify::ErrorKind::PathNotFound => false,
        notify::ErrorKind::Io(io) if is_gone(io) => false,
        notify::ErrorKind::MaxFilesWatch => {
            shared.degrade(format!(
                "inotify watch limit reached at {}; {}",
                dir.display(),
                watch_limit_hint()
            ));
            true
        }
        _ => {
            shared.degrade(format!("cannot watch {}: {err}", dir.display()));
            true
        }
    }
}

/// Lists `dir`: reports its entries (relative) into `found` if asked, and pushes its
/// subdirectories onto `stack`.
fn list(shared: &Shared, dir: &Path, report: bool, found: &mut Vec<PathBuf>, stack: &mut Vec<PathBuf>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if is_gone(&err) => return,
        Err(err) => {
            shared.overflow(format!("cannot list {}: {err}", dir.display()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if is_gone(&err) => return,
            Err(err) => {
                shared.overflow(format!("cannot list {}: {err}", dir.display()));
                return;
            }
        };
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        if report && let Some(rel) = shared.relative(&path) {
            found.push(rel);
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => stack.push(path),
            Ok(_) => {}
            Err(err) if is_gone(&err) => {}
            Err(err) => shared.overflow(format!("cannot inspect {}: {err}", path.display())),
        }
    }
}

/// The path no longer exists (or is no longer a directory): its disappearance is an event of its
/// own, so there is nothing to catch up on.
fn is_gone(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}
