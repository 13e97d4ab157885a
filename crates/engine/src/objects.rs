//! Which object store a run writes to: its own store in its repository
//! ([`vcs::RunStore`]), created and made visible to git outside sandboxes on first use. Every
//! object written on a run's behalf — checkpoints, the agent's imported commits, a promotion's
//! commit — goes there, so other sandboxed runs cannot read it.

use std::path::Path;

use checkpoint::Snapshotter;
use model::{ErrorCode, RunId};
use vcs::RunStore;

use crate::error::EngineError;

/// The store of run `id` in the repository containing `repo`, ready for writing.
pub(crate) fn run_store(repo: &Path, id: &RunId) -> Result<RunStore, EngineError> {
    let store = RunStore::of_repo(repo, id.as_str())?;
    store.ensure()?;
    Ok(store)
}

/// A snapshotter of run `id`'s worktree, writing into the run's store.
pub(crate) fn snapshotter(worktree: &Path, index_file: &Path, id: &RunId) -> Result<Snapshotter, EngineError> {
    let cp_err = |e: checkpoint::CheckpointError| EngineError::new(ErrorCode::CheckpointFailed, e.to_string());
    let snap = Snapshotter::open(worktree, index_file).map_err(cp_err)?;
    let common = snap.repo().common_dir();
    let common = std::fs::canonicalize(common)
        .map_err(|e| EngineError::new(ErrorCode::CheckpointFailed, format!("{}: {e}", common.display())))?;
    let store = RunStore::new(&common, id.as_str());
    // A repository opened before its store was listed does not read from the store: reopen.
    let snap = if store.ensure()? {
        Snapshotter::open(worktree, index_file).map_err(cp_err)?
    } else {
        snap
    };
    snap.writing_to(&store).map_err(cp_err)
}

/// Imports what a sandboxed agent wrote into its run's store, judged against what the run may
/// read (the repository's objects and its store; see [`sandbox::gitview::ObjectImport`]).
pub(crate) fn import(objects: &sandbox::gitview::ObjectImport, store: &RunStore) -> std::io::Result<usize> {
    let view = vcs::RepoView::new(store.common(), Some(store))?;
    objects.import(view.path())
}
