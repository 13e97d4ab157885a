//! The agent definition: the data that says how to run one agent CLI.

use std::collections::BTreeMap;

use model::PromptVia;
use serde::{Deserialize, Serialize};

/// How to invoke one agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// The argv template. Placeholders: `{prompt}`, `{prompt_file}`, `{workdir}`.
    pub command: Vec<String>,
    /// How the prompt is delivered.
    #[serde(default)]
    pub prompt_via: PromptVia,
    /// Environment set for the agent (not secret: it is recorded in the run's events).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of secret variables passed through from the caller's environment; their values
    /// are never recorded.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Capability tags (used by the router).
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Run on a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Arguments that print the version (default `["--version"]`).
    #[serde(default = "default_version_args")]
    pub version_args: Vec<String>,
    /// What to tell a user whose machine lacks the binary.
    #[serde(default)]
    pub install_hint: String,
    /// Output format, for parsers (`text`, `claude-stream-json`, `codex-json`,
    /// `gemini-stream-json`, `opencode-json`).
    #[serde(default = "default_output")]
    pub output: String,
    /// Network domains the agent needs (for the sandbox's proxy mode).
    #[serde(default)]
    pub domains: Vec<String>,
    /// The network mode it runs with by default: `none`, `proxy` or `host`. Absent: `proxy` when
    /// `domains` are given, else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<model::NetworkMode>,
    /// Path policy for its runs (`allowed`, `forbidden`, `max_file_size`, `disk_quota`,
    /// `allow_executables`, `on_violation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<model::policy::PolicyDef>,
}

impl Default for AgentDef {
    /// An empty definition with the same defaults as an empty TOML table.
    fn default() -> Self {
        AgentDef {
            command: Vec::new(),
            prompt_via: PromptVia::default(),
            env: BTreeMap::new(),
            secret_env: Vec::new(),
            tags: Vec::new(),
            description: String::new(),
            tty: false,
            version_args: default_version_args(),
            install_hint: String::new(),
            output: default_output(),
            domains: Vec::new(),
            network: None,
            policy: None,
        }
    }
}

fn default_version_args() -> Vec<String> {
    vec!["--version".to_owned()]
}

fn default_output() -> String {
    "text".to_owned()
}

impl AgentDef {
    /// The network mode of its runs unless the caller says otherwise.
    pub fn default_network(&self) -> model::NetworkMode {
        model::NetworkMode::of_agent(self.network, &self.domains)
    }

    /// The program this definition runs (first element of the command).
    pub fn program(&self) -> Option<&str> {
        self.command.first().map(String::as_str)
    }
}
