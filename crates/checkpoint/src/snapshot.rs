//! Taking snapshots: the [`Snapshotter`] turns the current state of a worktree into a git tree
//! (full scan or path scan) and records trees as checkpoint commits on hidden refs.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use gix::ObjectId;
use gix::bstr::{BStr, BString};
use gix::objs::Write as _;
use gix::objs::tree::EntryKind;
use vcs::{ExactGit, Git, RunStore};

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

/// Snapshots one worktree. Holds an open repository, the private index used by full scans and
/// the trees path scans worked on lately.
pub struct Snapshotter {
    worktree: PathBuf,
    index_file: PathBuf,
    git: ExactGit,
    repo: gix::Repository,
    /// Which names count as `.git` in disguise here, as gix reads the settings.
    protect: gix::validate::path::component::Options,
    trees: RefCell<TreeCache>,
    /// Where new objects go when not into the repository's own store (a run's store).
    sink: Option<RunSink>,
    /// Whether the first full scan may reuse the worktree's own index (see
    /// [`Snapshotter::distrust_worktree_index`]).
    seed_from_worktree: bool,
}

/// A run's object store as the snapshotter writes to it: loose objects and packs, and the
/// run's view of objects, which decides what is stored already.
struct RunSink {
    loose: gix::odb::loose::Store,
    pack_dir: PathBuf,
    view: gix::odb::Handle,
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
        // Room for the indexes of the packs path scans add while the run lasts (see
        // `MAX_PACKS`); gix's default is the count found at opening, plus 10%, or 32.
        let slots = gix::odb::store::init::Slots::AsNeededByDiskState {
            multiplier: 1.1,
            minimum: 256,
        };
        let repo = gix::open_opts(worktree, gix::open::Options::default().object_store_slots(slots))
            .map_err(|e| CheckpointError::git("open repository", e))?;
        if repo.workdir().is_none() {
            return Err(CheckpointError::Invalid(format!(
                "{} has no worktree to snapshot",
                worktree.display()
            )));
        }
        let config = repo.config_snapshot();
        let protect = gix::validate::path::component::Options {
            protect_windows: config.boolean("gitoxide.core.protectWindows").unwrap_or(false),
            protect_hfs: config.boolean("core.protectHFS").unwrap_or(cfg!(target_os = "macos")),
            protect_ntfs: config.boolean("core.protectNTFS").unwrap_or(true),
        };
        Ok(Snapshotter {
            worktree: worktree.to_owned(),
            index_file: index_file.to_owned(),
            git: Git::new(worktree).exact()?,
            repo,
            protect,
            trees: RefCell::default(),
            sink: None,
            seed_from_worktree: true,
        })
    }

    /// The same snapshotter, writing every object it creates (blobs, trees, checkpoint
    /// commits) into the run store `store` instead of the repository's own; the store must be
    /// visible to the repository already ([`RunStore::ensure`]). An object counts as stored
    /// only if the run's view has it (the repository's objects and this store): one only
    /// another run's store holds is stored again, so the run's objects stand on their own.
    pub fn writing_to(mut self, store: &RunStore) -> Result<Self> {
        let view = gix::odb::at(store.view_dir(), self.repo.object_hash())
            .map_err(|e| CheckpointError::io(store.view_dir(), e))?;
        self.git = self.git.writing_to(store);
        self.sink = Some(RunSink {
            loose: gix::odb::loose::Store::at(store.path(), self.repo.object_hash()),
            pack_dir: store.path().join("pack"),
            view,
        });
        Ok(self)
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

    /// Never seeds the private index from the worktree's own: a sandboxed agent writes that
    /// index, and an entry whose stat data matches its file is taken without reading the file
    /// — an entry naming another run's object would put that object into the checkpoint (and
    /// a rollback would write it into the worktree). The first full scan then reads every file.
    pub fn distrust_worktree_index(&mut self) {
        self.seed_from_worktree = false;
    }

    /// Seeds the private index from the worktree's own (atomically), so a first full scan
    /// reuses the stat data git already has.
    fn ensure_index(&self) -> Result<()> {
        if self.index_file.exists() || !self.seed_from_worktree {
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
    ///
    /// The new blobs and trees are collected in memory and stored when the scan ends
    /// ([`NewObjects`]): as one pack when there are many, since creating a file per object is
    /// most of what a scan costs otherwise.
    pub fn scan_paths<'p>(&self, base: ObjectId, paths: impl IntoIterator<Item = &'p Path>) -> Result<PathScan> {
        let ws = self.worktree.clone();
        let hash = self.repo.object_hash();
        let trees = CachedTrees {
            repo: &self.repo,
            cache: &self.trees,
        };
        let missing = || CheckpointError::Invalid(format!("the previous tree {base} is not in the repository"));
        // The cache may still know a tree the repository lost (pruned once nothing referred to
        // it): the new tree would refer to what is gone.
        if !self.repo.has_object(base) {
            return Err(missing());
        }
        let mut buf = Vec::new();
        let base_data = match gix::objs::Find::try_find(&trees, &base, &mut buf) {
            Ok(Some(data)) if data.kind == gix::objs::Kind::Tree => data.data.to_vec(),
            Ok(_) => return Err(missing()),
            Err(e) => return Err(CheckpointError::git("read previous tree", e)),
        };
        let root: gix::objs::Tree = gix::objs::TreeRef::from_bytes(&base_data, hash)
            .map_err(|e| CheckpointError::git("read previous tree", e))?
            .into();
        // The plain editor, not `gix::Tree::edit`: that one checks that every entry of every
        // tree it writes exists in the object store, thousands of lookups per scan, for blobs
        // this scan just hashed and entries copied from trees already stored.
        let mut editor = gix::objs::tree::Editor::new(root, &trees, hash);
        let empty = gix::index::State::new(hash);
        let mut excludes = self
            .repo
            .excludes(
                &empty,
                None,
                gix::worktree::stack::state::ignore::Source::WorktreeThenIdMappingIfNotSkipped,
            )
            .map_err(|e| CheckpointError::git("read ignore rules", e))?;
        let mut scan = PathScanState {
            base: &base_data,
            trees: &trees,
            excludes: &mut excludes,
            editor: &mut editor,
            objects: NewObjects::new(&self.repo, self.sink.as_ref()),
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
        let PathScanState { read, mut objects, .. } = scan;
        // Every entry points to a blob this scan stored or to an object of a stored tree, so
        // unlike `gix::object::tree::Editor::write` nothing is looked up.
        let mut written = Vec::new();
        let mut refused = None;
        let tree = editor.write(|tree| {
            if let Some(e) = tree.entries.iter().find(|e| !self.accepts(e)) {
                let why = format!("git may refuse the name {:?}", e.filename);
                refused = Some(why.clone());
                return Err(CheckpointError::Invalid(why));
            }
            let mut buf = Vec::with_capacity(usize::try_from(gix::objs::WriteTo::size(tree)).unwrap_or(0));
            gix::objs::WriteTo::write_to(tree, &mut buf).map_err(|e| CheckpointError::git("write tree", e))?;
            let id = objects.add(gix::objs::Kind::Tree, buf.clone())?;
            written.push((id, buf));
            Ok(id)
        });
        if let Some(why) = refused {
            // A name `valid_name` let through but these settings forbid: let git decide.
            return Ok(PathScan::NeedsFullScan(why));
        }
        let tree = tree?;
        objects.flush()?;
        // The next scan starts from this tree: it finds the trees it edits here.
        let mut cache = self.trees.borrow_mut();
        for (id, data) in written {
            cache.insert(id, data);
        }
        Ok(PathScan::Tree { tree, paths_read: read })
    }

    /// Whether a tree entry's name passes the checks gix makes before writing a tree.
    fn accepts(&self, entry: &gix::objs::tree::Entry) -> bool {
        let mode = entry
            .mode
            .is_link()
            .then_some(gix::validate::path::component::Mode::Symlink);
        gix::validate::path::component(entry.filename.as_ref(), mode, self.protect).is_ok()
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
        let commit = gix::objs::Commit {
            tree,
            parents: [parent].into_iter().collect(),
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        let mut data = Vec::new();
        gix::objs::WriteTo::write_to(&commit, &mut data).map_err(|e| CheckpointError::git("encode commit", e))?;
        let kind = gix::objs::Kind::Commit;
        let id = gix::objs::compute_hash(self.repo.object_hash(), kind, &data)
            .map_err(|e| CheckpointError::git("hash object", e))?;
        NewObjects::new(&self.repo, self.sink.as_ref()).write_loose(kind, &data, id)?;
        Ok(id)
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
    /// The previous snapshot's root tree, encoded.
    base: &'a [u8],
    trees: &'a CachedTrees<'r>,
    excludes: &'a mut gix::AttributeStack<'r>,
    editor: &'a mut gix::objs::tree::Editor<'r>,
    /// The blobs read so far that the object store does not have yet.
    objects: NewObjects<'r>,
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
        let id = self.objects.add(gix::objs::Kind::Blob, bytes)?;
        self.editor
            .upsert(components(key.as_ref()), kind, id)
            .map_err(|e| CheckpointError::git("edit tree", e))?;
        Ok(())
    }

    fn remove(&mut self, key: &BString) -> Result<()> {
        self.editor
            .remove(components(key.as_ref()))
            .map_err(|e| CheckpointError::git("edit tree", e))?;
        Ok(())
    }

    /// Whether the previous snapshot has something at `rel` (a file, or a directory with files).
    fn tracked(&self, rel: &Path) -> Result<bool> {
        let mut buf = Vec::new();
        gix::objs::TreeRefIter::from_bytes(self.base, self.trees.repo.object_hash())
            .lookup_entry_by_path(self.trees, &mut buf, rel)
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

/// The components of a path as git spells it, for the tree editor.
fn components(key: &BStr) -> impl Iterator<Item = &BStr> {
    key.split(|b| *b == b'/').map(BStr::new)
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

/// Bytes of encoded trees a [`TreeCache`] generation holds.
const TREE_CACHE_BYTES: usize = 4 << 20;

/// Trees path scans read or wrote lately, encoded, by id (so never stale). A scan edits the tree
/// the previous one wrote: its root, the trees along changed paths and those read before come
/// from here rather than from the object store (a lookup in every pack index, or a file, and
/// inflating). Two generations: when the recent one is full it becomes the older one, and a tree
/// found in the older one moves back to the recent one.
#[derive(Default)]
struct TreeCache {
    recent: gix::hashtable::HashMap<ObjectId, Vec<u8>>,
    recent_bytes: usize,
    older: gix::hashtable::HashMap<ObjectId, Vec<u8>>,
}

impl TreeCache {
    fn get(&mut self, id: &gix::hash::oid) -> Option<&[u8]> {
        if let Some(data) = self.older.remove(id) {
            self.insert(id.to_owned(), data);
        }
        self.recent.get(id).map(Vec::as_slice)
    }

    fn insert(&mut self, id: ObjectId, data: Vec<u8>) {
        if self.recent_bytes + data.len() > TREE_CACHE_BYTES {
            self.older = std::mem::take(&mut self.recent);
            self.recent_bytes = 0;
        }
        self.recent_bytes += data.len();
        self.recent.insert(id, data);
    }
}

/// The repository's objects, with trees through a [`TreeCache`].
struct CachedTrees<'r> {
    repo: &'r gix::Repository,
    cache: &'r RefCell<TreeCache>,
}

impl gix::objs::Find for CachedTrees<'_> {
    fn try_find<'a>(
        &self,
        id: &gix::hash::oid,
        buffer: &'a mut Vec<u8>,
    ) -> std::result::Result<Option<gix::objs::Data<'a>>, gix::error::Error> {
        let hash = self.repo.object_hash();
        if let Some(data) = self.cache.borrow_mut().get(id) {
            buffer.clear();
            buffer.extend_from_slice(data);
            return Ok(Some(gix::objs::Data::new(buffer, gix::objs::Kind::Tree, hash)));
        }
        match self.repo.objects.try_find(id, buffer)? {
            Some(data) if data.kind == gix::objs::Kind::Tree => {
                self.cache.borrow_mut().insert(id.to_owned(), data.data.to_vec());
                Ok(Some(data))
            }
            other => Ok(other),
        }
    }
}

/// Below this many new objects a path scan stores them loose, a file each; from it on, as one
/// pack. It is git's own line for keeping fetched objects as a pack (`fetch.unpackLimit`): a pack
/// costs two file creations whatever its size where each loose object costs one, but every pack
/// is one more index that lookups search until `git gc` consolidates them (`gc.autoPackLimit`).
const PACK_MIN_OBJECTS: usize = 100;

/// With this many packs in the object store, path scans store loose objects only: it is when
/// `git gc --auto` consolidates packs (`gc.autoPackLimit`), and each more pack is one more index
/// for every lookup of a missing object to search until then.
const MAX_PACKS: usize = 50;

/// Objects at least this large are stored loose at once rather than held in memory for a pack.
const LOOSE_OBJECT_BYTES: usize = 1 << 20;

/// At most this many bytes of new objects are held in memory; reaching it stores them.
const HELD_BYTES: usize = 32 << 20;

/// The objects a path scan creates. Creating a file per object (temporary file, rename) is most
/// of what a scan would cost otherwise, so they are held until the scan ends and then stored in
/// one go ([`NewObjects::flush`]): as one pack and its index when there are many, loose
/// otherwise. Either way they are in the object store, where git reads them, before the scan
/// returns the tree that names them.
struct NewObjects<'r> {
    repo: &'r gix::Repository,
    sink: Option<&'r RunSink>,
    held: Vec<(ObjectId, gix::objs::Kind, Vec<u8>)>,
    held_bytes: usize,
    /// Every object this scan has stored, holds or found stored, so none is looked up twice.
    seen: gix::hashtable::HashSet<ObjectId>,
}

impl<'r> NewObjects<'r> {
    fn new(repo: &'r gix::Repository, sink: Option<&'r RunSink>) -> Self {
        NewObjects {
            repo,
            sink,
            held: Vec::new(),
            held_bytes: 0,
            seen: Default::default(),
        }
    }

    /// The id of the object of `kind` made of `data`, which is stored (now or on
    /// [`NewObjects::flush`]) unless the object store has it already.
    fn add(&mut self, kind: gix::objs::Kind, data: Vec<u8>) -> Result<ObjectId> {
        let id = gix::objs::compute_hash(self.repo.object_hash(), kind, &data)
            .map_err(|e| CheckpointError::git("hash object", e))?;
        // Without a refresh of the store's view: an object in a pack someone else wrote since is
        // stored once more, which is harmless.
        if !self.seen.insert(id) || self.stored(&id) {
            return Ok(id);
        }
        if data.len() >= LOOSE_OBJECT_BYTES {
            self.write_loose(kind, &data, id)?;
            return Ok(id);
        }
        self.held_bytes += data.len();
        self.held.push((id, kind, data));
        if self.held_bytes >= HELD_BYTES {
            self.flush()?;
        }
        Ok(id)
    }

    /// Whether the object is stored where it counts (the run's view, else the repository),
    /// without a refresh of the store's view of packs.
    fn stored(&self, id: &gix::hash::oid) -> bool {
        match self.sink {
            Some(sink) => sink.view.exists_without_refresh(id),
            None => self.repo.objects.exists_without_refresh(id),
        }
    }

    fn write_loose(&self, kind: gix::objs::Kind, data: &[u8], id: ObjectId) -> Result<()> {
        let written = match self.sink {
            Some(sink) => sink.loose.write_buf_with_known_id(kind, data, id),
            None => self.repo.objects.write_buf_with_known_id(kind, data, id),
        };
        written.map(drop).map_err(|e| CheckpointError::git("write object", e))
    }

    /// Stores the objects held: as one pack when there are [`PACK_MIN_OBJECTS`] or more and the
    /// object store has fewer than [`MAX_PACKS`] packs, loose otherwise.
    fn flush(&mut self) -> Result<()> {
        let mut held = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        if self.sink.is_some() && !held.is_empty() {
            // A run's store must not double an object the repository has (`git gc` would drop
            // the repository's copy, which sandboxes read): the view of the stores is refreshed
            // once — the repository may have packs that are newer than this handle — and what
            // they hold already is left out.
            if let Some(sink) = self.sink {
                let _ = gix::objs::Exists::exists(&sink.view, &held[0].0);
            }
            held.retain(|(id, _, _)| !self.stored(id));
            if held.is_empty() {
                return Ok(());
            }
        }
        // The packs of the store written to: every store's count together would pass the
        // limit as soon as there are a few runs.
        let packs = match self.sink {
            Some(sink) => std::fs::read_dir(&sink.pack_dir).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                    .count()
            }),
            None => self.repo.objects.store_ref().metrics().known_packs,
        };
        if held.len() < PACK_MIN_OBJECTS || packs >= MAX_PACKS {
            for (id, kind, data) in &held {
                self.write_loose(*kind, data, *id)?;
            }
            return Ok(());
        }
        let dir = match self.sink {
            Some(sink) => sink.pack_dir.clone(),
            None => self.repo.objects.store_ref().path().join("pack"),
        };
        write_pack(&dir, self.repo.object_hash(), &held).map_err(|e| CheckpointError::io(&dir, e))?;
        // A lookup that may refresh the store's view makes the handles load the new index, so
        // the next scans find these objects rather than store them again (and read them).
        let readable = self.repo.has_object(held[0].0)
            && self
                .sink
                .is_none_or(|sink| gix::objs::Exists::exists(&sink.view, &held[0].0));
        if !readable {
            return Err(CheckpointError::Invalid(format!(
                "the pack just written to {} cannot be read",
                dir.display()
            )));
        }
        Ok(())
    }
}

