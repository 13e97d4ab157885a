//! Watching a tree across an `exec` of the watching process: a [`Handover`] is one plain inotify
//! instance with a watch on every directory of the tree (not under `.git`), whose descriptor a
//! program passes to the next one it execs into, with the watches' directories. Nothing is read
//! from it until the next program [drains](Handover::drain) it, after starting its own
//! [`ChangeWatcher`](crate::ChangeWatcher): every change made after [`Handover::arm`] returned
//! is then in the handover's batch or in the new watcher's, so a watcher dropped before the exec
//! and one started after it together miss nothing.
//!
//! A handover's batch follows [`ChangeBatch`]'s rules: the entries of a directory created (or
//! moved in) while it watched are listed and reported too, as the watcher reports them (nothing
//! watched inside it; what is made there after the listing is the new watcher's); an
//! overflowed queue, or the root's removal, reports overflow.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::ChangeBatch;

/// One inotify instance over a tree, for the next program of this process.
#[derive(Debug)]
pub struct Handover {
    inotify: Inotify,
    root: PathBuf,
    /// Each watch and its directory, relative to the root.
    dirs: Vec<(i32, PathBuf)>,
}

fn events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DONT_FOLLOW
        | AddWatchFlags::IN_ONLYDIR
}

impl Handover {
    /// Watches every directory of the tree at `root` (symlinks are not followed, `.git` is
    /// left out). Fails if any directory cannot be watched (e.g. the watch limit): a handover
    /// that could miss a change is not made at all.
    pub fn arm(root: &Path) -> io::Result<Handover> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(io::Error::from)?;
        let mut dirs = Vec::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = root.join(&rel);
            // Watch first, then list: an entry made meanwhile is listed or reported.
            match inotify.add_watch(&dir, events()) {
                Ok(wd) => dirs.push((wd.as_raw(), rel.clone())),
                // Gone before we got to it: its removal is an event of its parent's.
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) if !rel.as_os_str().is_empty() => continue,
                Err(e) => return Err(io::Error::other(format!("cannot watch {}: {e}", dir.display()))),
            }
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_name() == ".git" {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(rel.join(entry.file_name()));
                }
            }
        }
        Ok(Handover {
            inotify,
            root: root.to_path_buf(),
            dirs,
        })
    }

    /// The descriptor, to keep open across the exec.
    pub fn raw_fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }

    /// The watches' directories (each watch's number and its path under the root).
    pub fn dirs(&self) -> &[(i32, PathBuf)] {
        &self.dirs
    }

    /// Gives up the descriptor without closing it (it is the next program's); with the root
    /// and the watches' directories, what [`Handover::from_raw`] takes.
    pub fn into_raw(self) -> (RawFd, PathBuf, Vec<(i32, PathBuf)>) {
        let Handover { inotify, root, dirs } = self;
        (OwnedFd::from(inotify).into_raw_fd(), root, dirs)
    }

    /// Takes up a handover a previous program of this process made.
    ///
    /// # Safety
    /// `fd` must be that handover's descriptor, open and owned by nothing else.
    pub unsafe fn from_raw(fd: RawFd, root: PathBuf, dirs: Vec<(i32, PathBuf)>) -> Handover {
        // SAFETY: as the caller promises.
        let inotify = unsafe { Inotify::from_raw_fd(fd) };
        Handover { inotify, root, dirs }
    }

    /// Everything the handover saw since it was armed (it keeps watching; drop it to stop).
    pub fn drain(&self) -> ChangeBatch {
        let mut batch = ChangeBatch::default();
        let overflow = |batch: &mut ChangeBatch, why: &str| {
            batch.overflow = true;
            batch.overflow_reason.get_or_insert_with(|| why.to_owned());
        };
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    overflow(&mut batch, &format!("the handed-over watch failed: {e}"));
                    break;
                }
            };
            if events.is_empty() {
                break;
            }
            let now = std::time::Instant::now();
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    overflow(&mut batch, "the handed-over watch lost events");
                    continue;
                }
                let Some((_, dir)) = self.dirs.iter().find(|(wd, _)| *wd == ev.wd.as_raw()) else {
                    continue;
                };
                let path = match &ev.name {
                    Some(name) => dir.join(name),
                    None if ev
                        .mask
                        .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF) =>
                    {
                        if dir.as_os_str().is_empty() {
                            overflow(&mut batch, "the watched tree's root was removed or moved");
                        }
                        // A directory below: its parent reports it.
                        continue;
                    }
                    None => continue,
                };
                if path.components().any(|c| c == Component::Normal(".git".as_ref())) {
                    continue;
                }
                batch.first_change.get_or_insert(now);
                batch.last_change = Some(now);
                if ev.mask.contains(AddWatchFlags::IN_ISDIR)
                    && ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                {
                    list_into(&self.root, &path, &mut batch);
                }
                batch.paths.insert(path);
            }
        }
        batch
    }
}

/// Adds every entry under `rel` (a directory under `root`), recursively, `.git` left out.
fn list_into(root: &Path, rel: &Path, batch: &mut ChangeBatch) {
    let mut todo = vec![rel.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name() == ".git" {
                continue;
            }
            let path = dir.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            batch.paths.insert(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn armed() -> (tempfile::TempDir, Handover) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src/deep")).unwrap();
        fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        fs::write(dir.path().join("src/deep/a.txt"), "a").unwrap();
        let h = Handover::arm(dir.path()).unwrap();
        (dir, h)
    }

    #[test]
    fn every_directory_but_git_is_watched() {
        let (_dir, h) = armed();
        let mut dirs: Vec<PathBuf> = h.dirs().iter().map(|(_, d)| d.clone()).collect();
        dirs.sort();
        assert_eq!(dirs, [PathBuf::new(), PathBuf::from("src"), PathBuf::from("src/deep")]);
    }

    #[test]
    fn changes_after_arming_survive_a_hand_over_of_the_descriptor() {
        let (dir, h) = armed();
        fs::write(dir.path().join("src/deep/a.txt"), "changed").unwrap();
        fs::create_dir(dir.path().join("new")).unwrap();
        fs::write(dir.path().join("new/inside.txt"), "x").unwrap();
        fs::write(dir.path().join(".git/objects/x"), "x").unwrap();
        fs::remove_file(dir.path().join("src/deep/a.txt")).unwrap();
        // As across an exec: only the number and the directories go on.
        let (fd, root, dirs) = h.into_raw();
        // SAFETY: the descriptor we just gave up.
        let h = unsafe { Handover::from_raw(fd, root, dirs) };
        let batch = h.drain();
        assert!(!batch.overflow, "{batch:?}");
        let paths: Vec<&Path> = batch.paths.iter().map(PathBuf::as_path).collect();
        // What was made in a new directory is listed, as the watcher would report it.
        assert_eq!(
            paths,
            [
                Path::new("new"),
                Path::new("new/inside.txt"),
                Path::new("src/deep/a.txt")
            ]
        );
        assert!(h.drain().is_empty());
    }

    #[test]
    fn the_root_removed_is_an_overflow() {
        let (dir, h) = armed();
        let root = dir.path().to_owned();
        fs::remove_dir_all(&root).unwrap();
        let batch = h.drain();
        assert!(batch.overflow);
    }
}
