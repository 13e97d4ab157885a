//! Checkpoint refs: never overwritten, listed and deleted per run, visible from the main
//! repository, and keeping their commits alive through `git gc`.

use checkpoint::refs;

use crate::support::{Repo, git, oid};

#[test]
fn set_ref_never_overwrites_another_target() {
    let r = Repo::new();
    let s = r.snapshotter();
    let tree = s.scan_full().unwrap();
    let a = s.commit(tree, r.base, "a").unwrap();
    let b = s.commit(tree, a, "b").unwrap();
    assert_ne!(a, b);
    let name = refs::ref_name("run1", 0);
    assert_eq!(name, "refs/agentctl/runs/run1/0");
    s.set_ref(&name, a).unwrap();
    s.set_ref(&name, a).unwrap();
    let err = s.set_ref(&name, b).unwrap_err();
    assert!(err.to_string().contains("checkpoint ref"), "{err}");
    assert_eq!(oid(&git(&r.main, &["rev-parse", &name])), a, "still the first target");
    assert_eq!(s.resolve(&name).unwrap(), Some(a));
    assert_eq!(s.resolve(&refs::ref_name("run1", 1)).unwrap(), None);
    // The commit is what it says: the tree, the parent, agentctl as author, the message.
    let text = git(&r.main, &["cat-file", "-p", &b.to_string()]);
    assert!(
        text.starts_with(&format!(
            "tree {tree}\nparent {a}\nauthor agentctl <agentctl@localhost>"
        )),
        "{text}"
    );
    assert!(text.ends_with("\n\nb"), "{text}");
    assert_eq!(s.tree_of(b).unwrap(), tree);
}

#[test]
fn list_all_and_delete_run_round_trip_and_are_visible_from_main() {
    let r = Repo::new();
    let s = r.snapshotter();
    let tree = s.scan_full().unwrap();
    let mut parent = r.base;
    let mut expected = std::collections::BTreeMap::<String, std::collections::BTreeMap<u32, _>>::new();
    for (run, n) in [("r1", 0), ("r1", 1), ("r1", 2), ("r1", 10), ("r10", 0), ("team/x", 3)] {
        let c = s.commit(tree, parent, &format!("{run} {n}")).unwrap();
        s.set_ref(&refs::ref_name(run, n), c).unwrap();
        expected.entry(run.to_owned()).or_default().insert(n, c);
        parent = c;
    }
    // Not a checkpoint ref (no number): listed by git, not by us, and never deleted by us.
    git(
        &r.main,
        &["update-ref", "refs/agentctl/runs/r1/latest", &r.base.to_string()],
    );
    assert_eq!(refs::list_all(&vcs::Git::new(s.worktree())).unwrap(), expected);

    // The main repository (not only the worktree) sees them.
    let from_main = git(
        &r.main,
        &["for-each-ref", "--format=%(objectname) %(refname)", "refs/agentctl"],
    );
    let mut lines: Vec<&str> = from_main.lines().collect();
    lines.sort();
    let mut want: Vec<String> = expected
        .iter()
        .flat_map(|(run, m)| m.iter().map(move |(n, c)| format!("{c} {}", refs::ref_name(run, *n))))
        .collect();
    want.push(format!("{} refs/agentctl/runs/r1/latest", r.base));
    want.sort();
    assert_eq!(lines, want);
    // Not branches or tags.
    assert_eq!(git(&r.main, &["branch", "--list"]).lines().count(), 2);
    assert_eq!(git(&r.main, &["tag", "--list"]), "");

    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "r1").unwrap(), 4);
    expected.remove("r1");
    assert_eq!(refs::list_all(&vcs::Git::new(s.worktree())).unwrap(), expected);
    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "r1").unwrap(), 0);
    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "nope").unwrap(), 0);
    let from_main = git(&r.main, &["for-each-ref", "--format=%(refname)", "refs/agentctl"]);
    assert_eq!(
        from_main.lines().collect::<Vec<_>>(),
        [
            "refs/agentctl/runs/r1/latest",
            "refs/agentctl/runs/r10/0",
            "refs/agentctl/runs/team/x/3"
        ]
    );
    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "team/x").unwrap(), 1);
    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "r10").unwrap(), 1);
    assert!(refs::list_all(&vcs::Git::new(s.worktree())).unwrap().is_empty());
}

#[test]
fn checkpoints_survive_gc_while_referenced() {
    let r = Repo::new();
    let s = r.snapshotter();
    r.write("kept.txt", b"only in a referenced checkpoint\n");
    let kept_tree = s.scan_full().unwrap();
    let kept = s.commit(kept_tree, r.base, "kept").unwrap();
    s.set_ref(&refs::ref_name("gc", 0), kept).unwrap();
    r.write("lost.txt", b"only in an unreferenced checkpoint\n");
    let lost_tree = s.scan_full().unwrap();
    let lost = s.commit(lost_tree, kept, "lost").unwrap();
    std::fs::remove_file(r.worktree.join("kept.txt")).unwrap();
    std::fs::remove_file(r.worktree.join("lost.txt")).unwrap();
    // Forget the private index too, which otherwise refers to the blobs.
    std::fs::remove_file(&r.index).unwrap();
    git(&r.main, &["-c", "gc.reflogExpire=now", "gc", "-q", "--prune=now"]);
    let exists = |id: &str| {
        std::process::Command::new("git")
            .current_dir(&r.main)
            .args(["cat-file", "-e", id])
            .status()
            .unwrap()
            .success()
    };
    assert!(exists(&kept.to_string()) && exists(&format!("{kept}:kept.txt")));
    assert!(!exists(&lost.to_string()), "control: gc does prune what no ref keeps");
}
