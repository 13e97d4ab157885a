//! Workflows: steps (an agent with a prompt, or a gate command) joined by edges that a step's
//! verdict selects, with bounded cycles and a cap on step executions. This module owns the
//! definition (the shape of `.agentctl/workflows/NAME.toml`), its validation, and the pure
//! decisions a supervisor makes between steps: which edge a verdict takes, which cycle a step is
//! in, and when the workflow ends. [`progress`] folds a run's events into where the workflow
//! stands, so a supervisor that starts again after a crash decides exactly as the first one would.

pub mod progress;
pub mod prompt;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::state::RunState;

pub use progress::{Attempt, MessageRecord, Progress};

/// The verdict of a step that exited with status 0 and sent no verdict of its own.
pub const SUCCESS: &str = "success";
/// The verdict of a step that failed (non-zero exit, killed, could not start) and sent none.
pub const FAILURE: &str = "failure";

/// Upper bound on the implicit `max_hops` of a workflow that sets none.
const IMPLICIT_MAX_HOPS_CAP: u64 = 1000;

/// A workflow definition, as written in TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Total step executions allowed. Default: the number of steps times the product of every
    /// edge's `max_cycles` (enough for every bounded loop to run out), at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<u32>,
    /// The first step (default: the first one listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    pub steps: Vec<StepDef>,
    #[serde(default)]
    pub edges: Vec<EdgeDef>,
    /// Path policy for the workflow's runs, over each agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyDef>,
}

/// One step: an agent given a prompt, or a gate (a shell command whose exit status is the verdict).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub id: String,
    /// The agent that does the step (a preset or a defined agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The prompt template (`{{task}}`, `{{messages}}`, `{{cycle}}`, `{{max_cycles}}`,
    /// `{{remaining_hops}}`, `{{step}}`, `{{hop}}`, `{{run_id}}`). Default: the task, then the
    /// messages for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A shell command run in the worktree instead of an agent (e.g. `cargo test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// A limit on this step (e.g. `"10m"`, `"90s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl StepDef {
    /// What does the step: `agent NAME` or `gate`.
    pub fn doer(&self) -> String {
        match (&self.agent, &self.gate) {
            (Some(a), _) => a.clone(),
            (None, Some(_)) => "gate".to_owned(),
            (None, None) => "?".to_owned(),
        }
    }
}

/// A possible move from one step to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeDef {
    pub from: String,
    pub to: String,
    /// The verdict that selects this edge. Without it the edge is taken after a step that
    /// succeeded (exit status 0) when no edge names its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Passes allowed through the loop this edge closes: the edge is taken at most
    /// `max_cycles - 1` times. Every cycle of the graph needs one bounded edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cycles: Option<u32>,
}

/// How a workflow ended, recorded with the step that ended it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkflowEnd {
    pub state: RunState,
    pub reason: String,
    /// A bound (a loop's `max_cycles`, or `max_hops`) stopped the workflow.
    #[serde(default)]
    pub exhausted: bool,
}

/// What follows a finished step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run `step` next, reached by edge number `edge`.
    Next { step: String, edge: u32 },
    /// The workflow is over.
    End(WorkflowEnd),
}

impl WorkflowDef {
    /// The first step's id.
    pub fn start(&self) -> &str {
        self.start
            .as_deref()
            .or_else(|| self.steps.first().map(|s| s.id.as_str()))
            .unwrap_or("")
    }

    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Total step executions allowed (the explicit `max_hops`, or the implicit bound).
    pub fn max_hops(&self) -> u32 {
        if let Some(h) = self.max_hops {
            return h;
        }
        let product = self
            .edges
            .iter()
            .filter_map(|e| e.max_cycles)
            .fold(1u64, |acc, m| acc.saturating_mul(u64::from(m.max(1))));
        let bound = (self.steps.len() as u64).saturating_mul(product);
        bound.clamp(1, IMPLICIT_MAX_HOPS_CAP) as u32
    }

