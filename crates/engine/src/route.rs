//! Routing: which agent fits a task. The engine describes every agent of the registry to the
//! router (tags, description, whether it is installed, its recent outcomes and the prompts of
//! its recent successful runs) and returns the router's ranked recommendations. `run --agent
//! auto` takes the first one and records the recommendations and the choice as a `routed`
//! event. The router informs; the caller decides.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use model::event::RouteRecommendation;
use model::{ErrorCode, RunState};
use serde::Serialize;

use crate::{Engine, EngineError, availability};

/// The agent name that asks the router to pick.
pub const AUTO: &str = "auto";

/// How many recent successful prompts per agent the router learns from.
const EXAMPLES_PER_AGENT: usize = 50;

/// The router's answer for one task.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RouteResult {
    pub recommendations: Vec<RouteRecommendation>,
    /// The semantic tier's model (`bert-384x6@…`: its shape and a digest), when one ranked them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Time to build the candidates and rank them.
    pub elapsed_ms: f64,
}

impl Engine {
    /// Ranks the agents available for `task` (agents of `repo` included). `path` is the PATH
    /// availability is judged on (this process's when `None`).
    pub fn route(
        &self,
        task: &str,
        repo: Option<&Path>,
        path: Option<&std::ffi::OsStr>,
    ) -> Result<RouteResult, EngineError> {
        let started = Instant::now();
        let candidates = self.route_candidates(repo, path)?;
        let router = self.router(candidates)?;
        let recommendations = router
            .recommend(task)
            .into_iter()
            .map(|r| RouteRecommendation {
                agent: r.agent,
                confidence: r.confidence,
                reasons: r.reasons,
            })
            .collect();
        Ok(RouteResult {
            recommendations,
            model: router.model_id().map(str::to_owned),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// Routes with the model in `dir` (the semantic tier) from now on, whatever the
    /// configuration says.
    pub fn set_router_model(&mut self, dir: std::path::PathBuf) {
        self.config.router_model = Some(dir);
        self.encoder = std::sync::OnceLock::new();
    }

    /// A router over `candidates`: with the semantic tier when `router_model` is configured.
    pub fn router(&self, candidates: Vec<router::Candidate>) -> Result<router::Router, EngineError> {
        let Some(dir) = &self.config.router_model else {
            return Ok(router::Router::new(candidates));
        };
        let encoder = self.router_encoder(dir)?;
        let router = router::Router::with_encoder(candidates, encoder).map_err(|e| {
            EngineError::new(
                ErrorCode::RouterModelUnusable,
                format!("router model {}: {e}", dir.display()),
            )
        })?;
        if let (skipped @ 1.., Some(first)) = router.unencoded_examples() {
            tracing::warn!(skipped, error = %first, "the router model cannot encode some past tasks; they count for the words only");
        }
        Ok(router)
    }

    /// The configured model, loaded once, its embeddings kept in `<state>/router/`.
    fn router_encoder(&self, dir: &Path) -> Result<std::sync::Arc<dyn router::Encoder>, EngineError> {
        if let Some(encoder) = self.encoder.get() {
            return Ok(encoder.clone());
        }
        let model = load_model(dir)?;
        let dir = self.store().layout().root().join("router");
        let encoder: std::sync::Arc<dyn router::Encoder> =
            match crate::embeddings::StoredEncoder::open(model.clone(), &dir) {
                Ok(stored) => std::sync::Arc::new(stored),
                Err(e) => {
                    // Routing still works; it only encodes the examples again next time.
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the router's embeddings");
                    std::sync::Arc::new(router::CachingEncoder::new(model))
                }
            };
        Ok(self.encoder.get_or_init(|| encoder).clone())
    }

    /// Every agent of the registry (but `command`) as the router sees it: tags, description,
    /// whether its program is found on `path`, its recent outcomes and successful prompts.
    pub fn route_candidates(
        &self,
        repo: Option<&Path>,
        path: Option<&std::ffi::OsStr>,
    ) -> Result<Vec<router::Candidate>, EngineError> {
        let registry = agents::load_registry(self.config.user_agents_file.as_deref(), repo)?;
        let finished = self.finished_runs()?;
        let stats = availability::stats_of(&finished);
        let examples = recent_successes(&finished);
        let env_path = std::env::var_os("PATH");
        let path = path.or(env_path.as_deref());
        Ok(registry
            .iter()
            // `command` runs whatever it is given: nothing to recommend.
            .filter(|(name, _, _)| *name != agents::presets::COMMAND)
            .map(|(name, def, _)| router::Candidate {
                name: name.to_owned(),
                tags: def.tags.clone(),
                description: def.description.clone(),
                available: def
                    .program()
                    .and_then(|p| availability::locate_on(p, repo, path))
                    .is_some(),
                history: stats.get(name).map(|s| router::History {
                    runs: s.runs,
                    succeeded: s.succeeded,
                }),
                examples: examples.get(name).cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// The agent `--agent auto` runs for `task`, with the router's answer.
    pub(crate) fn route_for_run(
        &self,
        task: Option<&str>,
        repo: &Path,
        path: Option<&std::ffi::OsStr>,
    ) -> Result<(String, RouteResult), EngineError> {
        let Some(task) = task.filter(|t| !t.trim().is_empty()) else {
            return Err(EngineError::new(
                ErrorCode::InvalidArgument,
                "--agent auto needs a task to route",
            ));
        };
        let result = self.route(task, Some(repo), path)?;
        match result.recommendations.first() {
            Some(best) => Ok((best.agent.clone(), result)),
            None => Err(EngineError::new(
                ErrorCode::AgentNotFound,
                "the router found no available agent for this task",
            )
            .hint("name one with --agent (see `agentctl agents` and `agentctl route TASK`)")),
        }
    }
}

/// Loads the router's model in `dir` (the `embed` feature), nothing kept.
#[cfg(feature = "embed")]
pub fn load_model(dir: &Path) -> Result<std::sync::Arc<dyn router::Encoder>, EngineError> {
    match router::MiniLm::load(dir) {
        Ok(model) => Ok(std::sync::Arc::new(model)),
        Err(e) => Err(EngineError::new(ErrorCode::RouterModelUnusable, e.to_string())
            .hint("scripts/fetch-minilm DIR puts the model in DIR; or unset AGENTCTL_ROUTER_MODEL / [router] model")),
    }
}

/// Without the `embed` feature there is no model to load: `ROUTER_MODEL_UNUSABLE`.
#[cfg(not(feature = "embed"))]
pub fn load_model(dir: &Path) -> Result<std::sync::Arc<dyn router::Encoder>, EngineError> {
    Err(EngineError::new(
        ErrorCode::RouterModelUnusable,
        format!(
            "a router model is configured ({}) but this agentctl was built without the semantic tier",
            dir.display()
        ),
    )
    .hint("build agentctl with `--features embed`, or unset AGENTCTL_ROUTER_MODEL / [router] model"))
}

/// The prompts of each agent's most recent succeeded runs (`finished` is newest first).
fn recent_successes(finished: &[store::RunRecord]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in finished.iter().filter(|r| r.state == RunState::Succeeded) {
        let Some(prompt) = &r.prompt else { continue };
        let list = out.entry(r.agent.clone()).or_default();
        if list.len() < EXAMPLES_PER_AGENT {
            list.push(prompt.clone());
        }
    }
    out
}
