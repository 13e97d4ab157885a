//! Engine tests through its crate API, with a real store and real git repositories. The
//! provider here is a stand-in for a placement that never starts a supervisor — the situation
//! left behind when the command that created a run dies before starting it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineConfig, RunRequest};
use model::provider::{ControlRequest, LogBatch, Provider, ProviderError, SupervisorStatus};
use model::{EventData, RunId, RunState};
use store::{StateLayout, Store};

/// A provider whose supervisors never start (or, with `lock_file`, started and died at once).
struct NeverStarts {
    runs_dir: std::path::PathBuf,
    lock_file: bool,
}

impl Provider for NeverStarts {
    fn name(&self) -> &'static str {
        "never"
    }
    fn create(&self, _: &RunId) -> Result<(), ProviderError> {
        Ok(())
    }
    fn start(&self, run: &RunId) -> Result<(), ProviderError> {
        if self.lock_file {
            // What a supervisor that took the lock and died before recording anything leaves:
            // a free lock file and its pid file.
            let dir = self.runs_dir.join(run.as_str());
            std::fs::write(dir.join("supervisor.lock"), "").unwrap();
            std::fs::write(dir.join("supervisor.pid"), "4242\n").unwrap();
        }
        Ok(())
    }
    fn signal(&self, _: &RunId, _: &ControlRequest) -> Result<(), ProviderError> {
        Ok(())
    }
    fn request(
        &self,
        _: &RunId,
        _: &ControlRequest,
        _: std::time::Duration,
    ) -> Result<model::provider::RequestOutcome, ProviderError> {
        Ok(model::provider::RequestOutcome::NotTaken)
    }
    fn status(&self, run: &RunId) -> Result<SupervisorStatus, ProviderError> {
        let files = supervise::RunFiles::new(self.runs_dir.join(run.as_str()));
        Ok(match files.supervisor_alive().unwrap() {
            Some(true) => SupervisorStatus::Alive { pid: 0 },
            Some(false) if files.pid_path().exists() => SupervisorStatus::Gone,
            _ => SupervisorStatus::NotStarted,
        })
    }
    fn list(&self) -> Result<Vec<RunId>, ProviderError> {
        Ok(Vec::new())
    }
    fn logs(&self, _: &RunId, offset: u64) -> Result<LogBatch, ProviderError> {
        Ok(LogBatch {
            chunks: Vec::new(),
            next_offset: offset,
        })
    }
    fn destroy(&self, _: &RunId) -> Result<(), ProviderError> {
        Ok(())
    }
}

fn repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@e"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("a.txt"), "a\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    repo
}

fn engine(dir: &Path, lock_file: bool, limit: Duration) -> Engine {
    let layout = StateLayout::new(dir.join("state"));
    let store = Store::open(layout.clone()).unwrap();
    let provider = NeverStarts {
        runs_dir: layout.runs_dir(),
        lock_file,
    };
    let config = EngineConfig {
        pending_start_limit: limit,
        ..EngineConfig::default()
    };
    Engine::new(store, Arc::new(provider), config)
}

fn request(repo: &Path) -> RunRequest {
    RunRequest {
        args: vec!["true".into()],
        repo_dir: repo.to_owned(),
        ..RunRequest::default()
    }
}

#[test]
fn a_run_whose_supervisor_never_started_becomes_lost_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let slow = engine(dir.path(), false, Duration::from_secs(3600));
    let run = slow.create_run(request(&repo)).unwrap().run;
    assert_eq!(run.state, RunState::Pending);
    // Within the limit it may still be starting: left alone.
    assert_eq!(slow.refresh(&run.id, "test").unwrap().state, RunState::Pending);
    // Past the limit: lost, with a reason, and `wait` returns instead of hanging.
    let strict = engine(dir.path(), false, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(5));
    let waited = strict.wait(&run.id, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(waited.state, RunState::Lost);
    assert!(waited.reason.unwrap().contains("no supervisor started"));
}

#[test]
fn a_supervisor_that_died_before_taking_the_run_makes_it_lost_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let engine = engine(dir.path(), true, Duration::from_secs(3600));
    let run = engine.create_run(request(&repo)).unwrap().run;
    let rec = engine.refresh(&run.id, "test").unwrap();
    assert_eq!(rec.state, RunState::Lost);
    let events = engine.store().events(&run.id).unwrap();
    assert!(matches!(&events.last().unwrap().data, EventData::Lost { detected_by, .. } if detected_by == "test"));
}

#[test]
fn stopping_a_run_that_never_started_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let engine = engine(dir.path(), false, Duration::from_secs(3600));
    let run = engine.create_run(request(&repo)).unwrap().run;
    let rec = engine.stop(&run.id, Duration::from_secs(1)).unwrap();
    assert_eq!(rec.state, RunState::Cancelled);
    // A cancelled run never started: removing it leaves nothing behind.
    let report = engine.rm(&run.id, false).unwrap();
    assert!(!report.worktree_removed);
    assert!(engine.store().get(&run.id).unwrap().is_none());
}
