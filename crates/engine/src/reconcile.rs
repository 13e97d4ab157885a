//! `reconcile`: compares what the store says with what is there — supervisors and processes,
//! worktrees, checkpoint refs — in both directions, reports every discrepancy, and fixes what is
//! safe: a run whose supervisor is gone is marked `lost`; a run recorded but never taken by a
//! supervisor (its creator died before starting one) gets one; a finished run whose worktree
//! vanished is recorded as such; a worktree no run owns is removed only when git shows nothing
//! in it that is not committed. A worktree with uncaptured changes is never deleted, and a
//! process is never signalled: one that claims to supervise a run we do not have is only
//! reported.

use std::path::{Path, PathBuf};

use model::provider::SupervisorStatus;
use model::{EventData, RunState};
use serde::Serialize;
use store::{LockMode, RunFilter, RunRecord};
use vcs::Git;

use crate::{Engine, EngineError};

/// A pending run no supervisor took is only started by reconcile once it is this old: its
/// creator starts it within milliseconds (with the creator's environment, which a supervisor
/// started here would not have), unless it died in between.
const UNSTARTED_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

/// One discrepancy, and what was done about it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `lost_supervisor`, `unstarted_run`, `worktree_missing`, `orphan_worktree`,
    /// `orphan_supervisor`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub detail: String,
    /// `fixed`, `would_fix` (dry run), or `reported` (not safe to fix).
    pub action: &'static str,
}