/// Writes `objects` (distinct, stored whole: no deltas) into `dir` (`objects/pack`) as a pack
/// and its version 2 index, named after the pack's checksum as git names its own. Both are built
/// in memory, then each written to a temporary file and renamed into place, the pack first:
/// readers find packs through their index, so none sees a pack before it is complete.
fn write_pack(
    dir: &Path,
    hash: gix::hash::Kind,
    objects: &[(ObjectId, gix::objs::Kind, Vec<u8>)],
) -> std::io::Result<()> {
    use gix::zlib::{Compression, stream::deflate::Compress};
    let count = u32::try_from(objects.len()).map_err(|_| std::io::Error::other("too many objects for one pack"))?;
    let mut pack = Vec::with_capacity(12 + objects.iter().map(|o| o.2.len() / 2 + 16).sum::<usize>() + 64);
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    // Id, CRC-32 of the whole entry as stored, offset in the pack.
    let mut entries: Vec<(ObjectId, u32, u64)> = Vec::with_capacity(objects.len());
    // One compressor for all entries: setting one up costs more than compressing a small object.
    let mut zlib = Compress::new(Compression::BEST_SPEED);
    let mut scratch = vec![0; 64 * 1024];
    for (id, kind, data) in objects {
        let offset = pack.len();
        push_entry_header(&mut pack, *kind, data.len() as u64);
        deflate(&mut zlib, data, &mut pack, &mut scratch)?;
        entries.push((*id, crc32fast::hash(&pack[offset..]), offset as u64));
    }
    let checksum = digest(hash, &pack)?;
    pack.extend_from_slice(checksum.as_bytes());

    entries.sort_unstable_by_key(|e| e.0);
    let id_len = hash.len_in_bytes();
    let mut idx = Vec::with_capacity(8 + 256 * 4 + entries.len() * (id_len + 8) + 2 * id_len);
    idx.extend_from_slice(b"\xfftOc");
    idx.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for (id, _, _) in &entries {
        fanout[usize::from(id.as_bytes()[0])] += 1;
    }
    let mut total = 0;
    for n in fanout {
        total += n;
        idx.extend_from_slice(&total.to_be_bytes());
    }
    for (id, _, _) in &entries {
        idx.extend_from_slice(id.as_bytes());
    }
    for (_, crc, _) in &entries {
        idx.extend_from_slice(&crc.to_be_bytes());
    }
    // Offsets from 2^31 on go to a table of 64-bit ones, referred to with the high bit set.
    let mut large: Vec<u64> = Vec::new();
    for &(_, _, offset) in &entries {
        let small = match u32::try_from(offset) {
            Ok(o) if o < 0x8000_0000 => o,
            _ => {
                large.push(offset);
                0x8000_0000 | (large.len() - 1) as u32
            }
        };
        idx.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        idx.extend_from_slice(&offset.to_be_bytes());
    }
    idx.extend_from_slice(checksum.as_bytes());
    let idx_checksum = digest(hash, &idx)?;
    idx.extend_from_slice(idx_checksum.as_bytes());

    std::fs::create_dir_all(dir)?;
    let name = format!("pack-{}", checksum.to_hex());
    write_new_file(dir, "tmp_pack_", &pack, &dir.join(format!("{name}.pack")))?;
    write_new_file(dir, "tmp_idx_", &idx, &dir.join(format!("{name}.idx")))
}

