//! Looking at and acting on existing runs: catching the projection up and marking runs whose
//! supervisor vanished as `lost`, stopping, waiting, removing and garbage-collecting. Every
//! reader path goes through [`Engine::refresh`], so no command ever shows a run as `running`
//! without a live supervisor behind it.

use std::time::{Duration, Instant};

use model::provider::{ControlRequest, SupervisorStatus};
use model::{CheckpointTrigger, ErrorCode, EventData, RunId, RunState};
use serde::Serialize;
use store::{LockMode, RunFilter, RunRecord, StoreError};
use vcs::Git;

use crate::checkpointer::CheckpointInfo;
use crate::{Engine, EngineError};

/// What `rm` did.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RmReport {
    pub id: RunId,
    pub worktree_removed: bool,
    pub branch: String,
    pub branch_deleted: bool,
    /// Commits on the branch that are not in its base (the branch is kept when non-zero).
    pub branch_commits: u64,
    /// The checkpoint holding the worktree's last state (kept on its ref until `gc --prune-refs`).
    pub checkpoint: Option<CheckpointInfo>,
    /// A shadow run's shadow branch, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_branch: Option<String>,
    /// Whether it was deleted (it held nothing the run's branch lacks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_branch_deleted: bool,
    /// Its commits never promoted onto the run's branch (it is kept when non-zero).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_unpromoted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Options for `gc`.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Only runs finished at least this long ago.
    pub older_than: Duration,
    pub dry_run: bool,
    /// Remove worktrees whose state cannot be saved as a checkpoint too.
    pub force: bool,
}

/// One run `gc` looked at.
#[derive(Clone, Debug, Serialize)]
pub struct GcItem {
    pub id: RunId,
    pub worktree: std::path::PathBuf,
    /// `removed`, `would_remove`, `skipped_unsaved` (its state could not be checkpointed),
    /// `failed`.
    pub action: &'static str,
    pub detail: Option<String>,
    /// The ref of the checkpoint holding the removed worktree's last state.
    pub checkpoint: Option<String>,
}

/// Whether a run whose supervisor vanished in `state` is `interrupted` (to be resumed) rather
/// than `lost`: a workflow run under way. Not one being stopped: the stop was meant, and a
/// resume would start again what the user stopped.
pub(crate) fn resumable_when_orphaned(agent: &str, state: RunState) -> bool {
    crate::workflow::is_workflow_run(agent)
        && matches!(
            state,
            RunState::Preparing | RunState::Running | RunState::Paused | RunState::NeedsInput
        )
}

impl Engine {
    /// Catches up one run and marks it `lost` if its supervisor is gone (`interrupted`, for a
    /// workflow run under way).
    pub fn refresh(&self, id: &RunId, who: &str) -> Result<RunRecord, EngineError> {
        let rec = self
            .store
            .sync_run(id)?
            .ok_or_else(|| EngineError::from(StoreError::NotFound(id.to_string())))?;
        // An interrupted workflow has no supervisor by definition; it waits to be resumed.
        if rec.state.is_at_rest() {
            return Ok(rec);
        }
        let Some(reason) = self.orphan_reason(&rec)? else {
            return Ok(rec);
        };
        // Take the log (a live writer would hold it), then look again: a supervisor that was
        // just starting, or that finished in the meantime, is not lost.
        let mut writer = match self.store.writer(id, LockMode::NoWait) {
            Ok(w) => w,
            Err(StoreError::EventLog(store::EventLogError::Locked { .. })) => return Ok(rec),
            Err(e) => return Err(e.into()),
        };
        let still = writer.state().is_some_and(|s| !s.is_terminal())
            && !matches!(self.provider.status(id)?, SupervisorStatus::Alive { .. });
        if still {
            let _span = tracing::info_span!("run.lost", run.id = %id).entered();
            if let Err(e) = self.provider.destroy(id) {
                tracing::warn!(error = %e, "cannot clean up after lost supervisor");
            }
            end_run_cgroup(id);
            // A workflow that got as far as running can be taken up again from its last
            // completed step; anything else is lost.
            let resumable = writer.state().is_some_and(|s| resumable_when_orphaned(&rec.agent, s));
            if resumable {
                writer.append(EventData::Interrupted {
                    reason,
                    detected_by: who.to_owned(),
                })?;
                tracing::info!("supervisor gone; workflow run marked interrupted");
            } else {
                writer.append(EventData::Lost {
                    reason,
                    detected_by: who.to_owned(),
                })?;
                tracing::info!("supervisor gone; run marked lost");
            }
        }
        drop(writer);
        Ok(self.store.get(id)?.unwrap_or(rec))
    }

