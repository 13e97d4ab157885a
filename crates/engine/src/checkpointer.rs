//! A run's checkpoint session: the one place that takes checkpoints and rollbacks and records
//! them. The run's supervisor holds one while the agent works (baseline, watcher-driven,
//! requested, final); when no supervisor is alive, the command that asks (`checkpoint`,
//! `rollback`, `rm`, `gc`) holds one itself, under the run's single-writer lock. Either way the
//! order is: write objects, write the ref, then append the event — a crash in between leaves at
//! worst an unreferenced commit or a ref the log does not know yet (replaced by the next
//! checkpoint with that number: the log, not the ref, is the record).

use std::path::{Path, PathBuf};
use std::time::Instant;

use checkpoint::{ObjectId, PathScan, Snapshotter};
use model::{CheckpointTrigger, ErrorCode, Event, EventData, RunId, ScanKind};
use serde::{Deserialize, Serialize};
use store::{RunWriter, StateLayout};

use crate::EngineError;

/// One recorded checkpoint, as listed and answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckpointInfo {
    pub n: u32,
    pub trigger: CheckpointTrigger,
    pub commit: String,
    pub tree: String,
    pub parent: String,
    pub git_ref: String,
    pub message: Option<String>,
    pub ts: jiff::Timestamp,
    pub scan: ScanKind,
    pub elapsed_ms: u64,
    /// Whether this call recorded it (false: the worktree was unchanged since checkpoint `n`).
    #[serde(default)]
    pub created: bool,
}

/// A recorded rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackInfo {
    pub to: u32,
    pub commit: String,
    pub pre_rollback: u32,
    pub paths: Vec<String>,
    pub written: u64,
    pub removed: u64,
    pub skipped: Vec<String>,
    pub paused: bool,
    pub elapsed_ms: u64,
}

/// The checkpoints recorded in a run's events, in order.
pub fn checkpoints_in(id: &RunId, events: &[Event]) -> Vec<CheckpointInfo> {
    events
        .iter()
        .filter_map(|e| match &e.data {
            EventData::Checkpointed {
                n,
                trigger,
                commit,
                tree,
                parent,
                message,
                scan,
                elapsed_ms,
                ..
            } => Some(CheckpointInfo {
                n: *n,
                trigger: *trigger,
                commit: commit.clone(),
                tree: tree.clone(),
                parent: parent.clone(),
                git_ref: checkpoint::refs::ref_name(id.as_str(), *n),
                message: message.clone(),
                ts: e.ts,
                scan: *scan,
                elapsed_ms: *elapsed_ms,
                created: true,
            }),
            _ => None,
        })
        .collect()
}

/// Where a run's private checkpoint index lives.
pub fn index_path(layout: &StateLayout, id: &RunId) -> PathBuf {
    layout.run_dir(id).join("checkpoint.index")
}

fn cp_err(e: checkpoint::CheckpointError) -> EngineError {
    EngineError::new(ErrorCode::CheckpointFailed, e.to_string())
}

/// Takes and records checkpoints and rollbacks of one run.
#[derive(Debug)]
pub struct Checkpointer {
    id: RunId,
    snap: Snapshotter,
    base_commit: ObjectId,
    /// The last checkpoint: number, commit, tree.
    last: Option<(u32, ObjectId, ObjectId)>,
    /// Objects a sandboxed agent wrote, imported before each snapshot (the worktree's index
    /// that seeds a scan may name them).
    objects: Option<(sandbox::gitview::ObjectImport, vcs::RunStore)>,
}

