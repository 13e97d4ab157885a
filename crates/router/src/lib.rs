//! The router: recommends which agent fits a task, from the agents' capability tags and
//! descriptions, the tasks they handled well before, and their recent track record.
//!
//! The caller describes each agent as a [`Candidate`] (name, tags, description, whether it can
//! run here, its [`History`] of recent runs, and examples of tasks it succeeded at), builds a
//! [`Router`] once — that precomputes the indexes — and asks [`Router::recommend`] for each
//! task. The answer is a ranked list of [`Recommendation`]s with a confidence in `[0, 1]` and
//! human-readable reasons. Scoring is lexical (BM25 over two fields, tags weighing more than the
//! description, with stemming and a synonym table) plus a nearest-neighbour vote of the
//! agents' examples (the task's similarity to the tasks each agent handled well), blended with
//! a smoothed success rate when an agent has enough history; see [`Router`] for the exact rules.
//!
//! The core does no IO and keeps no state between queries. [`eval`] is the exception: it reads
//! labelled sets of tasks from files, turns one into examples, and measures a router's accuracy
//! and latency on a set (leave-one-out when the set is also the examples).

pub mod eval;
mod lexicon;
#[cfg(feature = "embed")]
mod minilm;
mod router;
mod semantic;
mod text;

use serde::Serialize;

#[cfg(feature = "embed")]
pub use minilm::{MODEL_FILES, MiniLm};
pub use router::Router;
pub use semantic::{CachingEncoder, EncodeError, Encoder};

/// One agent the router may recommend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The agent's name, as `agentctl run --agent` takes it.
    pub name: String,
    /// Capability tags (`review`, `test`, …); they weigh more than the description.
    pub tags: Vec<String>,
    /// Free text describing what the agent is good at.
    pub description: String,
    /// Whether the agent can run on this machine; an unavailable agent is never recommended.
    pub available: bool,
    /// Recent outcomes, if the agent has run before.
    pub history: Option<History>,
    /// Tasks the agent handled well: in production, the prompts of its recent succeeded runs;
    /// in evaluation, a labelled set ([`eval::examples_by_agent`]). A task similar to several
    /// of them counts for the agent (see [`Router`]); none is fine. Only the first 64 content
    /// words of each are indexed.
    pub examples: Vec<String>,
}

impl Candidate {
    /// An available candidate without history or examples.
    pub fn new(name: impl Into<String>, tags: &[&str], description: impl Into<String>) -> Self {
        Candidate {
            name: name.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            description: description.into(),
            available: true,
            history: None,
            examples: Vec::new(),
        }
    }
}

/// An agent's recent outcomes: how many runs finished, and how many of them succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub runs: u32,
    /// Capped at `runs` when used.
    pub succeeded: u32,
}

/// One ranked answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    pub agent: String,
    /// How sure the router is, in `[0, 1]`; recommendations are sorted by it, highest first.
    pub confidence: f64,
    /// Why, for people: `matched tags: review, security`, `success rate 92% over 12 runs`.
    pub reasons: Vec<String>,
}
