//! The run's path policy, applied by its supervisor to every batch of changes the watcher
//! reports: the facts of each changed path (after canonicalization), the policy's verdict, a
//! `policy_violation` event, and what `on_violation` says to do — nothing more (`flag`), put
//! the violating paths back as the last good checkpoint has them (`revert`), or stop the agent
//! (`stop`). Executable bits are judged against the run's base commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use model::policy::{OnViolation, Policy, Violation};
use model::{EventData, StopReason};
use vcs::Git;

pub(crate) struct PathGuard {
    policy: Policy,
    repo: PathBuf,
    base_commit: String,
    /// Stop the agent: the policy says so and it was broken.
    pub stop: Option<String>,
}

/// What to do after a batch was checked.
pub(crate) struct Verdict {
    pub violations: Vec<Violation>,
    pub action: OnViolation,
}

impl PathGuard {
    pub fn new(def: &model::policy::PolicyDef, repo: &Path, base_commit: &str) -> Option<PathGuard> {
        let policy = Policy::new(def)
            .map_err(|problems| tracing::warn!(?problems, "the path policy is invalid; not applied"))
            .ok()?;
        Some(PathGuard {
            policy,
            repo: repo.to_path_buf(),
            base_commit: base_commit.to_owned(),
            stop: None,
        })
    }

    /// Checks the paths changed in `worktree` (relative); `usage` is the worktree's size when
    /// a quota applies.
    pub fn check(&mut self, worktree: &Path, changed: &[PathBuf]) -> Option<Verdict> {
        if changed.is_empty() {
            return None;
        }
        // The watcher does not look inside `.git` directories: a repository planted in the
        // worktree shows as its parent directory changing, so look for one there.
        let mut changed = changed.to_vec();
        for rel in changed.clone() {
            let nested = rel.join(".git");
            let planted = std::fs::symlink_metadata(worktree.join(&rel)).is_ok_and(|m| m.is_dir())
                && std::fs::symlink_metadata(worktree.join(&nested)).is_ok();
            if planted && !changed.contains(&nested) {
                changed.push(nested);
            }
        }
        let changed = &changed[..];
        let modes = self.base_modes(changed);
        let facts = crate::policy::path_facts(worktree, changed, &|p: &str| modes.get(p).copied());
        let usage = self
            .policy
            .disk_quota()
            .and_then(|_| crate::policy::disk_usage(worktree).ok());
        let violations = self.policy.evaluate(&facts, usage);
        if violations.is_empty() {
            return None;
        }
        let action = self.policy.on_violation();
        if action == OnViolation::Stop && self.stop.is_none() {
            self.stop = Some(format!(
                "path policy broken: {}",
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        Some(Verdict { violations, action })
    }

    /// Whether each path was executable in the base commit (absent: not there).
    fn base_modes(&self, paths: &[PathBuf]) -> BTreeMap<String, bool> {
        let mut args: Vec<String> = vec!["ls-tree".into(), "-z".into(), self.base_commit.clone(), "--".into()];
        args.extend(paths.iter().map(|p| p.to_string_lossy().into_owned()));
        let Ok(out) = Git::new(&self.repo).run(&args) else {
            return BTreeMap::new();
        };
        out.split('\0')
            .filter_map(|entry| {
                let (meta, path) = entry.split_once('\t')?;
                Some((path.to_owned(), meta.starts_with("100755")))
            })
            .collect()
    }

    /// The reason to stop the agent, once.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.as_ref().map(|_| StopReason::Policy)
    }
}

/// The event for a verdict, with what was done.
pub(crate) fn event(verdict: &Verdict, action: &str) -> EventData {
    EventData::PolicyViolation {
        violations: verdict.violations.clone(),
        action: action.to_owned(),
    }
}
