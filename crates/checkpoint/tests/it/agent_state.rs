//! Checkpoints never touch what belongs to the agent: its index, HEAD, branch, reflogs, or what
//! `git status` tells it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checkpoint::{PathScan, diff, refs, restore};

use crate::support::{Repo, git, git_path, paths};

/// Every file below `dir` (recursively) with its bytes.
fn files_below(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::oracle::all_entries(dir)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(rel, _)| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Everything of the agent's state that a checkpoint must leave alone.
#[derive(Debug, PartialEq, Eq)]
struct AgentState {
    /// The worktree's private git dir (`.git/worktrees/wt`): index, HEAD, logs, ...
    worktree_git_dir: BTreeMap<PathBuf, Vec<u8>>,
    main_index: Vec<u8>,
    main_head: Vec<u8>,
    main_config: Vec<u8>,
    /// `refs/heads` and `logs/` of the shared git dir.
    branches: BTreeMap<PathBuf, Vec<u8>>,
    logs: BTreeMap<PathBuf, Vec<u8>>,
    head: String,
    branch: String,
    status: String,
    main_status: String,
    stash: String,
}

fn agent_state(r: &Repo) -> AgentState {
    let wt_git_dir = PathBuf::from(git(&r.worktree, &["rev-parse", "--absolute-git-dir"]));
    let common = r.main.join(".git");
    AgentState {
        worktree_git_dir: files_below(&wt_git_dir),
        main_index: std::fs::read(common.join("index")).unwrap(),
        main_head: std::fs::read(common.join("HEAD")).unwrap(),
        main_config: std::fs::read(common.join("config")).unwrap(),
        branches: files_below(&common.join("refs/heads")),
        logs: files_below(&common.join("logs")),
        head: git(&r.worktree, &["rev-parse", "HEAD"]),
        branch: git(&r.worktree, &["symbolic-ref", "HEAD"]),
        // --no-optional-locks: this check must not refresh (rewrite) the index itself.
        status: git(
            &r.worktree,
            &[
                "--no-optional-locks",
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
            ],
        ),
        main_status: git(&r.main, &["--no-optional-locks", "status", "--porcelain=v1", "-z"]),
        stash: git(&r.worktree, &["stash", "list"]),
    }
}

#[test]
fn checkpoints_leave_index_head_branch_and_status_alone() {
    let r = Repo::new();
    // Staged, partially staged, unstaged, deleted and untracked changes, and an ignored file.
    r.write("src/lib.rs", b"fn staged() {}\n");
    r.write("staged-new.txt", b"added to the index\n");
    r.write("README.md", b"staged version\n");
    git(&r.worktree, &["add", "src/lib.rs", "staged-new.txt", "README.md"]);
    r.write("README.md", b"unstaged on top of the staged version\n");
    std::fs::remove_file(r.worktree.join("src/deep/x.txt")).unwrap();
    r.write("untracked.txt", b"untracked\n");
    r.write("debug.log", b"ignored\n");
    let before = agent_state(&r);
    assert_eq!(
        std::fs::read(git_path(&r.worktree, "index")).unwrap(),
        before.worktree_git_dir[Path::new("index")]
    );
    let status = before.status.replace('\0', "|");
    assert!(
        status.contains("MM README.md") && status.contains("A  staged-new.txt") && status.contains(" D src/deep/x.txt"),
        "{status}"
    );

    let s = r.snapshotter();
    let mut prev = s.scan_full().unwrap();
    let first = prev;
    let mut parent = r.base;
    for i in 0..12u32 {
        let rel = format!("work/f{}.txt", i % 4);
        r.write(&rel, format!("step {i}\n").as_bytes());
        let tree = if i % 3 == 0 {
            s.scan_full().unwrap()
        } else {
            match s.scan_paths(prev, [Path::new(&rel)]).unwrap() {
                PathScan::Tree { tree, .. } => tree,
                PathScan::NeedsFullScan(why) => panic!("{why}"),
            }
        };
        let commit = s.commit(tree, parent, &format!("checkpoint {i}")).unwrap();
        s.set_ref(&refs::ref_name("state", i), commit).unwrap();
        diff::stats(s.git(), parent, commit, &[]).unwrap();
        prev = tree;
        parent = commit;
    }
    // A rollback to the first checkpoint and forward again leaves the same content.
    let last = prev;
    assert_eq!(s.scan_full().unwrap(), last);
    restore::restore(&s, last, first, &[]).unwrap();
    assert!(!r.worktree.join("work").exists());
    restore::restore(&s, first, last, &paths(&[])).unwrap();
    assert_eq!(s.scan_full().unwrap(), last);
    refs::delete_run(&vcs::Git::new(s.worktree()), "state").unwrap();
    // The checkpoints' files are the agent's own business now; remove them to compare status.
    std::fs::remove_dir_all(r.worktree.join("work")).unwrap();

    let after = agent_state(&r);
    assert_eq!(after, before);
}

#[test]
fn a_missing_worktree_index_is_not_created() {
    // No index yet (nothing ever checked out into it): scans must not create the agent's.
    let r = Repo::new();
    let index = git_path(&r.worktree, "index");
    std::fs::remove_file(&index).unwrap();
    let s = r.snapshotter();
    let t = s.scan_full().unwrap();
    assert_eq!(t, r.tree_of(r.base));
    assert!(!index.exists(), "the agent's index was created");
    assert!(r.index.exists(), "the private index is kept between scans");
}
