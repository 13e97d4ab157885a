//! Where a workflow run stands, folded from its events: steps finished, edges taken, the step
//! in progress (or interrupted), the step decided next, the end, and every message with its
//! delivery. Pure, so the supervisor, a resumed supervisor, `show` and `msgs` all read the same
//! history the same way.
//!
//! Messages: a message belongs to the step execution (hop and attempt) that sent it. It counts
//! only once that execution finished — one interrupted and restarted sends again, and what it
//! sent before is void. A counted message goes to its `to` step, or, without one, to the step
//! decided next; it is delivered into that step's next execution, and marked delivered once
//! that execution finishes (an interrupted one gets it again when restarted).

use std::collections::BTreeMap;

use serde::Serialize;

use super::WorkflowEnd;
use crate::event::{Event, EventData};

/// One execution of a step that started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Attempt {
    pub step: String,
    /// Step executions so far, this one included (1-based).
    pub hop: u32,
    /// 1, or more when an interrupted execution was restarted.
    pub attempt: u32,
    pub cycle: u32,
    pub max_cycles: u32,
    /// The checkpoint the step started from (restored when it is restarted).
    pub from_checkpoint: Option<u32>,
    /// Messages given to this execution (their event sequence numbers).
    pub delivered: Vec<u64>,
}

/// A finished step execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct StepRecord {
    pub step: String,
    pub hop: u32,
    pub attempt: u32,
    pub cycle: u32,
    pub max_cycles: u32,
    pub verdict: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    /// The checkpoint taken when it ended.
    pub checkpoint: Option<u32>,
    /// The step decided next (none when the workflow ended here).
    pub next: Option<String>,
    pub elapsed_ms: u64,
    /// Why its process could not be started, if it could not.
    pub error: Option<String>,
}

/// Where a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Sent by the step execution in progress; counts once it finishes.
    InFlight,
    /// Waiting for its recipient's next execution.
    Pending,
    /// Given to a finished execution of its recipient.
    Delivered,
    /// Sent by an execution that was interrupted and restarted: superseded.
    Void,
    /// No step will receive it (the workflow ended, or it named no step and none followed).
    Undeliverable,
}

/// One message between steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MessageRecord {
    /// The `message_sent` event's sequence number: the message's id within the run.
    pub seq: u64,
    pub ts: jiff::Timestamp,
    pub from: String,
    /// The step it was addressed to, if any.
    pub to: Option<String>,
    /// The step that receives it (`to`, or the step that followed the sender).
    pub recipient: Option<String>,
    pub verdict: Option<String>,
    pub text: String,
    /// The sender's execution.
    pub hop: u32,
    pub attempt: u32,
    pub status: MessageStatus,
    /// The execution (hop) it was delivered to.
    pub delivered_hop: Option<u32>,
}

/// A workflow run's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Progress {
    /// Finished step executions.
    pub hops_done: u32,
    /// Times each edge (by index) was taken.
    pub taken: BTreeMap<u32, u32>,
    /// The edges taken, in order (see `WorkflowDef::loop_counts`).
    pub edges_taken: Vec<u32>,
    /// The execution started and not finished (running, or interrupted by a crash).
    pub current: Option<Attempt>,
    /// An interrupted execution a resumed supervisor has not restarted yet.
    pub restart: Option<Attempt>,
    /// The step decided next and not started yet.
    pub next: Option<String>,
    /// How the workflow ended, once a step ended it.
    pub end: Option<WorkflowEnd>,
    pub steps: Vec<StepRecord>,
    pub messages: Vec<MessageRecord>,
    /// Times a supervisor took the workflow up again after a crash.
    pub resumes: u32,
    /// The last checkpoint recorded.
    pub last_checkpoint: Option<u32>,
}

