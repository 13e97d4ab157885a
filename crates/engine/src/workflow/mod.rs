//! Workflows in the engine: finding and loading definitions (the repository's
//! `.agentctl/workflows/NAME.toml`, then the user's `workflows/NAME.toml`), resolving each
//! step's agent into a [`WorkflowPlan`] when a run is created, and the engine calls around
//! workflow runs (messages, resume). The step loop itself runs in the supervisor
//! (`supervisor/workflow.rs`); the pure rules are in `model::workflow`.

pub mod messages;
pub mod resume;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::workflow::WorkflowDef;
use model::{ErrorCode, StepAgent, WorkflowPlan};
use serde::Serialize;

use crate::EngineError;

/// The `agent` of a workflow run is this prefix and the workflow's name.
pub const AGENT_PREFIX: &str = "workflow:";

/// Whether a run of agent `agent` (as recorded and projected) is a workflow run.
pub fn is_workflow_run(agent: &str) -> bool {
    agent.starts_with(AGENT_PREFIX)
}

/// The folder of a repository's workflow definitions.
pub const REPO_DIR: &str = ".agentctl/workflows";

/// A workflow definition found in a repository's `.agentctl/workflows/` or the user's
/// workflows (as `agentctl workflows --json` lists it).
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WorkflowEntry {
    pub name: String,
    /// The definition's file.
    pub path: PathBuf,
    pub description: String,
    /// Its steps' ids, in the order written.
    pub steps: Vec<String>,
    /// Why it cannot be used (empty when it is valid).
    pub problems: Vec<String>,
}

/// Where a workflow named `name` would be read from, in order of precedence.
fn candidates(name: &str, repo: &Path, user_dir: Option<&Path>) -> Vec<PathBuf> {
    let file = format!("{name}.toml");
    let mut out = vec![repo.join(REPO_DIR).join(&file)];
    if let Some(d) = user_dir {
        out.push(d.join(&file));
    }
    out
}

/// Reads the workflow `name_or_path`: a path to a `.toml` file, or a name looked up in the
/// repository and then the user's folder. Validates everything but the agents.
pub fn load(name_or_path: &str, repo: &Path, user_dir: Option<&Path>) -> Result<(WorkflowDef, PathBuf), EngineError> {
    let as_path = Path::new(name_or_path);
    let path = if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        let p = if as_path.is_absolute() {
            as_path.to_path_buf()
        } else {
            repo.join(as_path)
        };
        if !p.is_file() {
            return Err(EngineError::new(
                ErrorCode::WorkflowNotFound,
                format!("no workflow file {}", p.display()),
            ));
        }
        p
    } else {
        if !model::workflow::valid_id(name_or_path) {
            return Err(EngineError::new(
                ErrorCode::InvalidArgument,
                format!("{name_or_path:?} is not a workflow name (letters, digits, `-`, `_`) or a .toml path"),
            ));
        }
        let tried = candidates(name_or_path, repo, user_dir);
        match tried.iter().find(|p| p.is_file()) {
            Some(p) => p.clone(),
            None => {
                let known = list(repo, user_dir, None)
                    .into_iter()
                    .map(|w| w.name)
                    .collect::<Vec<_>>();
                let hint = if known.is_empty() {
                    format!("create {}", tried[0].display())
                } else {
                    format!("known workflows: {} (see `agentctl workflows`)", known.join(", "))
                };
                return Err(EngineError::new(
                    ErrorCode::WorkflowNotFound,
                    format!(
                        "no workflow named `{name_or_path}` (looked in {})",
                        tried
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .hint(hint));
            }
        }
    };
    let def = parse(&path)?;
    let problems = def.problems();
    if !problems.is_empty() {
        return Err(invalid(&path, &problems));
    }
    Ok((def, path))
}

fn parse(path: &Path) -> Result<WorkflowDef, EngineError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EngineError::new(ErrorCode::Io, format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        EngineError::new(
            ErrorCode::WorkflowInvalid,
            format!("{}: {}", path.display(), e.to_string().trim_end()),
        )
    })
}

fn invalid(path: &Path, problems: &[String]) -> EngineError {
    EngineError::new(
        ErrorCode::WorkflowInvalid,
        format!("{}: {}", path.display(), problems.join("; ")),
    )
}

