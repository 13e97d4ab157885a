//! Taking snapshots: the [`Snapshotter`] turns the current state of a worktree into a git tree
//! (full scan or path scan) and records trees as checkpoint commits on hidden refs.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;
use gix::bstr::BString;
use gix::objs::tree::EntryKind;
use vcs::{ExactGit, Git};

use crate::{CheckpointError, Result, parse_id};

/// The identity checkpoint commits are written with (never the user's).
const AUTHOR_NAME: &str = "agentctl";
const AUTHOR_EMAIL: &str = "agentctl@localhost";

/// What a path scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathScan {
    /// The tree of the worktree, and how many paths were read.
    Tree { tree: ObjectId, paths_read: usize },
    /// The paths alone cannot give an exact tree; take a full scan. Carries why.
    NeedsFullScan(String),
}

/// Snapshots one worktree. Holds an open repository and the private index used by full scans.
pub struct Snapshotter {
    worktree: PathBuf,
    index_file: PathBuf,
    git: ExactGit,
    repo: gix::Repository,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("worktree", &self.worktree)
            .field("index_file", &self.index_file)
            .finish()
    }
}

impl Snapshotter {
    /// Opens `worktree` (a linked worktree or a repository's main one). `index_file` is the
    /// private index for full scans: created from the worktree's own index when missing, kept
    /// between scans so unchanged files are never re-read.
    pub fn open(worktree: &Path, index_file: &Path) -> Result<Self> {
        let repo = gix::open(worktree).map_err(|e| CheckpointError::git("open repository", e))?;
        if repo.workdir().is_none() {
            return Err(CheckpointError::Invalid(format!(
                "{} has no worktree to snapshot",
                worktree.display()
            )));
        }
        Ok(Snapshotter {
            worktree: worktree.to_owned(),
            index_file: index_file.to_owned(),
            git: Git::new(worktree).exact()?,
            repo,
        })
    }

    pub fn worktree(&self) -> &Path {
        &self.worktree
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    /// The exact-settings git runner for this worktree.
    pub fn git(&self) -> &ExactGit {
        &self.git
    }

    /// Seeds the private index from the worktree's own (atomically), so a first full scan
    /// reuses the stat data git already has.
    fn ensure_index(&self) -> Result<()> {
        if self.index_file.exists() {
            return Ok(());
        }
        let real = self.repo.index_path();
        let tmp = self.index_file.with_extension("seed.tmp");
        match std::fs::copy(&real, &tmp) {
            Ok(_) => {
                // Keep the original's mtime: git treats entries as "racily clean" relative to
                // the index file's mtime, and a fresh mtime would hide a file changed in the
                // same second the agent's index was written.
                let mtime = std::fs::metadata(&real).and_then(|m| m.modified());
                let kept = mtime.and_then(|t| std::fs::File::options().write(true).open(&tmp)?.set_modified(t));
                if let Err(e) = kept {
                    // Without it, start from nothing rather than from possibly wrong stat data.
                    tracing::debug!(error = %e, "cannot keep the index mtime; seeding an empty index");
                    let _ = std::fs::remove_file(&tmp);
                    return Ok(());
                }
                std::fs::rename(&tmp, &self.index_file).map_err(|e| CheckpointError::io(&self.index_file, e))
            }
            // No index yet (nothing was ever checked out): git creates one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CheckpointError::io(real, e)),
        }
    }

    /// The tree of the whole worktree, by a full scan with git on the private index.
    pub fn scan_full(&self) -> Result<ObjectId> {
        self.ensure_index()?;
        let index = Some(self.index_file.as_path());
        // Unreadable files are skipped (their last recorded version stays) rather than failing
        // every checkpoint of the run.
        if let Err(e) = self.git.run(&["add", "-A", "--ignore-errors"], index, None) {
            tracing::warn!(error = %e, "some files could not be read for the checkpoint");
        }
        let out = self.git.run(&["write-tree"], index, None)?;
        parse_id(&String::from_utf8_lossy(&out))
    }

    /// The tree of the worktree, computed from `base` (the previous snapshot's tree) and the
    /// paths (relative to the worktree) that changed since it was taken. Only those paths are
    /// read; a reported directory is read whole. Exact as long as `paths` is complete.
    pub fn scan_paths<'p>(&self, base: ObjectId, paths: impl IntoIterator<Item = &'p Path>) -> Result<PathScan> {
        let ws = self.worktree.clone();
        let base_tree = self
            .repo
            .find_tree(base)
            .map_err(|e| CheckpointError::git("read previous tree", e))?;
        let mut editor = base_tree.edit().map_err(|e| CheckpointError::git("edit tree", e))?;
        let empty = gix::index::State::new(self.repo.object_hash());
        let mut excludes = self
            .repo
            .excludes(
                &empty,
                None,
                gix::worktree::stack::state::ignore::Source::WorktreeThenIdMappingIfNotSkipped,
            )
            .map_err(|e| CheckpointError::git("read ignore rules", e))?;
        let mut scan = PathScanState {
            repo: &self.repo,
            base: &base_tree,
            excludes: &mut excludes,
            editor: &mut editor,
            root: &ws,
            read: 0,
            good_dirs: Default::default(),
        };
        let mut sorted: BTreeSet<PathBuf> = BTreeSet::new();
        for p in paths {
            match normalize(p) {
                Some(p) => {
                    if p.file_name().is_some_and(|n| n == ".gitignore") {
                        // New or changed ignore rules change what every sibling path means.
                        return Ok(PathScan::NeedsFullScan(format!(
                            "ignore rules changed ({})",
                            p.display()
                        )));
                    }
                    sorted.insert(p);
                }
                None => return Ok(PathScan::NeedsFullScan(format!("unusable path {}", p.display()))),
            }
        }
        // A path under a directory that is read whole is already covered.
        let mut walked: Option<PathBuf> = None;
        for rel in &sorted {
            if walked.as_ref().is_some_and(|d| rel.starts_with(d)) {
                continue;
            }
            if rel.components().any(|c| c.as_os_str() == ".git") {
                continue;
            }
            match scan.visit(rel)? {
                Visit::Done => {}
                Visit::Walked => walked = Some(rel.clone()),
                Visit::NeedsFull(why) => return Ok(PathScan::NeedsFullScan(why)),
            }
        }
        let read = scan.read;
        let tree = match editor.write() {
            Ok(t) => t,
            // Something git would judge differently (e.g. a name it refuses): let git decide.
            Err(e) => return Ok(PathScan::NeedsFullScan(format!("cannot write the tree: {e}"))),
        };
        Ok(PathScan::Tree {
            tree: tree.detach(),
            paths_read: read,
        })
    }

