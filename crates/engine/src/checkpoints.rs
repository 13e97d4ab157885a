//! Checkpoint commands on the engine: take one now, list them, diff, roll back, and prune the
//! refs of removed runs. Taking and rolling back go to the run's supervisor while it is alive
//! (it owns the run's log and can pause the agent); otherwise this process does the work itself
//! under the run's writer lock. Listing and diffing only read, from the user's repository, so
//! they work after the worktree is gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use checkpoint::ObjectId;
use checkpoint::diff::{DiffFormat, TreeDiff};
use model::provider::{ControlRequest, RequestOutcome};
use model::{CheckpointRef, CheckpointTrigger, ErrorCode, RunId, RunState};
use serde::{Deserialize, Serialize};
use store::{LockMode, RunRecord, RunWriter};
use vcs::{ExactGit, Git};

use crate::checkpointer::{CheckpointInfo, Checkpointer, RollbackInfo, checkpoints_in, not_found};
use crate::{Engine, EngineError};

/// How long `rm` and `gc` wait for a finished run's supervisor to let go of its log.
const FINISHING_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a request waits for a busy supervisor to take it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A checkpoint with its change summary against its parent.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CheckpointEntry {
    #[serde(flatten)]
    pub info: CheckpointInfo,
    /// Files changed since the parent; `null` when the checkpoint (or its parent) is pruned.
    pub files_changed: Option<u64>,
    pub insertions: Option<u64>,
    pub deletions: Option<u64>,
    /// The checkpoint's commit is no longer in the repository: `gc --prune-refs` deleted the
    /// refs (and object store) of the run after its worktree was removed. It stays listed, as
    /// the run's history; it can no longer be diffed or restored.
    #[serde(default)]
    pub pruned: bool,
}

/// One side of a diff.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DiffSide {
    /// `base`, a checkpoint number, or `live`.
    pub name: String,
    pub commit: Option<String>,
    pub tree: String,
}

/// Where a diff ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffTo {
    /// The live worktree when it exists, else the last checkpoint.
    Default,
    Live,
    Checkpoint(CheckpointRef),
}

/// What a diff compared and found.
#[derive(Clone, Debug)]
pub struct DiffResult {
    pub from: DiffSide,
    pub to: DiffSide,
    pub stats: TreeDiff,
    /// git's rendering, when asked for.
    pub text: Option<Vec<u8>>,
}

/// Refs deleted by `gc --prune-refs`.
#[derive(Clone, Debug, Serialize)]
pub struct PrunedRefs {
    pub repo: PathBuf,
    pub run: String,
    pub refs: usize,
}

/// A supervisor's answer to a checkpoint or rollback request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Answer<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AnswerError>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AnswerError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
}

impl<T: Serialize> Answer<T> {
    pub(crate) fn of(r: Result<T, EngineError>) -> String {
        let a = match r {
            Ok(v) => Answer {
                ok: Some(v),
                error: None,
            },
            Err(e) => Answer {
                ok: None,
                error: Some(AnswerError {
                    code: e.code,
                    message: e.message,
                    hint: e.hint,
                }),
            },
        };
        serde_json::to_string(&a).expect("answers serialize")
    }
}

pub(crate) fn parse_answer<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, EngineError> {
    let a: Answer<T> = serde_json::from_str(text).map_err(|e| {
        EngineError::new(
            ErrorCode::Internal,
            format!("unreadable answer from the supervisor: {e}"),
        )
    })?;
    match (a.ok, a.error) {
        (Some(v), _) => Ok(v),
        (None, Some(e)) => {
            let mut err = EngineError::new(e.code, e.message);
            err.hint = e.hint;
            Err(err)
        }
        (None, None) => Err(EngineError::new(
            ErrorCode::Internal,
            "empty answer from the supervisor",
        )),
    }
}

fn cp_err(e: checkpoint::CheckpointError) -> EngineError {
    EngineError::new(ErrorCode::CheckpointFailed, e.to_string())
}

pub(crate) fn request_id() -> String {
    format!("{}-{}", std::process::id(), uuid_like())
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}{:08x}", t.as_secs(), t.subsec_nanos())
}

