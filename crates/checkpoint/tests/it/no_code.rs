//! Nothing the repository defines ever runs: hooks (in `.git/hooks`, in a `core.hooksPath` of
//! the repository config or of the worktree config), content filters, diff drivers, textconv,
//! fsmonitor. Every planted script leaves a marker file when it runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use checkpoint::diff::{self, DiffFormat};
use checkpoint::{PathScan, refs, restore};

use crate::support::{Repo, git, paths};

const HOOKS: &[&str] = &[
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "post-merge",
    "post-rewrite",
    "pre-auto-gc",
    "reference-transaction",
    "post-index-change",
    "pre-push",
    "fsmonitor-watchman",
    "push-to-checkout",
];

/// Writes an executable script that touches `markers/<name>`, then runs `body`.
fn script(path: &Path, markers: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text = format!("#!/bin/sh\ntouch '{}'\n{body}\n", markers.join(name).display());
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn markers_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Plants every kind of repository-defined code (routing content through the filter with the
/// repository's `info/attributes` too when `info_attributes`); returns the markers directory.
fn plant(r: &Repo, info_attributes: bool) -> PathBuf {
    let markers = r.scratch("markers");
    let bin = r.scratch("bin");
    let common = r.main.join(".git");
    let hooks_a = r.scratch("hooks-local");
    let hooks_b = r.scratch("hooks-worktree");
    for hook in HOOKS {
        script(
            &common.join("hooks").join(hook),
            &markers,
            &format!("git-hooks-{hook}"),
            "exit 0",
        );
        script(&hooks_a.join(hook), &markers, &format!("local-{hook}"), "exit 0");
        script(&hooks_b.join(hook), &markers, &format!("worktree-{hook}"), "exit 0");
    }
    // Filters that would change content (upper-case it), a long-running filter process,
    // diff drivers, and fsmonitor.
    script(&bin.join("clean"), &markers, "filter-clean", "tr a-z A-Z");
    script(&bin.join("smudge"), &markers, "filter-smudge", "tr a-z A-Z");
    script(&bin.join("process"), &markers, "filter-process", "exit 1");
    script(&bin.join("textconv"), &markers, "textconv", "tr a-z A-Z < \"$1\"");
    script(&bin.join("diffcmd"), &markers, "diff-command", "exit 0");
    script(&bin.join("fsmonitor"), &markers, "fsmonitor", "exit 0");
    script(&bin.join("ssh"), &markers, "ssh", "exit 1");
    let p = |name: &str| bin.join(name).display().to_string();
    for (key, value) in [
        ("core.hooksPath", hooks_a.display().to_string()),
        ("core.fsmonitor", p("fsmonitor")),
        ("core.sshCommand", p("ssh")),
        ("filter.evil.clean", p("clean")),
        ("filter.evil.smudge", p("smudge")),
        ("filter.evil.process", p("process")),
        ("filter.evil.required", "true".to_owned()),
        ("diff.evil.textconv", p("textconv")),
        ("diff.evil.command", p("diffcmd")),
        ("diff.external", p("diffcmd")),
        ("extensions.worktreeConfig", "true".to_owned()),
    ] {
        git(&r.main, &["config", key, &value]);
    }
    git(
        &r.worktree,
        &["config", "--worktree", "core.hooksPath", &hooks_b.display().to_string()],
    );
    git(
        &r.worktree,
        &["config", "--worktree", "core.fsmonitor", &p("fsmonitor")],
    );
    if info_attributes {
        // The repository's own attributes file, which no worktree file overrides.
        std::fs::create_dir_all(common.join("info")).unwrap();
        std::fs::write(common.join("info/attributes"), "* filter=evil diff=evil\n").unwrap();
    }
    markers
}

/// The committed `.gitattributes` routes every file through the `evil` filter and diff driver;
/// the worktree is checked out before they are defined.
fn repo_with_attributes() -> Repo {
    Repo::with_files(&[(".gitattributes", b"* filter=evil diff=evil\n")])
}

#[test]
fn no_hook_filter_driver_or_fsmonitor_runs() {
    let r = repo_with_attributes();
    let markers = plant(&r, true);
    assert!(markers_in(&markers).is_empty());
    let s = r.snapshotter();
    exercise(&r, &s, &markers);
}

#[test]
fn nothing_planted_after_open_runs() {
    // The agent plants it all mid-run, after the snapshotter read the configuration.
    let r = repo_with_attributes();
    let s = r.snapshotter();
    let markers = plant(&r, false);
    exercise(&r, &s, &markers);
}

/// Full scans, path scans, commits, refs, diffs and restores; then checks no marker exists, and
/// that plain git does run what was planted (so the check can fail).
fn exercise(r: &Repo, s: &checkpoint::Snapshotter, markers: &Path) {
    let t0 = s.scan_full().unwrap();
    assert_eq!(t0, r.tree_of(r.base));
    r.write("lower.txt", b"lower case, as written\n");
    r.write("src/lib.rs", b"fn changed() {}\n");
    let t1 = s.scan_full().unwrap();
    assert_eq!(
        r.blob(t1, "lower.txt"),
        b"lower case, as written\n",
        "recorded without the clean filter"
    );
    r.write("more.txt", b"more lower case\n");
    let t2 = match s.scan_paths(t1, [Path::new("more.txt")]).unwrap() {
        PathScan::Tree { tree, .. } => tree,
        PathScan::NeedsFullScan(why) => panic!("{why}"),
    };
    assert_eq!(s.scan_full().unwrap(), t2);
    assert_eq!(r.blob(t2, "more.txt"), b"more lower case\n");
    let c1 = s.commit(t1, r.base, "one").unwrap();
    let c2 = s.commit(t2, c1, "two").unwrap();
    s.set_ref(&refs::ref_name("evil", 1), c1).unwrap();
    s.set_ref(&refs::ref_name("evil", 2), c2).unwrap();
    s.set_ref(&refs::ref_name("evil", 2), c2).unwrap();
    assert!(s.set_ref(&refs::ref_name("evil", 2), c1).is_err());
    let stats = diff::stats(s.git(), r.base, c2, &[]).unwrap();
    assert_eq!(stats.files.len(), 3, "{stats:?}");
    let patch = diff::render(s.git(), r.base, c2, &[], DiffFormat::Patch, false).unwrap();
    let patch = String::from_utf8_lossy(&patch);
    assert!(patch.contains("+lower case, as written"), "no textconv: {patch}");
    diff::render(s.git(), r.base, c2, &paths(&["src"]), DiffFormat::Stat, true).unwrap();
    diff::render(s.git(), r.base, c2, &[], DiffFormat::NameOnly, false).unwrap();
    diff::summaries(s.git(), &[(r.base, c1), (c1, c2)]).unwrap();
    // Rollbacks write blobs without the smudge filter.
    restore::restore(s, t2, t0, &[]).unwrap();
    assert_eq!(r.read("src/lib.rs"), b"fn a() {}\n");
    restore::restore(s, t0, t2, &paths(&["lower.txt", "src"])).unwrap();
    assert_eq!(
        r.read("lower.txt"),
        b"lower case, as written\n",
        "restored without the smudge filter"
    );
    assert_eq!(refs::list_all(&vcs::Git::new(s.worktree())).unwrap()["evil"].len(), 2);
    assert_eq!(refs::delete_run(&vcs::Git::new(s.worktree()), "evil").unwrap(), 2);

    assert_eq!(markers_in(markers), Vec::<String>::new(), "repository-defined code ran");

    // Control: plain git does run what was planted, so the markers above can appear.
    let run = |dir: &Path, args: &[&str]| {
        Command::new("git").current_dir(dir).args(args).output().unwrap();
    };
    run(&r.worktree, &["add", "-A"]);
    run(&r.worktree, &["update-ref", "refs/control", "HEAD"]);
    run(&r.main, &["update-ref", "refs/control2", "HEAD"]);
    let ran = markers_in(markers);
    for expected in [
        "filter-process",
        "fsmonitor",
        "local-reference-transaction",
        "worktree-reference-transaction",
    ] {
        assert!(
            ran.iter().any(|m| m == expected),
            "control: {expected} did not run: {ran:?}"
        );
    }
}

#[test]
fn filters_defined_after_open_do_not_run() {
    // The agent, mid-run, defines a filter in the repository config and routes files through
    // it with the repository's own attributes file (which `--attr-source` does not replace).
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    let markers = r.scratch("markers");
    let bin = r.scratch("bin");
    script(&bin.join("clean"), &markers, "late-filter-clean", "tr a-z A-Z");
    git(
        &r.main,
        &["config", "filter.late.clean", &bin.join("clean").display().to_string()],
    );
    std::fs::create_dir_all(r.main.join(".git/info")).unwrap();
    std::fs::write(r.main.join(".git/info/attributes"), "* filter=late\n").unwrap();
    r.write("new.txt", b"lower\n");
    let t1 = s.scan_full().unwrap();
    assert_ne!(t0, t1);
    assert_eq!(
        markers_in(&markers),
        Vec::<String>::new(),
        "repository-defined code ran"
    );
    assert_eq!(r.blob(t1, "new.txt"), b"lower\n");
}

#[test]
fn filters_defined_after_open_through_gitattributes_do_not_run() {
    // Same, through `.gitattributes` files in the worktree (read from the empty tree instead).
    let r = Repo::new();
    let s = r.snapshotter();
    let markers = r.scratch("markers");
    let bin = r.scratch("bin");
    script(&bin.join("clean"), &markers, "late-filter-clean", "tr a-z A-Z");
    git(
        &r.main,
        &["config", "filter.late.clean", &bin.join("clean").display().to_string()],
    );
    git(&r.main, &["config", "filter.late.required", "true"]);
    r.write(".gitattributes", b"* filter=late\n");
    r.write("sub/.gitattributes", b"* filter=late\n");
    r.write("new.txt", b"lower\n");
    r.write("sub/new.txt", b"lower\n");
    let t1 = s.scan_full().unwrap();
    assert_eq!(
        markers_in(&markers),
        Vec::<String>::new(),
        "repository-defined code ran"
    );
    assert_eq!(r.blob(t1, "new.txt"), b"lower\n");
    assert_eq!(r.blob(t1, "sub/new.txt"), b"lower\n");
    // Control: git itself runs it.
    std::process::Command::new("git")
        .current_dir(&r.worktree)
        .args(["add", "new.txt"])
        .output()
        .unwrap();
    assert_eq!(markers_in(&markers), ["late-filter-clean"]);
}
