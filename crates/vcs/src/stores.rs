//! Run object stores: where the objects written on a run's behalf go — its checkpoints, the
//! commits its sandboxed agent makes, the commit a promotion adds — so that another sandboxed
//! run, which sees the repository's own objects and its own store only, cannot read them.
//!
//! Layout, in the repository's common git directory:
//!
//! - `agentctl/stores/<run>/`: one object directory per run (loose objects and packs);
//! - `objects/info/alternates` gains a line per store, `../agentctl/stores/<run>` (relative,
//!   so the repository can move; directly there, since gix resolves an alternate's own
//!   relative alternates against the repository's objects where git resolves them against
//!   the alternate), so git outside any sandbox (the user's, agentctl's) sees every run's
//!   objects: run branches and checkpoint refs resolve, `git gc` and `git fsck` are content.
//!
//! A sandbox's view leaves those lines out but its own run's (see the sandbox's git view). What it then lacks is
//! what the user took from a run into the repository's own history — merged a run's branch,
//! checked a file out of it — since those objects stay in the run's store. [`publish`] copies
//! them into the repository's own store before a sandbox starts: every object reachable from
//! the user's refs (and the run's base) that the repository's own store lacks. It walks only
//! what is new since the tips it verified last time (`agentctl/published`), and it copies
//! again what it copied before when the repository's packs changed — `git gc` drops a local
//! copy of an object an alternate also holds.
//!
//! A store goes when its run's refs are pruned ([`retire`], from `agentctl gc --prune-refs`):
//! what anything still reaches of it — the run's branch, which `rm` keeps, what the user merged
//! — is copied into the repository's own store first; the rest (checkpoints nobody refers to)
//! goes with it.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::objects::ObjectDir;
use crate::{Git, VcsError};

/// How the repository's `objects/info/alternates` names a run store (relative to `objects`).
const STORE_LINE_PREFIX: &str = "../agentctl/stores/";

/// One run's object store in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStore {
    common: PathBuf,
    run: String,
}

impl RunStore {
    /// The store of run `run` in the repository whose common git directory is `common`.
    pub fn new(common: &Path, run: &str) -> RunStore {
        RunStore {
            common: common.to_owned(),
            run: run.to_owned(),
        }
    }

    /// The store of run `run` in the repository containing `dir`.
    pub fn of_repo(dir: &Path, run: &str) -> Result<RunStore, VcsError> {
        Ok(RunStore::new(&Git::new(dir).common_dir()?, run))
    }

    /// The store's object directory.
    pub fn path(&self) -> PathBuf {
        self.common.join("agentctl/stores").join(&self.run)
    }

    /// The repository's own object directory.
    pub fn repo_objects(&self) -> PathBuf {
        self.common.join("objects")
    }

    /// The repository's common git directory.
    pub fn common(&self) -> &Path {
        &self.common
    }

    /// The store's view (`agentctl/views/<run>`): an object directory showing the repository's
    /// own objects, the user's alternates and this store — what the run's sandbox sees. Writers
    /// for the run read through it, so they store again what only another run's store holds
    /// rather than name it, and the run's objects never depend on another run's store.
    pub fn view_dir(&self) -> PathBuf {
        self.common.join("agentctl/views").join(&self.run)
    }

