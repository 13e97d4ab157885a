//! Resuming interrupted workflow runs: `agentctl resume RUN`, and the daemon, which looks for
//! workflow runs whose supervisor vanished and starts a new one for each. The new supervisor
//! does the rest (see `supervisor/workflow.rs`); starting two at once is harmless, as only one
//! can take the run's lock.

use std::collections::BTreeMap;

use model::{ErrorCode, RunId, RunState};
use store::{RunFilter, RunRecord};

use crate::{Engine, EngineError};

impl Engine {
    /// Starts a new supervisor for an interrupted workflow run (first noticing, if need be,
    /// that its supervisor is gone). `launch_env` is the environment it starts with (this
    /// process's when `None`). Returns the run as it is once the supervisor took it.
    pub fn resume(&self, id: &RunId, launch_env: Option<&BTreeMap<String, String>>) -> Result<RunRecord, EngineError> {
        let _span = tracing::info_span!("run.resume", run.id = %id).entered();
        let rec = self.refresh(id, "resume")?;
        if !super::is_workflow_run(&rec.agent) {
            return Err(EngineError::new(
                ErrorCode::NotAWorkflowRun,
                format!("run {id} is not a workflow run; only workflows can be resumed"),
            ));
        }
        match rec.state {
            RunState::Interrupted => {}
            s if s.is_terminal() => {
                return Err(EngineError::new(
                    ErrorCode::InvalidStateTransition,
                    format!("run {id} is {s}: it ended and cannot be resumed"),
                ));
            }
            // Its supervisor is alive (or it has not started yet): nothing to resume.
            _ => return Ok(rec),
        }
        self.provider.create(id)?;
        self.provider.start_with_env(id, launch_env)?;
        tracing::info!("supervisor started to resume the workflow");
        // Until the new supervisor records that it took the run, say what is known.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = self.store.sync_run(id)?.unwrap_or_else(|| rec.clone());
            if now.state != RunState::Interrupted || std::time::Instant::now() >= deadline {
                return Ok(now);
            }
            std::thread::sleep(self.config.poll_interval);
        }
    }

    /// The secret variables the run's agents take (`secret_env`) that this process's
    /// environment lacks.
    fn missing_secrets(&self, id: &RunId) -> Result<Vec<String>, EngineError> {
        let events = self.store.events(id)?;
        let Some(model::EventData::Created { plan, .. }) = events.first().map(|e| &e.data) else {
            return Ok(Vec::new());
        };
        Ok(plan
            .secret_env
            .iter()
            .filter(|name| std::env::var_os(name).is_none())
            .cloned()
            .collect())
    }

    /// Resumes every workflow run whose supervisor is gone (the daemon calls this every few
    /// seconds, and once at start). Returns the runs it resumed.
    pub fn resume_interrupted_runs(&self) -> Result<Vec<RunId>, EngineError> {
        let mut states: Vec<RunState> = RunState::ALL.into_iter().filter(|s| s.needs_supervisor()).collect();
        states.push(RunState::Interrupted);
        let runs = self.store.list(&RunFilter {
            states,
            ..Default::default()
        })?;
        let mut out = Vec::new();
        for rec in runs.iter().filter(|r| super::is_workflow_run(&r.agent)) {
            let rec = if rec.state == RunState::Interrupted {
                rec.clone()
            } else {
                self.refresh(&rec.id, "daemon")?
            };
            if rec.state != RunState::Interrupted {
                continue;
            }
            // Secrets are never recorded: they come from the environment the supervisor starts
            // with. A run whose agents need one this process lacks waits for `agentctl resume`
            // from a shell that has it, rather than run its steps without.
            let missing = self.missing_secrets(&rec.id)?;
            if !missing.is_empty() {
                // Said once per run, not every few seconds.
                static TOLD: std::sync::Mutex<std::collections::BTreeSet<String>> =
                    std::sync::Mutex::new(std::collections::BTreeSet::new());
                let first = TOLD.lock().map(|mut t| t.insert(rec.id.to_string())).unwrap_or(true);
                if !first {
                    continue;
                }
                tracing::warn!(
                    run.id = %rec.id,
                    missing = %missing.join(", "),
                    "not resuming: its agents need secrets this daemon's environment lacks; run `agentctl resume` from a shell that has them"
                );
                continue;
            }
            match self.resume(&rec.id, None) {
                Ok(_) => out.push(rec.id.clone()),
                Err(e) => tracing::warn!(run.id = %rec.id, error = %e, "cannot resume workflow run"),
            }
        }
        Ok(out)
    }
}