    /// Keeps the paths a snapshot would record: not ignored, or already in `tree`. Paths inside
    /// `.git` are never kept.
    pub fn filter_ignored(&self, tree: Option<ObjectId>, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let tree = tree
            .map(|t| self.repo.find_tree(t))
            .transpose()
            .map_err(|e| CheckpointError::git("read tree", e))?;
        let empty = gix::index::State::new(self.repo.object_hash());
        let mut excludes = self
            .repo
            .excludes(
                &empty,
                None,
                gix::worktree::stack::state::ignore::Source::WorktreeThenIdMappingIfNotSkipped,
            )
            .map_err(|e| CheckpointError::git("read ignore rules", e))?;
        let mut kept = Vec::with_capacity(paths.len());
        for p in paths {
            let Some(rel) = normalize(p) else { continue };
            if rel.components().any(|c| c.as_os_str() == ".git") {
                continue;
            }
            let is_dir = self.worktree.join(&rel).is_dir();
            let mode = if is_dir {
                gix::index::entry::Mode::DIR
            } else {
                gix::index::entry::Mode::FILE
            };
            let excluded = excludes
                .at_path(&rel, Some(mode))
                .map_err(|e| CheckpointError::git("match ignore rules", e))?
                .is_excluded();
            let tracked = match (&tree, excluded) {
                (Some(t), true) => t
                    .lookup_entry_by_path(&rel)
                    .map_err(|e| CheckpointError::git("look up path", e))?
                    .is_some(),
                _ => false,
            };
            if !excluded || tracked {
                kept.push(p.clone());
            }
        }
        Ok(kept)
    }

    /// Writes a checkpoint commit of `tree` with `parent` and `message` (not referenced yet).
    pub fn commit(&self, tree: ObjectId, parent: ObjectId, message: &str) -> Result<ObjectId> {
        let sig = gix::actor::Signature {
            name: AUTHOR_NAME.into(),
            email: AUTHOR_EMAIL.into(),
            time: gix::date::Time::now_utc(),
        };
        let mut t1 = gix::date::parse::TimeBuf::default();
        let mut t2 = gix::date::parse::TimeBuf::default();
        let commit = self
            .repo
            .new_commit_as(sig.to_ref(&mut t1), sig.to_ref(&mut t2), message, tree, [parent])
            .map_err(|e| CheckpointError::git("write commit", e))?;
        Ok(commit.id)
    }

    /// Points the hidden ref `name` at `commit`. A ref already there with the same target is
    /// fine (a retried write); one with another target is an error, never overwritten.
    pub fn set_ref(&self, name: &str, commit: ObjectId) -> Result<()> {
        use gix::refs::transaction::PreviousValue;
        match self
            .repo
            .reference(name, commit, PreviousValue::MustNotExist, "agentctl checkpoint")
        {
            Ok(_) => Ok(()),
            Err(e) => match self.resolve(name) {
                Ok(Some(existing)) if existing == commit => Ok(()),
                _ => Err(CheckpointError::git("write checkpoint ref", e)),
            },
        }
    }

