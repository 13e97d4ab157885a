//! The shadow workspace: a run whose agent works on a shadow branch, and whose change reaches
//! the run's own branch only once it is validated — the path policy over everything it
//! changed, then the gate commands on a clean checkout of it — by one compare-and-swap ref
//! update ("promotion"). [`ShadowSpec`] is what the caller asked for (part of the
//! [`crate::RunSpec`]); [`ShadowPlan`] what it resolved to (part of the [`crate::LaunchPlan`]);
//! [`Promotion`] is the outcome of one attempt, as recorded and returned.

use serde::{Deserialize, Serialize};

use crate::policy::Violation;

/// Each gate gets at most this long unless configured otherwise.
pub const DEFAULT_GATE_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// How the reason of a run that failed because its automatic promotion was refused begins
/// (the reasons follow): `run` and `wait` exit with `PROMOTION_REFUSED`'s code for it.
pub const PROMOTION_REFUSED_REASON: &str = "promotion refused, the branch is unchanged";

/// When a shadow run's change is promoted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromoteMode {
    /// When the agent (or workflow) succeeded, as the run ends; a refusal fails the run.
    #[default]
    Auto,
    /// Only on `agentctl promote RUN` (or `POST /v1/runs/{id}/promote`).
    Manual,
}

impl PromoteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PromoteMode::Auto => "auto",
            PromoteMode::Manual => "manual",
        }
    }
}

impl std::str::FromStr for PromoteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(PromoteMode::Auto),
            "manual" => Ok(PromoteMode::Manual),
            other => Err(format!("unknown promotion mode `{other}` (expected auto or manual)")),
        }
    }
}

/// A shadow workspace as asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// `auto` (default) or `manual`.
    #[serde(default)]
    pub promote: PromoteMode,
    /// Commands (`sh -c`) that must all exit 0 on a clean checkout of the change; added to
    /// the configured `[shadow] gates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<String>,
    /// Each gate's time limit (default: the configuration's, else 10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub gate_timeout_ms: Option<u64>,
}

/// A shadow workspace as resolved at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShadowPlan {
    /// The branch the agent works on (`agentctl/_shadow/<run id>`); the run's own branch
    /// stays where it started until a promotion moves it.
    pub branch: String,
    pub promote: PromoteMode,
    /// The gates, configured ones first.
    pub gates: Vec<String>,
    pub gate_timeout_ms: u64,
}

/// How one gate of a promotion ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateResult {
    pub command: String,
    /// Absent: killed (its time limit, or a stop), or it could not start.
    pub exit_code: Option<i32>,
    pub elapsed_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The end of its output (stdout and stderr together).
    #[serde(default)]
    pub output_tail: String,
}

impl GateResult {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Why it did not pass, in words.
    pub fn failure(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        Some(match (self.exit_code, self.timed_out) {
            (_, true) => format!("gate `{}` timed out after {} ms", self.command, self.elapsed_ms),
            (Some(code), _) => format!("gate `{}` failed (exit code {code})", self.command),
            (None, _) => format!("gate `{}` did not finish", self.command),
        })
    }
}

/// One promotion attempt and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Promotion {
    /// Whether the run's branch now holds the change.
    pub promoted: bool,
    /// The run's branch (the target).
    pub branch: String,
    /// The commit validated and (if promoted) put on the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Where the branch was before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Commits the promotion added to the branch.
    #[serde(default)]
    pub commits: u64,
    /// Files the change touches (base commit → promoted commit).
    #[serde(default)]
    pub files_changed: u64,
    /// The change was already on the branch: nothing was done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    /// Why it was refused (empty when promoted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The path-policy violations found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// Every gate run, in order (the first failure ends the list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateResult>,
}

/// Where a shadow run's promotion stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    /// Not tried yet (the run is active, or waits for `agentctl promote`).
    Pending,
    /// An `auto` run that did not succeed: nothing tries to promote it (`agentctl promote`
    /// still can).
    NotAttempted,
    /// Being validated now (or the attempt was cut short).
    Validating,
    Promoted,
    Refused,
}

/// A shadow run's workspace and promotion, folded from its events (`show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShadowSummary {
    /// The branch the agent worked on.
    pub branch: String,
    /// The run's branch, which a promotion moves.
    pub target: String,
    pub promote: PromoteMode,
    pub gates: Vec<String>,
    pub status: PromotionStatus,
    /// The commit last validated (and, when promoted, put on the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Why the last attempt was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl ShadowSummary {
    /// The summary of a run's events; `None` for a run without a shadow workspace.
    pub fn from_events(events: &[crate::Event]) -> Option<ShadowSummary> {
        use crate::EventData;
        let (plan, target) = events.iter().find_map(|e| match &e.data {
            EventData::Created { plan, .. } => Some((plan.shadow.clone()?, plan.branch.clone())),
            _ => None,
        })?;
        let mut s = ShadowSummary {
            branch: plan.branch,
            target,
            promote: plan.promote,
            gates: plan.gates,
            status: PromotionStatus::Pending,
            commit: None,
            reasons: Vec::new(),
        };
        for e in events {
            match &e.data {
                EventData::PromotionStarted { commit, .. } => {
                    s.status = PromotionStatus::Validating;
                    s.commit = Some(commit.clone());
                    s.reasons.clear();
                }
                EventData::Promoted { commit, .. } => {
                    s.status = PromotionStatus::Promoted;
                    s.commit = Some(commit.clone());
                    s.reasons.clear();
                }
                EventData::PromotionRefused { commit, reasons, .. } => {
                    s.status = PromotionStatus::Refused;
                    s.commit = commit.clone().or(s.commit.take());
                    s.reasons = reasons.clone();
                }
                EventData::Finished { state, .. }
                    if s.status == PromotionStatus::Pending
                        && s.promote == PromoteMode::Auto
                        && *state != crate::RunState::Succeeded =>
                {
                    s.status = PromotionStatus::NotAttempted;
                }
                _ => {}
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_failures_say_why() {
        let mut g = GateResult {
            command: "make test".into(),
            exit_code: Some(0),
            elapsed_ms: 5,
            timed_out: false,
            output_tail: String::new(),
        };
        assert!(g.passed() && g.failure().is_none());
        g.exit_code = Some(2);
        assert_eq!(g.failure().unwrap(), "gate `make test` failed (exit code 2)");
        g.exit_code = None;
        g.timed_out = true;
        assert!(g.failure().unwrap().contains("timed out"));
    }

    #[test]
    fn modes_parse() {
        assert_eq!("manual".parse::<PromoteMode>().unwrap(), PromoteMode::Manual);
        assert!("later".parse::<PromoteMode>().is_err());
    }
}
