//! The user's settings file, `<config dir>/config.toml` (`AGENTCTL_CONFIG_DIR`,
//! `$XDG_CONFIG_HOME/agentctl` or `~/.config/agentctl`). Every key is optional; an unknown key,
//! a wrong type or a TOML error is `INVALID_CONFIG` naming the file.
//!
//! ```toml
//! max_concurrent_runs = 4   # more runs wait `pending`, first created first started
//!
//! [[webhooks]]              # `agentctl serve` POSTs run events here, signed
//! url = "https://hooks.example.com/agentctl"   # http:// or https://
//! secret_env = "AGENTCTL_WEBHOOK_SECRET"
//! events = ["finished"]     # all event types when absent
//! ca_file = "private-ca.pem" # more trusted roots for https (relative: to this file's dir)
//!
//! [sandbox]
//! mode = "on"                # default for runs that do not say (--sandbox)
//! allow_domains = ["pypi.org", "*.npmjs.org"]   # every run's proxy allows these
//! read_only = ["~/.rustup"]  # more paths every sandbox shows, read-only
//!
//! [limits]                   # defaults for every run (--memory, --cpus, --pids, --disk win)
//! memory = "4G"
//! cpus = 2
//! pids = 512
//! disk = "10G"
//!
//! [policy]                   # path policy under every agent's (see docs/sandbox.md)
//! forbidden = [".github/workflows/**"]
//!
//! [secrets]                  # where named secrets come from (--secret NAME, secret_env)
//! GITHUB_TOKEN = "cmd:gh auth token"
//!
//! [shadow]                   # shadow runs (--shadow): gates every change must pass first
//! gates = ["cargo test --offline"]
//! gate_timeout = "15m"       # each gate's time limit (default 10m)
//!
//! [router]                   # routing (`route`, `run --agent auto`)
//! model = "~/.cache/agentctl/all-MiniLM-L6-v2"  # the semantic tier's model (an `embed` build)
//! ```

use std::path::{Path, PathBuf};

use model::ErrorCode;
use serde::Deserialize;

use crate::exit::CliError;

/// What `config.toml` may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// At most this many runs of a state directory active at once.
    pub max_concurrent_runs: Option<u32>,
    /// Where `agentctl serve` POSTs run events.
    #[serde(default)]
    pub webhooks: Vec<WebhookSetting>,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub limits: LimitSettings,
    /// The path policy under every agent's.
    pub policy: Option<model::policy::PolicyDef>,
    /// Where named secrets come from: `env:VAR`, `file:PATH` or `cmd:COMMAND`.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub shadow: ShadowSettings,
    #[serde(default)]
    pub router: RouterSettings,
}

/// `[router]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// The directory of the semantic tier's sentence-embedding model (`~/` is the home
    /// directory; a relative path is relative to the configuration directory).
    pub model: Option<String>,
}

/// `[shadow]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSettings {
    /// Commands every shadow run's change must pass before it is promoted.
    #[serde(default)]
    pub gates: Vec<String>,
    /// Each gate's time limit (`30s`, `10m`, ...).
    pub gate_timeout: Option<String>,
}

/// `[sandbox]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    pub mode: Option<model::SandboxMode>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// More paths every sandbox shows read-only (`~/` is the home directory).
    #[serde(default)]
    pub read_only: Vec<String>,
}

/// `[limits]`: defaults for every run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub memory: Option<model::policy::ByteSize>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
    pub disk: Option<model::policy::ByteSize>,
}

impl Settings {
    /// `[shadow]`, as the engine takes it (checked by [`Settings::load`]).
    pub fn shadow(&self) -> engine::shadow::ShadowDefaults {
        engine::shadow::ShadowDefaults {
            gates: self.shadow.gates.clone(),
            gate_timeout_ms: self
                .shadow
                .gate_timeout
                .as_deref()
                .and_then(|t| crate::cli::parse_duration(t).ok())
                .map(|d| d.as_millis() as u64),
        }
    }

    /// The router's model directory: `AGENTCTL_ROUTER_MODEL`, else `[router] model`; `dir` is
    /// the configuration directory.
    pub fn router_model(&self, dir: Option<&Path>) -> Option<PathBuf> {
        if let Some(env) = std::env::var_os("AGENTCTL_ROUTER_MODEL").filter(|v| !v.is_empty()) {
            // Relative to the current directory, like any path given on the command line.
            let env = PathBuf::from(env);
            return Some(std::path::absolute(&env).unwrap_or(env));
        }
        let model = self.router.model.as_deref().filter(|m| !m.is_empty())?;
        Some(match home_path(model) {
            Some(p) => p,
            None => match dir {
                Some(d) => d.join(model),
                None => PathBuf::from(model),
            },
        })
    }

    /// What runs get when they do not say; `dir` is the configuration directory.
    pub fn isolation(&self, dir: Option<&Path>) -> engine::isolation::IsolationDefaults {
        engine::isolation::IsolationDefaults {
            sandbox: self.sandbox.mode,
            allow_domains: self.sandbox.allow_domains.clone(),
            limits: model::ResourceLimitsSpec {
                memory_bytes: self.limits.memory.map(|b| b.bytes()),
                cpus: self.limits.cpus,
                pids: self.limits.pids,
                disk_bytes: self.limits.disk.map(|b| b.bytes()),
            },
            policy: self.policy.clone(),
            secret_sources: self.secrets.clone(),
            secrets_file: dir.map(|d| d.join("secrets.env")).filter(|p| p.exists()),
            read_only: self
                .sandbox
                .read_only
                .iter()
                .map(|p| home_path(p).unwrap_or_else(|| PathBuf::from(p)))
                .collect(),
        }
    }
}

