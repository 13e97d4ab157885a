//! `gc` as one call, for the CLI and the API alike: the worktrees of finished runs past their
//! retention, then — with `prune_refs` — the checkpoint refs of runs removed earlier. Runs this
//! very call removed keep their refs (their last state was just saved there) until the next
//! pruning gc.

use crate::{Engine, EngineError, GcItem, GcOptions, PrunedRefs};

impl Engine {
    /// Collects what `opts` allows; returns each run looked at and the refs pruned.
    pub fn collect(&self, opts: &GcOptions, prune_refs: bool) -> Result<(Vec<GcItem>, Vec<PrunedRefs>), EngineError> {
        let items = self.gc(opts)?;
        let pruned = if prune_refs {
            let spare: Vec<_> = items
                .iter()
                .filter(|i| i.action == "removed" || i.action == "would_remove")
                .map(|i| i.id.clone())
                .collect();
            self.prune_refs(opts.dry_run, &spare)?
        } else {
            Vec::new()
        };
        Ok((items, pruned))
    }
}