impl Engine {
    /// Records a checkpoint of the run's worktree now.
    pub fn checkpoint(&self, id: &RunId, message: Option<String>) -> Result<CheckpointInfo, EngineError> {
        let _span = tracing::info_span!("run.checkpoint", run.id = %id).entered();
        let req = ControlRequest::Checkpoint {
            request_id: request_id(),
            message: message.clone(),
        };
        self.in_session(id, &req, |cp, w| {
            cp.take(w, CheckpointTrigger::Manual, message, None, false)
        })
    }

    /// Restores the run's worktree (or `paths`) to a checkpoint.
    pub fn rollback(&self, id: &RunId, to: CheckpointRef, paths: &[PathBuf]) -> Result<RollbackInfo, EngineError> {
        let _span = tracing::info_span!("run.rollback", run.id = %id).entered();
        let list = checkpoints_in(id, &self.store.events(id)?);
        let target = resolve_ref(id, &list, to)?;
        let paths = clean_paths(paths)?;
        let to = target.n;
        let req = ControlRequest::Rollback {
            request_id: request_id(),
            to,
            paths: paths.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
        };
        match self.in_session(id, &req, |cp, w| cp.rollback(w, to, &paths, false)) {
            Err(e) if e.code == ErrorCode::CheckpointFailed => {
                let git = self.store.get(id).ok().flatten().and_then(|rec| repo_git(&rec).ok());
                Err(match git {
                    Some(git) => pruned_or(&git, id, &[&target], e),
                    None => e,
                })
            }
            out => out,
        }
    }