/// `~/REST` as a path in the home directory (`None` for any other path, or without `HOME`).
fn home_path(p: &str) -> Option<PathBuf> {
    let rest = p.strip_prefix("~/")?;
    Some(PathBuf::from(std::env::var_os("HOME")?).join(rest))
}

/// One `[[webhooks]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSetting {
    pub url: String,
    /// The signing secret, inline…
    pub secret: Option<String>,
    /// …or the name of the environment variable holding it (read when `serve` starts).
    pub secret_env: Option<String>,
    /// Event types to send (all when absent).
    pub events: Option<Vec<String>>,
    /// A PEM file of root certificates to trust for an `https://` URL besides the system's;
    /// relative to the settings file's directory.
    pub ca_file: Option<PathBuf>,
}

impl Settings {
    /// The webhooks, with their secrets and `ca_file`s resolved, each checked (URL scheme and
    /// form, secret, trusted roots) so a bad one is reported with the file it is in.
    pub fn webhooks(&self, file: &Path) -> Result<Vec<api::webhooks::Webhook>, CliError> {
        let bad = |msg: String| CliError::new(ErrorCode::InvalidConfig, format!("{}: {msg}", file.display()));
        self.webhooks
            .iter()
            .map(|w| {
                let secret = match (&w.secret, &w.secret_env) {
                    (Some(s), None) => s.clone(),
                    (None, Some(var)) => {
                        std::env::var(var).map_err(|_| bad(format!("webhook {}: ${var} is not set", w.url)))?
                    }
                    _ => {
                        return Err(bad(format!(
                            "webhook {}: give exactly one of secret, secret_env",
                            w.url
                        )));
                    }
                };
                let hook = api::webhooks::Webhook {
                    url: w.url.clone(),
                    secret,
                    events: w.events.clone(),
                    ca_file: w
                        .ca_file
                        .as_ref()
                        .map(|f| file.parent().unwrap_or(Path::new("")).join(f)),
                };
                api::webhooks::validate(std::slice::from_ref(&hook)).map_err(|e| {
                    let mut err = bad(e.message);
                    if let Some(h) = e.hint {
                        err = err.hint(h);
                    }
                    err
                })?;
                Ok(hook)
            })
            .collect()
    }
}

impl Settings {
    /// Reads `file`; a missing file is the defaults.
    pub fn load(file: &Path) -> Result<Settings, CliError> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => {
                return Err(CliError::new(
                    ErrorCode::InvalidConfig,
                    format!("{}: {e}", file.display()),
                ));
            }
        };
        let settings: Settings = toml::from_str(&text).map_err(|e| {
            CliError::new(ErrorCode::InvalidConfig, format!("{}: {e}", file.display())).hint("fix the file named above")
        })?;
        for (name, source) in &settings.secrets {
            if let Err(e) = agents::secrets::parse_source(name, source) {
                return Err(
                    CliError::new(ErrorCode::InvalidConfig, format!("{}: [secrets] {e}", file.display()))
                        .hint("a source is `env:VAR`, `file:PATH` or `cmd:COMMAND`; values belong in the secrets file"),
                );
            }
        }
        let l = &settings.limits;
        let bad_limit = if l.cpus.is_some_and(|c| !(c > 0.0 && c <= 1024.0)) {
            Some("[limits] cpus must be more than 0 and at most 1024")
        } else if l.pids == Some(0) {
            Some("[limits] pids must be at least 1")
        } else if l.disk.is_some_and(|d| d.bytes() == 0) {
            Some("[limits] disk must be more than 0")
        } else if l.memory.is_some_and(|m| m.bytes() < sandbox::limits::MIN_MEMORY_BYTES) {
            Some("[limits] memory must be at least 4 MiB")
        } else {
            None
        };
        if let Some(msg) = bad_limit {
            return Err(
                CliError::new(ErrorCode::InvalidConfig, format!("{}: {msg}", file.display()))
                    .hint("fix the key, or remove it for no default limit"),
            );
        }
        let bad_timeout = settings
            .shadow
            .gate_timeout
            .as_deref()
            .and_then(|t| match crate::cli::parse_duration(t) {
                Ok(d) if d.is_zero() => Some("[shadow] gate_timeout must be more than 0".to_owned()),
                Ok(_) => None,
                Err(e) => Some(format!("[shadow] gate_timeout: {e}")),
            });
        let bad_gate = settings
            .shadow
            .gates
            .iter()
            .any(|g| g.trim().is_empty() || g.contains('\0'))
            .then(|| "[shadow] gates must be non-empty commands".to_owned());
        let bad_shadow = bad_timeout.or(bad_gate);
        if let Some(msg) = bad_shadow {
            return Err(
                CliError::new(ErrorCode::InvalidConfig, format!("{}: {msg}", file.display()))
                    .hint("see docs/shadow.md"),
            );
        }
        if settings.max_concurrent_runs == Some(0) {
            return Err(CliError::new(
                ErrorCode::InvalidConfig,
                format!("{}: max_concurrent_runs must be at least 1", file.display()),
            )
            .hint("remove the key for no cap"));
        }
        Ok(settings)
    }
}