    /// What [`Engine::refresh`] would answer for the run `text` names (a full id), when it can
    /// be told at once by reading alone: the projection has seen all of the run's log (checked
    /// against the log's size) and the run is terminal, or its supervisor is alive (or not due
    /// yet). Waits for nothing (no lock, no busy connection) and writes nothing, so async
    /// threads can call it. `None` whenever refreshing has more to do — a prefix to resolve, a
    /// log to project, a lost supervisor to record — or would have to wait: call
    /// [`Engine::resolve`] and [`Engine::refresh`] then.
    pub fn refresh_if_current(&self, text: &str) -> Option<RunRecord> {
        let id = RunId::parse(text).ok()?;
        let rec = self.store.get_if_current(&id).ok()??;
        if rec.state.is_terminal() {
            return Some(rec);
        }
        match self.orphan_reason(&rec) {
            Ok(None) => Some(rec),
            _ => None,
        }
    }

    /// Why an active run has no supervisor and never will, if that is the case.
    pub(crate) fn orphan_reason(&self, rec: &RunRecord) -> Result<Option<String>, EngineError> {
        let status = self.provider.status(&rec.id)?;
        Ok(match (rec.state, status) {
            (_, SupervisorStatus::Alive { .. }) => None,
            (RunState::Pending, SupervisorStatus::Gone) => {
                Some("the supervisor exited before taking the run".to_owned())
            }
            (RunState::Pending, SupervisorStatus::NotStarted) => {
                let age = jiff::Timestamp::now().duration_since(rec.created_at);
                let limit = self.config.pending_start_limit;
                (age.as_secs_f64() > limit.as_secs_f64()).then(|| {
                    format!(
                        "no supervisor started within {}s (the command that created the run may have died)",
                        limit.as_secs()
                    )
                })
            }
            (_, _) => {
                let pid = rec.supervisor_pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                let last = self
                    .provider
                    .last_error(&rec.id)
                    .map(|e| format!(" (its last error: {e})"))
                    .unwrap_or_default();
                Some(format!("supervisor{pid} exited without recording an outcome{last}"))
            }
        })
    }

    /// Catches up every run that may have changed (and marks lost ones).
    pub fn refresh_all(&self, who: &str) -> Result<(), EngineError> {
        self.store.sync_all()?;
        let active = self.store.list(&RunFilter {
            states: RunState::ALL.into_iter().filter(|s| !s.is_terminal()).collect(),
            ..Default::default()
        })?;
        for rec in active {
            if let Err(e) = self.refresh(&rec.id, who) {
                tracing::warn!(run.id = %rec.id, error = %e, "cannot refresh run");
            }
        }
        Ok(())
    }

    /// Resolves a full id or unique prefix.
    pub fn resolve(&self, text: &str) -> Result<RunId, EngineError> {
        match self.store.resolve(text) {
            Err(StoreError::NotFound(_)) => {
                // A run created by a process that died before projecting it.
                self.store.sync_all()?;
                Ok(self.store.resolve(text)?)
            }
            other => Ok(other?),
        }
    }

    /// Captured output of a run from byte `offset` of its output log.
    pub fn logs(&self, id: &RunId, offset: u64) -> Result<model::provider::LogBatch, EngineError> {
        let batch = self
            .provider
            .logs(id, offset)
            .map_err(|e| EngineError::new(ErrorCode::Io, e.to_string()))?;
        Ok(batch)
    }