    /// Creates the store and makes it visible to git outside sandboxes (listed in the
    /// repository's alternates). Idempotent; safe against concurrent callers. Returns whether
    /// it was listed just now (a repository opened before does not see it yet).
    pub fn ensure(&self) -> Result<bool, VcsError> {
        let io = |e| VcsError::Spawn(e);
        let line = format!("{STORE_LINE_PREFIX}{}", self.run);
        let alternates = self.repo_objects().join("info/alternates");
        // Fast path: already listed (the store directory is created before it is listed).
        if read_lines(&alternates).map_err(io)?.contains(&line) && self.view_dir().is_dir() {
            return Ok(false);
        }
        let stores = self.common.join("agentctl/stores");
        let first = !stores.exists();
        fs::create_dir_all(&stores).map_err(io)?;
        let _lock = lock(&self.common.join("agentctl/stores.lock")).map_err(io)?;
        fs::create_dir_all(self.path().join("pack")).map_err(io)?;
        fs::create_dir_all(self.path().join("info")).map_err(io)?;
        if !self.view_dir().is_dir() {
            // Made aside and renamed into place: a view is whole or absent.
            let views = self.common.join("agentctl/views");
            fs::create_dir_all(&views).map_err(io)?;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempdir_in(&views)
                .map_err(io)?;
            fill_view(tmp.path(), &self.common, Some(self)).map_err(io)?;
            fs::rename(tmp.keep(), self.view_dir()).map_err(io)?;
        }
        if first {
            // Until now no run had a store: everything the user's refs reach is in the
            // repository's own store, so they are verified as they are.
            let tips = user_tips(&self.common)?;
            let state = Published {
                packs: pack_names(&self.repo_objects()).map_err(io)?,
                tips: tips.into_iter().collect(),
                objects: BTreeSet::new(),
            };
            state.write(&self.common).map_err(io)?;
        }
        append_line(&alternates, &line).map_err(io)?;
        Ok(true)
    }

    /// The environment that makes git write new objects into this store, reading what the run
    /// may read ([`RunStore::view_dir`]).
    pub fn git_env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("GIT_OBJECT_DIRECTORY", self.path()),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", self.view_dir()),
        ]
    }
}

/// The lines of the repository's `objects/info/alternates` a sandbox keeps: all but the run
/// stores, each as an absolute path (the sandbox sees the repository's objects at another path, where
/// relative lines would mean something else).
pub fn sandbox_alternates(common: &Path) -> io::Result<Vec<PathBuf>> {
    let objects = common.join("objects");
    Ok(read_lines(&objects.join("info/alternates"))?
        .into_iter()
        .filter(|l| !l.starts_with(STORE_LINE_PREFIX) && !l.starts_with('#'))
        .map(|l| {
            let p = PathBuf::from(&l);
            if p.is_absolute() { p } else { objects.join(p) }
        })
        .collect())
}

/// What [`publish`] remembers between calls (`agentctl/published`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The names of the repository's packs when the state was written.
    packs: Vec<String>,
    /// The tips verified last time.
    tips: BTreeSet<String>,
    /// The objects copied into the repository's own store so far.
    objects: BTreeSet<String>,
}

impl Published {
    fn path(common: &Path) -> PathBuf {
        common.join("agentctl/published")
    }

    fn read(common: &Path) -> io::Result<Published> {
        let mut state = Published::default();
        for line in read_lines(&Self::path(common))? {
            match line.split_once(' ') {
                Some(("packs", rest)) => state.packs = rest.split_whitespace().map(str::to_owned).collect(),
                Some(("tip", id)) => {
                    state.tips.insert(id.to_owned());
                }
                Some(("obj", id)) => {
                    state.objects.insert(id.to_owned());
                }
                _ => {}
            }
        }
        Ok(state)
    }

    fn write(&self, common: &Path) -> io::Result<()> {
        let mut text = format!("packs {}\n", self.packs.join(" "));
        for t in &self.tips {
            text.push_str(&format!("tip {t}\n"));
        }
        for o in &self.objects {
            text.push_str(&format!("obj {o}\n"));
        }
        write_atomic(&Self::path(common), text.as_bytes())
    }
}