    /// Sends `req` to the run's supervisor, or — when none is alive — runs `direct` here.
    fn in_session<T: for<'de> Deserialize<'de>>(
        &self,
        id: &RunId,
        req: &ControlRequest,
        direct: impl FnOnce(&mut Checkpointer, &mut RunWriter<'_>) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let rec = self.refresh(id, "checkpoint")?;
        if rec.worktree_removed {
            return Err(worktree_gone(&rec));
        }
        match self.provider.request(id, req, REQUEST_TIMEOUT)? {
            RequestOutcome::Answered(text) => parse_answer(&text),
            RequestOutcome::NotTaken => {
                let mut w = self.store.writer(id, LockMode::Wait)?;
                if matches!(w.state(), Some(RunState::Pending | RunState::Preparing)) {
                    return Err(EngineError::new(
                        ErrorCode::RunActive,
                        format!("run {id} has not started its agent yet"),
                    )
                    .hint(format!("try again once it runs (agentctl show {id})")));
                }
                let mut cp = Checkpointer::open(self.store.layout(), id, &rec.worktree, &rec.base_commit, w.events())?;
                let out = direct(&mut cp, &mut w);
                drop(w);
                let _ = self.store.sync_run(id);
                out
            }
        }
    }

    /// The run's checkpoints with their change summaries, oldest first. Pruned checkpoints are
    /// listed (marked, without summaries) rather than failing the whole list.
    pub fn checkpoints(&self, id: &RunId) -> Result<Vec<CheckpointEntry>, EngineError> {
        let rec = self.refresh(id, "checkpoints")?;
        let list = checkpoints_in(id, &self.store.events(id)?);
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let git = repo_git(&rec)?;
        // Checked only when git fails: a run's checkpoints are all there but after
        // `gc --prune-refs`, and the list is a request path.
        match summarise(&git, &list, &BTreeSet::new()) {
            Ok(entries) => Ok(entries),
            Err(e) => {
                let wanted: Vec<&str> = list
                    .iter()
                    .flat_map(|c| [c.parent.as_str(), c.commit.as_str(), c.tree.as_str()])
                    .collect();
                let missing = missing_objects(&git, &wanted)?;
                if missing.is_empty() {
                    return Err(e);
                }
                summarise(&git, &list, &missing)
            }
        }
    }

    /// Compares two states of the run's worktree.
    pub fn diff(
        &self,
        id: &RunId,
        from: Option<CheckpointRef>,
        to: DiffTo,
        paths: &[PathBuf],
        render: Option<(DiffFormat, bool)>,
    ) -> Result<DiffResult, EngineError> {
        let rec = self.refresh(id, "diff")?;
        let list = checkpoints_in(id, &self.store.events(id)?);
        let git = repo_git(&rec)?;
        let paths = clean_paths(paths)?;
        let from_side = match from {
            None => DiffSide {
                name: "base".to_owned(),
                commit: Some(rec.base_commit.clone()),
                tree: tree_of(&git, &rec.base_commit)?,
            },
            Some(r) => side(&resolve_ref(id, &list, r)?),
        };
        let live = match to {
            DiffTo::Live => true,
            DiffTo::Checkpoint(_) => false,
            DiffTo::Default => !rec.worktree_removed && rec.worktree.is_dir(),
        };
        let to_side = if live {
            if rec.worktree_removed || !rec.worktree.is_dir() {
                return Err(worktree_gone(&rec));
            }
            let index = live_index(self.store.layout(), id)?;
            let snap = crate::objects::snapshotter(&rec.worktree, &index, id)?;
            DiffSide {
                name: "live".to_owned(),
                commit: None,
                tree: snap.scan_full().map_err(cp_err)?.to_string(),
            }
        } else {
            let r = match to {
                DiffTo::Checkpoint(r) => r,
                _ => CheckpointRef::Last,
            };
            side(&resolve_ref(id, &list, r)?)
        };
        let (a, b) = (parse(&from_side.tree)?, parse(&to_side.tree)?);
        // A side whose tree git cannot read is, but for damage, a checkpoint `gc` pruned.
        let compared: Vec<&CheckpointInfo> = [&from_side, &to_side]
            .iter()
            .filter_map(|d| list.iter().find(|c| c.n.to_string() == d.name))
            .collect();
        let failed = |e| pruned_or(&git, id, &compared, cp_err(e));
        let stats = checkpoint::diff::stats(&git, a, b, &paths).map_err(failed)?;
        let text = match render {
            Some((format, color)) => Some(checkpoint::diff::render(&git, a, b, &paths, format, color).map_err(failed)?),
            None => None,
        };
        Ok(DiffResult {
            from: from_side,
            to: to_side,
            stats,
            text,
        })
    }

    /// Before a worktree is removed: records what it holds that no checkpoint has yet. Returns
    /// the checkpoint holding the final state (`None` when the run never had a worktree).
    pub(crate) fn save_before_removal(
        &self,
        rec: &RunRecord,
        trigger: CheckpointTrigger,
    ) -> Result<Option<CheckpointInfo>, EngineError> {
        if !rec.worktree.is_dir() {
            return Ok(None);
        }
        let mut w = self.writer_once_finished(&rec.id)?;
        let mut cp = Checkpointer::open(
            self.store.layout(),
            &rec.id,
            &rec.worktree,
            &rec.base_commit,
            w.events(),
        )?;
        let info = cp.take(&mut w, trigger, None, None, false)?;
        Ok(Some(info))
    }

    /// The writer of a finished run's log. Its supervisor records the outcome, then still holds
    /// the log for a moment while it exits (`stop` returns as soon as the outcome is recorded):
    /// `rm` or `gc` right after waits that moment out, up to [`FINISHING_LIMIT`], rather than fail.
    fn writer_once_finished(&self, id: &RunId) -> Result<store::RunWriter<'_>, EngineError> {
        let started = std::time::Instant::now();
        loop {
            match self.store.writer(id, LockMode::NoWait) {
                Err(store::StoreError::EventLog(store::EventLogError::Locked { .. }))
                    if started.elapsed() < FINISHING_LIMIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return Ok(other?),
            }
        }
    }

