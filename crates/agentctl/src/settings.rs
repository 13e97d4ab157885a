//! The user's settings file, `<config dir>/config.toml` (`AGENTCTL_CONFIG_DIR`,
//! `$XDG_CONFIG_HOME/agentctl` or `~/.config/agentctl`). Every key is optional; an unknown key,
//! a wrong type or a TOML error is `INVALID_CONFIG` naming the file.
//!
//! ```toml
//! max_concurrent_runs = 4   # more runs wait `pending`, first created first started
//! ```

use std::path::Path;

use model::ErrorCode;
use serde::Deserialize;

use crate::exit::CliError;

/// What `config.toml` may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// At most this many runs of a state directory active at once.
    pub max_concurrent_runs: Option<u32>,
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
