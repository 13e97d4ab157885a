//! Newtype identifiers. A [`RunId`] is minted before anything of a run exists (UUIDv7, so ids sort
//! by creation time) or supplied by the caller with `--id` for idempotent creation; either way it is
//! safe to use as a file name and inside a git branch name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id of a run: a UUIDv7 when minted, or a caller-chosen name of `[A-Za-z0-9][A-Za-z0-9._-]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^[A-Za-z0-9][A-Za-z0-9._-]*$", "minLength" = 1, "maxLength" = 64))]
pub struct RunId(String);

/// Why a string is not a valid [`RunId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid run id {value:?}: {reason}")]
pub struct InvalidRunId {
    pub value: String,
    pub reason: &'static str,
}

/// The environment variable every process of a run (hooks, agent, workflow steps) gets its
/// run's id in. Anyone can set it: on its own it proves nothing (see
/// `supervise::proctree::group_carries_env` for what it is used to show).
pub const RUN_ID_ENV: &str = "AGENTCTL_RUN_ID";

/// The longest id accepted from a caller.
pub const MAX_RUN_ID_LEN: usize = 64;

impl RunId {
    /// Mints a fresh, time-ordered, collision-free id (UUIDv7).
    pub fn mint() -> Self {
        RunId(uuid::Uuid::now_v7().to_string())
    }

    /// Validates a caller-supplied id.
    pub fn parse(value: &str) -> Result<Self, InvalidRunId> {
        let err = |reason| InvalidRunId {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(err("it is empty"));
        }
        if value.len() > MAX_RUN_ID_LEN {
            return Err(err("it is longer than 64 characters"));
        }
        let mut chars = value.chars();
        let first = chars.next().unwrap_or('-');
        if !first.is_ascii_alphanumeric() {
            return Err(err("it must start with a letter or digit"));
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(err("only letters, digits, '.', '_' and '-' are allowed"));
        }
        if value.contains("..") || value.ends_with(".lock") || value.ends_with('.') {
            return Err(err("it must not contain '..' or end with '.' or '.lock'"));
        }
        Ok(RunId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The git branch a run works on.
    pub fn branch(&self) -> String {
        format!("agentctl/{}", self.0)
    }

    /// The branch the agent of a shadow run works on. `_` cannot start a run id, so no run's
    /// branch is ever in the way.
    pub fn shadow_branch(&self) -> String {
        format!("agentctl/_shadow/{}", self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RunId {
    type Err = InvalidRunId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunId::parse(s)
    }
}

impl TryFrom<String> for RunId {
    type Error = InvalidRunId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        RunId::parse(&value)
    }
}

impl From<RunId> for String {
    fn from(id: RunId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_valid_and_time_ordered() {
        let a = RunId::mint();
        let b = RunId::mint();
        assert!(RunId::parse(a.as_str()).is_ok());
        assert!(a < b, "{a} < {b}");
    }

    #[test]
    fn rejects_unsafe_ids() {
        for bad in ["", "-x", "a/b", "a b", "a..b", "x.lock", "é", &"a".repeat(65)] {
            assert!(RunId::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["fix-flaky-1", "A.b_c", "0"] {
            assert!(RunId::parse(good).is_ok(), "{good:?} rejected");
        }
    }
}
