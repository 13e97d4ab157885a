//! What a sandboxed agent sees of its repository's git metadata, so it can use git in its
//! worktree — commit to its own branch — and nothing more. In a linked worktree git needs the
//! repository's common directory (objects, refs, config) and the worktree's private git
//! directory (HEAD, index). Inside the sandbox:
//!
//! - the common directory is read-only: config, hooks, `info/` and every other branch cannot
//!   be written, so nothing the user or the control plane later executes can be planted;
//! - `objects/` is writable (a commit writes objects; they are content-addressed);
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

use crate::bwrap::{Bind, Mount};

/// Prefix of every run branch (`agentctl/<run id>`).
const RUN_BRANCH_PREFIX: &str = "agentctl/";

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
}

impl GitView {
    /// Prepares the view of `worktree` (a linked worktree on `branch`, whose tip is `tip`),
    /// keeping private files under `private_dir`.
    pub fn prepare(worktree: &Path, branch: &str, tip: &str, private_dir: &Path) -> io::Result<GitView> {
        let dot_git = worktree.join(".git");
        let gitdir = read_gitdir(&dot_git)?;
        let common = common_dir(&gitdir)?;
        let mut mounts = vec![
            Mount::Bind(Bind::read_only(&common)),
            Mount::Bind(Bind::writable(common.join("objects"))),
        ];
        if common.join("worktrees").is_dir() {
            mounts.push(Mount::Tmpfs(common.join("worktrees")));
        }
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
        fs::create_dir_all(private_dir)?;
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
        let own = branch
            .strip_prefix(RUN_BRANCH_PREFIX)
            .filter(|rest| !rest.contains('/'));
        let private_ref = match own {
            Some(leaf) if !reftable => {
                let heads = private_dir.join("heads");
                let logs = private_dir.join("logs");
                fs::create_dir_all(&heads)?;
                fs::create_dir_all(&logs)?;
                let file = heads.join(leaf);
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
        })
    }

    /// The branch tip the agent left in its private copy, if it is a well-formed object id
    /// (the caller checks that it is a commit descending from what it expects).
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
