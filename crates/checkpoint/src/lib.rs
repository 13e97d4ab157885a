//! Checkpoints: exact, cheap snapshots of a run's worktree as git commits on hidden refs
//! (`refs/agentctl/runs/<run>/<n>`), and what can be done with them — list, diff, restore.
//!
//! A snapshot is the whole worktree: tracked and untracked files honouring `.gitignore`, bytes
//! exactly as on disk (no filter, no line-ending conversion), symlinks as links, exec bits. It is
//! taken one of two ways ([`Snapshotter`]):
//! - a **full scan** with git on a private index that starts as a copy of the worktree's own (so
//!   stat data is reused and only changed files are hashed); the agent's index, HEAD and branch
//!   are never touched;
//! - a **path scan** in-process (gix) when a file watcher says exactly which paths changed: only
//!   those paths are read and the previous checkpoint's tree is edited. Anything it cannot
//!   prove safe (a nested repository) falls back to a full scan.
//!
//! Restoring ([`restore`]) writes a checkpoint's tree back into the worktree, whole or for some
//! paths; [`diff`] compares trees through git with the same exact settings.

pub mod diff;
pub mod refs;
pub mod restore;
pub mod snapshot;

pub use diff::{FileStat, TreeDiff};
pub use restore::RestoreReport;
pub use snapshot::{PathScan, Snapshotter};

pub use gix::ObjectId;

/// Checkpoint failures.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Vcs(#[from] vcs::VcsError),
    #[error("{context}: {message}")]
    Git { context: &'static str, message: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl CheckpointError {
    pub(crate) fn git(context: &'static str, e: impl std::fmt::Display) -> Self {
        CheckpointError::Git {
            context,
            message: e.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Parses a hex object id printed by git.
pub fn parse_id(hex: &str) -> Result<ObjectId> {
    ObjectId::from_hex(hex.trim().as_bytes()).map_err(|e| CheckpointError::git("parse object id", e))
}
