//! What a sandboxed agent sees of its repository's git metadata, so it can use git in its
//! worktree — commit to its own branch — and nothing more. In a linked worktree git needs the
//! repository's common directory (objects, refs, config) and the worktree's private git
//! directory (HEAD, index). Inside the sandbox:
//!
//! - everything in the common directory is read-only: config, hooks, `info/` and every other
//!   branch cannot be written, so nothing the user or the control plane later executes can be
//!   planted (the directory itself is a private tmpfs, so git can take its lock files);
//! - `objects/` is a private store, with the repository's objects as its read-only alternate:
//!   what the agent writes is imported by the supervisor ([`ObjectImport`]) into the run's own
//!   store, re-hashed, so it can neither rewrite nor forge an object of the user's;
//! - of the repository's alternates, the sandbox sees the run's own store and the user's
//!   alternates ([`RunObjects`]): not agentctl's directory (`<common>/agentctl`) with every
//!   other run's store, so another run's checkpoints and commits cannot be read;
//! - the worktree's git directory is writable, except `commondir`, `gitdir` and
//!   `config.worktree`, which would redirect or configure later git commands;
//! - the worktree's `.git` file is read-only;
//! - `refs/heads/agentctl/` is replaced by a private directory holding only this run's branch,
//!   and the matching reflog directory likewise: the agent's commits move that private copy,
//!   which the supervisor copies onto the real branch after checking it ([`GitView::branch_tip`]);
//! - other runs' worktree directories and hidden checkpoint refs are not there, and
//!   `packed-refs` is shown without them.
//!
//! A repository whose refs are not files (reftable) gets a read-only view: the agent can read
//! history but not commit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bwrap::{Bind, Mount};

/// Prefix of every run branch (`agentctl/<run id>`).
const RUN_BRANCH_PREFIX: &str = "agentctl/";

/// The objects of the run a view is for: its store, and what the repository's objects'
/// `info/alternates` shows inside the sandbox (absolute paths: the store and the user's own
/// alternates, never the directory listing every run's store).
#[derive(Clone, Debug)]
pub struct RunObjects {
    pub store: PathBuf,
    pub alternates: Vec<PathBuf>,
}

/// The sandbox's arrangement of one worktree's git metadata.
#[derive(Clone, Debug)]
pub struct GitView {
    /// Mounts to add to the sandbox, in order.
    pub mounts: Vec<Mount>,
    /// Whether the agent can move its branch (false for reftable repositories, or a branch not
    /// under `agentctl/`).
    pub can_commit: bool,
    /// The private copy of the branch's ref file, when `can_commit`.
    private_ref: Option<PathBuf>,
    objects: ObjectImport,
}

/// What [`GitView::kept`] keeps of a view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptView {
    pub private_ref: Option<PathBuf>,
    pub private_objects: PathBuf,
    pub store: Option<PathBuf>,
    pub repo: PathBuf,
}

/// The objects a sandboxed agent wrote (commits, `git add`), kept in its private store until
/// they are imported into the run's store: re-packed and indexed by `git index-pack`, which
/// names every object by the hash of its content — an object the agent forged under another
/// name is stored under its true one, never over an object of the user's.
///
/// The private store is the agent's, and it may change it while the import runs: a name is a
/// claim, a file or a directory may become a link to another run's objects or the
/// repository's. So the import first moves the store's object directories out of the agent's
/// reach (a rename moves a link itself, never what it points to), then copies regular files
/// only, each opened without following a link, into fresh directories nobody else holds, and
/// works there alone: it never reads, writes or deletes through a path the agent can change.
/// The copies are indexed in a staging store whose only alternate is the view of what the run
/// may read (the repository's objects and the run's, never other runs'); of the objects found
/// there, by their true ids, those the view lacks go to the run's store. So an object comes in
/// only if the agent wrote its content, and the run's store never doubles one of the
/// repository's (`git gc` would drop the repository's copy).
#[derive(Clone, Debug)]
pub struct ObjectImport {
    private: PathBuf,
    /// The run's store the objects go to (the repository's own store when `None`).
    store: Option<PathBuf>,
    /// The repository's common git directory.
    repo: PathBuf,
}

