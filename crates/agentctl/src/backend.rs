//! Where a command's work is done: by the engine in this process (`--direct`, or when no daemon
//! answers for the state directory), or by the daemon through its /v1 API. Both roads answer
//! with the same types — the API's JSON is the CLI's `--json` — and the commands render them one
//! way, so what a command prints and its exit status do not depend on the road taken.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::view::RunView;
use engine::workflow::messages::{MessageReceipt, OutgoingMessage};
use engine::{CheckpointEntry, DiffTo, Engine, RmReport};
use hyper::Method;
use model::provider::LogBatch;
use model::{CheckpointRef, Event, RunId};
use serde_json::{Value, json};
use store::RunFilter;

use api::wire::{
    AgentList, CheckpointList, FindingView, GcReport, GcRequest, GcRun, PrunedRefsView, ReconcileReport, RunEvents,
    RunLogs, RunPage,
};

use crate::cli::GlobalArgs;
use crate::client::{Daemon, Flow, StreamItem, enc};
use crate::context;
use crate::exit::CliError;

/// The engine here, or the daemon there.
pub enum Backend {
    Direct(Box<Engine>),
    Daemon(Daemon),
}

/// A diff as a command prints it: the JSON view, and the rendered text when asked for.
pub struct DiffOutput {
    pub json: Value,
    pub text: Option<Vec<u8>>,
}

impl Backend {
    /// The daemon when one answers for the state directory (and `--direct` is not given), else
    /// the engine.
    pub fn open(g: &GlobalArgs) -> Result<Backend, CliError> {
        if g.direct {
            tracing::debug!("--direct: working directly");
        }
        if !g.direct
            && let Some(d) = Daemon::find(&context::state_dir(g)?)
        {
            return Ok(Backend::Daemon(d));
        }
        Ok(Backend::Direct(Box::new(context::engine(g)?)))
    }

    /// Creates a run (or finds the identical one with the same id); the run, and whether this
    /// call made it. Through the daemon, the supervisor gets this process's environment, as it
    /// does directly.
    pub fn create_run(&self, req: engine::RunRequest) -> Result<(RunView, bool), CliError> {
        match self {
            Backend::Direct(engine) => {
                let created = engine.create_run(req)?;
                Ok((RunView::from(&created.run), created.created))
            }
            Backend::Daemon(d) => {
                // The environment and the repository path travel as JSON strings: with a name or
                // value that is not UTF-8, create the run here instead (it is the same run).
                let env: Option<std::collections::BTreeMap<String, String>> = std::env::vars_os()
                    .map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect();
                let (Some(env), Some(repo)) = (env, req.repo_dir.to_str().map(PathBuf::from)) else {
                    tracing::debug!(
                        "an environment variable or the repository path is not UTF-8: creating the run directly"
                    );
                    let created = context::engine_at(&d.state_dir())?.create_run(req)?;
                    return Ok((RunView::from(&created.run), created.created));
                };
                let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
                let body = api::wire::CreateRun {
                    id: req.id.map(|i| i.to_string()),
                    agent: req.agent,
                    prompt: req.prompt,
                    command: req.args,
                    repo,
                    base: req.base,
                    env: req.env,
                    labels: req.labels,
                    timeout_ms: ms(req.timeout),
                    idle_timeout_ms: ms(req.idle_timeout),
                    grace_ms: ms(req.grace),
                    keep: req.keep,
                    checkpoints: req.checkpoints,
                    workflow: req.workflow,
                    launch_env: Some(env),
                    isolation: req.isolation,
                    shadow: req.shadow,
                };
                let body = serde_json::to_value(&body).expect("requests serialize");
                let (status, view) = d.call_status::<RunView>(Method::POST, "/v1/runs", Some(&body))?;
                Ok((view, status == hyper::StatusCode::CREATED))
            }
        }
    }

    /// One run by id or unique prefix, its state checked against its supervisor first.
    pub fn run(&self, text: &str) -> Result<RunView, CliError> {
        match self {
            Backend::Direct(engine) => {
                let id = engine.resolve(text)?;
                Ok(RunView::from(&engine.refresh(&id, "show")?))
            }
            Backend::Daemon(d) => d.call(Method::GET, &format!("/v1/runs/{}", seg(text)), None),
        }
    }