/// Makes what a sandbox of `own`'s run (or of no run) needs and would not see readable to it:
/// every object the user's refs reach that only run stores hold is copied into the repository's
/// own store; every object the run's `base` reaches (a base on another run's branch, which the
/// user chose) that neither that store nor the run's has is copied into the run's store. Returns
/// how many objects were copied. A repository without run stores has nothing to do.
pub fn publish(common: &Path, own: Option<&RunStore>, base: Option<&str>) -> Result<usize, VcsError> {
    let io = |e| VcsError::Spawn(e);
    if !common.join("agentctl/stores").is_dir() {
        return Ok(0);
    }
    let _lock = lock(&common.join("agentctl/publish.lock")).map_err(io)?;
    let objects = common.join("objects");
    // The packs as they are before anything is copied: a `git gc` that ends meanwhile changes
    // them, and the next call checks the copies again.
    let packs = pack_names(&objects).map_err(io)?;
    let mut state = Published::read(common).map_err(io)?;
    let before = state.clone();
    let mut copy: BTreeSet<String> = BTreeSet::new();
    // `git gc` drops the repository's copy of an object an alternate also holds: copy again.
    if packs != state.packs && !state.objects.is_empty() {
        // An object pruned since (unreachable, its store retired) exists nowhere: forgotten.
        let alive: BTreeSet<String> = existing(common, state.objects.iter().cloned())?.into_iter().collect();
        state.objects.retain(|id| alive.contains(id));
        let view = RepoView::new(common, None).map_err(io)?;
        copy.extend(view.absent(state.objects.iter().cloned())?);
    }
    let tips = user_tips(common)?;
    let fresh: Vec<&String> = tips.iter().filter(|t| !state.tips.contains(*t)).collect();
    let base = base.filter(|b| !tips.contains(*b));
    // The tips verified before that still exist (a deleted branch's may have been pruned).
    let known: Vec<String> = if fresh.is_empty() && base.is_none() {
        Vec::new()
    } else {
        existing(common, state.tips.iter().cloned())?
    };
    if !fresh.is_empty() {
        let listed = reachable(common, fresh.iter().map(|s| s.as_str()), &known)?;
        let view = RepoView::new(common, None).map_err(io)?;
        copy.extend(view.absent(listed)?);
    }
    if !copy.is_empty() {
        // Recorded first: a copy that is made but not recorded would never be checked again.
        state.objects.extend(copy.iter().cloned());
        state.write(common).map_err(io)?;
        let name = copy_objects(common, &objects, &copy, None)?;
        tracing::info!(
            objects = copy.len(),
            "copied run objects the repository's history reaches into its own store"
        );
        state.packs = packs.iter().cloned().chain(name).collect();
        state.packs.sort();
    } else {
        state.packs = packs;
    }
    let mut copied = copy.len();
    state.tips = tips.clone();
    if state != before {
        state.write(common).map_err(io)?;
    }
    // A base beyond the user's refs (another run's branch) goes into the run's own store only:
    // no other sandbox sees it.
    if let (Some(base), Some(own)) = (base, own) {
        let mut negatives = known;
        negatives.extend(tips);
        let listed = reachable(common, std::iter::once(base), &negatives)?;
        let missing: BTreeSet<String> = RepoView::new(common, Some(own))
            .map_err(io)?
            .absent(listed)?
            .into_iter()
            .collect();
        if !missing.is_empty() {
            copy_objects(common, &own.path(), &missing, None)?;
            copied += missing.len();
        }
    }
    Ok(copied)
}