    /// Notes that the record of run `id` (whose checkpoints are in `repo`) is being deleted
    /// while its checkpoint refs stay, so `gc --prune-refs` knows they are this state dir's.
    pub(crate) fn note_removed_run(&self, id: &RunId, repo: &Path) -> Result<(), EngineError> {
        use std::io::Write;
        let path = self.store.layout().root().join(REMOVED_RUNS);
        let line = format!("{id}\t{}\n", repo.to_string_lossy());
        let io = |e: std::io::Error| EngineError::new(ErrorCode::Io, format!("{}: {e}", path.display()));
        let _lock = self.lock_removed_runs()?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// The lock that orders appends to, and rewrites of, the removed-runs list.
    fn lock_removed_runs(&self) -> Result<nix::fcntl::Flock<std::fs::File>, EngineError> {
        let path = self.store.layout().locks_dir().join("removed-runs.lock");
        let io = |e: std::io::Error| EngineError::new(ErrorCode::Io, format!("{}: {e}", path.display()));
        std::fs::create_dir_all(self.store.layout().locks_dir()).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))
    }

    /// Deletes the checkpoint refs of this state dir's runs whose worktrees are gone: runs
    /// removed with `rm`, and runs whose worktree `gc` removed — except those in `spare` (the
    /// ones the same `gc` just removed, whose last state was just saved). Refs of runs this
    /// state dir never had (another state dir's, or still live) are never touched.
    pub fn prune_refs(&self, dry_run: bool, spare: &[RunId]) -> Result<Vec<PrunedRefs>, EngineError> {
        let runs = self.store.list(&store::RunFilter::default())?;
        // Held until the list is rewritten: an `rm` meanwhile would append to a file about to
        // be replaced, and its run's refs would never be pruned.
        let _lock = if dry_run { None } else { Some(self.lock_removed_runs()?) };
        let tombstones_path = self.store.layout().root().join(REMOVED_RUNS);
        let tombstones = std::fs::read_to_string(&tombstones_path).unwrap_or_default();
        // (repo, run) pairs whose refs may go.
        let mut candidates: BTreeSet<(PathBuf, String)> = runs
            .iter()
            .filter(|r| r.worktree_removed && !spare.contains(&r.id))
            .map(|r| (r.repo.clone(), r.id.to_string()))
            .collect();
        let mut kept_tombstones = Vec::new();
        for line in tombstones.lines().filter(|l| !l.is_empty()) {
            let Some((run, repo)) = line.split_once('\t') else {
                continue;
            };
            // A run recreated under the same id is judged by its record.
            if runs.iter().any(|r| r.id.as_str() == run) {
                kept_tombstones.push(line);
                continue;
            }
            candidates.insert((PathBuf::from(repo), run.to_owned()));
        }
        let mut out = Vec::new();
        // Runs whose store could not be removed: their tombstones stay, for the next prune
        // (and their id stays taken).
        let mut unretired: BTreeSet<String> = BTreeSet::new();
        for (repo, run) in candidates {
            if !repo.is_dir() {
                continue;
            }
            let git = Git::new(&repo);
            let refs = checkpoint::refs::list_all(&git)
                .map_err(cp_err)?
                .get(&run)
                .map_or(0, |r| r.len());
            let store = vcs::RunStore::of_repo(&repo, &run).ok();
            let has_store = store.as_ref().is_some_and(|s| s.path().is_dir());
            if refs == 0 && !has_store {
                continue;
            }
            if !dry_run {
                if refs > 0 {
                    checkpoint::refs::delete_run(&git, &run).map_err(cp_err)?;
                }
                // The run's object store goes with its refs; what is still reached of it (its
                // branch, what was merged) is kept in the repository's own store.
                if let Some(store) = store.filter(|_| has_store) {
                    match vcs::retire(&store) {
                        Ok(kept) => tracing::info!(run, kept, "removed the run's object store"),
                        Err(e) => {
                            tracing::warn!(run, error = %e, "cannot remove the run's object store; it stays");
                            unretired.insert(run.clone());
                        }
                    }
                }
            }
            if refs > 0 {
                out.push(PrunedRefs { repo, run, refs });
            }
        }
        for line in tombstones.lines().filter(|l| !l.is_empty()) {
            if line.split_once('\t').is_some_and(|(run, _)| unretired.contains(run)) && !kept_tombstones.contains(&line)
            {
                kept_tombstones.push(line);
            }
        }
        if !dry_run && kept_tombstones.len() != tombstones.lines().filter(|l| !l.is_empty()).count() {
            let mut text = kept_tombstones.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            let tmp = tombstones_path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &tombstones_path))
                .map_err(|e| EngineError::new(ErrorCode::Io, format!("{}: {e}", tombstones_path.display())))?;
        }
        Ok(out)
    }
}

