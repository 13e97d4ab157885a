//! Serialises worktree changes per repository. `git worktree add` reads every other worktree's
//! metadata while it creates its own, so concurrent adds on one repository can fail ("failed to
//! read .git/worktrees/X/commondir"). Every worktree add, remove and prune that agentctl does
//! holds an exclusive `flock` on `<state>/locks/repo-<hash of the repository path>.lock`.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use model::ErrorCode;
use nix::fcntl::{Flock, FlockArg};
use store::StateLayout;

use crate::EngineError;

/// Held while a repository's worktrees change.
#[derive(Debug)]
pub struct RepoLock {
    _lock: Flock<File>,
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Blocks until this process holds the worktree lock of `repo`.
pub fn lock_repo(layout: &StateLayout, repo: &Path) -> Result<RepoLock, EngineError> {
    let dir = layout.locks_dir();
    let io = |e: std::io::Error| EngineError::new(ErrorCode::Io, format!("repository lock in {}: {e}", dir.display()));
    fs::create_dir_all(&dir).map_err(io)?;
    let path = dir.join(format!(
        "repo-{:016x}.lock",
        stable_hash(repo.as_os_str().as_encoded_bytes())
    ));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))?;
    Ok(RepoLock { _lock: lock })
}
