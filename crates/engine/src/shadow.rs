//! The shadow workspace: promoting a shadow run's change onto the run's branch
//! ([`model::shadow`]). The agent worked on the shadow branch; what it left — its commits, and
//! whatever it did not commit, as the run's last checkpoint has it — becomes one candidate
//! commit. The candidate is exported to a clean directory (bytes exactly as stored, no git
//! metadata), the path policy judges every path the change touches there, and the gate
//! commands run there, sandboxed and offline, each to exit 0. Only then is the run's branch
//! moved, by one compare-and-swap `update-ref` from where it was; on any refusal it is not
//! touched and the reasons are recorded (`promotion_refused`) and returned.
//!
//! A crash at any point leaves the branch where it was (the ref update is the last step and
//! atomic) and at worst an export directory under the run's directory, removed by the next
//! attempt.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::shadow::{DEFAULT_GATE_TIMEOUT_MS, GateResult, PromoteMode, Promotion, ShadowPlan, ShadowSpec};
use model::{ErrorCode, EventData, LaunchPlan, RunId, RunState};
use nix::fcntl::{Flock, FlockArg};
use store::{LockMode, RunWriter};
use vcs::Git;

use crate::{Engine, EngineError};

/// Who the commit of a shadow run's uncommitted work is by.
const AUTHOR_NAME: &str = "agentctl";
const AUTHOR_EMAIL: &str = "agentctl@localhost";

/// `[shadow]`: what every shadow run gets.
#[derive(Clone, Debug, Default)]
pub struct ShadowDefaults {
    /// Gates every shadow run's change must pass (before the run's own).
    pub gates: Vec<String>,
    /// Each gate's time limit.
    pub gate_timeout_ms: Option<u64>,
}

/// Resolves a run's shadow workspace at creation.
pub(crate) fn plan(id: &RunId, spec: &ShadowSpec, defaults: &ShadowDefaults) -> Result<ShadowPlan, EngineError> {
    let mut gates = Vec::new();
    for gate in defaults.gates.iter().chain(&spec.gates) {
        let gate = gate.trim();
        if gate.is_empty() || gate.contains('\0') {
            return Err(EngineError::new(
                ErrorCode::InvalidArgument,
                format!("invalid gate command {gate:?}: it must be a non-empty shell command"),
            ));
        }
        gates.push(gate.to_owned());
    }
    let gate_timeout_ms = spec
        .gate_timeout_ms
        .or(defaults.gate_timeout_ms)
        .unwrap_or(DEFAULT_GATE_TIMEOUT_MS);
    if gate_timeout_ms == 0 {
        return Err(EngineError::new(
            ErrorCode::InvalidArgument,
            "the gate timeout must be positive",
        ));
    }
    Ok(ShadowPlan {
        branch: id.shadow_branch(),
        promote: spec.promote,
        gates,
        gate_timeout_ms,
    })
}

/// One promotion attempt's inputs.
pub(crate) struct Attempt<'a> {
    pub id: &'a RunId,
    pub repo: &'a Path,
    pub plan: &'a LaunchPlan,
    pub shadow: &'a ShadowPlan,
    /// The run's directory (the export and the lock go there).
    pub run_dir: &'a Path,
    /// The state directory, hidden from gates.
    pub state_root: &'a Path,
    /// `auto` or `manual`.
    pub trigger: PromoteMode,
    /// The tree of the checkpoint holding the worktree as the agent left it; the error says
    /// why there is none to trust (then nothing is promoted: what the agent left uncommitted
    /// is known to no one).
    pub final_tree: Result<String, String>,
    /// Takes secret values out of gate output before it is recorded; `None` when it cannot
    /// (a secret of the run could not be resolved here): then no output is recorded.
    pub redact: Option<&'a dyn Fn(&str) -> String>,
    /// The run's resource limits, which every gate takes on (a gate runs code the agent wrote).
    pub limits: Option<sandbox::limits::ChildSetup>,
}