    /// The id of the run `text` names (an id or a unique prefix).
    pub fn resolve(&self, text: &str) -> Result<RunId, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.resolve(text)?),
            Backend::Daemon(_) => Ok(self.run(text)?.id),
        }
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunView>, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.list(filter)?.iter().map(RunView::from).collect()),
            Backend::Daemon(d) => {
                let mut query = String::new();
                for s in &filter.states {
                    query.push_str(&format!("&state={}", s.as_str()));
                }
                if let Some(a) = &filter.agent {
                    query.push_str(&format!("&agent={}", enc(a)));
                }
                for (k, v) in &filter.labels {
                    query.push_str(&format!("&label={}", enc(&format!("{k}={v}"))));
                }
                let mut out: Vec<RunView> = Vec::new();
                if filter.limit == Some(0) {
                    return Ok(out);
                }
                let mut cursor: Option<String> = None;
                loop {
                    let want = filter.limit.map_or(500, |l| (l - out.len()).clamp(1, 500));
                    let mut path = format!("/v1/runs?limit={want}{query}");
                    if let Some(c) = &cursor {
                        path.push_str(&format!("&cursor={}", enc(c)));
                    }
                    let page: RunPage = d.call(Method::GET, &path, None)?;
                    out.extend(page.runs);
                    cursor = page.next_cursor;
                    if cursor.is_none() || filter.limit.is_some_and(|l| out.len() >= l) {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// A run's event log.
    pub fn events(&self, id: &RunId) -> Result<Vec<Event>, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.store().events(id)?),
            Backend::Daemon(d) => {
                let page: RunEvents = d.call(Method::GET, &format!("/v1/runs/{}/events", seg(id.as_str())), None)?;
                Ok(page.events)
            }
        }
    }

    /// Captured output from byte `offset` of the run's output log.
    pub fn output(&self, id: &RunId, offset: u64) -> Result<LogBatch, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.logs(id, offset)?),
            Backend::Daemon(d) => {
                let page: RunLogs = d.call(
                    Method::GET,
                    &format!("/v1/runs/{}/logs?offset={offset}", seg(id.as_str())),
                    None,
                )?;
                let chunks = page
                    .chunks
                    .iter()
                    .filter_map(|c| engine::view::chunk_from_json(c, 0))
                    .collect();
                Ok(LogBatch {
                    chunks,
                    next_offset: page.next_offset,
                })
            }
        }
    }

    /// Waits until the run is over or `timeout` passed; the run as it then is.
    pub fn wait(&self, id: &RunId, timeout: Option<Duration>) -> Result<RunView, CliError> {
        match self {
            Backend::Direct(engine) => Ok(RunView::from(&engine.wait(id, timeout)?)),
            Backend::Daemon(d) => {
                // The followed event stream ends when the run does.
                let started = Instant::now();
                let path = format!("/v1/runs/{}/events?follow=true", seg(id.as_str()));
                d.stream(&path, None, Duration::from_millis(100), |item| {
                    Ok(match item {
                        StreamItem::Tick if timeout.is_some_and(|t| started.elapsed() >= t) => Flow::Stop,
                        _ => Flow::Continue,
                    })
                })?;
                self.run(id.as_str())
            }
        }
    }

    /// Asks the run to stop; the run as it is right after.
    pub fn stop(&self, id: &RunId, grace: Duration) -> Result<RunView, CliError> {
        match self {
            Backend::Direct(engine) => Ok(RunView::from(&engine.stop(id, grace)?)),
            Backend::Daemon(d) => d.call(
                Method::POST,
                &format!("/v1/runs/{}/stop?grace_ms={}", seg(id.as_str()), grace.as_millis()),
                None,
            ),
        }
    }

    /// Starts a new supervisor for an interrupted workflow run, with this shell's environment.
    pub fn resume(&self, id: &RunId) -> Result<RunView, CliError> {
        match self {
            Backend::Direct(engine) => Ok(RunView::from(&engine.resume(id, None)?)),
            Backend::Daemon(d) => {
                let env: Option<std::collections::BTreeMap<String, String>> = std::env::vars_os()
                    .map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect();
                let Some(env) = env else {
                    tracing::debug!("an environment variable is not UTF-8: resuming directly");
                    return Ok(RunView::from(&context::engine_at(&d.state_dir())?.resume(id, None)?));
                };
                let body = serde_json::json!({ "launch_env": env });
                d.call(
                    Method::POST,
                    &format!("/v1/runs/{}/resume", seg(id.as_str())),
                    Some(&body),
                )
            }
        }
    }

    /// Records a message from the workflow step running in `id`.
    pub fn send_message(&self, id: &RunId, msg: OutgoingMessage) -> Result<MessageReceipt, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.send_message(id, msg)?),
            Backend::Daemon(d) => {
                let body = serde_json::json!({
                    "text": msg.text,
                    "to": msg.to,
                    "verdict": msg.verdict,
                    "from": msg.from,
                });
                d.call(
                    Method::POST,
                    &format!("/v1/runs/{}/messages", seg(id.as_str())),
                    Some(&body),
                )
            }
        }
    }

    /// Removes a finished run (`force`: stops an active one first).
    pub fn rm(&self, text: &str, force: bool) -> Result<RmReport, CliError> {
        match self {
            Backend::Direct(engine) => {
                let id = engine.resolve(text)?;
                Ok(engine.rm(&id, force)?)
            }
            Backend::Daemon(d) => d.call(Method::DELETE, &format!("/v1/runs/{}?force={force}", seg(text)), None),
        }
    }

    /// Validates a finished shadow run's change and promotes it if it passes.
    pub fn promote(&self, text: &str) -> Result<model::Promotion, CliError> {
        match self {
            Backend::Direct(engine) => {
                let id = engine.resolve(text)?;
                Ok(engine.promote(&id)?)
            }
            Backend::Daemon(d) => d.call(Method::POST, &format!("/v1/runs/{}/promote", seg(text)), None),
        }
    }

    /// Records a checkpoint of the run's worktree now.
    pub fn checkpoint(&self, id: &RunId, message: Option<String>) -> Result<engine::CheckpointInfo, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.checkpoint(id, message)?),
            Backend::Daemon(d) => d.call(
                Method::POST,
                &format!("/v1/runs/{}/checkpoints", seg(id.as_str())),
                Some(&json!({ "message": message })),
            ),
        }
    }

    /// The run's checkpoints.
    pub fn checkpoints(&self, id: &RunId) -> Result<Vec<CheckpointEntry>, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.checkpoints(id)?),
            Backend::Daemon(d) => {
                let page: CheckpointList =
                    d.call(Method::GET, &format!("/v1/runs/{}/checkpoints", seg(id.as_str())), None)?;
                Ok(page.checkpoints)
            }
        }
    }

    /// The diff between two checkpoints (or the live worktree); `render` asks for text as well.
    pub fn diff(
        &self,
        id: &RunId,
        from: Option<CheckpointRef>,
        to: DiffTo,
        paths: &[PathBuf],
        render: Option<(checkpoint::diff::DiffFormat, bool)>,
    ) -> Result<DiffOutput, CliError> {
        match self {
            Backend::Direct(engine) => {
                let result = engine.diff(id, from, to, paths, render)?;
                Ok(DiffOutput {
                    json: engine::view::diff_json(id, &result),
                    text: result.text,
                })
            }
            Backend::Daemon(d) => {
                use checkpoint::diff::DiffFormat;
                let mut q = Vec::new();
                if let Some(f) = from {
                    q.push(format!("from={}", checkpoint_text(f)));
                }
                match to {
                    DiffTo::Default => {}
                    DiffTo::Live => q.push("to=live".to_owned()),
                    DiffTo::Checkpoint(c) => q.push(format!("to={}", checkpoint_text(c))),
                }
                for p in paths {
                    q.push(format!("path={}", enc(&p.to_string_lossy())));
                }
                if let Some((format, color)) = render {
                    let f = match format {
                        DiffFormat::Patch => "patch",
                        DiffFormat::Stat => "stat",
                        DiffFormat::NameOnly => "name-only",
                    };
                    q.push(format!("format={f}&color={color}"));
                }
                let path = format!("/v1/runs/{}/diff?{}", seg(id.as_str()), q.join("&"));
                let mut json: Value = d.call(Method::GET, &path, None)?;
                let text = json
                    .as_object_mut()
                    .and_then(|o| o.remove("text"))
                    .and_then(|t| t.as_str().map(|s| s.as_bytes().to_vec()));
                Ok(DiffOutput { json, text })
            }
        }
    }

    /// Restores the run's worktree (or `paths`) to checkpoint `to`.
    pub fn rollback(&self, id: &RunId, to: CheckpointRef, paths: &[PathBuf]) -> Result<engine::RollbackInfo, CliError> {
        match self {
            Backend::Direct(engine) => Ok(engine.rollback(id, to, paths)?),
            Backend::Daemon(d) => {
                let to = match to {
                    CheckpointRef::Number(n) => json!(n),
                    CheckpointRef::Last => json!("last"),
                };
                let paths: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                d.call(
                    Method::POST,
                    &format!("/v1/runs/{}/rollback", seg(id.as_str())),
                    Some(&json!({ "to": to, "paths": paths })),
                )
            }
        }
    }

    /// `gc`: worktrees of finished runs past their retention, and with `prune_refs` the refs of
    /// runs removed earlier.
    pub fn gc(&self, opts: &engine::GcOptions, prune_refs: bool) -> Result<GcReport, CliError> {
        match self {
            Backend::Direct(engine) => {
                let (items, pruned) = engine.collect(opts, prune_refs)?;
                Ok(GcReport {
                    runs: items.iter().map(GcRun::from).collect(),
                    pruned_refs: pruned.iter().map(PrunedRefsView::from).collect(),
                })
            }
            Backend::Daemon(d) => {
                let req = GcRequest {
                    older_than_ms: Some(opts.older_than.as_millis() as u64),
                    dry_run: opts.dry_run,
                    force: opts.force,
                    prune_refs,
                };
                let body = serde_json::to_value(&req).expect("requests serialize");
                d.call(Method::POST, "/v1/gc", Some(&body))
            }
        }
    }

    /// `reconcile`: runs against supervisors, processes, worktrees and refs.
    pub fn reconcile(&self, dry_run: bool) -> Result<ReconcileReport, CliError> {
        match self {
            Backend::Direct(engine) => Ok(ReconcileReport {
                dry_run,
                findings: engine.reconcile(dry_run)?.iter().map(FindingView::from).collect(),
            }),
            Backend::Daemon(d) => d.call(Method::POST, &format!("/v1/reconcile?dry_run={dry_run}"), None),
        }
    }

    /// Every agent known for `repo` (presets, the user's and the repository's definitions).
    pub fn agents(&self, repo: Option<&Path>, versions: bool) -> Result<Vec<engine::availability::AgentRow>, CliError> {
        match self {
            Backend::Direct(engine) => {
                let user = context::config_dir().map(|d| d.join("agents.toml"));
                let mut rows = engine::availability::agent_rows(user.as_deref(), repo, versions)?;
                engine.fill_stats(&mut rows)?;
                Ok(rows)
            }
            Backend::Daemon(d) => {
                let mut path = format!("/v1/agents?versions={versions}");
                if let Some(r) = repo {
                    path.push_str(&format!("&repo={}", enc(&r.to_string_lossy())));
                }
                let page: AgentList = d.call(Method::GET, &path, None)?;
                Ok(page.agents)
            }
        }
    }
}

/// A path segment: a run id or prefix as typed, percent-encoded.
fn seg(text: &str) -> String {
    enc(text)
}

fn checkpoint_text(c: CheckpointRef) -> String {
    match c {
        CheckpointRef::Number(n) => n.to_string(),
        CheckpointRef::Last => "last".to_owned(),
    }
}
