//! The run controller: creating runs (idempotently), the supervisor process's work, noticing
//! lost supervisors, stopping, waiting, removing and garbage-collecting. It talks to the
//! placement of processes only through `dyn Provider`, records everything through the store's
//! [`RunWriter`](store::RunWriter), and runs git only through `vcs`.

pub mod availability;
pub mod checkpointer;
pub mod checkpoints;
pub mod collect;
pub mod create;
pub mod embeddings;
pub mod error;
pub mod hooks;
pub mod isolation;
pub mod lifecycle;
mod objects;
pub mod policy;
pub mod queue;
pub mod reconcile;
pub mod repo_lock;
pub mod route;
pub mod shadow;
pub mod supervisor;
pub mod view;
pub mod workflow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::provider::Provider;
use store::Store;

pub use checkpointer::{CheckpointInfo, RollbackInfo};
pub use checkpoints::{CheckpointEntry, DiffResult, DiffSide, DiffTo, PrunedRefs};
pub use create::{CreateResult, RunRequest};
pub use error::EngineError;
pub use lifecycle::{GcItem, GcOptions, RmReport};

/// Settings the engine needs from configuration.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The user's agent definitions file, if any.
    pub user_agents_file: Option<PathBuf>,
    /// The user's workflow definitions (`NAME.toml` files), if any.
    pub user_workflows_dir: Option<PathBuf>,
    /// At most this many runs active at once (see [`queue`]); `None`: no cap.
    pub max_concurrent_runs: Option<u32>,
    /// How often waiting loops look at the log.
    pub poll_interval: Duration,
    /// How long a run may stay `pending` without any supervisor before it counts as lost.
    pub pending_start_limit: Duration,
    /// Sandbox, network, limits, policy and secrets of runs that do not say.
    pub isolation: isolation::IsolationDefaults,
    /// `[shadow]`: gates every shadow run's change must pass, and their time limit.
    pub shadow: shadow::ShadowDefaults,
    /// The router's semantic tier: the directory of its sentence-embedding model (see
    /// [`route`]); `None`: the lexical router alone.
    pub router_model: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            user_agents_file: None,
            user_workflows_dir: None,
            max_concurrent_runs: None,
            poll_interval: Duration::from_millis(50),
            pending_start_limit: Duration::from_secs(30),
            isolation: isolation::IsolationDefaults::default(),
            shadow: shadow::ShadowDefaults::default(),
            router_model: None,
        }
    }
}

/// The default grace between stop signals.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The run controller for one state directory.
pub struct Engine {
    store: Store,
    provider: Arc<dyn Provider>,
    config: EngineConfig,
    /// The router's encoder, loaded on first use (a daemon loads it once).
    encoder: std::sync::OnceLock<Arc<dyn router::Encoder>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store)
            .field("provider", &self.provider.name())
            .finish()
    }
}

impl Engine {
    pub fn new(store: Store, provider: Arc<dyn Provider>, config: EngineConfig) -> Self {
        Engine {
            store,
            provider,
            config,
            encoder: std::sync::OnceLock::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn provider(&self) -> &dyn Provider {
        self.provider.as_ref()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

/// The top level of the git repository containing `dir` (`NOT_A_GIT_REPO` when there is none).
pub fn repo_toplevel(dir: &std::path::Path) -> Result<PathBuf, EngineError> {
    Ok(vcs::Git::toplevel(dir)?)
}
