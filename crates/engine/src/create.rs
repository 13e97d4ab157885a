//! Creating a run: resolve the repository, agent and base commit, render the invocation, record
//! the run atomically (idempotent on `--id`), and hand it to the provider.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use model::{ErrorCode, EventData, LaunchPlan, RunId, RunSpec, RunState};
use store::{CreateOutcome, LockMode, RunRecord};
use vcs::Git;

use crate::availability;
use crate::{Engine, EngineError};

/// What a caller asks for.
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// A caller-chosen id (idempotent create); minted when absent.
    pub id: Option<RunId>,
    /// The agent; `None` means `command` when `args` are given.
    pub agent: Option<String>,
    pub prompt: Option<String>,
    /// What followed `--`: the program for `command`, extra arguments for other agents.
    pub args: Vec<String>,
    /// A directory inside the repository.
    pub repo_dir: PathBuf,
    pub base: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub grace: Option<Duration>,
    pub keep: bool,
    /// Automatic checkpoints while the agent works.
    pub checkpoints: model::CheckpointPolicy,
    /// The environment the run's supervisor — and so the agent — starts with instead of this
    /// process's; never recorded. A daemon creating a run for a CLI gets the CLI's here.
    pub launch_env: Option<BTreeMap<String, String>>,
    /// Run this workflow (a name or a `.toml` path) instead of one agent; `prompt` is the task.
    pub workflow: Option<String>,
    /// Sandbox, network, secrets, limits and path policy.
    pub isolation: model::IsolationSpec,
    /// Work on a shadow branch, promoted onto the run's branch once validated.
    pub shadow: Option<model::ShadowSpec>,
}

/// A run's doer, resolved: one agent, or a workflow.
enum Prepared {
    Agent(String, Box<agents::AgentDef>),
    Workflow(Box<model::WorkflowPlan>),
}

/// The parts of a [`LaunchPlan`] that depend on what does the run.
struct PlanBase {
    argv: Vec<String>,
    prompt_via: model::PromptVia,
    prompt_file: Option<PathBuf>,
    env: BTreeMap<String, String>,
    secret_env: Vec<String>,
    tty: bool,
    workflow: Option<Box<model::WorkflowPlan>>,
}

/// The outcome of a create.
#[derive(Clone, Debug)]
pub struct CreateResult {
    pub run: RunRecord,
    /// False when an identical run with the same id already existed.
    pub created: bool,
}

