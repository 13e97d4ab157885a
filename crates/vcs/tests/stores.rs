//! Run object stores against real repositories: registration, where writes go, and what
//! `publish` copies into the repository's own store (and copies again after `git gc`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use vcs::{Git, RunStore, publish};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    fs::write(repo.join("a.txt"), "a\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "a"]);
    (dir, repo)
}

/// Whether the repository's own store (and the user's alternates, not run stores) has `id`.
fn in_own_store(repo: &Path, id: &str) -> bool {
    let alternates = repo.join(".git/objects/info/alternates");
    let saved = fs::read_to_string(&alternates).unwrap_or_default();
    let kept: String = saved
        .lines()
        .filter(|l| !l.contains("agentctl/stores/"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&alternates, kept).unwrap();
    let found = Command::new("git")
        .current_dir(repo)
        .args(["cat-file", "-e", id])
        .status()
        .unwrap()
        .success();
    fs::write(&alternates, saved).unwrap();
    found
}

/// Writes a blob and a commit of it on `branch` (from `main`) into `store`.
fn commit_in_store(repo: &Path, store: &RunStore, branch: &str, content: &str) -> (String, String) {
    let g = Git::new(repo).writing_to(store);
    let blob = g
        .run_with_stdin(&["hash-object", "-w", "--stdin"], content.as_bytes())
        .unwrap();
    let blob = blob.trim().to_owned();
    let tree = g
        .run_with_stdin(&["mktree"], format!("100644 blob {blob}\tfile.txt\n").as_bytes())
        .unwrap();
    let main = git(repo, &["rev-parse", "main"]);
    let commit = g.commit_tree(tree.trim(), &main, "run work", "r", "r@r").unwrap();
    git(repo, &["branch", branch, &commit]);
    (blob, commit)
}

#[test]
fn a_store_is_listed_once_and_the_users_alternates_are_kept() {
    let (_d, repo) = repo();
    let other = tempfile::tempdir().unwrap();
    let alternates = repo.join(".git/objects/info/alternates");
    fs::write(&alternates, format!("{}\n", other.path().display())).unwrap();
    let store = RunStore::of_repo(&repo, "r1").unwrap();
    store.ensure().unwrap();
    store.ensure().unwrap();
    RunStore::of_repo(&repo, "r2").unwrap().ensure().unwrap();
    let lines = fs::read_to_string(&alternates).unwrap();
    assert_eq!(
        lines,
        format!(
            "{}\n../agentctl/stores/r1\n../agentctl/stores/r2\n",
            other.path().display()
        )
    );
    assert!(store.path().join("pack").is_dir());
    let sandbox = vcs::sandbox_alternates(store.common()).unwrap();
    assert_eq!(
        sandbox,
        vec![other.path().to_owned()],
        "run stores are never in a sandbox's view"
    );
}

#[test]
fn objects_written_for_a_run_go_to_its_store_and_git_still_reads_them() {
    let (_d, repo) = repo();
    let store = RunStore::of_repo(&repo, "r1").unwrap();
    store.ensure().unwrap();
    let (blob, commit) = commit_in_store(&repo, &store, "agentctl/r1", "run content\n");
    assert!(!in_own_store(&repo, &blob));
    assert!(!in_own_store(&repo, &commit));
    assert_eq!(git(&repo, &["show", "agentctl/r1:file.txt"]), "run content");
    git(&repo, &["fsck", "--no-dangling"]);
}

#[test]
fn publish_copies_what_the_users_history_reaches_and_nothing_else() {
    let (_d, repo) = repo();
    let common = repo.join(".git");
    let s1 = RunStore::of_repo(&repo, "r1").unwrap();
    let s2 = RunStore::of_repo(&repo, "r2").unwrap();
    s1.ensure().unwrap();
    s2.ensure().unwrap();
    let (merged_blob, merged) = commit_in_store(&repo, &s1, "agentctl/r1", "merged\n");
    let (private_blob, _) = commit_in_store(&repo, &s2, "agentctl/r2", "private\n");
    assert_eq!(
        publish(&common, None, None).unwrap(),
        0,
        "nothing of the user's reaches a run store"
    );
    git(&repo, &["merge", "-q", "--ff-only", &merged]);
    assert_eq!(
        publish(&common, None, None).unwrap(),
        3,
        "the merged commit, its tree and blob"
    );
    assert!(in_own_store(&repo, &merged_blob) && in_own_store(&repo, &merged));
    assert!(
        !in_own_store(&repo, &private_blob),
        "an unmerged run's work stays in its store"
    );
    assert_eq!(
        publish(&common, None, None).unwrap(),
        0,
        "verified tips are not walked again"
    );
    // A run's own base (a resumed run's branch) is judged with its own store in view.
    let (_, resumed) = commit_in_store(&repo, &s2, "agentctl/r2b", "resumed\n");
    assert_eq!(publish(&common, Some(&s2), Some(&resumed)).unwrap(), 0);
    // A base on another run's branch: copied into the run's own store, not the repository's.
    let s3 = RunStore::of_repo(&repo, "r3").unwrap();
    s3.ensure().unwrap();
    let (_, other) = commit_in_store(&repo, &s2, "agentctl/r2c", "based on\n");
    let copied = publish(&common, Some(&s3), Some(&other)).unwrap();
    assert!(copied >= 3, "{copied}");
    let view = vcs::RepoView::new(&common, Some(&s3)).unwrap();
    assert!(view.absent([other.clone()]).unwrap().is_empty(), "run 3 sees its base");
    assert!(
        !in_own_store(&repo, &other),
        "another run's work stays out of the shared store"
    );
}

#[test]
fn publish_copies_again_what_git_gc_dropped_from_the_repositorys_store() {
    let (_d, repo) = repo();
    let common = repo.join(".git");
    let store = RunStore::of_repo(&repo, "r1").unwrap();
    store.ensure().unwrap();
    let (blob, commit) = commit_in_store(&repo, &store, "agentctl/r1", "merged\n");
    git(&repo, &["merge", "-q", "--ff-only", &commit]);
    assert_eq!(publish(&common, None, None).unwrap(), 3);
    // gc packs locally only what no alternate holds: the copies go.
    git(&repo, &["gc", "-q"]);
    let dropped = !in_own_store(&repo, &blob);
    let copied = publish(&common, None, None).unwrap();
    assert_eq!(copied, if dropped { 3 } else { 0 });
    assert!(in_own_store(&repo, &blob) && in_own_store(&repo, &commit));
    git(&repo, &["fsck", "--no-dangling"]);
}

#[test]
fn retiring_a_store_keeps_what_is_reached_and_drops_the_rest() {
    let (_d, repo) = repo();
    let common = repo.join(".git");
    let store = RunStore::of_repo(&repo, "r1").unwrap();
    store.ensure().unwrap();
    let (branch_blob, branch_commit) = commit_in_store(&repo, &store, "agentctl/r1", "kept on the branch\n");
    let (gone_blob, gone_commit) = commit_in_store(&repo, &store, "tmp-r1", "only a checkpoint\n");
    git(&repo, &["update-ref", "refs/agentctl/runs/r1/1", &gone_commit]);
    git(&repo, &["branch", "-D", "tmp-r1"]);
    // The checkpoint ref is pruned, then the store retired.
    git(&repo, &["update-ref", "-d", "refs/agentctl/runs/r1/1"]);
    git(&repo, &["reflog", "expire", "--expire=now", "--all"]);
    let kept = vcs::retire(&store).unwrap();
    assert_eq!(kept, 3, "the branch's commit, tree and blob");
    assert!(!store.path().exists() && !store.view_dir().exists());
    let alternates = fs::read_to_string(common.join("objects/info/alternates")).unwrap();
    assert!(!alternates.contains("stores/r1"), "{alternates}");
    assert!(in_own_store(&repo, &branch_blob) && in_own_store(&repo, &branch_commit));
    assert_eq!(git(&repo, &["show", "agentctl/r1:file.txt"]), "kept on the branch");
    let gone = Command::new("git")
        .current_dir(&repo)
        .args(["cat-file", "-e", &gone_blob])
        .status()
        .unwrap();
    assert!(!gone.success(), "an object nothing reaches went with the store");
    git(&repo, &["fsck", "--no-dangling"]);
    // Again: nothing left to do.
    assert_eq!(vcs::retire(&store).unwrap(), 0);
}

/// `git gc` drops the repository's copy of an object a store also holds, whatever put it in
/// the repository: retiring the store keeps it (a whole walk, no tip taken on trust), and a
/// retirement repeated after it was cut short keeps it too.
#[test]
fn retiring_keeps_what_gc_left_only_in_the_store() {
    let (_d, repo) = repo();
    let common = repo.join(".git");
    let store = RunStore::of_repo(&repo, "r1").unwrap();
    store.ensure().unwrap();
    // The user's own blob, committed (in the repository's store)...
    fs::write(repo.join("b.txt"), "users own\n").unwrap();
    git(&repo, &["add", "b.txt"]);
    git(&repo, &["commit", "-qm", "b"]);
    let blob = git(&repo, &["rev-parse", "HEAD:b.txt"]);
    assert_eq!(publish(&common, None, None).unwrap(), 0);
    // ...and, by whatever route, in the store too; gc then drops the repository's copy.
    let mut pack = Command::new("git")
        .current_dir(&repo)
        .arg("pack-objects")
        .arg(store.path().join("pack/pack"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    pack.stdin
        .take()
        .unwrap()
        .write_all(format!("{blob}\n").as_bytes())
        .unwrap();
    assert!(pack.wait().unwrap().success());
    git(&repo, &["gc", "-q"]);
    // Cut short once: the store is no longer listed, then retired for real.
    let alternates = common.join("objects/info/alternates");
    let listed = fs::read_to_string(&alternates).unwrap();
    fs::write(&alternates, listed.replace("../agentctl/stores/r1\n", "")).unwrap();
    vcs::retire(&store).unwrap();
    assert!(in_own_store(&repo, &blob), "the user's blob went with the store");
    git(&repo, &["fsck", "--no-dangling"]);
}