/// Removes a run's store (after its checkpoint refs are gone): every object of it that any ref,
/// worktree `HEAD`, index or reflog still reaches is copied into the repository's own store
/// first (a whole walk), and the store leaves the repository's alternates before it is
/// deleted, with its view. Returns how many objects were kept. Safe to repeat after a failure
/// at any step; an error leaves the store in place.
///
/// Nothing else of agentctl reads a run's store: other runs' writers and sandboxes read through
/// their own views. An index or reflog an agent wrote in its worktree can name an object of the
/// store; it is kept (copied into the repository's store) rather than lost.
pub fn retire(store: &RunStore) -> Result<usize, VcsError> {
    let io = |e| VcsError::Spawn(e);
    let common = store.common();
    let line = format!("{STORE_LINE_PREFIX}{}", store.run);
    let alternates = store.repo_objects().join("info/alternates");
    let mut kept = 0;
    if store.path().is_dir() {
        // Listed again if a retirement cut short took it out: its objects must be readable.
        {
            let _lock = lock(&common.join("agentctl/stores.lock")).map_err(io)?;
            append_line(&alternates, &line).map_err(io)?;
        }
        // Up to date first: copies `git gc` dropped, user tips new since the last sandbox.
        publish(common, None, None)?;
        let _lock = lock(&common.join("agentctl/publish.lock")).map_err(io)?;
        let ids = store_objects(common, &store.path())?;
        let mut needed = BTreeSet::new();
        if !ids.is_empty() {
            // A whole walk, every worktree's refs, HEAD, index and reflogs: `git gc` may have
            // dropped the repository's copy of anything a store also holds, so no tip is
            // taken as covering what it reaches.
            let out = Git::new(common).run(["rev-list", "--objects", "--all", "--reflog", "--indexed-objects"])?;
            let reached: BTreeSet<String> = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|id| ids.contains(*id))
                .map(str::to_owned)
                .collect();
            needed = RepoView::new(common, None)
                .map_err(io)?
                .absent(reached)?
                .into_iter()
                .collect();
            if !needed.is_empty() {
                let mut state = Published::read(common).map_err(io)?;
                state.objects.extend(needed.iter().cloned());
                state.write(common).map_err(io)?;
                copy_objects(common, &common.join("objects"), &needed, None)?;
                kept = needed.len();
            }
        }
        {
            let _lock = lock(&common.join("agentctl/stores.lock")).map_err(io)?;
            remove_line(&alternates, &line).map_err(io)?;
        }
        // A `git gc` that ran meanwhile may have dropped the copies again (the store was still
        // an alternate): copied again, from the store named explicitly, before it goes.
        let lost = RepoView::new(common, None).map_err(io)?.absent(needed)?;
        if !lost.is_empty() {
            let lost: BTreeSet<String> = lost.into_iter().collect();
            copy_objects(common, &common.join("objects"), &lost, Some(&store.path()))?;
        }
    } else {
        let _lock = lock(&common.join("agentctl/stores.lock")).map_err(io)?;
        remove_line(&alternates, &line).map_err(io)?;
    }
    for dir in [store.path(), store.view_dir()] {
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(VcsError::Spawn(e)),
        }
    }
    Ok(kept)
}

/// Takes `line` out of a file of lines (rewritten atomically, other lines kept).
fn remove_line(path: &Path, line: &str) -> io::Result<()> {
    let lines = read_lines(path)?;
    if lines.iter().any(|l| l == line) {
        let text: String = lines.iter().filter(|l| *l != line).map(|l| format!("{l}\n")).collect();
        write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

/// The ids of the objects in an object directory: loose ones by name, packed ones from their
/// indexes (ours to trust: only agentctl writes a store).
fn store_objects(common: &Path, dir: &Path) -> Result<BTreeSet<String>, VcsError> {
    let io = |e| VcsError::Spawn(e);
    let mut ids = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            for obj in fs::read_dir(entry.path()).map_err(io)?.flatten() {
                let rest = obj.file_name().to_string_lossy().into_owned();
                if matches!(rest.len(), 38 | 62) && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ids.insert(format!("{name}{rest}"));
                }
            }
        }
    }
    if let Ok(packs) = fs::read_dir(dir.join("pack")) {
        for entry in packs.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "idx") {
                ids.extend(crate::objects::index_ids(common, &path)?);
            }
        }
    }
    Ok(ids)
}

/// The tips of the user's refs (every ref but run branches and agentctl's hidden refs), and
/// `HEAD`.
fn user_tips(common: &Path) -> Result<BTreeSet<String>, VcsError> {
    let git = Git::new(common);
    let out = git.run(["for-each-ref", "--format=%(objectname) %(refname)"])?;
    let mut tips: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| !name.starts_with("refs/heads/agentctl/") && !name.starts_with("refs/agentctl/"))
        .map(|(id, _)| id.to_owned())
        .collect();
    if let Ok(head) = git.run(["rev-parse", "--verify", "--quiet", "HEAD"]) {
        let head = head.trim();
        if !head.is_empty() {
            tips.insert(head.to_owned());
        }
    }
    Ok(tips)
}

/// Which of `ids` exist (in any store).
fn existing(common: &Path, ids: impl Iterator<Item = String>) -> Result<Vec<String>, VcsError> {
    let input: String = ids.map(|i| format!("{i}\n")).collect();
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let out = Git::new(common).run_with_stdin(
        &["cat-file", "--batch-check=%(objectname)", "--buffer"],
        input.as_bytes(),
    )?;
    Ok(out
        .lines()
        .filter(|l| !l.ends_with(" missing"))
        .map(str::to_owned)
        .collect())
}