    /// Lists runs after catching up.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, EngineError> {
        self.refresh_all("list")?;
        Ok(self.store.list(filter)?)
    }

    /// Asks a run to stop (SIGINT → SIGTERM → SIGKILL, `grace` apart). Stopping a finished run
    /// is not an error; it returns the run as it is.
    pub fn stop(&self, id: &RunId, grace: Duration) -> Result<RunRecord, EngineError> {
        let _span = tracing::info_span!("run.stop", run.id = %id, grace_ms = grace.as_millis() as u64).entered();
        let rec = self.refresh(id, "stop")?;
        if rec.state.is_terminal() {
            return Ok(rec);
        }
        if matches!(rec.state, RunState::Pending | RunState::Interrupted)
            && !matches!(self.provider.status(id)?, SupervisorStatus::Alive { .. })
            && let Ok(mut w) = self.store.writer(id, LockMode::NoWait)
            && w.state() == Some(rec.state)
        {
            w.append(EventData::Finished {
                state: RunState::Cancelled,
                reason: if rec.state == RunState::Pending {
                    "stopped before it started".to_owned()
                } else {
                    "stopped while interrupted (not resumed)".to_owned()
                },
                exit_code: None,
                signal: None,
            })?;
            drop(w);
            return Ok(self.store.sync_run(id)?.unwrap_or(rec));
        }
        self.provider.signal(
            id,
            &ControlRequest::Stop {
                grace_ms: grace.as_millis() as u64,
            },
        )?;
        tracing::info!("stop requested");
        Ok(rec)
    }

    /// Waits until the run is terminal, or interrupted (a workflow that waits to be resumed),
    /// or `timeout` passes; then returns the run as it is.
    pub fn wait(&self, id: &RunId, timeout: Option<Duration>) -> Result<RunRecord, EngineError> {
        let started = Instant::now();
        loop {
            let rec = self.refresh(id, "wait")?;
            if rec.state.is_at_rest() || timeout.is_some_and(|t| started.elapsed() >= t) {
                return Ok(rec);
            }
            std::thread::sleep(self.config.poll_interval);
        }
    }

    /// Removes a finished run: its worktree (refusing uncaptured changes unless `force`), its
    /// branch when it holds no commits of its own, and its records. With `force`, an active
    /// run is stopped first.
    pub fn rm(&self, id: &RunId, force: bool) -> Result<RmReport, EngineError> {
        let _span = tracing::info_span!("run.rm", run.id = %id, force).entered();
        let mut rec = self.refresh(id, "rm")?;
        if !rec.state.is_terminal() {
            if !force {
                return Err(
                    EngineError::new(ErrorCode::RunActive, format!("run {id} is {}", rec.state))
                        .hint(format!("stop it first (agentctl stop {id}) or use --force")),
                );
            }
            self.stop(id, Duration::from_secs(1))?;
            rec = self.wait(id, Some(Duration::from_secs(30)))?;
            if !rec.state.is_terminal() {
                return Err(EngineError::new(
                    ErrorCode::RunActive,
                    format!("run {id} did not stop in time"),
                ));
            }
        }
        let repo = Git::new(&rec.repo);
        let (worktree_removed, checkpoint) = if rec.worktree_removed {
            (false, None)
        } else {
            self.remove_worktree(&rec, force, CheckpointTrigger::Rm)?
        };
        let mut branch_deleted = false;
        let mut branch_commits = 0;
        if rec.repo.exists() && repo.branch_exists(&rec.branch)? {
            branch_commits = repo.commits_ahead(&rec.base_commit, &rec.branch)?;
            if branch_commits == 0 {
                repo.delete_branch(&rec.branch)?;
                branch_deleted = true;
            }
        }
        // A shadow run's branch goes when it holds nothing the run's branch does not (its
        // commits were promoted, or there were none).
        let shadow = id.shadow_branch();
        let (mut shadow_branch, mut shadow_branch_deleted, mut shadow_unpromoted) = (None, false, 0);
        if rec.repo.exists() && repo.branch_exists(&shadow)? {
            shadow_unpromoted = match repo.branch_exists(&rec.branch)? {
                true => repo.commits_ahead(&rec.branch, &shadow)?,
                false => repo.commits_ahead(&rec.base_commit, &shadow)?,
            };
            if shadow_unpromoted == 0 {
                repo.delete_branch(&shadow)?;
                shadow_branch_deleted = true;
            }
            shadow_branch = Some(shadow);
        }
        if let Err(e) = self.provider.destroy(id) {
            tracing::warn!(error = %e, "provider cleanup failed");
        }
        // The record goes, the checkpoint refs stay: note whose they are for `gc --prune-refs`.
        self.note_removed_run(id, &rec.repo)?;
        self.store.delete_run(id)?;
        Ok(RmReport {
            id: id.clone(),
            worktree_removed,
            branch: rec.branch,
            branch_deleted,
            branch_commits,
            checkpoint,
            shadow_branch,
            shadow_branch_deleted,
            shadow_unpromoted,
        })
    }

    /// Removes a run's worktree if it still exists, after saving what it holds as a
    /// checkpoint (so no work is lost). When the checkpoint cannot be taken — the repository
    /// moved, the worktree's `.git` was damaged — removal is refused unless `force`: unknown is
    /// not safe. Returns whether there was a worktree, and the checkpoint holding its last state.
    fn remove_worktree(
        &self,
        rec: &RunRecord,
        force: bool,
        trigger: CheckpointTrigger,
    ) -> Result<(bool, Option<CheckpointInfo>), EngineError> {
        if !rec.worktree.exists() {
            return Ok((false, None));
        }
        let saved = match self.save_before_removal(rec, trigger) {
            Ok(saved) => saved,
            Err(e) if force => {
                tracing::warn!(error = %e, "removing the worktree without a checkpoint (--force)");
                None
            }
            // Another process still holds the run's log (past the wait for a finishing
            // supervisor): nothing is wrong with the worktree, try again later.
            Err(e) if e.code == ErrorCode::RunActive => {
                return Err(e.hint("another agentctl is still working on this run; retry in a moment"));
            }
            Err(e) => {
                return Err(EngineError::new(
                    ErrorCode::WorktreeDirty,
                    format!(
                        "cannot save worktree {} as a checkpoint before removing it: {}",
                        rec.worktree.display(),
                        e.message
                    ),
                )
                .hint(format!(
                    "the repository {} may have moved or been damaged; pass --force to remove the worktree anyway",
                    rec.repo.display()
                )));
            }
        };
        if rec.repo.is_dir() {
            let _lock = crate::repo_lock::lock_repo(self.store.layout(), &rec.repo)?;
            Git::new(&rec.repo).worktree_remove(&rec.worktree)?;
        } else {
            // The repository is gone (and --force was given).
            std::fs::remove_dir_all(&rec.worktree)
                .map_err(|e| EngineError::new(ErrorCode::Io, format!("{}: {e}", rec.worktree.display())))?;
        }
        Ok((true, saved))
    }

    /// Removes worktrees of finished runs older than `older_than` (runs created with `--keep`
    /// are kept). Records stay; branches stay.
    pub fn gc(&self, opts: &GcOptions) -> Result<Vec<GcItem>, EngineError> {
        let _span = tracing::info_span!("run.gc", dry_run = opts.dry_run).entered();
        self.refresh_all("gc")?;
        let now = jiff::Timestamp::now();
        let mut out = Vec::new();
        for rec in self.store.list(&RunFilter::default())? {
            if !rec.state.is_terminal() || rec.worktree_removed || rec.keep {
                continue;
            }
            let finished = rec.finished_at.unwrap_or(rec.updated_at);
            let age = now.duration_since(finished);
            if age.as_secs_f64() < opts.older_than.as_secs_f64() {
                continue;
            }
            let mut item = GcItem {
                id: rec.id.clone(),
                worktree: rec.worktree.clone(),
                action: "removed",
                detail: None,
                checkpoint: None,
            };
            if opts.dry_run {
                item.action = "would_remove";
                out.push(item);
                continue;
            }
            let result = self
                .remove_worktree(&rec, opts.force, CheckpointTrigger::Gc)
                .and_then(|(_, saved)| {
                    let mut w = self.store.writer(&rec.id, LockMode::NoWait)?;
                    w.append(EventData::WorktreeRemoved {
                        path: rec.worktree.clone(),
                        forced: opts.force,
                    })?;
                    Ok(saved)
                });
            match result {
                Ok(Some(saved)) => {
                    item.detail = Some(if saved.created {
                        format!(
                            "uncheckpointed changes saved as checkpoint {} ({})",
                            saved.n, saved.git_ref
                        )
                    } else {
                        format!("last state is checkpoint {} ({})", saved.n, saved.git_ref)
                    });
                    item.checkpoint = Some(saved.git_ref);
                }
                Ok(None) => {}
                Err(e) if e.code == ErrorCode::WorktreeDirty => {
                    item.action = "skipped_unsaved";
                    item.detail = Some(e.message);
                }
                Err(e) => {
                    item.action = "failed";
                    item.detail = Some(e.message);
                }
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Ends and removes what is left in a lost run's cgroup (`agentctl-<id>`, made by its
/// supervisor for its limits): a supervisor killed as it started the agent can leave the agent's
/// sandbox running, before bubblewrap armed its own parent-death signal. Everything in that
/// cgroup is the run's; nothing outside it is touched.
fn end_run_cgroup(id: &RunId) {
    let backend = sandbox::limits::detect_host(None);
    match sandbox::limits::cleanup_stale(&backend, sandbox::limits::CGROUP_PREFIX, |run| run != id.as_str()) {
        Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "ended what was left of the lost run"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot end what is left of the lost run's cgroup"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use model::provider::{LogBatch, Provider, ProviderError, RequestOutcome};
    use store::{StateLayout, Store};

    use super::*;
    use crate::EngineConfig;

    /// A provider whose supervisors are as the test says.
    struct Stub(Mutex<SupervisorStatus>);

    impl Provider for Stub {
        fn name(&self) -> &'static str {
            "stub"
        }
        fn create(&self, _: &RunId) -> Result<(), ProviderError> {
            Ok(())
        }
        fn start(&self, _: &RunId) -> Result<(), ProviderError> {
            Ok(())
        }
        fn signal(&self, _: &RunId, _: &ControlRequest) -> Result<(), ProviderError> {
            Ok(())
        }
        fn request(&self, _: &RunId, _: &ControlRequest, _: Duration) -> Result<RequestOutcome, ProviderError> {
            Ok(RequestOutcome::NotTaken)
        }
        fn status(&self, _: &RunId) -> Result<SupervisorStatus, ProviderError> {
            Ok(*self.0.lock().unwrap())
        }
        fn list(&self) -> Result<Vec<RunId>, ProviderError> {
            Ok(Vec::new())
        }
        fn logs(&self, _: &RunId, offset: u64) -> Result<LogBatch, ProviderError> {
            Ok(LogBatch {
                chunks: Vec::new(),
                next_offset: offset,
            })
        }
        fn destroy(&self, _: &RunId) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    fn engine(dir: &std::path::Path, status: SupervisorStatus) -> (Engine, Arc<Stub>) {
        let stub = Arc::new(Stub(Mutex::new(status)));
        let store = Store::open(StateLayout::new(dir)).unwrap();
        (Engine::new(store, stub.clone(), EngineConfig::default()), stub)
    }

    fn make_run(engine: &Engine, id: &RunId) {
        let spec = serde_json::from_value(serde_json::json!({
            "agent": "command", "prompt": null, "command": ["true"], "repo": "/tmp/r", "base": "HEAD",
            "env": {}, "labels": {}, "timeout_ms": null, "idle_timeout_ms": null, "keep": false
        }))
        .unwrap();
        let plan = serde_json::from_value(serde_json::json!({
            "argv": ["true"], "prompt_via": "arg", "prompt_file": null, "env": {}, "secret_env": [],
            "tty": false, "base_commit": "abc", "worktree": "/tmp/w", "branch": id.branch(),
            "provider": "stub", "grace_ms": 5000
        }))
        .unwrap();
        engine.store().create_run(id, spec, plan).unwrap();
        let mut w = engine.store().writer(id, LockMode::Wait).unwrap();
        w.append(EventData::Preparing {
            supervisor_pid: 4242,
            supervisor_start_time: 1,
        })
        .unwrap();
    }

    /// The quick answer is the one `refresh` gives whenever refresh would only read, and there
    /// is none whenever refresh has something to record (here: a supervisor gone).
    #[test]
    fn refresh_if_current_answers_only_what_refresh_would_answer_by_reading() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, stub) = engine(dir.path(), SupervisorStatus::Alive { pid: 4242 });
        let id = RunId::parse("quick-1").unwrap();
        make_run(&engine, &id);
        let quick = engine
            .refresh_if_current(id.as_str())
            .expect("alive supervisor: a read");
        assert_eq!(quick.state, RunState::Preparing);
        assert_eq!(engine.refresh(&id, "test").unwrap(), quick);
        // A prefix is left to resolve.
        assert!(engine.refresh_if_current("quick").is_none());
        assert!(engine.refresh_if_current("no-such-run").is_none());

        *stub.0.lock().unwrap() = SupervisorStatus::Gone;
        assert!(engine.refresh_if_current(id.as_str()).is_none(), "a lost run to record");
        assert_eq!(engine.store().get(&id).unwrap().unwrap().state, RunState::Preparing);
        let lost = engine.refresh(&id, "test").unwrap();
        assert_eq!(lost.state, RunState::Lost);
        assert_eq!(engine.refresh_if_current(id.as_str()), Some(lost));
    }
}
