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