/// The file in the state dir listing removed runs whose checkpoint refs are kept:
/// `<run id>\t<repository>` per line.
const REMOVED_RUNS: &str = "removed-runs";

/// Handles a checkpoint or rollback request inside the run's supervisor; returns the answer
/// and whether a snapshot of the whole worktree was recorded. `pause` stops the agent's
/// processes and returns a guard that continues them: held for the whole of a rollback, and
/// around a requested checkpoint only when the run asked for `consistent` checkpoints.
pub(crate) fn answer_request(
    cp: &mut Checkpointer,
    w: &mut RunWriter<'_>,
    req: &ControlRequest,
    consistent: bool,
    pause: &dyn Fn() -> Option<crate::supervisor::PauseGuard>,
) -> (String, bool) {
    match req {
        ControlRequest::Checkpoint { message, .. } => {
            let guard = if consistent { pause() } else { None };
            let paused = guard.is_some();
            let r = cp.take(w, CheckpointTrigger::Manual, message.clone(), None, paused);
            drop(guard);
            let done = r.is_ok();
            (Answer::of(r), done)
        }
        ControlRequest::Rollback { to, paths, .. } => {
            let guard = pause();
            let paused = guard.is_some();
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            let r = cp.rollback(w, *to, &paths, paused);
            drop(guard);
            // The rollback's pre-rollback checkpoint read everything; the files it restored
            // come back through the watcher.
            let done = r.is_ok();
            (Answer::of(r), done)
        }
        ControlRequest::Stop { .. } | ControlRequest::Message { .. } => (String::new(), true),
    }
}

fn resolve_ref(id: &RunId, list: &[CheckpointInfo], r: CheckpointRef) -> Result<CheckpointInfo, EngineError> {
    let found = match r {
        CheckpointRef::Last => list.last(),
        CheckpointRef::Number(n) => list.iter().find(|c| c.n == n),
    };
    found.cloned().ok_or_else(|| match r {
        CheckpointRef::Number(n) => not_found(id, n),
        CheckpointRef::Last => EngineError::new(ErrorCode::CheckpointNotFound, format!("run {id} has no checkpoints")),
    })
}

fn side(c: &CheckpointInfo) -> DiffSide {
    DiffSide {
        name: c.n.to_string(),
        commit: Some(c.commit.clone()),
        tree: c.tree.clone(),
    }
}

/// Explains a git failure on `checkpoints`: `CHECKPOINT_PRUNED` for the first whose commit or
/// tree is no longer in the repository, else `err` as it was.
fn pruned_or(git: &ExactGit, id: &RunId, checkpoints: &[&CheckpointInfo], err: EngineError) -> EngineError {
    let wanted: Vec<&str> = checkpoints
        .iter()
        .flat_map(|c| [c.commit.as_str(), c.tree.as_str()])
        .collect();
    let Ok(missing) = missing_objects(git, &wanted) else {
        return err;
    };
    let Some(c) = checkpoints
        .iter()
        .find(|c| missing.contains(&c.commit) || missing.contains(&c.tree))
    else {
        return err;
    };
    EngineError::new(
        ErrorCode::CheckpointPruned,
        format!(
            "checkpoint {} of run {id} is no longer in the repository (commit {})",
            c.n, c.commit
        ),
    )
    .hint(format!(
        "`agentctl gc --prune-refs` deletes the checkpoints of runs whose worktree was removed; \
         `agentctl checkpoints {id}` lists what remains"
    ))
}

/// The entries of `list`, with summaries for those whose objects are not in `missing`.
fn summarise(
    git: &ExactGit,
    list: &[CheckpointInfo],
    missing: &BTreeSet<String>,
) -> Result<Vec<CheckpointEntry>, EngineError> {
    let readable = |c: &CheckpointInfo| !missing.contains(&c.commit) && !missing.contains(&c.tree);
    let summarised: Vec<&CheckpointInfo> = list
        .iter()
        .filter(|c| readable(c) && !missing.contains(&c.parent))
        .collect();
    let pairs: Vec<(ObjectId, ObjectId)> = summarised
        .iter()
        .map(|c| Ok((parse(&c.parent)?, parse(&c.commit)?)))
        .collect::<Result<_, EngineError>>()?;
    let sums = checkpoint::diff::summaries(git, &pairs).map_err(cp_err)?;
    let mut sums: std::collections::BTreeMap<u32, (u64, u64, u64)> = summarised.iter().map(|c| c.n).zip(sums).collect();
    Ok(list
        .iter()
        .map(|info| {
            let sum = sums.remove(&info.n);
            CheckpointEntry {
                pruned: !readable(info),
                files_changed: sum.map(|s| s.0),
                insertions: sum.map(|s| s.1),
                deletions: sum.map(|s| s.2),
                info: info.clone(),
            }
        })
        .collect())
}