impl Engine {
    /// Finds (and unless `dry_run`, fixes where safe) every discrepancy.
    pub fn reconcile(&self, dry_run: bool) -> Result<Vec<Finding>, EngineError> {
        let _span = tracing::info_span!("reconcile", dry_run).entered();
        self.store.sync_all()?;
        let fix = if dry_run { "would_fix" } else { "fixed" };
        let mut out = Vec::new();
        let runs = self.store.list(&RunFilter::default())?;
        // Store -> supervisors: active runs whose supervisor is gone, and runs no supervisor
        // was ever started for.
        for rec in runs.iter().filter(|r| !r.state.is_terminal()) {
            let interrupted = |detail: String, action: &'static str| Finding {
                kind: "interrupted_workflow",
                run: Some(rec.id.to_string()),
                path: None,
                pid: rec.supervisor_pid,
                detail,
                action,
            };
            if rec.state == RunState::Interrupted {
                out.push(interrupted(
                    format!(
                        "waits to be resumed: agentctl resume {} (a running daemon resumes it by itself)",
                        rec.id
                    ),
                    "reported",
                ));
                continue;
            }
            if let Some(reason) = self.orphan_reason(rec)? {
                let resumable = crate::lifecycle::resumable_when_orphaned(&rec.agent, rec.state);
                // Refreshing looks again under the log's lock: a run that ended (or was taken)
                // since the listing is not lost, and there is nothing to report.
                let now = if dry_run {
                    None
                } else {
                    Some(self.refresh(&rec.id, "reconcile")?.state)
                };
                if resumable && now.is_none_or(|s| s == RunState::Interrupted) {
                    out.push(interrupted(
                        format!("{reason}; marked interrupted: agentctl resume {} continues it", rec.id),
                        fix,
                    ));
                    continue;
                }
                if now.is_some_and(|s| s != RunState::Lost) {
                    continue;
                }
                out.push(Finding {
                    kind: "lost_supervisor",
                    run: Some(rec.id.to_string()),
                    path: None,
                    pid: rec.supervisor_pid,
                    detail: reason,
                    action: fix,
                });
            } else if self.is_unstarted(rec)? {
                out.push(self.start_unstarted(rec, dry_run));
            }
        }
        // Store -> worktrees: a finished run's worktree removed by someone else.
        for rec in runs.iter().filter(|r| !r.worktree_removed && r.started_at.is_some()) {
            if rec.worktree.exists() {
                continue;
            }
            let terminal = rec.state.is_terminal();
            if terminal && !dry_run {
                let mut w = self.store.writer(&rec.id, LockMode::NoWait)?;
                w.append(EventData::WorktreeRemoved {
                    path: rec.worktree.clone(),
                    forced: false,
                })?;
            }
            out.push(Finding {
                kind: "worktree_missing",
                run: Some(rec.id.to_string()),
                path: Some(rec.worktree.clone()),
                pid: None,
                detail: if terminal {
                    "the worktree was removed outside agentctl; its checkpoints remain".to_owned()
                } else {
                    format!("the worktree of this {} run is gone", rec.state)
                },
                action: if terminal { fix } else { "reported" },
            });
        }
        // Worktrees -> store: directories no run owns.
        let dir = self.store.layout().worktrees_dir();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if runs.iter().any(|r| r.worktree == path) || !path.is_dir() {
                continue;
            }
            out.push(self.orphan_worktree(&path, &name, dry_run));
        }
        // Processes -> store: supervisors of runs we do not have.
        for (pid, run) in supervisor_processes(self.store.layout().root()) {
            if self.store.layout().run_dir(&run).exists() {
                continue;
            }
            out.push(Finding {
                kind: "orphan_supervisor",
                run: Some(run.to_string()),
                path: None,
                pid: Some(pid),
                detail: "a process claims to supervise a run this state directory does not have; not signalled"
                    .to_owned(),
                action: "reported",
            });
        }
        Ok(out)
    }

    /// Starts the supervisor of every run [`Engine::is_unstarted`] (the daemon calls this every
    /// few seconds, so a run whose creator died before starting it runs anyway).
    pub fn start_unstarted_runs(&self) -> Result<Vec<Finding>, EngineError> {
        let pending = self.store.list(&RunFilter {
            states: vec![RunState::Pending],
            ..Default::default()
        })?;
        let mut out = Vec::new();
        for rec in &pending {
            if self.is_unstarted(rec)? {
                out.push(self.start_unstarted(rec, false));
            }
        }
        Ok(out)
    }

    /// Whether `rec` is a run recorded (`pending`) that no supervisor took within
    /// [`UNSTARTED_AFTER`]: the process that created it died between recording it and starting
    /// its supervisor (a daemon killed mid-request), and then nobody ever will.
    fn is_unstarted(&self, rec: &RunRecord) -> Result<bool, EngineError> {
        Ok(rec.state == RunState::Pending
            && jiff::Timestamp::now().duration_since(rec.created_at) >= UNSTARTED_AFTER
            && matches!(self.provider.status(&rec.id)?, SupervisorStatus::NotStarted))
    }

    /// Starts an unstarted run's supervisor (with this process's environment). Should its
    /// creator still be alive and start one too, the supervisor lock lets exactly one of them
    /// take the run; the other finds it taken (or no longer `pending`) and ends without running
    /// it.
    fn start_unstarted(&self, rec: &RunRecord, dry_run: bool) -> Finding {
        let mut f = Finding {
            kind: "unstarted_run",
            run: Some(rec.id.to_string()),
            path: None,
            pid: None,
            detail: "recorded, but no supervisor has taken it (its creator may have died before starting one)"
                .to_owned(),
            action: "would_fix",
        };
        if dry_run {
            return f;
        }
        match self
            .provider
            .create(&rec.id)
            .and_then(|()| self.provider.start(&rec.id))
        {
            Ok(()) => {
                f.detail.push_str("; supervisor started");
                f.action = "fixed";
            }
            Err(e) => {
                f.detail.push_str(&format!("; starting its supervisor failed: {e}"));
                f.action = "reported";
            }
        }
        f
    }

    fn orphan_worktree(&self, path: &Path, name: &str, dry_run: bool) -> Finding {
        let mut f = Finding {
            kind: "orphan_worktree",
            run: Some(name.to_owned()),
            path: Some(path.to_owned()),
            pid: None,
            detail: String::new(),
            action: "reported",
        };
        let git = Git::new(path);
        let repo = match Git::toplevel(path).and_then(|_| main_repo_of(path)) {
            Ok(r) => r,
            Err(e) => {
                f.detail = format!("no run owns it, and git cannot read it ({e}); kept");
                return f;
            }
        };
        match git.is_dirty() {
            Ok(false) if dry_run => {
                f.detail = "no run owns it and it holds nothing uncommitted".to_owned();
                f.action = "would_fix";
            }
            Ok(false) => {
                let removed = crate::repo_lock::lock_repo(self.store.layout(), &repo)
                    .map_err(|e| e.to_string())
                    .and_then(|_lock| Git::new(&repo).worktree_remove(path).map_err(|e| e.to_string()));
                match removed {
                    Ok(()) => {
                        f.detail = "no run owns it and it held nothing uncommitted; removed".to_owned();
                        f.action = "fixed";
                    }
                    Err(e) => f.detail = format!("no run owns it; removing it failed: {e}"),
                }
            }
            Ok(true) => f.detail = "no run owns it, but it has uncommitted changes; kept".to_owned(),
            Err(e) => f.detail = format!("no run owns it, and its status cannot be read ({e}); kept"),
        }
        f
    }
}

/// The main repository a linked worktree belongs to (from its `.git` file).
fn main_repo_of(worktree: &Path) -> Result<PathBuf, vcs::VcsError> {
    let common = Git::new(worktree).run(["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
    let common = PathBuf::from(common.trim());
    Ok(common.parent().map(Path::to_owned).unwrap_or(common))
}

/// Processes whose command line is `… __supervise --state-dir ROOT RUN`, for this `root`.
fn supervisor_processes(root: &Path) -> Vec<(u32, model::RunId)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        let Some(i) = args.iter().position(|a| *a == b"__supervise") else {
            continue;
        };
        if let [flag, dir, run, ..] = &args[i + 1..]
            && *flag == b"--state-dir"
            && Path::new(&*String::from_utf8_lossy(dir)) == root
            && let Ok(id) = model::RunId::parse(&String::from_utf8_lossy(run))
        {
            out.push((pid, id));
        }
    }
    out
}