    /// Everything wrong with the definition that can be told without knowing the agents
    /// (unknown or duplicate steps, unreachable steps, cycles without a bound, bad prompts).
    /// Empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push("the workflow has no `name`".to_owned());
        }
        if self.steps.is_empty() {
            out.push("the workflow has no steps (add a [[steps]] table)".to_owned());
            return out;
        }
        if self.max_hops == Some(0) {
            out.push("`max_hops` must be at least 1".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            if !valid_id(&s.id) {
                out.push(format!(
                    "step {} has id {:?}: use letters, digits, `-` and `_`",
                    i + 1,
                    s.id
                ));
            }
            if !seen.insert(s.id.as_str()) {
                out.push(format!("step id `{}` is used twice", s.id));
            }
            match (&s.agent, &s.gate) {
                (Some(_), Some(_)) => out.push(format!("step `{}` has both `agent` and `gate`: pick one", s.id)),
                (None, None) => out.push(format!("step `{}` needs an `agent` or a `gate`", s.id)),
                (None, Some(g)) if g.trim().is_empty() => out.push(format!("step `{}` has an empty `gate`", s.id)),
                (None, Some(_)) if s.prompt.is_some() => {
                    out.push(format!("step `{}` is a gate and takes no `prompt`", s.id))
                }
                _ => {}
            }
            if let Some(p) = &s.prompt
                && let Err(e) = prompt::check(p)
            {
                out.push(format!("step `{}`: {e}", s.id));
            }
        }
        if let Some(start) = &self.start
            && self.step(start).is_none()
        {
            out.push(format!("`start` names unknown step `{start}`"));
        }
        let mut edges_ok = true;
        for (i, e) in self.edges.iter().enumerate() {
            for (end, id) in [("from", &e.from), ("to", &e.to)] {
                if self.step(id).is_none() {
                    edges_ok = false;
                    out.push(format!(
                        "edge {} ({} → {}): `{end}` names unknown step `{id}`",
                        i + 1,
                        e.from,
                        e.to
                    ));
                }
            }
            if e.max_cycles == Some(0) {
                out.push(format!(
                    "edge {} ({} → {}): `max_cycles` must be at least 1",
                    i + 1,
                    e.from,
                    e.to
                ));
            }
            if e.when.as_deref().is_some_and(|w| !valid_id(w)) {
                out.push(format!(
                    "edge {} ({} → {}): `when` must be one word (letters, digits, `-`, `_`)",
                    i + 1,
                    e.from,
                    e.to
                ));
            }
        }
        if !edges_ok || !out.is_empty() {
            return out;
        }
        let reachable = self.reachable_from(self.start());
        for s in &self.steps {
            if !reachable.contains(s.id.as_str()) {
                out.push(format!(
                    "step `{}` is unreachable from `{}`: no edge leads to it",
                    s.id,
                    self.start()
                ));
            }
        }
        if let Some(cycle) = self.unbounded_cycle() {
            out.push(format!(
                "the cycle {} has no bound: set `max_cycles` on one of its edges",
                cycle.join(" → ")
            ));
        }
        out
    }

    fn reachable_from<'a>(&'a self, start: &'a str) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(s) = todo.pop() {
            if !seen.insert(s) {
                continue;
            }
            todo.extend(self.edges.iter().filter(|e| e.from == s).map(|e| e.to.as_str()));
        }
        seen
    }

    /// A cycle made only of edges without `max_cycles`, as the steps along it (first repeated
    /// at the end).
    fn unbounded_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = self.steps.iter().map(|s| (s.id.as_str(), Mark::New)).collect();
        let ids: Vec<&str> = self.steps.iter().map(|s| s.id.as_str()).collect();
        for root in ids {
            if marks[root] != Mark::New {
                continue;
            }
            // Depth-first with an explicit stack of (node, next edge index to look at).
            let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
            marks.insert(root, Mark::Open);
            while let Some((node, at)) = stack.last_mut() {
                let node = *node;
                let next = self
                    .edges
                    .iter()
                    .enumerate()
                    .skip(*at)
                    .find(|(_, e)| e.from == node && e.max_cycles.is_none());
                match next {
                    None => {
                        marks.insert(node, Mark::Done);
                        stack.pop();
                    }
                    Some((i, e)) => {
                        *at = i + 1;
                        match marks[e.to.as_str()] {
                            Mark::Open => {
                                let from = stack.iter().position(|(n, _)| *n == e.to).unwrap_or(0);
                                let mut cycle: Vec<String> =
                                    stack[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                                cycle.push(e.to.clone());
                                return Some(cycle);
                            }
                            Mark::New => {
                                marks.insert(e.to.as_str(), Mark::Open);
                                stack.push((e.to.as_str(), 0));
                            }
                            Mark::Done => {}
                        }
                    }
                }
            }
        }
        None
    }

    /// Steps reachable from `start` along edges without `max_cycles`.
    fn reachable_unbounded<'a>(&'a self, start: &'a str) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(s) = todo.pop() {
            if !seen.insert(s) {
                continue;
            }
            todo.extend(
                self.edges
                    .iter()
                    .filter(|e| e.from == s && e.max_cycles.is_none())
                    .map(|e| e.to.as_str()),
            );
        }
        seen
    }

    /// The steps of the loop closed by bounded edge `edge`: every step on a path from its
    /// target back to its source that takes no other bounded edge (so an inner loop's body
    /// does not swallow the outer loop's steps).
    fn loop_body<'a>(&'a self, edge: &'a EdgeDef) -> BTreeSet<&'a str> {
        self.reachable_unbounded(&edge.to)
            .into_iter()
            .filter(|s| self.reachable_unbounded(s).contains(edge.from.as_str()))
            .collect()
    }

    /// How often each edge counts as taken for the bounds, given the edges taken so far in
    /// order: taking a bounded edge starts every loop nested inside its loop afresh (each pass
    /// of an outer loop gets the inner loop's full `max_cycles`).
    pub fn loop_counts(&self, taken_in_order: &[u32]) -> BTreeMap<u32, u32> {
        let bodies: Vec<Option<BTreeSet<&str>>> = self
            .edges
            .iter()
            .map(|e| e.max_cycles.map(|_| self.loop_body(e)))
            .collect();
        let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
        for &i in taken_in_order {
            *counts.entry(i).or_default() += 1;
            let Some(Some(outer)) = bodies.get(i as usize) else {
                continue;
            };
            for (j, body) in bodies.iter().enumerate() {
                if let Some(inner) = body
                    && j as u32 != i
                    && inner.len() < outer.len()
                    && inner.is_subset(outer)
                {
                    counts.remove(&(j as u32));
                }
            }
        }
        counts
    }

    /// The cycle `step` is in (1-based) and how many its loop allows, given how often each
    /// edge counts as taken ([`WorkflowDef::loop_counts`]). A step in no bounded loop is in
    /// cycle 1 of 1; in nested loops the innermost (smallest) one counts.
    pub fn cycle_of(&self, step: &str, taken: &BTreeMap<u32, u32>) -> (u32, u32) {
        let mut best: Option<(usize, u32, u32)> = None;
        for (i, e) in self.edges.iter().enumerate() {
            let Some(max) = e.max_cycles else { continue };
            let body = self.loop_body(e);
            if !body.contains(step) {
                continue;
            }
            let cycle = taken.get(&(i as u32)).copied().unwrap_or(0) + 1;
            if best.is_none_or(|(size, _, _)| body.len() < size) {
                best = Some((body.len(), cycle.min(max), max));
            }
        }
        best.map(|(_, c, m)| (c, m)).unwrap_or((1, 1))
    }

    /// What follows step `step`, which ended with `verdict` (its own, or `success`/`failure`
    /// from its exit) and exit status zero or not (`exit_ok`), given how often each edge counts
    /// as taken ([`WorkflowDef::loop_counts`]) and the step executions done, this one included.
    pub fn decide(
        &self,
        step: &str,
        verdict: &str,
        exit_ok: bool,
        taken: &BTreeMap<u32, u32>,
        hops_done: u32,
    ) -> Decision {
        let from_here = || self.edges.iter().enumerate().filter(|(_, e)| e.from == step);
        let chosen = from_here()
            .find(|(_, e)| e.when.as_deref() == Some(verdict))
            .or_else(|| exit_ok.then(|| from_here().find(|(_, e)| e.when.is_none())).flatten());
        let Some((i, edge)) = chosen else {
            return Decision::End(if exit_ok {
                WorkflowEnd {
                    state: RunState::Succeeded,
                    reason: format!("workflow finished after step `{step}` (verdict `{verdict}`)"),
                    exhausted: false,
                }
            } else {
                WorkflowEnd {
                    state: RunState::Failed,
                    reason: format!("step `{step}` failed (verdict `{verdict}`) and no edge leads on from it"),
                    exhausted: false,
                }
            });
        };
        let i = i as u32;
        if let Some(max) = edge.max_cycles {
            let done = taken.get(&i).copied().unwrap_or(0);
            if done + 1 >= max {
                return Decision::End(WorkflowEnd {
                    state: RunState::Failed,
                    reason: format!(
                        "exhausted: cycle {max} of {max} done and step `{step}` still says `{verdict}` \
                         (the edge {} → {} allows {max} cycles)",
                        edge.from, edge.to
                    ),
                    exhausted: true,
                });
            }
        }
        let max_hops = self.max_hops();
        if hops_done >= max_hops {
            return Decision::End(WorkflowEnd {
                state: RunState::Failed,
                reason: format!(
                    "exhausted: {hops_done} of max_hops {max_hops} step executions done; `{}` would be next",
                    edge.to
                ),
                exhausted: true,
            });
        }
        Decision::Next {
            step: edge.to.clone(),
            edge: i,
        }
    }
}

/// Step ids and verdicts: letters, digits, `-`, `_`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests;
