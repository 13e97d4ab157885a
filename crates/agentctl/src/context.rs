//! Where things are (state dir, user config) and wiring the engine to the SQLite store and the
//! local-process provider. The one place that picks concrete adapters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::{Engine, EngineConfig};
use model::ErrorCode;
use store::{StateLayout, Store};
use supervise::LocalProvider;

use crate::cli::GlobalArgs;
use crate::exit::CliError;

/// The state directory: `--state-dir`, `AGENTCTL_STATE_DIR`, `$XDG_STATE_HOME/agentctl`, or
/// `~/.local/state/agentctl`; always made absolute.
pub fn state_dir(g: &GlobalArgs) -> Result<PathBuf, CliError> {
    let dir = match &g.state_dir {
        Some(d) => d.clone(),
        None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(x) => PathBuf::from(x).join("agentctl"),
            None => home()?.join(".local/state/agentctl"),
        },
    };
    absolute(&dir)
}

/// The user's config directory: `AGENTCTL_CONFIG_DIR`, `$XDG_CONFIG_HOME/agentctl` or
/// `~/.config/agentctl`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("AGENTCTL_CONFIG_DIR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d));
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x).join("agentctl")),
        None => home().ok().map(|h| h.join(".config/agentctl")),
    }
}

fn home() -> Result<PathBuf, CliError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            CliError::new(
                ErrorCode::StateDirUnusable,
                "cannot find a state directory: HOME is not set",
            )
            .hint("pass --state-dir DIR or set AGENTCTL_STATE_DIR")
        })
}

pub fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(p).map_err(|e| CliError::new(ErrorCode::StateDirUnusable, format!("{}: {e}", p.display())))
}

/// Opens the state dir and builds the engine.
pub fn engine(g: &GlobalArgs) -> Result<Engine, CliError> {
    engine_at(&state_dir(g)?)
}

/// Opens state directory `root` and builds the engine.
pub fn engine_at(root: &Path) -> Result<Engine, CliError> {
    let root = root.to_path_buf();
    let layout = StateLayout::new(&root);
    let store = Store::open(layout.clone())?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(ErrorCode::Internal, format!("cannot find the agentctl binary: {e}")))?;
    let provider = LocalProvider::new(exe, root, layout.runs_dir());
    let settings = settings()?;
    let config = EngineConfig {
        user_agents_file: config_dir().map(|d| d.join("agents.toml")),
        user_workflows_dir: config_dir().map(|d| d.join("workflows")),
        max_concurrent_runs: settings.max_concurrent_runs,
        isolation: settings.isolation(config_dir().as_deref()),
        shadow: settings.shadow(),
        router_model: settings.router_model(config_dir().as_deref()),
        ..EngineConfig::default()
    };
    Ok(Engine::new(store, Arc::new(provider), config))
}

/// The user's `config.toml` (the defaults when there is none).
pub fn settings() -> Result<crate::settings::Settings, CliError> {
    match config_dir() {
        Some(d) => crate::settings::Settings::load(&d.join("config.toml")),
        None => Ok(crate::settings::Settings::default()),
    }
}

/// The current directory, or `--repo`.
pub fn repo_dir(repo: Option<&Path>) -> Result<PathBuf, CliError> {
    match repo {
        Some(r) => absolute(r),
        None => std::env::current_dir()
            .map_err(|e| CliError::new(ErrorCode::Io, format!("cannot read the current directory: {e}"))),
    }
}
