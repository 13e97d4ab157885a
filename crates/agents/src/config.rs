//! Loading agent definitions: built-in presets, then the user's config
//! (`$XDG_CONFIG_HOME/agentctl/agents.toml`), then the repository's `.agentctl/agents.toml`; a
//! later definition of the same name replaces an earlier one. Also reads a repository's `.env`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::def::AgentDef;
use crate::presets;

/// Where a definition came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Preset,
    File(PathBuf),
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::Preset => "preset".to_owned(),
            Origin::File(p) => p.display().to_string(),
        }
    }
}

/// A bad configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, AgentDef>,
}

/// All known agent definitions, by name.
#[derive(Clone, Debug, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, (AgentDef, Origin)>,
}

impl AgentRegistry {
    pub fn get(&self, name: &str) -> Option<&AgentDef> {
        self.agents.get(name).map(|(d, _)| d)
    }

    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.agents.get(name).map(|(_, o)| o)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AgentDef, &Origin)> {
        self.agents.iter().map(|(n, (d, o))| (n.as_str(), d, o))
    }

    pub fn names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }

    fn insert_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let file: AgentsFile = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: one_line(&text, &e),
        })?;
        for (name, def) in file.agents {
            validate(&name, &def).map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
            self.agents.insert(name, (def, Origin::File(path.to_owned())));
        }
        Ok(())
    }
}

/// A TOML error as one line: `line L, column C: message`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

fn validate(name: &str, def: &AgentDef) -> Result<(), String> {
    if name == presets::COMMAND {
        return Err("`command` is reserved for `agentctl run -- CMD`".to_owned());
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("agent name {name:?}: use letters, digits, '-' and '_'"));
    }
    if def.command.is_empty() || def.command[0].is_empty() {
        return Err(format!("agent `{name}`: `command` must name a program"));
    }
    Ok(())
}

/// Loads presets, then `user_file`, then `<repo>/.agentctl/agents.toml`.
pub fn load_registry(user_file: Option<&Path>, repo: Option<&Path>) -> Result<AgentRegistry, ConfigError> {
    let mut reg = AgentRegistry::default();
    for (name, def) in presets::presets() {
        reg.agents.insert(name.to_owned(), (def, Origin::Preset));
    }
    if let Some(path) = user_file {
        reg.insert_file(path)?;
    }
    if let Some(repo) = repo {
        reg.insert_file(&repo.join(".agentctl").join("agents.toml"))?;
    }
    Ok(reg)
}

/// Reads `<repo>/.env` (`KEY=VALUE` lines); a missing file is empty.
pub fn read_dotenv(repo: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let path = repo.join(".env");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let iter = dotenvy::from_path_iter(&path).map_err(|e| ConfigError::Invalid {
        path: path.clone(),
        message: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_definitions_override_presets_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".agentctl")).unwrap();
        fs::write(
            dir.path().join(".agentctl/agents.toml"),
            r#"
[agents.claude-code]
command = ["my-claude", "{prompt}"]
tags = ["custom"]

[agents.reviewer]
command = ["review-bot", "--in", "{prompt_file}"]
prompt_via = "file"
secret_env = ["REVIEW_TOKEN"]
description = "reviews"
"#,
        )
        .unwrap();
        let reg = load_registry(None, Some(dir.path())).unwrap();
        assert_eq!(reg.get("claude-code").unwrap().command[0], "my-claude");
        assert_eq!(reg.get("reviewer").unwrap().prompt_via, model::PromptVia::File);
        assert!(reg.get("codex").is_some());

        fs::write(dir.path().join(".agentctl/agents.toml"), "[agents.x]\ncommand = []\n").unwrap();
        let err = load_registry(None, Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("must name a program"), "{err}");
        fs::write(
            dir.path().join(".agentctl/agents.toml"),
            "[agents.x]\ncommand = [\"a\"]\nbogus = 1\n",
        )
        .unwrap();
        assert!(load_registry(None, Some(dir.path())).is_err());
    }

    #[test]
    fn dotenv_is_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".env"), "A=1\n# c\nB=\"two words\"\n").unwrap();
        let vars = read_dotenv(dir.path()).unwrap();
        assert_eq!(vars, vec![("A".into(), "1".into()), ("B".into(), "two words".into())]);
    }
}