/// Every object reachable from `tips` and not from `not`.
fn reachable<'a>(common: &Path, tips: impl Iterator<Item = &'a str>, not: &[String]) -> Result<Vec<String>, VcsError> {
    let mut input = String::new();
    for t in tips {
        input.push_str(t);
        input.push('\n');
    }
    for n in not {
        input.push('^');
        input.push_str(n);
        input.push('\n');
    }
    let out = Git::new(common).run_with_stdin(&["rev-list", "--objects", "--stdin"], input.as_bytes())?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Copies `ids` (found in any store, or in `from`) into the object directory `dest`, as one
/// pack. Returns the pack's name (`pack-<hash>`).
fn copy_objects(
    common: &Path,
    dest: &Path,
    ids: &BTreeSet<String>,
    from: Option<&Path>,
) -> Result<Option<String>, VcsError> {
    let ids: Vec<String> = ids.iter().cloned().collect();
    let objects = common.join("objects");
    crate::objects::move_objects(
        common,
        ObjectDir {
            objects: &objects,
            alternate: from,
        },
        ObjectDir {
            objects: dest,
            alternate: Some(&objects),
        },
        &ids,
        false,
    )
}

/// A view of the repository's own objects (its user alternates too, and one run's store when
/// given) without the other run stores: a scratch object directory (removed when dropped)
/// linking to the repository's loose object directories and packs. What a sandbox of that run
/// sees; git run with `GIT_OBJECT_DIRECTORY` set to [`RepoView::path`] reads nothing else.
pub struct RepoView {
    common: PathBuf,
    dir: tempfile::TempDir,
}

impl RepoView {
    pub fn new(common: &Path, own: Option<&RunStore>) -> io::Result<RepoView> {
        let scratch = common.join("agentctl/tmp");
        fs::create_dir_all(&scratch)?;
        let dir = tempfile::Builder::new().prefix("view-").tempdir_in(&scratch)?;
        fill_view(dir.path(), common, own)?;
        Ok(RepoView {
            common: common.to_owned(),
            dir,
        })
    }

    /// The view's object directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A git runner in the repository that reads objects through this view only.
    pub fn command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Git::new(&self.common).command(args);
        cmd.env("GIT_DIR", &self.common)
            .env("GIT_OBJECT_DIRECTORY", self.dir.path());
        cmd
    }

    /// Which of `ids` this view lacks.
    pub fn absent(&self, ids: impl IntoIterator<Item = String>) -> Result<Vec<String>, VcsError> {
        let ids: Vec<String> = ids.into_iter().collect();
        crate::objects::objects_in(&self.common, self.dir.path(), &ids, false)
    }
}

/// Makes `dir` an object directory showing the repository's own objects (links to its loose
/// object directories and its pack directory), the user's alternates and `own`'s store.
fn fill_view(dir: &Path, common: &Path, own: Option<&RunStore>) -> io::Result<()> {
    let objects = common.join("objects");
    std::os::unix::fs::symlink(objects.join("pack"), dir.join("pack"))?;
    for byte in 0..=255u8 {
        let name = format!("{byte:02x}");
        std::os::unix::fs::symlink(objects.join(&name), dir.join(&name))?;
    }
    fs::create_dir(dir.join("info"))?;
    let mut lines: Vec<PathBuf> = sandbox_alternates(common)?;
    lines.extend(own.map(RunStore::path));
    let text: String = lines.iter().map(|l| format!("{}\n", l.display())).collect();
    fs::write(dir.join("info/alternates"), text)
}

/// The names of the packs in an object directory, sorted.
fn pack_names(objects: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(objects.join("pack")) {
        Ok(dir) => {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".idx") {
                    names.push(stem.to_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// A file's non-empty lines; none when it does not exist.
fn read_lines(path: &Path) -> io::Result<Vec<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Adds `line` to a file of lines unless it is there (rewritten atomically, other lines kept).
fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut lines = read_lines(path)?;
    if lines.iter().any(|l| l == line) {
        return Ok(());
    }
    lines.push(line.to_owned());
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    write_atomic(path, text.as_bytes())
}

/// Replaces `path` by a file holding `bytes`: written beside it, synced, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Holds an exclusive lock on `path` (created) until dropped.
fn lock(path: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
}