/// Every workflow definition in the repository's and the user's folders (a repository's
/// shadows a user's of the same name), valid or not. With `registry`, a step's agent that is
/// not defined there is a problem too (as `run --workflow` finds it).
pub fn list(repo: &Path, user_dir: Option<&Path>, registry: Option<&agents::AgentRegistry>) -> Vec<WorkflowEntry> {
    let mut found: BTreeMap<String, WorkflowEntry> = BTreeMap::new();
    let dirs = [Some(repo.join(REPO_DIR)), user_dir.map(Path::to_path_buf)];
    for dir in dirs.into_iter().flatten() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            if found.contains_key(&name) {
                continue;
            }
            let entry = match parse(&path) {
                Ok(def) => WorkflowEntry {
                    name: name.clone(),
                    path: path.clone(),
                    description: def.description.clone(),
                    steps: def.steps.iter().map(|s| s.id.clone()).collect(),
                    problems: {
                        let mut p = def.problems();
                        if p.is_empty()
                            && let Some(reg) = registry
                        {
                            p = agent_problems(&def, reg);
                        }
                        p
                    },
                },
                Err(e) => WorkflowEntry {
                    name: name.clone(),
                    path: path.clone(),
                    description: String::new(),
                    steps: Vec::new(),
                    problems: vec![e.message],
                },
            };
            found.insert(name, entry);
        }
    }
    found.into_values().collect()
}

/// What is wrong with a definition's steps given the agents defined: an undefined agent, the
/// `command` agent, a bad `timeout`.
fn agent_problems(def: &WorkflowDef, registry: &agents::AgentRegistry) -> Vec<String> {
    let mut problems = Vec::new();
    for step in &def.steps {
        if let Some(name) = &step.agent {
            if name == agents::presets::COMMAND {
                problems.push(format!(
                    "step `{}` uses the `command` agent: use `gate = \"...\"` for a command",
                    step.id
                ));
            } else if registry.get(name).is_none() {
                problems.push(format!(
                    "step `{}` uses agent `{name}`, which is not defined (known: {})",
                    step.id,
                    registry.names().join(", ")
                ));
            }
        }
        if let Some(t) = &step.timeout
            && !humantime::parse_duration(t).is_ok_and(|d| !d.is_zero())
        {
            problems.push(format!(
                "step `{}` has timeout {t:?}: write a duration such as \"90s\" or \"10m\"",
                step.id
            ));
        }
    }
    problems
}

impl crate::Engine {
    /// The workflows of `repo` and the user, each checked as `run --workflow` would (agents
    /// included).
    pub fn workflows(&self, repo: &Path) -> Result<Vec<WorkflowEntry>, EngineError> {
        let registry = agents::load_registry(self.config.user_agents_file.as_deref(), Some(repo))?;
        Ok(list(repo, self.config.user_workflows_dir.as_deref(), Some(&registry)))
    }
}

/// Resolves every step's agent (which must be defined) and time limit. `check` is called for
/// each agent used, to refuse one that is not installed.
pub fn resolve(
    def: WorkflowDef,
    source: PathBuf,
    registry: &agents::AgentRegistry,
    check: &mut dyn FnMut(&str, &agents::AgentDef) -> Result<(), EngineError>,
) -> Result<WorkflowPlan, EngineError> {
    let problems = agent_problems(&def, registry);
    if !problems.is_empty() {
        return Err(invalid(&source, &problems));
    }
    let mut agents_used = BTreeMap::new();
    let mut step_timeouts_ms = BTreeMap::new();
    for step in &def.steps {
        if let Some(agent) = step
            .agent
            .as_ref()
            .and_then(|name| registry.get(name).map(|a| (name, a)))
        {
            agents_used.insert(agent.0.clone(), agent.1.clone());
        }
        if let Some(d) = step.timeout.as_deref().and_then(|t| humantime::parse_duration(t).ok()) {
            step_timeouts_ms.insert(step.id.clone(), d.as_millis() as u64);
        }
    }
    let mut agents = BTreeMap::new();
    for (name, agent) in agents_used {
        check(&name, &agent)?;
        agents.insert(
            name,
            StepAgent {
                command: agent.command.clone(),
                prompt_via: agent.prompt_via,
                env: agent.env.clone(),
                secret_env: agent.secret_env.clone(),
                tty: agent.tty,
                network: agent.network,
                domains: agent.domains.clone(),
                policy: agent.policy.clone(),
            },
        );
    }
    Ok(WorkflowPlan {
        def,
        source,
        agents,
        step_timeouts_ms,
    })
}
