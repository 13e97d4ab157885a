//! Repositories a sandboxed agent planted in its worktree. A `.git` below the worktree's root
//! carries its own config — `core.fsmonitor`, filters, hooks — which git runs when you review
//! the worktree (`git status` there, or in the planted directory), outside any sandbox. After
//! each sandboxed process, every such `.git` is moved out of the worktree into the run's
//! directory (`<run>/quarantine/`), kept for inspection, and the move recorded as a
//! `policy_violation` with the action `quarantined`. The files of the planted directory stay.

use std::fs;
use std::path::{Path, PathBuf};

use model::policy::{Rule, Violation};

/// Most directory entries looked at per sweep: a worktree larger than this is swept in part.
const MAX_ENTRIES: usize = 2_000_000;

/// Every `.git` below `worktree` (not its own), symlinks not followed, in sorted order; a
/// planted repository's own content is not searched further.
fn planted(worktree: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut budget = MAX_ENTRIES;
    let mut stack = vec![worktree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let mut names: Vec<_> = entries.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            if budget == 0 {
                return found;
            }
            budget -= 1;
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if e.file_name() == ".git" {
                if dir != worktree {
                    found.push(path);
                }
                continue;
            }
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// What a sweep did: the planted `.git`s it moved out, and those it could not (left in place,
/// to be recorded as flagged). Paths relative to the worktree.
#[derive(Default)]
pub(crate) struct Swept {
    pub moved: Vec<Violation>,
    pub stuck: Vec<Violation>,
}

/// Moves every planted `.git` out of `worktree` into `run_dir/quarantine/`.
pub(crate) fn sweep(worktree: &Path, run_dir: &Path) -> Swept {
    let mut swept = Swept::default();
    let planted = planted(worktree);
    if planted.is_empty() {
        return swept;
    }
    let into = run_dir.join("quarantine");
    let made = fs::create_dir_all(&into);
    for path in planted {
        let rel = path
            .strip_prefix(worktree)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let n = fs::read_dir(&into).map(|d| d.count()).unwrap_or(0);
        let dest = into.join(format!("{n}-{}", rel.replace('/', "%")));
        let violation = Violation {
            path: rel,
            rule: Rule::GitMetadata,
        };
        let moved = match &made {
            Ok(()) => fs::rename(&path, &dest),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        match moved {
            Ok(()) => swept.moved.push(violation),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot quarantine a planted repository");
                swept.stuck.push(violation);
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_repositories_move_out_and_the_root_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("wt");
        let run = dir.path().join("run");
        fs::create_dir_all(wt.join("a/b/.git/hooks")).unwrap();
        fs::write(wt.join("a/b/.git/config"), "[core]\n\tfsmonitor = evil\n").unwrap();
        fs::write(wt.join("a/b/file.txt"), "kept").unwrap();
        fs::write(wt.join(".git"), "gitdir: /elsewhere\n").unwrap();
        fs::create_dir_all(wt.join("c")).unwrap();
        fs::write(wt.join("c/.git"), "gitdir: /x\n").unwrap();
        let swept = sweep(&wt, &run);
        assert!(swept.stuck.is_empty());
        let paths: Vec<&str> = swept.moved.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["a/b/.git", "c/.git"]);
        assert!(wt.join(".git").is_file());
        assert!(!wt.join("a/b/.git").exists() && wt.join("a/b/file.txt").exists());
        assert_eq!(fs::read_dir(run.join("quarantine")).unwrap().count(), 2);
        assert!(sweep(&wt, &run).moved.is_empty());
    }
}
