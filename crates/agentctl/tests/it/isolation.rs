//! The user's checkout is sacred: runs work in their own worktree and branch, and the user's
//! working tree, index and HEAD are byte-identical before and after. Also many runs at once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::{Env, git};

/// Everything about the user's checkout that a run must not change.
fn snapshot(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for rel in [".git/index", ".git/HEAD"] {
        out.insert(rel.to_owned(), std::fs::read(repo.join(rel)).unwrap());
    }
    out.insert(
        "refs/heads/main".to_owned(),
        git(repo, &["rev-parse", "refs/heads/main"]).into_bytes(),
    );
    out.insert(
        "status".to_owned(),
        git(repo, &["status", "--porcelain=v2", "--untracked-files=all"]).into_bytes(),
    );
    walk(repo, repo, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".git" {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn the_users_checkout_is_untouched() {
    let env = Env::new();
    // A dirty checkout: staged, modified and untracked files.
    std::fs::write(env.repo.join("README.md"), "# sample\nlocal edit\n").unwrap();
    std::fs::write(env.repo.join("staged.txt"), "staged\n").unwrap();
    git(&env.repo, &["add", "staged.txt"]);
    std::fs::write(env.repo.join("untracked.txt"), "mine\n").unwrap();
    let before = snapshot(&env.repo);
    let (v, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        "echo agent > README.md && echo new > new.txt && rm src/lib.txt && git add -A && \
         git -c user.name=a -c user.email=a@b commit -qm agent-work && git checkout -q --detach",
    ]);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(before, snapshot(&env.repo), "the run changed the user's checkout");
    // The agent's work is on its own branch.
    let branch = v["branch"].as_str().unwrap();
    assert_eq!(
        git(&env.repo, &["log", "-1", "--format=%s", branch]).trim(),
        "agent-work"
    );
    let wt = Path::new(v["worktree"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(wt.join("README.md")).unwrap(), "agent\n");
    // The worktree starts from the committed base, not from the user's uncommitted edits.
    assert!(!wt.join("untracked.txt").exists());
}

#[test]
fn base_selects_the_starting_commit() {
    let env = Env::new();
    git(&env.repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(env.repo.join("feature.txt"), "f\n").unwrap();
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "feature"]);
    git(&env.repo, &["checkout", "-q", "main"]);
    let (v, _) = env.json(&["run", "--base", "feature", "--", "test", "-f", "feature.txt"]);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["base"], "feature");
    assert_eq!(
        v["base_commit"].as_str().unwrap(),
        git(&env.repo, &["rev-parse", "feature"]).trim()
    );
    let (v, _) = env.json(&["run", "--", "test", "-f", "feature.txt"]);
    assert_eq!(v["state"], "failed");
}

#[test]
fn twenty_concurrent_runs_keep_separate_logs_and_worktrees() {
    let env = Env::new();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            env.start(&[
                "--id",
                &format!("par-{i}"),
                "--",
                "sh",
                "-c",
                &format!("for j in 1 2 3 4 5; do echo run-{i}-line-$j; sleep 0.05; done; echo {i} > mine.txt"),
            ])
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let v = env.wait(id);
        assert_eq!(v["state"], "succeeded", "{v}");
        let expected: String = (1..=5).map(|j| format!("run-{i}-line-{j}\n")).collect();
        assert_eq!(env.logs(id), expected);
        let wt = Path::new(v["worktree"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(wt.join("mine.txt")).unwrap(), format!("{i}\n"));
    }
    let (list, _) = env.json(&["ls"]);
    assert_eq!(list["runs"].as_array().unwrap().len(), 20);
    let worktrees = git(&env.repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(worktrees.matches("branch refs/heads/agentctl/par-").count(), 20);
}

#[test]
fn rm_and_gc_save_uncaptured_work_as_checkpoints_until_refs_are_pruned() {
    let env = Env::new();
    let (dirty, _) = env.json(&["run", "--id", "dirty", "--", "sh", "-c", "echo wip > wip.txt"]);
    let (later, _) = env.json(&["run", "--id", "later", "--", "true"]);
    let (clean, _) = env.json(&["run", "--id", "clean", "--", "true"]);
    let (committed, _) = env.json(&[
        "run",
        "--id",
        "committed",
        "--",
        "sh",
        "-c",
        "echo x > x.txt && git add x.txt && git -c user.name=a -c user.email=a@b commit -qm x",
    ]);
    // Someone edits worktrees after their runs ended: no checkpoint has that yet.
    let dirty_wt = Path::new(dirty["worktree"].as_str().unwrap()).to_owned();
    std::fs::write(dirty_wt.join("after.txt"), "edited later\n").unwrap();
    let later_wt = Path::new(later["worktree"].as_str().unwrap()).to_owned();
    std::fs::write(later_wt.join("notes.txt"), "gc must keep this\n").unwrap();
    // rm saves it as a checkpoint, then removes the worktree.
    let (rm, out) = env.json(&["rm", "dirty"]);
    assert!(out.status.success(), "{rm}");
    let cp = &rm["removed"][0]["checkpoint"];
    assert_eq!(cp["created"], true, "{rm}");
    assert_eq!(cp["trigger"], "rm", "{rm}");
    let dirty_ref = cp["git_ref"].as_str().unwrap().to_owned();
    assert!(!dirty_wt.exists());
    assert_eq!(
        git(&env.repo, &["show", &format!("{dirty_ref}:after.txt")]),
        "edited later\n"
    );
    assert_eq!(git(&env.repo, &["show", &format!("{dirty_ref}:wip.txt")]), "wip\n");
    // gc too.
    let (gc, _) = env.json(&["gc", "--older-than", "0s"]);
    let items = gc["runs"].as_array().unwrap();
    let item = |id: &str| items.iter().find(|i| i["id"] == id).cloned().unwrap_or_default();
    assert_eq!(item("later")["action"], "removed", "{gc}");
    let later_ref = item("later")["checkpoint"].as_str().unwrap().to_owned();
    assert_eq!(
        git(&env.repo, &["show", &format!("{later_ref}:notes.txt")]),
        "gc must keep this\n"
    );
    assert_eq!(item("clean")["action"], "removed");
    assert!(!later_wt.exists() && !Path::new(clean["worktree"].as_str().unwrap()).exists());
    assert_eq!(env.show("clean")["worktree_removed"], true);
    // A branch with commits of its own is kept by rm; an empty one is deleted.
    let (rm, out) = env.json(&["rm", "committed", "clean"]);
    assert!(out.status.success(), "{rm}");
    let removed = rm["removed"].as_array().unwrap();
    assert_eq!(removed[0]["branch_deleted"], false);
    assert_eq!(removed[0]["branch_commits"], 1);
    assert_eq!(removed[1]["branch_deleted"], true);
    assert!(!Path::new(committed["worktree"].as_str().unwrap()).exists());
    assert!(git(&env.repo, &["branch", "--list", "agentctl/committed"]).contains("agentctl/committed"));
    assert_eq!(env.json(&["show", "committed"]).0["error"]["code"], "RUN_NOT_FOUND");
    // The refs stay until asked for: a dry run lists, --prune-refs deletes.
    let refs = || {
        git(
            &env.repo,
            &["for-each-ref", "--format=%(refname)", "refs/agentctl/runs/"],
        )
    };
    assert!(refs().contains("/dirty/") && refs().contains("/later/"), "{}", refs());
    let (dry, _) = env.json(&["gc", "--prune-refs", "--dry-run"]);
    let pruned: Vec<&str> = dry["pruned_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["run"].as_str().unwrap())
        .collect();
    assert!(pruned.contains(&"dirty") && pruned.contains(&"later"), "{dry}");
    assert!(refs().contains("/dirty/"));
    // A removed run's id cannot be reused while its checkpoints are kept.
    let (again, _) = env.json(&["run", "--id", "dirty", "--", "true"]);
    assert_eq!(again["error"]["code"], "RUN_ID_CONFLICT", "{again}");
    assert!(
        again["error"]["hint"].as_str().unwrap().contains("gc --prune-refs"),
        "{again}"
    );
    // Refs of a run this state dir never had (another state dir's) are not ours to prune.
    git(&env.repo, &["update-ref", "refs/agentctl/runs/foreign/0", "HEAD"]);
    // A run the same gc removes keeps its refs (its last state was just saved) until the next.
    let (fresh, _) = env.json(&["run", "--id", "fresh", "--", "sh", "-c", "echo f > f.txt"]);
    assert!(Path::new(fresh["worktree"].as_str().unwrap()).exists());
    let (gc, out) = env.json(&["gc", "--older-than", "0s", "--prune-refs"]);
    assert!(out.status.success(), "{gc}");
    assert_eq!(gc["runs"][0]["id"], "fresh", "{gc}");
    let pruned: Vec<&str> = gc["pruned_refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["run"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, ["clean", "committed", "dirty", "later"], "{gc}");
    let left: Vec<String> = refs()
        .lines()
        .map(|r| r.rsplit_once('/').unwrap().0.to_owned())
        .collect();
    assert!(
        left.iter().all(|r| r.ends_with("/fresh") || r.ends_with("/foreign")),
        "{left:?}"
    );
    assert!(left.iter().any(|r| r.ends_with("/fresh")), "{left:?}");
    let (gc, _) = env.json(&["gc", "--prune-refs"]);
    assert_eq!(gc["pruned_refs"][0]["run"], "fresh", "{gc}");
    assert_eq!(
        refs().trim(),
        "refs/agentctl/runs/foreign/0",
        "every run of ours has its worktree gone, so are its refs"
    );
    // Their object stores went with the refs; the kept branch is whole in the repository.
    for run in ["clean", "committed", "dirty", "later", "fresh"] {
        assert!(
            !env.repo.join(".git/agentctl/stores").join(run).exists(),
            "run {run}'s store is still there"
        );
    }
    let alternates = std::fs::read_to_string(env.repo.join(".git/objects/info/alternates")).unwrap_or_default();
    assert!(!alternates.contains("stores/"), "{alternates}");
    git(&env.repo, &["log", "-p", "agentctl/committed"]);
    git(&env.repo, &["fsck", "--no-dangling"]);
    // A gc'd run keeps its records: its checkpoints stay listed, marked pruned, and a diff
    // of one says so with a code of its own instead of git's "bad object".
    let (list, out) = env.json(&["checkpoints", "later"]);
    assert!(out.status.success(), "{list}");
    let cps = list["checkpoints"].as_array().unwrap();
    assert!(cps.len() >= 2, "{list}");
    for cp in cps {
        assert_eq!(cp["pruned"], true, "{list}");
        assert!(cp["files_changed"].is_null() && cp["insertions"].is_null(), "{list}");
    }
    let text = env.run(&["checkpoints", "later"]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("(pruned)"));
    for args in [["diff", "later", "--to", "last"], ["diff", "later", "--from", "0"]] {
        let (err, out) = env.json(&args);
        assert_eq!(err["error"]["code"], "CHECKPOINT_PRUNED", "{err}");
        assert_eq!(out.status.code(), Some(66));
        assert!(
            err["error"]["hint"].as_str().unwrap().contains("gc --prune-refs"),
            "{err}"
        );
    }
    // With its checkpoints gone, the id is free again.
    let (again, out) = env.json(&["run", "--id", "dirty", "--", "true"]);
    assert!(out.status.success(), "{again}");
}

#[test]
fn gc_records_a_worktree_removed_by_hand() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--", "true"]);
    let wt = Path::new(v["worktree"].as_str().unwrap()).to_owned();
    std::fs::remove_dir_all(&wt).unwrap();
    let (gc, _) = env.json(&["gc", "--older-than", "0s"]);
    assert_eq!(gc["runs"][0]["action"], "removed", "{gc}");
    assert_eq!(env.show(v["id"].as_str().unwrap())["worktree_removed"], true);
}

#[test]
fn keep_protects_a_worktree_from_gc() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--keep", "--", "true"]);
    let (gc, _) = env.json(&["gc", "--older-than", "0s"]);
    assert!(gc["runs"].as_array().unwrap().is_empty(), "{gc}");
    assert!(Path::new(v["worktree"].as_str().unwrap()).exists());
}

#[test]
fn unknown_is_not_clean_when_the_repository_moved_or_the_worktree_is_broken() {
    let env = Env::new();
    let (moved, _) = env.json(&["run", "--id", "moved", "--", "sh", "-c", "echo wip > work.txt"]);
    let (broken, _) = env.json(&[
        "run",
        "--sandbox",
        "off",
        "--id",
        "broken",
        "--",
        "sh",
        "-c",
        "echo wip > work.txt; echo junk > .git",
    ]);
    let moved_wt = Path::new(moved["worktree"].as_str().unwrap()).to_owned();
    let broken_wt = Path::new(broken["worktree"].as_str().unwrap()).to_owned();
    // A worktree whose .git the agent damaged: it cannot be checkpointed, so it is kept.
    let (err, _) = env.json(&["rm", "broken"]);
    assert_eq!(err["error"]["code"], "WORKTREE_DIRTY", "{err}");
    assert!(broken_wt.join("work.txt").exists());
    // The repository moves away: nothing can vouch for the worktree any more.
    let elsewhere = env.dir.path().join("repo-moved");
    std::fs::rename(&env.repo, &elsewhere).unwrap();
    let mut gc = env.cmd();
    gc.current_dir(env.dir.path());
    let out = gc.args(["--json", "gc", "--older-than", "0s"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "skipped_unsaved"),
        "{v}"
    );
    assert!(moved_wt.join("work.txt").exists(), "gc removed uncaptured work");
    let mut rm = env.cmd();
    rm.current_dir(env.dir.path());
    let out = rm.args(["--json", "rm", "moved"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "WORKTREE_DIRTY", "{v}");
    assert!(v["error"]["hint"].as_str().unwrap().contains("moved"), "{v}");
    // --force is the explicit decision to discard.
    let mut rm = env.cmd();
    rm.current_dir(env.dir.path());
    let out = rm.args(["--json", "rm", "--force", "moved"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!moved_wt.exists());
}

#[test]
fn filters_and_hooks_planted_by_an_agent_never_run_in_agentctls_git_calls() {
    let env = Env::new();
    let marks = env.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.to_str().unwrap();
    // The agent plants a clean/smudge filter in the config its worktree shares with the
    // repository, attributes that apply it everywhere, and a post-checkout hook; it commits.
    let plant = format!(
        "git config filter.evil.clean 'touch {m}/clean; cat' && git config filter.evil.smudge 'touch {m}/smudge; cat' && \
         echo '* filter=evil' > .gitattributes && \
         hooks=$(git rev-parse --git-common-dir)/hooks && mkdir -p $hooks && \
         printf '#!/bin/sh\\ntouch {m}/hook\\n' > $hooks/post-checkout && chmod +x $hooks/post-checkout && \
         git add -A && git -c user.name=a -c user.email=a@b commit -qm plant && \
         rm -f {m}/clean {m}/smudge {m}/hook && echo changed >> README.md"
    );
    // Unsandboxed: agentctl's git calls must be safe even from an unconfined agent (in a
    // sandbox the config and hooks cannot be written at all; see sandbox.rs).
    let (v, _) = env.json(&["run", "--sandbox", "off", "--id", "planter", "--", "sh", "-c", &plant]);
    assert_eq!(v["state"], "succeeded", "{v}");
    // Checkpoints read content with every filter off: the final one holds README's bytes.
    let (cps, _) = env.json(&["checkpoints", "planter"]);
    let last = cps["checkpoints"].as_array().unwrap().last().unwrap()["git_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(git(&env.repo, &["show", &format!("{last}:README.md")]).ends_with("changed\n"));
    // A run based on the planted branch checks it out: no smudge filter, no hook.
    let (v, _) = env.json(&[
        "run",
        "--base",
        "agentctl/planter",
        "--",
        "sh",
        "-c",
        "echo more >> README.md",
    ]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let other = v["id"].as_str().unwrap().to_owned();
    env.json(&["checkpoint", &other, "-m", "by hand"]);
    env.json(&["diff", &other]);
    env.json(&["rollback", &other, "base"]);
    // And removing everything (checkpointing first) runs nothing either.
    let (rm, out) = env.json(&["rm", "planter", &other]);
    assert!(out.status.success(), "{rm}");
    let ran: Vec<_> = std::fs::read_dir(&marks)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        ran.is_empty(),
        "agent-planted code ran inside agentctl's git calls: {ran:?}"
    );
}