impl Progress {
    /// Folds a run's events (in order).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Progress {
        let mut p = Progress::default();
        for e in events {
            p.apply(e);
        }
        p
    }

    /// Whether any step has started.
    pub fn started(&self) -> bool {
        self.current.is_some() || self.restart.is_some() || !self.steps.is_empty()
    }

    /// Applies one event.
    pub fn apply(&mut self, e: &Event) {
        match &e.data {
            EventData::StepStarted {
                step,
                hop,
                attempt,
                cycle,
                max_cycles,
                from_checkpoint,
                delivered,
                ..
            } => {
                self.restart = None;
                self.next = None;
                self.current = Some(Attempt {
                    step: step.clone(),
                    hop: *hop,
                    attempt: *attempt,
                    cycle: *cycle,
                    max_cycles: *max_cycles,
                    from_checkpoint: *from_checkpoint,
                    delivered: delivered.clone(),
                });
            }
            EventData::MessageSent {
                from,
                to,
                verdict,
                text,
                hop,
                attempt,
            } => self.messages.push(MessageRecord {
                seq: e.seq,
                ts: e.ts,
                from: from.clone(),
                to: to.clone(),
                recipient: None,
                verdict: verdict.clone(),
                text: text.clone(),
                hop: *hop,
                attempt: *attempt,
                status: MessageStatus::InFlight,
                delivered_hop: None,
            }),
            EventData::StepFinished {
                step,
                hop,
                attempt,
                exit_code,
                signal,
                verdict,
                checkpoint,
                next,
                edge,
                end,
                elapsed_ms,
                error,
            } => {
                let current = self.current.take();
                let delivered = current.as_ref().map(|c| c.delivered.clone()).unwrap_or_default();
                for m in &mut self.messages {
                    if m.hop == *hop && m.attempt == *attempt && m.status == MessageStatus::InFlight {
                        m.recipient = m.to.clone().or_else(|| next.clone());
                        m.status = if m.recipient.is_some() && end.is_none() {
                            MessageStatus::Pending
                        } else {
                            MessageStatus::Undeliverable
                        };
                    } else if delivered.contains(&m.seq) && m.status == MessageStatus::Pending {
                        m.status = MessageStatus::Delivered;
                        m.delivered_hop = Some(*hop);
                    }
                }
                if end.is_some() {
                    for m in &mut self.messages {
                        if m.status == MessageStatus::Pending {
                            m.status = MessageStatus::Undeliverable;
                        }
                    }
                }
                self.hops_done = self.hops_done.max(*hop);
                if let Some(edge) = edge {
                    *self.taken.entry(*edge).or_default() += 1;
                    self.edges_taken.push(*edge);
                }
                self.next = next.clone();
                self.end = end.clone();
                let (cycle, max_cycles) = current.as_ref().map(|c| (c.cycle, c.max_cycles)).unwrap_or((1, 1));
                self.steps.push(StepRecord {
                    step: step.clone(),
                    hop: *hop,
                    attempt: *attempt,
                    cycle,
                    max_cycles,
                    verdict: verdict.clone(),
                    exit_code: *exit_code,
                    signal: signal.clone(),
                    checkpoint: *checkpoint,
                    next: next.clone(),
                    elapsed_ms: *elapsed_ms,
                    error: error.clone(),
                });
            }
            EventData::WorkflowResumed { .. } => {
                self.resumes += 1;
                if let Some(cur) = self.current.take() {
                    for m in &mut self.messages {
                        if m.hop == cur.hop && m.attempt == cur.attempt && m.status == MessageStatus::InFlight {
                            m.status = MessageStatus::Void;
                        }
                    }
                    self.restart = Some(cur);
                }
            }
            EventData::Checkpointed { n, .. } => self.last_checkpoint = Some(*n),
            _ => {}
        }
    }

    /// Messages waiting for `step`'s next execution, oldest first.
    pub fn pending_for<'a>(&'a self, step: &'a str) -> impl Iterator<Item = &'a MessageRecord> + 'a {
        self.messages
            .iter()
            .filter(move |m| m.status == MessageStatus::Pending && m.recipient.as_deref() == Some(step))
    }

    /// The last verdict sent by the execution in progress, if it sent one.
    pub fn current_verdict(&self) -> Option<&str> {
        let cur = self.current.as_ref()?;
        self.messages
            .iter()
            .rev()
            .filter(|m| m.hop == cur.hop && m.attempt == cur.attempt && m.status == MessageStatus::InFlight)
            .find_map(|m| m.verdict.as_deref())
    }
}
