//! Messages between workflow steps, from the engine's side: sending one from inside a step
//! (handed to the run's supervisor, which records it against the step in progress), and
//! reading a run's messages and progress.

use std::time::Duration;

use model::provider::{ControlRequest, RequestOutcome};
use model::workflow::{MessageRecord, Progress};
use model::{ErrorCode, EventData, RunId, RunState};

pub use crate::supervisor::MessageReceipt;
use crate::{Engine, EngineError};

/// How long `msg send` waits for the supervisor to record a message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A message to send from inside a step.
#[derive(Clone, Debug, Default)]
pub struct OutgoingMessage {
    /// The sending step, as the sender believes (checked by the supervisor).
    pub from: Option<String>,
    pub to: Option<String>,
    pub verdict: Option<String>,
    pub text: String,
}

impl Engine {
    /// Records a message from the workflow step now running in run `id`. Only the run's
    /// supervisor records it, against the step in progress.
    pub fn send_message(&self, id: &RunId, msg: OutgoingMessage) -> Result<MessageReceipt, EngineError> {
        let rec = self.refresh(id, "msg")?;
        if !super::is_workflow_run(&rec.agent) {
            return Err(EngineError::new(
                ErrorCode::NotAWorkflowRun,
                format!("run {id} is not a workflow run: there is no step to send from"),
            ));
        }
        let not_running = || {
            EngineError::new(
                ErrorCode::InvalidStateTransition,
                format!(
                    "run {id} is {}: messages are sent while one of its steps runs",
                    rec.state
                ),
            )
        };
        if !matches!(rec.state, RunState::Running | RunState::Paused | RunState::Stopping) {
            return Err(not_running());
        }
        let req = ControlRequest::Message {
            request_id: crate::checkpoints::request_id(),
            from: msg.from,
            to: msg.to,
            verdict: msg.verdict,
            text: msg.text,
        };
        match self.provider.request(id, &req, SEND_TIMEOUT)? {
            RequestOutcome::Answered(text) => crate::checkpoints::parse_answer(&text),
            RequestOutcome::NotTaken => Err(not_running()),
        }
    }

    /// Records a message from inside a sandboxed step, which sees neither the store nor the
    /// run's other files: only its run's control directory (`AGENTCTL_CONTROL_DIR`). The
    /// supervisor checks the message as it does any other.
    pub fn send_message_from_sandbox(
        control_dir: &std::path::Path,
        msg: OutgoingMessage,
    ) -> Result<MessageReceipt, EngineError> {
        let req = ControlRequest::Message {
            request_id: crate::checkpoints::request_id(),
            from: msg.from,
            to: msg.to,
            verdict: msg.verdict,
            text: msg.text,
        };
        match supervise::local::exchange(control_dir, &req, SEND_TIMEOUT, &|| Ok(None))? {
            RequestOutcome::Answered(text) => crate::checkpoints::parse_answer(&text),
            RequestOutcome::NotTaken => Err(EngineError::new(
                ErrorCode::InvalidStateTransition,
                "no step of this run took the message: messages are sent while a step runs",
            )),
        }
    }

    /// A workflow run's progress, folded from its events (`None` for a single-agent run).
    pub fn workflow_progress(&self, id: &RunId) -> Result<Option<Progress>, EngineError> {
        let events = self.store.events(id)?;
        let is_workflow = matches!(
            events.first().map(|e| &e.data),
            Some(EventData::Created { plan, .. }) if plan.workflow.is_some()
        );
        Ok(is_workflow.then(|| Progress::from_events(&events)))
    }

    /// A workflow run's messages, oldest first.
    pub fn messages(&self, id: &RunId) -> Result<Vec<MessageRecord>, EngineError> {
        self.refresh(id, "msgs")?;
        match self.workflow_progress(id)? {
            Some(p) => Ok(p.messages),
            None => Err(EngineError::new(
                ErrorCode::NotAWorkflowRun,
                format!("run {id} is not a workflow run: it has no messages"),
            )),
        }
    }
}
