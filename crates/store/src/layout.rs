//! The on-disk layout of a state directory, versioned. Every path agentctl writes under the state
//! dir is named here and nowhere else.
//!
//! ```text
//! <state>/layout.json              {"version": 1}
//! <state>/agentctl.db              SQLite projection (WAL), rebuildable from the logs
//! <state>/runs/<id>/events.jsonl   the run's event log: the source of truth
//! <state>/runs/<id>/output.jsonl   captured agent output (chunks with timestamps)
//! <state>/runs/<id>/...            supervisor lock, pid, log, control requests, prompt file
//! <state>/worktrees/<id>/          the run's git worktree
//! <state>/locks/                   per-repository worktree locks
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use model::RunId;

/// Version of the state directory layout.
pub const LAYOUT_VERSION: u32 = 1;

/// Paths inside one state directory.
#[derive(Clone, Debug)]
pub struct StateLayout {
    root: PathBuf,
}

/// Why a state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot create or read state dir {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state dir {path} has layout version {found}; this agentctl understands {LAYOUT_VERSION}")]
    Version { path: PathBuf, found: String },
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateLayout { root: root.into() }
    }

    /// Creates the directory tree if needed and checks the layout version.
    pub fn ensure(&self) -> Result<(), LayoutError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayoutError::Io { path, source }
        };
        fs::create_dir_all(self.runs_dir()).map_err(io_err(&self.root))?;
        fs::create_dir_all(self.worktrees_dir()).map_err(io_err(&self.root))?;
        let marker = self.root.join("layout.json");
        match fs::read_to_string(&marker) {
            Ok(text) => {
                let version = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_u64()));
                if version != Some(u64::from(LAYOUT_VERSION)) {
                    return Err(LayoutError::Version {
                        path: self.root.clone(),
                        found: text.trim().to_owned(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Unique per creator: several first commands may race to create a new state dir.
                let tmp = self.root.join(format!(".layout.json.{}", RunId::mint()));
                fs::write(&tmp, format!("{{\"version\": {LAYOUT_VERSION}}}\n")).map_err(io_err(&tmp))?;
                fs::rename(&tmp, &marker).map_err(io_err(&marker))?;
            }
            Err(e) => {
                return Err(LayoutError::Io {
                    path: marker,
                    source: e,
                });
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("agentctl.db")
    }
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    pub fn worktrees_dir(&self) -> PathBuf {
        self.root.join("worktrees")
    }
    pub fn run_dir(&self, id: &RunId) -> PathBuf {
        self.run_file(id, "")
    }
    pub fn events_path(&self, id: &RunId) -> PathBuf {
        self.run_file(id, "events.jsonl")
    }
    /// `runs/<id>/<name>` (the run's directory when `name` is empty), built in one allocation:
    /// every read of a run starts here.
    fn run_file(&self, id: &RunId, name: &str) -> PathBuf {
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + id.as_str().len() + name.len() + 8);
        path.push(&self.root);
        path.push("runs");
        path.push(id.as_str());
        if !name.is_empty() {
            path.push(name);
        }
        path
    }
    pub fn output_path(&self, id: &RunId) -> PathBuf {
        self.run_dir(id).join("output.jsonl")
    }
    pub fn prompt_path(&self, id: &RunId) -> PathBuf {
        self.run_dir(id).join("prompt.md")
    }
    /// Lock files shared by all runs (e.g. per-repository worktree locks).
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn worktree_path(&self, id: &RunId) -> PathBuf {
        self.worktrees_dir().join(id.as_str())
    }

    /// Ids of every run directory present (unordered).
    pub fn run_ids(&self) -> io::Result<Vec<RunId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.runs_dir())? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(id) = RunId::parse(name)
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}