impl Checkpointer {
    /// Opens the session for a run whose worktree is `worktree`, continuing after the
    /// checkpoints already in `events`.
    pub fn open(
        layout: &StateLayout,
        id: &RunId,
        worktree: &Path,
        base_commit: &str,
        events: &[Event],
    ) -> Result<Self, EngineError> {
        if !worktree.is_dir() {
            return Err(EngineError::new(
                ErrorCode::WorktreeGone,
                format!("run {id} has no worktree at {}", worktree.display()),
            ));
        }
        let snap = crate::objects::snapshotter(worktree, &index_path(layout, id), id)?;
        let base_commit = checkpoint::parse_id(base_commit).map_err(cp_err)?;
        let last = checkpoints_in(id, events).last().map(|c| {
            Ok::<_, EngineError>((
                c.n,
                checkpoint::parse_id(&c.commit).map_err(cp_err)?,
                checkpoint::parse_id(&c.tree).map_err(cp_err)?,
            ))
        });
        let last = last.transpose()?;
        Ok(Checkpointer {
            id: id.clone(),
            snap,
            base_commit,
            last,
            objects: None,
        })
    }

    /// Imports the objects a sandboxed agent writes to its private store before each snapshot.
    /// The agent's worktree index is then not trusted either (see
    /// [`Snapshotter::distrust_worktree_index`]).
    pub fn import_objects_from(&mut self, objects: sandbox::gitview::ObjectImport, store: vcs::RunStore) {
        self.snap.distrust_worktree_index();
        self.objects = Some((objects, store));
    }

    pub fn snapshotter(&self) -> &Snapshotter {
        &self.snap
    }

    /// The last checkpoint's number, if any.
    pub fn last_number(&self) -> Option<u32> {
        self.last.map(|(n, _, _)| n)
    }

    /// The last checkpoint's tree, if any.
    pub fn last_tree(&self) -> Option<ObjectId> {
        self.last.map(|(_, _, t)| t)
    }

