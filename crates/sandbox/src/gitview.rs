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
use std::io::{self, Write};
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

/// Files larger than this in the agent's store are not imported (a sparse file could fill the
/// state directory's disk).
const MAX_IMPORTED_FILE: u64 = 1 << 30;

impl ObjectImport {
    /// The repository's common git directory.
    pub fn common(&self) -> &Path {
        &self.repo
    }

    /// Imports the objects of the private store that `view` (an object directory showing what
    /// the run may read: the repository's objects and the run's store) lacks, and takes them
    /// out of the private store. Returns how many were imported.
    pub fn import(&self, view: &Path) -> io::Result<usize> {
        let work = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(self.private.parent().unwrap_or(Path::new("/tmp")))?;
        let moved = work.path().join("moved");
        let clean = work.path().join("clean");
        let staged = work.path().join("staged");
        for dir in [&moved, &clean, &staged] {
            fs::create_dir_all(dir.join("pack"))?;
            fs::create_dir_all(dir.join("info"))?;
        }
        // Out of the agent's reach first: each object directory (or whatever stands there).
        for entry in fs::read_dir(&self.private)?.flatten() {
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
        let ids = copy_regular_objects(&self.repo, &moved, &clean)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let git = |objects: &Path, alternates: Option<&Path>| {
            let mut c = Command::new("git");
            c.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_DIR", &self.repo)
                .env("GIT_OBJECT_DIRECTORY", objects)
                .args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]);
            if let Some(a) = alternates {
                c.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", a);
            }
            c
        };
        fs::write(clean.join("info/alternates"), format!("{}\n", view.display()))?;
        fs::write(staged.join("info/alternates"), format!("{}\n", view.display()))?;
        // Stage: what the claimed ids hold, indexed under their true ids. Names that hold
        // nothing readable are dropped.
        let readable = batch_check(git(&clean, None), &ids, true)?;
        if readable.is_empty() {
            return Ok(0);
        }
        pack_into(git(&clean, None), git(&staged, None), &readable)?;
        let mut true_ids = Vec::new();
        for entry in fs::read_dir(staged.join("pack"))?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "idx") {
                true_ids.extend(show_index(&self.repo, &entry.path())?);
            }
        }
        // Only what the run cannot read already.
        let new_ids = batch_check(git(view, None), &true_ids, false)?;
        if new_ids.is_empty() {
            return Ok(0);
        }
        let dest = self.store.clone().unwrap_or_else(|| self.repo.join("objects"));
        pack_into(
            git(&staged, None),
            git(&dest, Some(&self.repo.join("objects"))),
            &new_ids,
        )?;
        Ok(new_ids.len())
    }
}

/// The ids of `ids` an object directory has (`present`) or lacks.
fn batch_check(mut cmd: Command, ids: &[String], present: bool) -> io::Result<Vec<String>> {
    let mut child = cmd
        .args(["cat-file", "--batch-check=%(objectname)", "--buffer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let list: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(io::Error::other("cannot check the agent's objects"));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match l.strip_suffix(" missing") {
            Some(id) if !present => Some(id.to_owned()),
            None if present => Some(l.trim().to_owned()),
            _ => None,
        })
        .collect())
}

/// Packs `ids` as `from` reads them and indexes the pack as `into` writes (a complete pack: no
/// thin deltas).
fn pack_into(mut from: Command, mut into: Command, ids: &[String]) -> io::Result<()> {
    let mut pack = from
        .args(["pack-objects", "--stdout", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = pack.stdin.take().expect("piped");
    let list: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let index = into
        .args(["index-pack", "--stdin"])
        .stdin(pack.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let packed = pack.wait_with_output()?;
    let _ = writer.join();
    if !packed.status.success() || !index.status.success() {
        return Err(io::Error::other(format!(
            "cannot import the agent's objects: {}{}",
            String::from_utf8_lossy(&packed.stderr).trim(),
            String::from_utf8_lossy(&index.stderr).trim()
        )));
    }
    Ok(())
}

/// Copies the objects under `moved` (object directories taken from the agent's store; `pack-in`
/// its pack directory) into the fresh object directory `to`: regular files in real
/// directories only, each opened without following a link and at most [`MAX_IMPORTED_FILE`]
/// long. Returns the ids their names claim.
fn copy_regular_objects(repo: &Path, moved: &Path, to: &Path) -> io::Result<Vec<String>> {
    let is_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let mut ids = Vec::new();
    for dir in fs::read_dir(moved)?.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.len() != 2 || !is_dir(&dir.path()) {
            continue;
        }
        for obj in fs::read_dir(dir.path())?.flatten() {
            let rest = obj.file_name().to_string_lossy().into_owned();
            let named = matches!(rest.len(), 38 | 62) && rest.bytes().all(|b| b.is_ascii_hexdigit());
            if !named {
                continue;
            }
            fs::create_dir_all(to.join(&name))?;
            if copy_no_follow(&obj.path(), &to.join(&name).join(&rest))? {
                ids.push(format!("{name}{rest}"));
            }
        }
    }
    let packs = moved.join("pack-in");
    if is_dir(&packs) {
        for entry in fs::read_dir(&packs)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "idx") {
                continue;
            }
            let copied = to.join("pack").join(entry.file_name());
            if !copy_no_follow(&path, &copied)?
                || !copy_no_follow(&path.with_extension("pack"), &copied.with_extension("pack"))?
            {
                let _ = fs::remove_file(&copied);
                continue;
            }
            ids.extend(show_index(repo, &copied)?);
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The ids a pack index lists (read in the repository, for its object format: outside one,
/// `git show-index` reads nothing).
fn show_index(repo: &Path, idx: &Path) -> io::Result<Vec<String>> {
    let out = Command::new("git")
        .env("GIT_DIR", repo)
        .args(["show-index"])
        .stdin(fs::File::open(idx)?)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect())
}

/// Copies a regular file (opened without following a link, at most [`MAX_IMPORTED_FILE`]
/// long) to `to`, streaming. Returns whether it did.
fn copy_no_follow(from: &Path, to: &Path) -> io::Result<bool> {
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
        Ok(m) if m.is_file() && m.len() <= MAX_IMPORTED_FILE => {}
        _ => return Ok(false),
    }
    let mut out = fs::File::create(to)?;
    io::copy(&mut f.take(MAX_IMPORTED_FILE), &mut out)?;
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
        fs::create_dir_all(objects.join("info"))?;
        fs::create_dir_all(objects.join("pack"))?;
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
                fs::create_dir_all(&heads)?;
                fs::create_dir_all(&logs)?;
                let file = heads.join(leaf);
                if let Some(parent) = file.parent() {
                    fs::create_dir_all(parent)?;
                }
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