impl Engine {
    /// Creates and starts a run, or returns the existing run with the same id and spec.
    pub fn create_run(&self, req: RunRequest) -> Result<CreateResult, EngineError> {
        let span = tracing::info_span!(
            "run.create",
            run.id = tracing::field::Empty,
            agent.name = tracing::field::Empty,
            router.choice = tracing::field::Empty,
            router.confidence = tracing::field::Empty
        );
        let _enter = span.enter();
        let base = req.base.clone().unwrap_or_else(|| "HEAD".to_owned());
        let launch_env = req.launch_env.clone();
        let (repo, base_commit) = Git::locate(&req.repo_dir, &base)?;
        let registry = agents::load_registry(self.config.user_agents_file.as_deref(), Some(&repo))?;
        // On the PATH the agent will get: the caller's, when a daemon creates the run for it.
        let path = match &launch_env {
            Some(env) => env.get("PATH").map(std::ffi::OsString::from),
            None => std::env::var_os("PATH"),
        };
        let mut check_installed = |agent: &str, def: &agents::AgentDef| -> Result<(), EngineError> {
            if agent == agents::presets::COMMAND {
                return Ok(());
            }
            let found = def
                .program()
                .and_then(|p| availability::locate_on(p, Some(&repo), path.as_deref()));
            if found.is_some() {
                return Ok(());
            }
            let mut err = EngineError::new(
                ErrorCode::AgentUnavailable,
                match def.program() {
                    Some(p) if p.contains('/') => {
                        format!("agent `{agent}` runs `{p}`, which is not an executable file")
                    }
                    p => format!("agent `{agent}` needs `{}`, which is not on PATH", p.unwrap_or("?")),
                },
            );
            if !def.install_hint.is_empty() {
                err = err.hint(format!("install it: {}", def.install_hint));
            }
            Err(err)
        };
        if let Some(name) = &req.workflow {
            if req.agent.is_some() || !req.args.is_empty() {
                return Err(EngineError::new(
                    ErrorCode::InvalidArgument,
                    "a workflow run names its agents in the workflow: drop --agent and `-- ARGS`",
                ));
            }
            let (def, source) = crate::workflow::load(name, &repo, self.config.user_workflows_dir.as_deref())?;
            let plan = crate::workflow::resolve(def, source, &registry, &mut check_installed)?;
            span.record(
                "agent.name",
                format!("{}{}", crate::workflow::AGENT_PREFIX, plan.def.name).as_str(),
            );
            return self.create_recorded(req, repo, base, base_commit, Prepared::Workflow(Box::new(plan)), None);
        }
        let mut routed = None;
        let agent = match (&req.agent, req.args.is_empty()) {
            (Some(a), _) if a == crate::route::AUTO => {
                let (agent, result) = self.route_for_run(req.prompt.as_deref(), &repo, path.as_deref())?;
                // The router's advice and the decision, on the span as in the `routed` event.
                span.record("router.choice", agent.as_str());
                if let Some(best) = result.recommendations.first() {
                    span.record("router.confidence", best.confidence);
                }
                routed = Some(result);
                agent
            }
            (Some(a), _) => a.clone(),
            (None, false) => agents::presets::COMMAND.to_owned(),
            (None, true) => {
                return Err(
                    EngineError::new(ErrorCode::InvalidArgument, "no agent and no command given")
                        .hint("use --agent NAME \"TASK\", or put a program after `--`"),
                );
            }
        };
        span.record("agent.name", agent.as_str());
        let def = registry.get(&agent).ok_or_else(|| {
            EngineError::new(ErrorCode::AgentNotFound, format!("no agent named `{agent}`")).hint(format!(
                "known agents: {} (see `agentctl agents`)",
                registry.names().join(", ")
            ))
        })?;
        check_installed(&agent, def)?;
        let created = self.create_recorded(
            req,
            repo,
            base,
            base_commit,
            Prepared::Agent(agent.clone(), Box::new(def.clone())),
            routed.as_ref().map(|r| (agent.as_str(), r)),
        )?;
        Ok(created)
    }