/// At most this many bytes of the agent's files are copied by one import (a sparse file costs
/// the agent nothing and the state directory's disk its whole length); what is past it waits
/// for the next import.
const MAX_IMPORT_BYTES: u64 = 1 << 30;

/// At most this many directory entries of the agent's store are read by one import (it can
/// keep adding entries to a directory it holds open).
const MAX_IMPORT_ENTRIES: usize = 200_000;

/// What one import may still read.
struct Budget {
    bytes: u64,
    entries: usize,
}

impl Budget {
    /// Takes one directory entry; false when none is left.
    fn entry(&mut self) -> bool {
        self.entries = self.entries.saturating_sub(1);
        self.entries > 0
    }
}

/// A directory of the supervisor's, removed with `rm -rf` when dropped: the agent may have
/// moved a tree of any depth into it, which a recursive removal in this process could not
/// always take (one stack frame and descriptor per level).
struct Scratch(PathBuf);

impl Scratch {
    fn new(parent: &Path) -> io::Result<Scratch> {
        // Leftovers of imports that could not be cleaned up go first.
        if let Ok(dir) = fs::read_dir(parent) {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with("import-") {
                    remove_tree(&e.path());
                }
            }
        }
        let dir = tempfile::Builder::new().prefix("import-").tempdir_in(parent)?;
        Ok(Scratch(dir.keep()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

/// `rm -rf` of a tree (iterative, never follows a link, stays on one file system).
fn remove_tree(path: &Path) {
    let _ = Command::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl ObjectImport {
    /// Imports the objects of the private store that `view` (an object directory showing what
    /// the run may read: the repository's objects and the run's store) lacks, and takes them
    /// out of the private store. Returns how many were imported.
    pub fn import(&self, view: &Path) -> io::Result<usize> {
        let work = Scratch::new(self.private.parent().unwrap_or(Path::new("/tmp")))?;
        let moved = work.0.join("moved");
        let clean = work.0.join("clean");
        let staged = work.0.join("staged");
        for dir in [&moved, &clean, &staged] {
            fs::create_dir_all(dir.join("pack"))?;
            fs::create_dir_all(dir.join("info"))?;
        }
        let mut budget = Budget {
            bytes: MAX_IMPORT_BYTES,
            entries: MAX_IMPORT_ENTRIES,
        };
        // Out of the agent's reach first: each object directory (or whatever stands there).
        for entry in fs::read_dir(&self.private)?.flatten() {
            if !budget.entry() {
                break;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex2 = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if hex2 || name == "pack" {
                let to = if name == "pack" {
                    moved.join("pack-in")
                } else {
                    moved.join(&name)
                };
                let _ = fs::rename(entry.path(), to);
            }
        }
        let ids = copy_regular_objects(&self.repo, &moved, &clean, &mut budget)?;
        if ids.is_empty() {
            return Ok(0);
        }
        fs::write(clean.join("info/alternates"), format!("{}\n", view.display()))?;
        fs::write(staged.join("info/alternates"), format!("{}\n", view.display()))?;
        let git = |e: vcs::VcsError| io::Error::other(format!("cannot import the agent's objects: {e}"));
        let dir = |objects| vcs::objects::ObjectDir {
            objects,
            alternate: None,
        };
        // Stage: what the claimed ids hold, indexed under their true ids. Names that hold
        // nothing readable are dropped.
        let readable = vcs::objects::objects_in(&self.repo, &clean, &ids, true).map_err(git)?;
        if readable.is_empty() {
            return Ok(0);
        }
        vcs::objects::move_objects(&self.repo, dir(&clean), dir(&staged), &readable, true).map_err(git)?;
        let mut true_ids = Vec::new();
        for entry in fs::read_dir(staged.join("pack"))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "idx") {
                true_ids.extend(vcs::objects::index_ids(&self.repo, &entry.path()).map_err(git)?);
            }
        }
        // Only what the run cannot read already.
        let new_ids = vcs::objects::objects_in(&self.repo, view, &true_ids, false).map_err(git)?;
        if new_ids.is_empty() {
            return Ok(0);
        }
        let repo_objects = self.repo.join("objects");
        let dest = self.store.clone().unwrap_or_else(|| repo_objects.clone());
        let into = vcs::objects::ObjectDir {
            objects: &dest,
            alternate: Some(&repo_objects),
        };
        vcs::objects::move_objects(&self.repo, dir(&staged), into, &new_ids, false).map_err(git)?;
        Ok(new_ids.len())
    }
}

/// Copies the objects under `moved` (object directories taken from the agent's store; `pack-in`
/// its pack directory) into the fresh object directory `to`: regular files in real
/// directories only, each opened without following a link, within `budget`. The agent's pack
/// indexes are never read: each copied pack is indexed here (`git index-pack`, which reads the
/// objects themselves). Returns the ids the loose files' names claim and the packs hold.
fn copy_regular_objects(repo: &Path, moved: &Path, to: &Path, budget: &mut Budget) -> io::Result<Vec<String>> {
    let is_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let mut ids = Vec::new();
    'dirs: for dir in fs::read_dir(moved)?.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !is_dir(&dir.path()) {
            continue;
        }
        for obj in fs::read_dir(dir.path())?.flatten() {
            if !budget.entry() {
                break 'dirs;
            }
            let rest = obj.file_name().to_string_lossy().into_owned();
            let named = matches!(rest.len(), 38 | 62) && rest.bytes().all(|b| b.is_ascii_hexdigit());
            if !named {
                continue;
            }
            fs::create_dir_all(to.join(&name))?;
            if copy_no_follow(&obj.path(), &to.join(&name).join(&rest), budget)? {
                ids.push(format!("{name}{rest}"));
            }
        }
    }
    let packs = moved.join("pack-in");
    if is_dir(&packs) {
        for entry in fs::read_dir(&packs)?.flatten() {
            if !budget.entry() {
                break;
            }
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pack") {
                continue;
            }
            let copied = to.join("pack").join(entry.file_name());
            if !copy_no_follow(&path, &copied, budget)? {
                continue;
            }
            let indexed =
                vcs::objects::index_pack_in_place(repo, &copied).map_err(|e| io::Error::other(e.to_string()))?;
            if indexed {
                ids.extend(
                    vcs::objects::index_ids(repo, &copied.with_extension("idx"))
                        .map_err(|e| io::Error::other(e.to_string()))?,
                );
            } else {
                // Not a pack git can read alone (thin, truncated, malformed): left out.
                let _ = fs::remove_file(&copied);
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Copies a regular file (opened without following a link) to `to`, streaming, if it fits in
/// what is left of `budget`. Returns whether it did.
fn copy_no_follow(from: &Path, to: &Path, budget: &mut Budget) -> io::Result<bool> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
    else {
        return Ok(false);
    };
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() <= budget.bytes => {}
        _ => return Ok(false),
    }
    let mut out = fs::File::create(to)?;
    // The file may grow while it is read: never past the budget.
    let copied = io::copy(&mut f.take(budget.bytes), &mut out)?;
    budget.bytes -= copied;
    Ok(true)
}

impl GitView {
    /// Prepares the view of `worktree` (a linked worktree on `branch`, whose tip is `tip`),
    /// keeping private files under `private_dir`.
    pub fn prepare(
        worktree: &Path,
        branch: &str,
        tip: &str,
        private_dir: &Path,
        run_objects: Option<&RunObjects>,
    ) -> io::Result<GitView> {
        let dot_git = worktree.join(".git");
        let gitdir = read_gitdir(&dot_git)?;
        let common = common_dir(&gitdir)?;
        fs::create_dir_all(private_dir)?;
        // The agent's objects go to a private store; the repository's are its read-only
        // alternate, seen at a path that means the same inside and out (a symlink here, a
        // bind mount there).
        let objects = private_dir.join("objects");
        // The agent had these directories before (a resumed run): anything but a directory it
        // left there — a link into the repository — is replaced, never written through.
        real_dirs(private_dir, Path::new("objects/info"))?;
        real_dirs(private_dir, Path::new("objects/pack"))?;
        let shared = private_dir.join("repo-objects");
        let _ = fs::remove_file(&shared);
        std::os::unix::fs::symlink(common.join("objects"), &shared)?;
        write_no_follow(
            &objects.join("info/alternates"),
            format!("{}\n", shared.display()).as_bytes(),
        )?;
        // The common directory itself is a private tmpfs holding read-only binds of what is in
        // it: nothing in it can be changed, but git can create its lock files there (a commit
        // takes `packed-refs.lock` to delete pseudo-refs), which vanish with the sandbox.
        let mut mounts = vec![Mount::Tmpfs(common.clone())];
        let mut entries: Vec<PathBuf> = fs::read_dir(&common)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        for entry in entries {
            let name = entry.file_name().unwrap_or_default();
            if name == "objects"
                || name == "worktrees"
                || name == "agentctl"
                || name.to_string_lossy().ends_with(".lock")
            {
                continue;
            }
            mounts.push(Mount::Bind(Bind::read_only(&entry)));
        }
        mounts.extend([
            Mount::Bind(Bind {
                src: objects.clone(),
                dest: common.join("objects"),
                writable: true,
            }),
            Mount::Bind(Bind {
                src: common.join("objects"),
                dest: shared.clone(),
                writable: false,
            }),
        ]);
        if let Some(run) = run_objects {
            // The repository's `objects/info` is replaced: its alternates by the run's, and its
            // commit-graph (which lists every run's commits, unreadable here) left out.
            mounts.push(Mount::Bind(Bind::read_only(&run.store)));
            let info = private_dir.join("repo-objects-info");
            let _ = fs::remove_dir_all(&info);
            fs::create_dir_all(&info)?;
            let text: String = run.alternates.iter().map(|p| format!("{}\n", p.display())).collect();
            fs::write(info.join("alternates"), text)?;
            if common.join("objects/info").is_dir() {
                mounts.push(Mount::Bind(Bind {
                    src: info,
                    dest: shared.join("info"),
                    writable: false,
                }));
            }
        }
        // Other runs' (and the user's other) worktrees are not there; this one's is bound below.
        mounts.push(Mount::Tmpfs(common.join("worktrees")));
        mounts.push(Mount::Bind(Bind::writable(&gitdir)));
        let config_worktree = gitdir.join("config.worktree");
        if !fs::symlink_metadata(&config_worktree).is_ok_and(|m| m.is_file()) {
            write_no_follow(&config_worktree, b"")?;
        }
        for name in ["commondir", "gitdir", "config.worktree"] {
            let p = gitdir.join(name);
            if p.exists() {
                mounts.push(Mount::Bind(Bind::read_only(p)));
            }
        }
        mounts.push(Mount::Bind(Bind::read_only(&dot_git)));
        if common.join("refs/agentctl").is_dir() {
            mounts.push(Mount::Tmpfs(common.join("refs/agentctl")));
        }
        let packed = common.join("packed-refs");
        if packed.is_file() {
            let text = fs::read_to_string(&packed)?;
            let filtered: String = text
                .lines()
                .filter(|l| !is_other_runs_ref(l, branch))
                .flat_map(|l| [l, "\n"])
                .collect();
            let copy = private_dir.join("packed-refs");
            fs::write(&copy, filtered)?;
            mounts.push(Mount::Bind(Bind {
                src: copy,
                dest: packed,
                writable: false,
            }));
        }
        let reftable = common.join("reftable").exists();
        // `agentctl/<run>`, or a shadow run's `agentctl/_shadow/<run>`.
        let own = branch
            .strip_prefix(RUN_BRANCH_PREFIX)
            .filter(|rest| rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        let private_ref = match own {
            Some(leaf) if !reftable => {
                let heads = private_dir.join("heads");
                let logs = private_dir.join("logs");
                real_dirs(private_dir, Path::new("logs"))?;
                let file = heads.join(leaf);
                let parent = Path::new("heads").join(leaf);
                real_dirs(private_dir, parent.parent().unwrap_or(Path::new("heads")))?;
                // The agent can write here (it is its branch): a symlink it planted is replaced,
                // never written through.
                write_no_follow(&file, format!("{tip}\n").as_bytes())?;
                // Mount points must exist in the real repository.
                let real_heads = common.join("refs/heads/agentctl");
                let real_logs = common.join("logs/refs/heads/agentctl");
                fs::create_dir_all(&real_heads)?;
                fs::create_dir_all(&real_logs)?;
                mounts.push(Mount::Bind(Bind {
                    src: heads,
                    dest: real_heads,
                    writable: true,
                }));
                mounts.push(Mount::Bind(Bind {
                    src: logs,
                    dest: real_logs,
                    writable: true,
                }));
                Some(file)
            }
            _ => None,
        };
        Ok(GitView {
            mounts,
            can_commit: private_ref.is_some(),
            private_ref,
            objects: ObjectImport {
                private: objects,
                store: run_objects.map(|r| r.store.clone()),
                repo: common,
            },
        })
    }

    /// What of the view its supervisor needs once the agent runs: where the agent's branch
    /// and objects are. Plain paths, for a supervisor that hibernates (the mounts were used).
    pub fn kept(&self) -> KeptView {
        KeptView {
            private_ref: self.private_ref.clone(),
            private_objects: self.objects.private.clone(),
            store: self.objects.store.clone(),
            repo: self.objects.repo.clone(),
        }
    }

    /// The view again from what was kept of it (without mounts: no process starts under it).
    pub fn from_kept(kept: KeptView) -> GitView {
        GitView {
            mounts: Vec::new(),
            can_commit: kept.private_ref.is_some(),
            private_ref: kept.private_ref,
            objects: ObjectImport {
                private: kept.private_objects,
                store: kept.store,
                repo: kept.repo,
            },
        }
    }

    /// Moves the objects the agent wrote into the repository (see [`ObjectImport`]).
    pub fn importer(&self) -> ObjectImport {
        self.objects.clone()
    }

    /// The branch tip the agent left in its private copy, if it is a well-formed object id
    /// (the caller checks that it is a commit whose history the run may read).
    pub fn branch_tip(&self) -> Option<String> {
        let text = read_no_follow(self.private_ref.as_ref()?)?;
        let tip = text.trim();
        let ok = matches!(tip.len(), 40 | 64) && tip.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| tip.to_ascii_lowercase())
    }
}

/// Makes `base/rel` a directory, component by component, where each component is a real
/// directory: anything else standing there (a symlink the agent planted, a file) is removed
/// first, so nothing is ever created through a link. `base` itself is ours.
fn real_dirs(base: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut path = base.to_path_buf();
    for component in rel.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&path)?;
    }
    Ok(path)
}