/// Which of `ids` the repository (with its alternates, the runs' object stores) lacks: one
/// `git cat-file --batch-check` for them all.
pub(crate) fn missing_objects(git: &ExactGit, ids: &[&str]) -> Result<BTreeSet<String>, EngineError> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = git.run(
        &["cat-file", "--batch-check=%(objectname)", "--buffer"],
        None,
        Some(input.as_bytes()),
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.strip_suffix(" missing"))
        .map(str::to_owned)
        .collect())
}

fn parse(hex: &str) -> Result<ObjectId, EngineError> {
    checkpoint::parse_id(hex).map_err(cp_err)
}

fn tree_of(git: &ExactGit, commit: &str) -> Result<String, EngineError> {
    let out = git.run(&["rev-parse", "--verify", &format!("{commit}^{{tree}}")], None, None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Exact git in the run's repository (checkpoint objects live in its object store).
fn repo_git(rec: &RunRecord) -> Result<ExactGit, EngineError> {
    if !rec.repo.is_dir() {
        return Err(EngineError::new(
            ErrorCode::NotAGitRepo,
            format!("the run's repository {} is gone", rec.repo.display()),
        ));
    }
    Ok(Git::new(&rec.repo).exact()?)
}

/// A private copy of the run's checkpoint index for one live diff (removed when dropped): its
/// stat data spares re-hashing unchanged files, and the supervisor's scans never wait on our
/// lock nor we on theirs. The copy keeps the original's mtime, which git's racy-clean checks
/// are relative to. Without an index to copy, the path is left free: the scan seeds one.
fn live_index(layout: &store::StateLayout, id: &RunId) -> Result<tempfile::TempPath, EngineError> {
    let io = |e: std::io::Error| EngineError::new(ErrorCode::Io, format!("live diff index: {e}"));
    let dir = layout.run_dir(id);
    let copy = tempfile::Builder::new()
        .prefix("live-diff-")
        .suffix(".index")
        .tempfile_in(&dir)
        .map_err(io)?
        .into_temp_path();
    let original = crate::checkpointer::index_path(layout, id);
    let copied = std::fs::copy(&original, &copy).and_then(|_| {
        let mtime = std::fs::metadata(&original)?.modified()?;
        std::fs::File::options().write(true).open(&copy)?.set_modified(mtime)
    });
    if copied.is_err() {
        std::fs::remove_file(&copy).map_err(io)?;
    }
    Ok(copy)
}

fn worktree_gone(rec: &RunRecord) -> EngineError {
    EngineError::new(
        ErrorCode::WorktreeGone,
        format!(
            "run {} no longer has a worktree ({} was removed)",
            rec.id,
            rec.worktree.display()
        ),
    )
    .hint(format!(
        "its checkpoints are in {} unless `agentctl gc --prune-refs` deleted them: agentctl checkpoints {}",
        rec.repo.display(),
        rec.id
    ))
}

/// Paths relative to the worktree, without `..` or absolute parts.
fn clean_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, EngineError> {
    paths
        .iter()
        .map(|p| {
            let mut out = PathBuf::new();
            for c in p.components() {
                match c {
                    std::path::Component::Normal(n) => out.push(n),
                    std::path::Component::CurDir => {}
                    _ => {
                        return Err(EngineError::new(
                            ErrorCode::InvalidArgument,
                            format!("{}: paths must be relative to the worktree, without `..`", p.display()),
                        ));
                    }
                }
            }
            if out.as_os_str().is_empty() {
                return Err(EngineError::new(ErrorCode::InvalidArgument, "empty path"));
            }
            Ok(out)
        })
        .collect()
}