    /// Points `name` at `commit` whatever it pointed at before; returns the previous target
    /// when there was a different one. For a checkpoint number the run's log does not know yet:
    /// a ref found there was left by a write that crashed before it was recorded.
    pub fn replace_ref(&self, name: &str, commit: ObjectId) -> Result<Option<ObjectId>> {
        use gix::refs::transaction::PreviousValue;
        let previous = self.resolve(name)?.filter(|p| *p != commit);
        self.repo
            .reference(name, commit, PreviousValue::Any, "agentctl checkpoint")
            .map_err(|e| CheckpointError::git("write checkpoint ref", e))?;
        Ok(previous)
    }

    /// Resolves a ref or revision to an object id; `None` when it does not exist.
    pub fn resolve(&self, name: &str) -> Result<Option<ObjectId>> {
        match self.repo.try_find_reference(name) {
            Ok(Some(mut r)) => Ok(Some(
                r.peel_to_id()
                    .map_err(|e| CheckpointError::git("resolve ref", e))?
                    .detach(),
            )),
            Ok(None) => Ok(None),
            Err(e) => Err(CheckpointError::git("find ref", e)),
        }
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: ObjectId) -> Result<ObjectId> {
        let c = self
            .repo
            .find_commit(commit)
            .map_err(|e| CheckpointError::git("read commit", e))?;
        c.tree_id()
            .map(|id| id.detach())
            .map_err(|e| CheckpointError::git("read commit tree", e))
    }
}

/// What the parent directories of a reported path are.
enum Parents {
    Dirs,
    /// One is a file, a symlink, or missing.
    NotDirs,
    /// One is the top of a nested repository.
    NestedRepo(PathBuf),
}

/// The outcome of visiting one reported path.
enum Visit {
    Done,
    /// The path was a directory and was read whole.
    Walked,
    NeedsFull(String),
}

struct PathScanState<'a, 'r> {
    repo: &'r gix::Repository,
    base: &'a gix::Tree<'r>,
    excludes: &'a mut gix::AttributeStack<'r>,
    editor: &'a mut gix::object::tree::Editor<'r>,
    root: &'a Path,
    read: usize,
    /// Parent directories already found to be real directories outside nested repositories.
    good_dirs: std::collections::HashSet<PathBuf>,
}

impl PathScanState<'_, '_> {
    fn visit(&mut self, rel: &Path) -> Result<Visit> {
        let abs = self.root.join(rel);
        let key = path_key(rel);
        match self.parents(rel) {
            Parents::Dirs => {}
            Parents::NotDirs => {
                // A parent became a file or a symlink: nothing below it exists any more
                // (reading through a symlinked parent would record another directory's files).
                self.remove(&key)?;
                return Ok(Visit::Done);
            }
            // Git records a nested repository as a whole (or not at all), never its files.
            Parents::NestedRepo(at) => {
                return Ok(Visit::NeedsFull(format!("nested repository at {}", at.display())));
            }
        }
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            // Gone, or a parent is no longer a directory: gone from the snapshot too.
            Err(_) => {
                self.remove(&key)?;
                return Ok(Visit::Done);
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if abs.join(".git").symlink_metadata().is_ok() {
                return Ok(Visit::NeedsFull(format!("nested repository at {}", rel.display())));
            }
            // Read the directory whole: what was under it is replaced by what is there now.
            let tracked_below = self.tracked(rel)?;
            self.remove(&key)?;
            if !tracked_below && self.excluded(rel, true)? {
                return Ok(Visit::Walked);
            }
            if let Some(why) = self.walk(rel)? {
                return Ok(Visit::NeedsFull(why));
            }
            return Ok(Visit::Walked);
        }
        self.file(rel, &key, &meta)?;
        Ok(Visit::Done)
    }