/// Replaces `path` with a new regular file holding `bytes`, without following a symlink there.
fn write_no_follow(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)
}

/// A small regular file's text; `None` for a symlink, a FIFO or anything else.
fn read_no_follow(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Whether a `packed-refs` line names a ref of another run (its branch or hidden refs).
fn is_other_runs_ref(line: &str, own_branch: &str) -> bool {
    let Some((_, name)) = line.split_once(' ') else {
        return false;
    };
    name.starts_with("refs/agentctl/")
        || (name.starts_with("refs/heads/agentctl/") && name != format!("refs/heads/{own_branch}"))
}

/// The git directory a worktree's `.git` file points to.
fn read_gitdir(dot_git: &Path) -> io::Result<PathBuf> {
    let meta = fs::symlink_metadata(dot_git)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a linked worktree's .git file", dot_git.display()),
        ));
    }
    let text = fs::read_to_string(dot_git)?;
    let rel = text.strip_prefix("gitdir:").map(str::trim).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no gitdir line", dot_git.display()),
        )
    })?;
    let base = dot_git.parent().unwrap_or(Path::new("/"));
    fs::canonicalize(base.join(rel))
}

/// The common directory of a worktree's git directory (its `commondir` file).
fn common_dir(gitdir: &Path) -> io::Result<PathBuf> {
    let text = fs::read_to_string(gitdir.join("commondir"))?;
    fs::canonicalize(gitdir.join(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_refs_lose_other_runs_refs_only() {
        let own = "agentctl/r1";
        assert!(is_other_runs_ref("abc refs/heads/agentctl/r2", own));
        assert!(is_other_runs_ref("abc refs/agentctl/runs/r1/1", own));
        assert!(!is_other_runs_ref("abc refs/heads/agentctl/r1", own));
        assert!(!is_other_runs_ref("abc refs/heads/main", own));
        assert!(!is_other_runs_ref("# pack-refs with: peeled fully-peeled sorted", own));
        assert!(!is_other_runs_ref("^abc", own));
    }
}