/// A pack entry's header: the object's type, then its size, 4 bits and then 7 bits a byte.
fn push_entry_header(out: &mut Vec<u8>, kind: gix::objs::Kind, mut size: u64) {
    let kind: u8 = match kind {
        gix::objs::Kind::Commit => 1,
        gix::objs::Kind::Tree => 2,
        gix::objs::Kind::Blob => 3,
        gix::objs::Kind::Tag => 4,
    };
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// Appends `data` as one complete zlib stream to `out`.
fn deflate(
    zlib: &mut gix::zlib::stream::deflate::Compress,
    mut data: &[u8],
    out: &mut Vec<u8>,
    scratch: &mut [u8],
) -> std::io::Result<()> {
    use gix::zlib::{Status, stream::deflate::FlushCompress};
    zlib.reset();
    loop {
        let (consumed, produced) = (zlib.total_in(), zlib.total_out());
        let status = zlib
            .compress(data, scratch, FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        let consumed = (zlib.total_in() - consumed) as usize;
        let produced = (zlib.total_out() - produced) as usize;
        out.extend_from_slice(&scratch[..produced]);
        data = &data[consumed..];
        match status {
            Status::StreamEnd => return Ok(()),
            _ if consumed == 0 && produced == 0 => return Err(std::io::Error::other("zlib made no progress")),
            _ => {}
        }
    }
}

fn digest(hash: gix::hash::Kind, bytes: &[u8]) -> std::io::Result<ObjectId> {
    let mut hasher = gix::hash::hasher(hash);
    hasher.update(bytes);
    hasher.try_finalize().map_err(std::io::Error::other)
}

/// Writes `bytes` to a new file in `dir` named with `prefix` (git removes stale `tmp_` files in
/// `objects/pack`), read-only as git's packs are, syncs it (as git syncs its packs: the event
/// that records a checkpoint must never outlive its objects in a power loss), then renames it
/// to `to`.
fn write_new_file(dir: &Path, prefix: &str, bytes: &[u8], to: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (tmp, mut file) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{prefix}agentctl_{}_{n}", std::process::id()));
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // Left by an earlier process with the same id.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_data())
        .and_then(|()| std::fs::rename(&tmp, to));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A worktree with one commit, a snapshotter on it and its first (full scan) tree.
    fn repo() -> (tempfile::TempDir, PathBuf, Snapshotter, ObjectId) {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        std::fs::create_dir(&wt).unwrap();
        git(&wt, &["init", "-q", "-b", "main"]);
        std::fs::write(wt.join("base.txt"), "base\n").unwrap();
        git(&wt, &["add", "-A"]);
        git(&wt, &["commit", "-qm", "base"]);
        let snap = Snapshotter::open(&wt, &dir.path().join("private.index")).unwrap();
        let tree = snap.scan_full().unwrap();
        (dir, wt, snap, tree)
    }

    fn objects_dir(snap: &Snapshotter) -> PathBuf {
        snap.repo().objects.store_ref().path().to_owned()
    }

    fn packs(snap: &Snapshotter) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(objects_dir(snap).join("pack")) else {
            return Vec::new();
        };
        let mut packs: Vec<PathBuf> = dir
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
            .collect();
        packs.sort();
        packs
    }

    fn loose_objects(snap: &Snapshotter) -> usize {
        std::fs::read_dir(objects_dir(snap))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().len() == 2)
            .map(|e| std::fs::read_dir(e.path()).unwrap().count())
            .sum()
    }

    /// Writes `count` files (`round` makes their content new), each `size(n)` bytes long, in a
    /// few directories; returns their paths.
    fn write_files(wt: &Path, count: usize, round: usize, size: impl Fn(usize) -> usize) -> Vec<PathBuf> {
        (0..count)
            .map(|n| {
                let rel = PathBuf::from(format!("d{}/s{}/f{n}.txt", n % 3, n % 5));
                let abs = wt.join(&rel);
                std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
                let line = format!("file {n} round {round}\n");
                let body: Vec<u8> = line.bytes().cycle().take(size(n)).collect();
                std::fs::write(abs, body).unwrap();
                rel
            })
            .collect()
    }

    fn path_scan(snap: &Snapshotter, base: ObjectId, paths: &[PathBuf]) -> ObjectId {
        match snap.scan_paths(base, paths.iter().map(PathBuf::as_path)).unwrap() {
            PathScan::Tree { tree, .. } => tree,
            PathScan::NeedsFullScan(why) => panic!("asked for a full scan: {why}"),
        }
    }

    #[test]
    fn many_new_objects_go_to_one_pack_that_git_reads() {
        let (_dir, wt, snap, base) = repo();
        // Sizes around the limits of the entry header's size bytes, empty files (one blob for
        // all) and objects too large to hold.
        let sizes = [0, 1, 15, 16, 17, 2047, 2048, 4096, 100_000, LOOSE_OBJECT_BYTES + 1];
        let paths = write_files(&wt, 150, 1, |n| sizes[n % sizes.len()]);
        let large = (0..150)
            .filter(|n| sizes[n % sizes.len()] >= LOOSE_OBJECT_BYTES)
            .count();
        let loose = loose_objects(&snap);
        let tree = path_scan(&snap, base, &paths);
        let new_packs = packs(&snap);
        assert_eq!(new_packs.len(), 1, "one pack for the scan");
        assert_eq!(loose_objects(&snap), loose + large, "only the large blobs are loose");
        assert_eq!(tree, snap.scan_full().unwrap(), "the path scan's tree is git's");
        git(
            &wt,
            &["verify-pack", new_packs[0].with_extension("idx").to_str().unwrap()],
        );
        git(&wt, &["fsck", "--strict", "--no-dangling"]);
        for p in &paths[..12] {
            let spec = format!("{tree}:{}", p.display());
            let stored = git(&wt, &["cat-file", "-p", &spec]);
            assert_eq!(stored, std::fs::read_to_string(wt.join(p)).unwrap().trim());
        }

        // The same content again: everything is stored already, nothing is written.
        let again = path_scan(&snap, base, &paths);
        assert_eq!(again, tree);
        assert_eq!(packs(&snap), new_packs);
        assert_eq!(loose_objects(&snap), loose + large);
    }

    #[test]
    fn few_new_objects_are_stored_loose() {
        let (_dir, wt, snap, base) = repo();
        let paths = write_files(&wt, 20, 1, |_| 100);
        let loose = loose_objects(&snap);
        let tree = path_scan(&snap, base, &paths);
        assert!(packs(&snap).is_empty());
        assert!(loose_objects(&snap) > loose);
        assert_eq!(tree, snap.scan_full().unwrap());
        git(&wt, &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn a_name_the_settings_forbid_leaves_the_tree_to_git() {
        let (dir, wt, _, base) = repo();
        git(&wt, &["config", "core.protectHFS", "true"]);
        let snap = Snapshotter::open(&wt, &dir.path().join("private.index")).unwrap();
        // `.git` with a zero-width non-joiner: what HFS+ would open as `.git`.
        let name = PathBuf::from(".g\u{200c}it");
        std::fs::write(wt.join(&name), "x\n").unwrap();
        let scan = snap.scan_paths(base, [name.as_path()]).unwrap();
        assert!(matches!(scan, PathScan::NeedsFullScan(_)), "{scan:?}");
    }

    #[test]
    fn scans_store_loose_objects_once_the_store_has_many_packs() {
        let (_dir, wt, snap, mut tree) = repo();
        for round in 0..MAX_PACKS + 3 {
            let paths = write_files(&wt, PACK_MIN_OBJECTS, round, |_| 64);
            tree = path_scan(&snap, tree, &paths);
        }
        assert_eq!(packs(&snap).len(), MAX_PACKS);
        assert_eq!(tree, snap.scan_full().unwrap());
        git(&wt, &["fsck", "--strict", "--no-dangling"]);
    }
}