    /// Reads every entry below the directory `rel`. Returns a reason when a full scan is needed.
    fn walk(&mut self, rel: &Path) -> Result<Option<String>> {
        let abs = self.root.join(rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            // Vanished while we looked, or unreadable: nothing of it can be recorded.
            Err(_) => return Ok(None),
        };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let child = rel.join(&name);
            if name == ".git" {
                return Ok(Some(format!("nested repository at {}", rel.display())));
            }
            let Ok(meta) = std::fs::symlink_metadata(self.root.join(&child)) else {
                continue;
            };
            if meta.is_dir() {
                if !self.tracked(&child)? && self.excluded(&child, true)? {
                    continue;
                }
                if let Some(why) = self.walk(&child)? {
                    return Ok(Some(why));
                }
            } else {
                let key = path_key(&child);
                self.file(&child, &key, &meta)?;
            }
        }
        Ok(None)
    }

    /// What the parents of `rel` are: all real directories (not symlinks, not files) outside
    /// any nested repository, or not. Parents found good are remembered for the scan.
    fn parents(&mut self, rel: &Path) -> Parents {
        let Some(parent) = rel.parent() else {
            return Parents::Dirs;
        };
        let mut dir = PathBuf::new();
        for c in parent.components() {
            dir.push(c);
            if self.good_dirs.contains(&dir) {
                continue;
            }
            let abs = self.root.join(&dir);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                _ => return Parents::NotDirs,
            }
            if abs.join(".git").symlink_metadata().is_ok() {
                return Parents::NestedRepo(dir);
            }
            self.good_dirs.insert(dir.clone());
        }
        Parents::Dirs
    }

    /// Records a non-directory at `rel` (a file, a symlink; anything else is not recordable).
    fn file(&mut self, rel: &Path, key: &BString, meta: &std::fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if !valid_name(rel, ft.is_symlink()) {
            // A name git refuses to record (`.GIT`, `git~1`, a symlinked `.gitmodules`).
            return self.remove(key);
        }
        if !(ft.is_file() || ft.is_symlink()) {
            // FIFOs, sockets, devices: git does not record them either.
            return self.remove(key);
        }
        if self.excluded(rel, false)? && !self.tracked(rel)? {
            return self.remove(key);
        }
        let abs = self.root.join(rel);
        let (kind, bytes) = if ft.is_symlink() {
            match std::fs::read_link(&abs) {
                Ok(target) => (EntryKind::Link, target.as_os_str().as_bytes().to_vec()),
                Err(_) => return self.remove(key),
            }
        } else {
            let kind = if meta.permissions().mode() & 0o100 != 0 {
                EntryKind::BlobExecutable
            } else {
                EntryKind::Blob
            };
            match std::fs::read(&abs) {
                Ok(b) => (kind, b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.remove(key),
                Err(e) => {
                    // Unreadable: keep whatever was recorded before (as a full scan does).
                    tracing::warn!(path = %rel.display(), error = %e, "cannot read file for checkpoint");
                    return Ok(());
                }
            }
        };
        self.read += 1;
        let id = self
            .repo
            .write_blob(&bytes)
            .map_err(|e| CheckpointError::git("write blob", e))?
            .detach();
        self.editor
            .upsert(key, kind, id)
            .map_err(|e| CheckpointError::git("edit tree", e))?;
        Ok(())
    }

    fn remove(&mut self, key: &BString) -> Result<()> {
        self.editor
            .remove(key)
            .map_err(|e| CheckpointError::git("edit tree", e))?;
        Ok(())
    }

    /// Whether the previous snapshot has something at `rel` (a file, or a directory with files).
    fn tracked(&self, rel: &Path) -> Result<bool> {
        self.base
            .lookup_entry_by_path(rel)
            .map(|e| e.is_some())
            .map_err(|e| CheckpointError::git("look up path", e))
    }

    fn excluded(&mut self, rel: &Path, is_dir: bool) -> Result<bool> {
        let mode = if is_dir {
            gix::index::entry::Mode::DIR
        } else {
            gix::index::entry::Mode::FILE
        };
        let platform = self
            .excludes
            .at_path(rel, Some(mode))
            .map_err(|e| CheckpointError::git("match ignore rules", e))?;
        Ok(platform.is_excluded())
    }
}

/// Whether git would record a file at `rel` (on Linux: NTFS `.git` aliases are refused too).
fn valid_name(rel: &Path, symlink: bool) -> bool {
    use gix::validate::path::component::{Mode, Options};
    let opts = Options {
        protect_windows: false,
        protect_hfs: false,
        protect_ntfs: true,
    };
    let n = rel.components().count();
    rel.components().enumerate().all(|(i, c)| {
        let mode = (symlink && i + 1 == n).then_some(Mode::Symlink);
        let bytes: &[u8] = c.as_os_str().as_bytes();
        gix::validate::path::component(bytes.into(), mode, opts).is_ok()
    })
}

/// A worktree-relative path as git spells it (`/`-separated bytes).
fn path_key(rel: &Path) -> BString {
    let mut out = BString::default();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_os_str().as_bytes());
    }
    out
}

/// Keeps only plain relative paths (no `..`, no root); strips `./`.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// How long something took, for events.
pub fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A timer for the phases of a checkpoint.
#[derive(Debug)]
pub struct Timer(Instant);

impl Timer {
    pub fn start() -> Self {
        Timer(Instant::now())
    }
    pub fn ms(&self) -> u64 {
        millis(self.0.elapsed())
    }
}