    /// Takes a checkpoint. With `changed` (paths the watcher reported since the last
    /// checkpoint), only those are read; otherwise the whole worktree. An unchanged tree is not
    /// recorded again (except the baseline): the last checkpoint is returned with
    /// `created: false`.
    pub fn take(
        &mut self,
        w: &mut RunWriter<'_>,
        trigger: CheckpointTrigger,
        message: Option<String>,
        changed: Option<&[PathBuf]>,
        paused: bool,
    ) -> Result<CheckpointInfo, EngineError> {
        let started = Instant::now();
        if let Some((objects, store)) = &self.objects
            && let Err(e) = crate::objects::import(objects, store)
        {
            tracing::warn!(error = %e, "cannot import the agent's git objects before a checkpoint");
        }
        let (tree, scan, paths_read, full_scan_reason) = match (changed, self.last) {
            (Some(paths), Some((_, _, prev))) => {
                match self
                    .snap
                    .scan_paths(prev, paths.iter().map(PathBuf::as_path))
                    .map_err(cp_err)?
                {
                    PathScan::Tree { tree, paths_read } => (tree, ScanKind::Paths, paths_read as u64, None),
                    PathScan::NeedsFullScan(why) => {
                        (self.snap.scan_full().map_err(cp_err)?, ScanKind::Full, 0, Some(why))
                    }
                }
            }
            _ => (self.snap.scan_full().map_err(cp_err)?, ScanKind::Full, 0, None),
        };
        let scan_ms = started.elapsed().as_millis() as u64;
        if let Some((n, commit, last_tree)) = self.last
            && last_tree == tree
            && !matches!(trigger, CheckpointTrigger::Baseline | CheckpointTrigger::Step)
        {
            let mut info = checkpoints_in(&self.id, w.events())
                .into_iter()
                .find(|c| c.n == n)
                .ok_or_else(|| EngineError::new(ErrorCode::Internal, format!("checkpoint {n} not in the log")))?;
            info.created = false;
            debug_assert_eq!(info.commit, commit.to_string());
            return Ok(info);
        }
        let n = self.last.map(|(n, _, _)| n + 1).unwrap_or(0);
        let parent = self.last.map(|(_, c, _)| c).unwrap_or(self.base_commit);
        let text = match &message {
            Some(m) => format!("agentctl checkpoint {n} ({trigger}) of run {}\n\n{m}\n", self.id),
            None => format!("agentctl checkpoint {n} ({trigger}) of run {}\n", self.id),
        };
        let commit = self.snap.commit(tree, parent, &text).map_err(cp_err)?;
        let git_ref = checkpoint::refs::ref_name(self.id.as_str(), n);
        // The log is the record: a ref at a number it does not know was left by a write that
        // crashed before its event, and is replaced rather than blocking every later checkpoint.
        if let Some(stale) = self.snap.replace_ref(&git_ref, commit).map_err(cp_err)? {
            tracing::warn!(git_ref, stale = %stale, "replaced a checkpoint ref the log did not record");
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let ev = w.append(EventData::Checkpointed {
            n,
            trigger,
            commit: commit.to_string(),
            tree: tree.to_string(),
            parent: parent.to_string(),
            message: message.clone(),
            scan,
            paths_read,
            full_scan_reason,
            paused,
            scan_ms,
            elapsed_ms,
        })?;
        self.last = Some((n, commit, tree));
        tracing::info!(
            checkpoint.n = n,
            trigger = trigger.as_str(),
            elapsed_ms,
            "checkpoint recorded"
        );
        Ok(CheckpointInfo {
            n,
            trigger,
            commit: commit.to_string(),
            tree: tree.to_string(),
            parent: parent.to_string(),
            git_ref,
            message,
            ts: ev.ts,
            scan,
            elapsed_ms,
            created: true,
        })
    }

    /// Restores the worktree (or `paths`) to checkpoint `to`, after a pre-rollback checkpoint
    /// of the current state (so the rollback can be undone).
    pub fn rollback(
        &mut self,
        w: &mut RunWriter<'_>,
        to: u32,
        paths: &[PathBuf],
        paused: bool,
    ) -> Result<RollbackInfo, EngineError> {
        let started = Instant::now();
        let target = checkpoints_in(&self.id, w.events())
            .into_iter()
            .find(|c| c.n == to)
            .ok_or_else(|| not_found(&self.id, to))?;
        let pre = self.take(w, CheckpointTrigger::PreRollback, None, None, paused)?;
        let current = checkpoint::parse_id(&pre.tree).map_err(cp_err)?;
        let target_tree = checkpoint::parse_id(&target.tree).map_err(cp_err)?;
        let report = checkpoint::restore::restore(&self.snap, current, target_tree, paths).map_err(cp_err)?;
        let paths: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        w.append(EventData::RolledBack {
            to,
            commit: target.commit.clone(),
            pre_rollback: pre.n,
            paths: paths.clone(),
            written: report.written as u64,
            removed: report.removed as u64,
            paused,
            elapsed_ms,
        })?;
        tracing::info!(to, pre_rollback = pre.n, elapsed_ms, "rollback done");
        Ok(RollbackInfo {
            to,
            commit: target.commit,
            pre_rollback: pre.n,
            paths,
            written: report.written as u64,
            removed: report.removed as u64,
            skipped: report
                .skipped
                .into_iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect(),
            paused,
            elapsed_ms,
        })
    }

    /// Leaves out paths that git ignores (and that no checkpoint has): what the change log records.
    pub fn relevant(&self, paths: &[PathBuf]) -> Vec<PathBuf> {
        match self.snap.filter_ignored(self.last_tree(), paths) {
            Ok(kept) => kept,
            Err(e) => {
                tracing::debug!(error = %e, "cannot match ignore rules; keeping all paths");
                paths.to_vec()
            }
        }
    }
}

/// The error for a checkpoint number the run does not have.
pub fn not_found(id: &RunId, n: u32) -> EngineError {
    EngineError::new(ErrorCode::CheckpointNotFound, format!("run {id} has no checkpoint {n}"))
        .hint(format!("list them with `agentctl checkpoints {id}`"))
}