    /// Renders, records and starts a run whose agent (or workflow) is resolved.
    fn create_recorded(
        &self,
        req: RunRequest,
        repo: PathBuf,
        base: String,
        base_commit: String,
        what: Prepared,
        routed: Option<(&str, &crate::route::RouteResult)>,
    ) -> Result<CreateResult, EngineError> {
        let launch_env = req.launch_env.clone();
        let id = req.id.clone().unwrap_or_else(RunId::mint);
        tracing::Span::current().record("run.id", id.as_str());
        let layout = self.store.layout();
        let git = Git::new(&repo);
        let worktree = layout.worktree_path(&id);
        let prompt_path = layout.prompt_path(&id);
        let isolation = match &what {
            Prepared::Agent(_, def) => crate::isolation::plan(
                &req.isolation,
                &self.config.isolation,
                &[crate::isolation::AgentIsolation {
                    network: def.default_network(),
                    domains: &def.domains,
                    policy: def.policy.as_ref(),
                }],
                None,
            )?,
            Prepared::Workflow(wf) => {
                let parts: Vec<_> = wf
                    .agents
                    .values()
                    .map(|a| crate::isolation::AgentIsolation {
                        network: model::NetworkMode::of_agent(a.network, &a.domains),
                        domains: &a.domains,
                        policy: a.policy.as_ref(),
                    })
                    .collect();
                crate::isolation::plan(&req.isolation, &self.config.isolation, &parts, wf.def.policy.as_ref())?
            }
        };
        required_secrets_found(&isolation, &repo, launch_env.as_ref())?;
        let (agent, plan_base) = match what {
            Prepared::Agent(agent, def) => {
                let invocation =
                    agents::render(&agent, &def, req.prompt.as_deref(), &req.args, &prompt_path, &worktree)?;
                let mut env = def.env.clone();
                env.extend(req.env.clone());
                let base = PlanBase {
                    argv: invocation.argv,
                    prompt_via: invocation.prompt_via,
                    prompt_file: invocation.prompt_file,
                    env,
                    secret_env: with_required(&def.secret_env, &isolation.required_secrets),
                    tty: def.tty,
                    workflow: None,
                };
                (agent, base)
            }
            Prepared::Workflow(wf) => {
                // Each step renders its own invocation; the plan keeps what all steps share.
                let named: Vec<String> = wf.agents.values().flat_map(|a| a.secret_env.clone()).collect();
                let secret_env = with_required(&named, &isolation.required_secrets);
                let base = PlanBase {
                    argv: Vec::new(),
                    prompt_via: model::PromptVia::Arg,
                    prompt_file: Some(prompt_path.clone()),
                    env: req.env.clone(),
                    secret_env,
                    tty: false,
                    workflow: Some(wf),
                };
                (
                    format!(
                        "{}{}",
                        crate::workflow::AGENT_PREFIX,
                        base.workflow.as_ref().map(|w| w.def.name.as_str()).unwrap_or("")
                    ),
                    base,
                )
            }
        };
        let spec = RunSpec {
            agent: agent.clone(),
            prompt: req.prompt.clone(),
            command: req.args.clone(),
            repo: repo.clone(),
            base,
            env: req.env.clone(),
            labels: req.labels.clone(),
            timeout_ms: req.timeout.map(|d| d.as_millis() as u64),
            idle_timeout_ms: req.idle_timeout.map(|d| d.as_millis() as u64),
            keep: req.keep,
            checkpoints: req.checkpoints,
            workflow: req.workflow.clone(),
            isolation: Some(req.isolation.clone()),
            shadow: req.shadow.clone(),
        };
        let shadow = match &req.shadow {
            Some(s) => Some(crate::shadow::plan(&id, s, &self.config.shadow)?),
            None => None,
        };
        let plan = LaunchPlan {
            argv: plan_base.argv,
            prompt_via: plan_base.prompt_via,
            prompt_file: plan_base.prompt_file,
            env: plan_base.env,
            secret_env: plan_base.secret_env,
            tty: plan_base.tty,
            base_commit,
            worktree,
            branch: id.branch(),
            provider: self.provider.name().to_owned(),
            grace_ms: req.grace.unwrap_or(crate::DEFAULT_GRACE).as_millis() as u64,
            max_concurrent: self.config.max_concurrent_runs,
            workflow: plan_base.workflow,
            isolation: Some(isolation),
            shadow,
        };
        // A caller-chosen id may name a branch left by an earlier run (minted ids are new). Branch
        // first, then the run dir: a concurrent create of the same id makes the run dir before
        // its supervisor makes the branch, so this order never mistakes it for a conflict.
        for branch in [
            Some(plan.branch.as_str()),
            plan.shadow.as_ref().map(|s| s.branch.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if req.id.is_some() && git.branch_exists(branch)? && !self.store.layout().run_dir(&id).exists() {
                return Err(EngineError::new(
                    ErrorCode::RunIdConflict,
                    format!("branch {branch} already exists in {}", repo.display()),
                )
                .hint("choose another --id, or delete the branch if it is no longer needed"));
            }
        }
        // A removed run's checkpoints are kept until `gc --prune-refs`; a new run with its id
        // would write over them.
        let refs = format!("{}{id}/", checkpoint::refs::NAMESPACE);
        // Refs first, then the run dir (as for the branch): a concurrent create of the same id
        // makes the run dir before its supervisor writes a checkpoint ref.
        if req.id.is_some() && git.has_refs_under(&refs)? && !self.store.layout().run_dir(&id).exists() {
            return Err(EngineError::new(
                ErrorCode::RunIdConflict,
                format!(
                    "checkpoints of an earlier run {id} are kept in {} ({refs}*)",
                    repo.display()
                ),
            )
            .hint("choose another --id, or delete them with `agentctl gc --prune-refs`"));
        }
        match self.store.create_run(&id, spec.clone(), plan)? {
            CreateOutcome::Exists(events) => {
                let same =
                    matches!(events.first().map(|e| &e.data), Some(EventData::Created { spec: s, .. }) if **s == spec);
                if !same {
                    return Err(EngineError::new(
                        ErrorCode::RunIdConflict,
                        format!("run {id} already exists with a different spec"),
                    )
                    .hint("reuse --id only to repeat the same request; pick a new id for a new run"));
                }
                let run = self
                    .store
                    .sync_run(&id)?
                    .ok_or_else(|| EngineError::from(store::StoreError::NotFound(id.to_string())))?;
                tracing::info!("run already exists; returning it");
                Ok(CreateResult { run, created: false })
            }
            CreateOutcome::Created(_) => {
                tracing::info!("run recorded");
                // The router's advice and the choice, before the supervisor can take the run.
                if let Some((chosen, result)) = routed {
                    let recorded = self.store.writer(&id, LockMode::Wait).and_then(|mut w| {
                        w.append(EventData::Routed {
                            chosen: chosen.to_owned(),
                            recommendations: result.recommendations.clone(),
                            elapsed_ms: result.elapsed_ms.round() as u64,
                            model: result.model.clone(),
                        })
                        .map(drop)
                    });
                    if let Err(e) = recorded {
                        tracing::warn!(error = %e, "cannot record the routing decision");
                    }
                }
                if let Err(e) = self
                    .provider
                    .create(&id)
                    .and_then(|()| self.provider.start_with_env(&id, launch_env.as_ref()))
                {
                    self.fail_unstarted(&id, &format!("supervisor could not start: {e}"));
                    return Err(e.into());
                }
                let run = self
                    .store
                    .get(&id)?
                    .ok_or_else(|| EngineError::from(store::StoreError::NotFound(id.to_string())))?;
                Ok(CreateResult { run, created: true })
            }
        }
    }

    /// Records the failure of a run that never got a supervisor.
    fn fail_unstarted(&self, id: &RunId, reason: &str) {
        if let Ok(mut w) = self.store.writer(id, LockMode::NoWait)
            && w.state() == Some(RunState::Pending)
        {
            let _ = w.append(EventData::Finished {
                state: RunState::Failed,
                reason: reason.to_owned(),
                exit_code: None,
                signal: None,
            });
        }
    }
}

/// The secret names a run's agent gets: its definition's, then those the run requires, once each.
fn with_required(named: &[String], required: &[String]) -> Vec<String> {
    let mut all: Vec<String> = named.iter().chain(required).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// Fails with `SECRET_NOT_FOUND` (before anything is recorded) when a secret the run requires
/// (`--secret`) is in none of the places it may come from. Configured sources (`[secrets]`)
/// are trusted here and run by the supervisor (a `cmd:` may prompt): only the others are
/// looked at.
fn required_secrets_found(
    iso: &model::IsolationPlan,
    repo: &std::path::Path,
    launch_env: Option<&BTreeMap<String, String>>,
) -> Result<(), EngineError> {
    let names: Vec<String> = iso
        .required_secrets
        .iter()
        .filter(|n| !iso.secret_sources.contains_key(*n))
        .cloned()
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let sources = agents::secrets::SecretSources {
        configured: BTreeMap::new(),
        caller_env: match launch_env {
            Some(env) => env.clone(),
            None => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        },
        dotenv: agents::config::read_dotenv(repo).unwrap_or_default(),
        secrets_file: iso.secrets_file.clone(),
    };
    sources.resolve(&names).map(drop).map_err(|e| {
        EngineError::new(ErrorCode::SecretNotFound, e.to_string()).hint(
            "set it in your environment, the repository's .env, the secrets file (mode 0600), \
             or give it a source under [secrets] in config.toml",
        )
    })
}
