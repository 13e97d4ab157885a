//! Whether an agent can run on this machine: its program found on PATH, and its version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agents::AgentDef;
use serde::Serialize;

/// What we know about an agent's program here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// Full path of the program, when found.
    pub path: Option<PathBuf>,
    /// First line the program printed for its version arguments.
    pub version: Option<String>,
}

impl Availability {
    pub fn available(&self) -> bool {
        self.path.is_some()
    }
}

/// Finds `program` the way exec does: as a path if it has a slash, else on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    find_program_on(program, std::env::var_os("PATH").as_deref())
}

/// As [`find_program`], on the search path `path` (a `PATH` value) rather than this process's.
pub fn find_program_on(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
}

/// Finds a definition's program: a relative path with a slash names a file of the repository
/// (the agent runs in a worktree of it), anything else is looked up like exec does.
pub fn locate(program: &str, repo: Option<&Path>) -> Option<PathBuf> {
    locate_on(program, repo, std::env::var_os("PATH").as_deref())
}

/// As [`locate`], on the search path `path` (the `PATH` the agent will get).
pub fn locate_on(program: &str, repo: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    match repo {
        Some(repo) if program.contains('/') && !program.starts_with('/') => {
            find_program_on(&repo.join(program).to_string_lossy(), path)
        }
        _ => find_program_on(program, path),
    }
}

/// Finds the program (see [`locate`]) and, if `with_version`, asks it for its version (2 s
/// limit).
pub fn probe(def: &AgentDef, repo: Option<&Path>, with_version: bool) -> Availability {
    let Some(program) = def.program() else {
        return Availability {
            path: None,
            version: None,
        };
    };
    let path = locate(program, repo);
    let version = match (&path, with_version && !def.version_args.is_empty()) {
        (Some(p), true) => version_of(p, &def.version_args),
        _ => None,
    };
    Availability { path, version }
}

fn version_of(program: &Path, args: &[String]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// One agent as `agentctl agents` and `GET /v1/agents` show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct AgentRow {
    pub name: String,
    pub available: bool,
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub description: String,
    pub origin: String,
    pub prompt_via: model::PromptVia,
    pub tty: bool,
    pub install_hint: String,
    /// Recent outcomes of this agent's runs in this state directory (see [`Engine::fill_stats`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<AgentStats>,
}

/// How an agent's recent runs ended.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct AgentStats {
    /// Finished runs counted (the most recent, at most [`STATS_WINDOW`]).
    pub runs: u32,
    pub succeeded: u32,
    /// `succeeded / runs`.
    pub success_rate: f64,
    /// Median wall-clock time of those runs, from start to finish.
    pub median_duration_ms: Option<u64>,
}

/// How many recent finished runs per agent [`AgentStats`] counts.
pub const STATS_WINDOW: usize = 50;

impl crate::Engine {
    /// Fills each row's `stats` from the runs of this state directory.
    pub fn fill_stats(&self, rows: &mut [AgentRow]) -> Result<(), crate::EngineError> {
        let stats = self.agent_stats()?;
        for row in rows {
            row.stats = stats.get(&row.name).cloned();
        }
        Ok(())
    }

    /// Recent outcome statistics of every agent that has finished runs.
    pub fn agent_stats(&self) -> Result<std::collections::BTreeMap<String, AgentStats>, crate::EngineError> {
        Ok(stats_of(&self.finished_runs()?))
    }

    /// Every finished run, newest first.
    pub(crate) fn finished_runs(&self) -> Result<Vec<store::RunRecord>, crate::EngineError> {
        Ok(self.store.list(&store::RunFilter {
            states: model::RunState::ALL.into_iter().filter(|s| s.is_terminal()).collect(),
            ..Default::default()
        })?)
    }
}

/// [`AgentStats`] of each agent in `finished` (newest first).
pub(crate) fn stats_of(finished: &[store::RunRecord]) -> std::collections::BTreeMap<String, AgentStats> {
    // Newest first: the first STATS_WINDOW of each agent are its recent ones.
    let mut by_agent: std::collections::BTreeMap<String, Vec<&store::RunRecord>> = Default::default();
    for r in finished {
        let runs = by_agent.entry(r.agent.clone()).or_default();
        if runs.len() < STATS_WINDOW {
            runs.push(r);
        }
    }
    by_agent
        .into_iter()
        .map(|(agent, runs)| {
            let succeeded = runs.iter().filter(|r| r.state == model::RunState::Succeeded).count() as u32;
            let mut durations: Vec<u64> = runs
                .iter()
                .filter_map(|r| {
                    let d = r.finished_at?.duration_since(r.started_at?);
                    Some(d.as_millis().max(0) as u64)
                })
                .collect();
            durations.sort_unstable();
            let stats = AgentStats {
                runs: runs.len() as u32,
                succeeded,
                success_rate: f64::from(succeeded) / runs.len().max(1) as f64,
                median_duration_ms: durations.get(durations.len() / 2).copied(),
            };
            (agent, stats)
        })
        .collect()
}

/// Every agent known from the presets, `user_file` and `repo`'s definitions, with its
/// availability; versions are probed when `versions`. A repository's own definitions are its
/// code: listing agents in a fresh clone must not run them, so their version commands are
/// never probed (presets and the user's are).
pub fn agent_rows(
    user_file: Option<&Path>,
    repo: Option<&Path>,
    versions: bool,
) -> Result<Vec<AgentRow>, crate::EngineError> {
    let registry = agents::load_registry(user_file, repo)?;
    let repo_file = repo.map(|r| r.join(".agentctl").join("agents.toml"));
    Ok(registry
        .iter()
        .map(|(name, def, origin)| {
            let command = name == agents::presets::COMMAND;
            let from_repo = matches!((origin, &repo_file), (agents::Origin::File(p), Some(r)) if p == r);
            let avail = if command {
                Availability {
                    path: None,
                    version: None,
                }
            } else {
                probe(def, repo, versions && !from_repo)
            };
            AgentRow {
                name: name.to_owned(),
                available: command || avail.available(),
                path: avail.path,
                version: avail.version,
                tags: def.tags.clone(),
                description: def.description.clone(),
                origin: origin.describe(),
                prompt_via: def.prompt_via,
                tty: def.tty,
                install_hint: def.install_hint.clone(),
                stats: None,
            }
        })
        .collect())
}