/// How an attempt ended.
pub(crate) struct Attempted {
    pub promotion: Promotion,
    /// A stop request ended it (a gate was killed); nothing was promoted.
    pub stopped: bool,
}

/// Held while a run's change is being promoted.
pub(crate) struct PromotionLock {
    _lock: Flock<File>,
}

/// Takes the run's promotion lock (one promotion of a run at a time), or says another
/// promotion holds it.
pub(crate) fn lock(run_dir: &Path, id: &RunId) -> Result<PromotionLock, EngineError> {
    let path = run_dir.join("promote.lock");
    let io = |e: std::io::Error| EngineError::new(ErrorCode::Io, format!("{}: {e}", path.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(PromotionLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(EngineError::new(
            ErrorCode::RunActive,
            format!("the change of run {id} is being promoted already"),
        )
        .hint("wait for that promotion to end (agentctl show)")),
        Err((_, e)) => Err(io(e.into())),
    }
}

/// Removes the export directory when dropped.
struct Export(PathBuf);

impl Drop for Export {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            tracing::warn!(error = %e, dir = %self.0.display(), "cannot remove the promotion export");
        }
    }
}

/// Removes a directory tree a gate may have made unwritable (`chmod 000` on a directory):
/// owner permissions are given back first. Nothing there is followed out of the tree.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn unlock(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    unlock(&e.path());
                }
            }
        }
    }
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            unlock(dir);
            fs::remove_dir_all(dir)
        }
        Ok(_) => fs::remove_file(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail_of(text: &str, max: usize) -> String {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn git_err(e: vcs::VcsError) -> EngineError {
    EngineError::new(ErrorCode::GitFailed, e.to_string())
}

/// Validates the run's change and, if it passes, promotes it (see the module docs). Refusals
/// are an `Ok` promotion with `promoted = false`; errors are failures to even try — one after
/// the attempt was recorded as started is recorded as its refusal too. The caller holds the
/// run's promotion [`lock`].
pub(crate) fn attempt(
    a: &Attempt<'_>,
    w: &mut RunWriter<'_>,
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Attempted, EngineError> {
    let _span = tracing::info_span!("run.promote", run.id = %a.id, trigger = a.trigger.as_str()).entered();
    let mut started = None;
    let out = try_attempt(a, w, &mut started, should_stop);
    if let (Err(e), Some(commit)) = (&out, started) {
        let _ = w.append(EventData::PromotionRefused {
            branch: a.plan.branch.clone(),
            commit: Some(commit),
            reasons: vec![format!("the promotion failed ({}): {}", e.code, e.message)],
            violations: Vec::new(),
        });
    }
    out
}

fn try_attempt(
    a: &Attempt<'_>,
    w: &mut RunWriter<'_>,
    started: &mut Option<String>,
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Attempted, EngineError> {
    let git = Git::new(a.repo);
    let base = &a.plan.base_commit;
    let branch = &a.plan.branch;
    let mut refused = Promotion {
        promoted: false,
        branch: branch.clone(),
        commit: None,
        previous: None,
        commits: 0,
        files_changed: 0,
        already: false,
        reasons: Vec::new(),
        violations: Vec::new(),
        gates: Vec::new(),
    };
    let Ok(previous) = git.resolve_commit(branch) else {
        refused
            .reasons
            .push(format!("the run's branch {branch} no longer exists"));
        return refuse(w, refused);
    };
    refused.previous = Some(previous.clone());
    // The candidate: the agent's commits (when they build on the base), plus one commit of what
    // it left uncommitted.
    let tip = git
        .resolve_commit(&a.shadow.branch)
        .ok()
        .filter(|t| git.is_ancestor(base, t).unwrap_or(false))
        .unwrap_or_else(|| base.clone());
    let tree = match &a.final_tree {
        Ok(tree) => tree.clone(),
        Err(why) => {
            refused.reasons.push(format!(
                "{why}, so what the agent left uncommitted is unknown (take one with `agentctl checkpoint RUN`, then promote)"
            ));
            return refuse(w, refused);
        }
    };
    // Promoted before, as this log says, and nothing changed since: nothing to do.
    let last_promoted = w.events().iter().rev().find_map(|e| match &e.data {
        EventData::Promoted { commit, .. } => Some(commit.clone()),
        _ => None,
    });
    if last_promoted.as_deref() == Some(previous.as_str()) && git.tree_of(&previous).map_err(git_err)? == tree {
        return Ok(Attempted {
            promotion: Promotion {
                promoted: true,
                already: true,
                commit: Some(previous.clone()),
                ..refused
            },
            stopped: false,
        });
    }
    // The branch already holds exactly this on top of the agent's commits (a promotion cut
    // short before it was recorded): that commit is validated again. Otherwise the candidate
    // builds on this run's last recorded promotion, else on the agent's commits.
    let holds_it = previous != *base
        && git.tree_of(&previous).map_err(git_err)? == tree
        && git.is_ancestor(&tip, &previous).map_err(git_err)?;
    let ours = last_promoted.as_deref() == Some(previous.as_str());
    let parent = if ours { previous.clone() } else { tip };
    let candidate = if holds_it {
        previous.clone()
    } else if git.tree_of(&parent).map_err(git_err)? == tree {
        parent
    } else {
        let message = format!(
            "agentctl: work of run {} its agent did not commit\n\nThe worktree of the shadow run as its last checkpoint holds it.",
            a.id
        );
        let store = crate::objects::run_store(a.repo, a.id)?;
        git.clone()
            .writing_to(&store)
            .commit_tree(&tree, &parent, &message, AUTHOR_NAME, AUTHOR_EMAIL)
            .map_err(git_err)?
    };
    refused.commit = Some(candidate.clone());
    if !git.is_ancestor(&previous, &candidate).map_err(git_err)? {
        refused.reasons.push(format!(
            "the run's branch {branch} moved to {} since the run started; promoting would drop those commits",
            short(&previous)
        ));
        return refuse(w, refused);
    }
    *started = Some(candidate.clone());
    w.append(EventData::PromotionStarted {
        commit: candidate.clone(),
        trigger: a.trigger.as_str().to_owned(),
        gates: a.shadow.gates.len() as u32,
    })?;
    let touched = git.paths_touched(base, &candidate).map_err(git_err)?;
    let files = &touched.all;
    // Paths are judged by name: one git cannot give as UTF-8 cannot be judged, so it is refused.
    if let Some(odd) = files.iter().find(|p| p.contains('\u{FFFD}')) {
        refused.reasons.push(format!(
            "the change has a path that is not valid UTF-8 ({odd:?}); the path policy cannot judge it"
        ));
        return refuse(w, refused);
    }
    refused.files_changed = touched.differ as u64;
    // A clean export of the candidate: what the policy judges and the gates run on.
    let dir = a.run_dir.join("promote");
    remove_tree(&dir).map_err(|e| EngineError::new(ErrorCode::Io, format!("{}: {e}", dir.display())))?;
    let export = Export(dir.clone());
    let tree_dir = export.0.join("tree");
    let exact = Git::new(a.repo).exact().map_err(git_err)?;
    let fresh_export = || -> Result<(), EngineError> {
        remove_tree(&tree_dir).map_err(|e| EngineError::new(ErrorCode::Io, format!("{}: {e}", tree_dir.display())))?;
        exact.export(&candidate, &tree_dir, &dir.join("index")).map_err(git_err)
    };
    fresh_export()?;
    // The path policy, over every path any commit of the change touched. A policy that does
    // not compile refuses (it never fails open).
    let def = a.plan.isolation.as_ref().map(|i| i.policy.clone()).unwrap_or_default();
    let Some(mut guard) = crate::supervisor::guard::PathGuard::new(&def, a.repo, base) else {
        refused
            .reasons
            .push("the run's path policy is not valid (any more), so the change cannot be judged".to_owned());
        return refuse(w, refused);
    };
    {
        let paths: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        if let Some(verdict) = guard.check(&tree_dir, &paths) {
            refused.reasons.push(format!(
                "the path policy is broken: {}",
                verdict
                    .violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            refused.violations = verdict.violations;
            return refuse(w, refused);
        }
    }
    // The gates, in order; the first failure ends them.
    let env = [
        (model::RUN_ID_ENV.to_owned(), a.id.to_string()),
        ("AGENTCTL_BASE_COMMIT".to_owned(), base.clone()),
        ("AGENTCTL_PROMOTE_COMMIT".to_owned(), candidate.clone()),
        ("AGENTCTL_GATE".to_owned(), "1".to_owned()),
    ];
    let limit = Duration::from_millis(a.shadow.gate_timeout_ms);
    for (i, gate) in a.shadow.gates.iter().enumerate() {
        // Each gate gets the change as committed: an earlier gate (code the agent wrote) may
        // have rewritten the export.
        if i > 0 {
            fresh_export()?;
        }
        let command =
            crate::supervisor::confine::gate_command(a.plan, a.state_root, &tree_dir, gate, &env, a.limits.clone())
                .map_err(|e| EngineError::new(e.code, e.message))?;
        let r = crate::hooks::run_command(&command, &tree_dir, limit, should_stop);
        let result = GateResult {
            command: gate.clone(),
            exit_code: r.exit_code,
            elapsed_ms: r.elapsed.as_millis() as u64,
            timed_out: r.timed_out,
            output_tail: match a.redact {
                Some(redact) => tail_of(&redact(&r.output_tail), crate::hooks::TAIL),
                None => "(not recorded: a secret of the run cannot be resolved here to redact it)".to_owned(),
            },
        };
        w.append(EventData::GateFinished {
            command: result.command.clone(),
            exit_code: result.exit_code,
            elapsed_ms: result.elapsed_ms,
            timed_out: result.timed_out,
            output_tail: result.output_tail.clone(),
        })?;
        let failure = result.failure();
        refused.gates.push(result);
        if r.stopped {
            refused.reasons.push(format!("stopped while gate `{gate}` ran"));
            let attempted = refuse(w, refused)?;
            return Ok(Attempted {
                stopped: true,
                ..attempted
            });
        }
        if let Some(why) = failure {
            refused.reasons.push(why);
            return refuse(w, refused);
        }
    }
    // Everything passed: one compare-and-swap moves the branch.
    let refname = format!("refs/heads/{branch}");
    let message = format!("agentctl: promote run {}", a.id);
    if let Err(e) = git.update_ref_cas(&refname, &candidate, &previous, &message) {
        refused.reasons.push(format!(
            "cannot move the run's branch {branch} (it changed while the change was validated, or git failed): {e}"
        ));
        return refuse(w, refused);
    }
    let commits = git.commits_ahead(&previous, &candidate).unwrap_or(0);
    w.append(EventData::Promoted {
        branch: branch.clone(),
        commit: candidate.clone(),
        previous: previous.clone(),
        commits,
        files_changed: refused.files_changed,
    })?;
    tracing::info!(commit = %candidate, commits, "promoted");
    Ok(Attempted {
        promotion: Promotion {
            promoted: true,
            commits,
            ..refused
        },
        stopped: false,
    })
}

/// The tree of the run's last checkpoint, if it holds the worktree as the agent left it: no
/// checkpoint failed after it, and the agent's branch did not move after it (a checkpoint older
/// than the agent's last commit would undo that commit's work).
fn last_trusted_tree(events: &[model::Event]) -> Result<String, String> {
    let last = events
        .iter()
        .rposition(|e| matches!(e.data, EventData::Checkpointed { .. }))
        .ok_or_else(|| "the run has no checkpoint".to_owned())?;
    let stale = events[last..].iter().any(|e| {
        matches!(
            e.data,
            EventData::CheckpointFailed { .. } | EventData::BranchUpdated { .. }
        )
    });
    if stale {
        return Err("the run's last checkpoint is older than its worktree's last state (a later checkpoint failed, or the agent committed after it)".to_owned());
    }
    match &events[last].data {
        EventData::Checkpointed { tree, .. } => Ok(tree.clone()),
        _ => Err("the run has no checkpoint".to_owned()),
    }
}

/// Records a refusal.
fn refuse(w: &mut RunWriter<'_>, promotion: Promotion) -> Result<Attempted, EngineError> {
    tracing::info!(reasons = ?promotion.reasons, "promotion refused");
    w.append(EventData::PromotionRefused {
        branch: promotion.branch.clone(),
        commit: promotion.commit.clone(),
        reasons: promotion.reasons.clone(),
        violations: promotion.violations.clone(),
    })?;
    Ok(Attempted {
        promotion,
        stopped: false,
    })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

impl Engine {
    /// `agentctl promote RUN`: validates a finished shadow run's change and, if it passes,
    /// moves the run's branch to it (see the module docs). A refusal is returned, not an error.
    pub fn promote(&self, id: &RunId) -> Result<Promotion, EngineError> {
        let rec = self.refresh(id, "promote")?;
        let events = self.store.events(id)?;
        let Some(EventData::Created { spec, plan }) = events.first().map(|e| e.data.clone()) else {
            return Err(EngineError::new(
                ErrorCode::Internal,
                format!("run {id} has no created event"),
            ));
        };
        let Some(shadow) = &plan.shadow else {
            return Err(EngineError::new(
                ErrorCode::NotAShadowRun,
                format!("run {id} has no shadow workspace: its agent worked on its branch directly"),
            )
            .hint("start runs with --shadow to have their change validated before it reaches the branch"));
        };
        if !rec.state.is_terminal() {
            let hint = match shadow.promote {
                PromoteMode::Auto => format!("it promotes its change itself when it succeeds (agentctl wait {id})"),
                PromoteMode::Manual => format!("promote it once it has ended (agentctl wait {id})"),
            };
            return Err(EngineError::new(ErrorCode::RunActive, format!("run {id} is {}", rec.state)).hint(hint));
        }
        let layout = self.store.layout();
        // The promotion lock before the log: a second `promote` is told, not kept waiting.
        let _lock = lock(&layout.run_dir(id), id)?;
        let mut w = self.store.writer(id, LockMode::Wait)?;
        if !w.state().is_some_and(RunState::is_terminal) {
            return Err(EngineError::new(ErrorCode::RunActive, format!("run {id} is active")));
        }
        let final_tree = last_trusted_tree(w.events());
        if let Ok(tree) = &final_tree
            && spec.repo.is_dir()
            && !crate::checkpoints::missing_objects(&Git::new(&spec.repo).exact()?, &[tree])?.is_empty()
        {
            return Err(EngineError::new(
                ErrorCode::CheckpointPruned,
                format!("the last checkpoint of run {id} is no longer in the repository: there is nothing to promote"),
            )
            .hint("`agentctl gc --prune-refs` deleted the checkpoints of this run after its worktree was removed"));
        }
        let redactor = crate::supervisor::confine::redactor_for(&plan, &spec.repo);
        let redact = |text: &str| redactor.as_ref().map_or_else(String::new, |r| r.redact_str(text));
        let redact: Option<&dyn Fn(&str) -> String> = redactor.is_some().then_some(&redact as _);
        let enforcer = crate::supervisor::confine::gate_limits(id, &plan);
        let attempt_in = Attempt {
            id,
            repo: &spec.repo,
            plan: &plan,
            shadow,
            run_dir: &layout.run_dir(id),
            state_root: layout.root(),
            trigger: PromoteMode::Manual,
            final_tree,
            redact,
            limits: enforcer.as_ref().map(sandbox::limits::Enforcer::child_setup),
        };
        let out = attempt(&attempt_in, &mut w, &mut || false);
        drop(w);
        if let Some(e) = enforcer
            && let Err(e) = e.finish()
        {
            tracing::warn!(error = %e, "cannot remove the gates' cgroup");
        }
        let _ = self.store.sync_run(id);
        Ok(out?.promotion)
    }
}
