//! `agentctl demo`: the bundled agent fixes the sample repository's bug on the run's branch,
//! the run is recorded like any other, and the sample repository's checkout stays untouched.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Env, git, stderr, stdout};

#[test]
fn demo_fixes_the_sample_repo_on_its_branch_and_leaves_the_checkout_alone() {
    let env = Env::new();
    let dir = env.dir.path().join("demo");
    let out = env
        .cmd()
        .args(["--json", "demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("agentctl runs");
    assert!(out.status.success(), "demo failed: {}\n{}", stdout(&out), stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object on stdout");
    let run = &v["run"];
    assert_eq!(run["state"], "succeeded", "{v}");
    let id = run["id"].as_str().expect("id");
    let repo = Path::new(v["repo"].as_str().expect("repo")).to_owned();
    assert!(repo.starts_with(dir.canonicalize().unwrap()), "{}", repo.display());
    assert!(Path::new(v["script"].as_str().unwrap()).is_file());
    assert!(v["diff_stat"].as_str().unwrap().contains("calc.py"), "{v}");
    assert_eq!(v["commits"].as_array().map(Vec::len), Some(1), "{v}");

    // Recorded like any run.
    let (ls, _) = env.json(&["ls"]);
    let listed = ls["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("run {id} not in ls: {ls}"));
    assert_eq!(listed["state"], "succeeded");
    assert_eq!(listed["labels"]["demo"], "true");

    // The branch holds the agent's commit, touching calc.py and fixing the bug there.
    let base = run["base_commit"].as_str().unwrap();
    let branch = run["branch"].as_str().unwrap();
    let touched = git(&repo, &["diff", "--name-only", &format!("{base}..{branch}")]);
    assert!(touched.lines().any(|f| f == "calc.py"), "{touched}");
    assert!(touched.lines().any(|f| f == "test_average.py"), "{touched}");
    let fixed = git(&repo, &["show", &format!("{branch}:calc.py")]);
    assert!(fixed.contains("return sum(numbers) / len(numbers)\n"), "{fixed}");

    // The sample repository's own checkout is as the demo made it.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]).trim(), base);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    let original = std::fs::read_to_string(repo.join("calc.py")).unwrap();
    assert!(original.contains("(len(numbers) + 1)"), "{original}");
    assert!(!repo.join("NOTES.md").exists());
}

#[test]
fn demo_narrates_on_stderr_and_suggests_commands_for_the_same_state_dir() {
    let env = Env::new();
    let dir = env.dir.path().join("demo");
    let out = env
        .cmd()
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("agentctl runs");
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "demo failed: {so}\n{se}");
    // stdout is the agent's own output; agentctl's narration is on stderr.
    assert!(so.contains("==> editing calc.py"), "{so}");
    assert!(!so.contains("what to try next"), "{so}");
    for needle in [
        "succeeded",
        "Fix average()",
        "calc.py",
        "is untouched",
        "what to try next",
    ] {
        assert!(se.contains(needle), "missing {needle:?} in stderr:\n{se}");
    }
    let state = env.state.to_string_lossy();
    assert!(se.contains(&format!("agentctl --state-dir {state} ls")), "{se}");

    // The directory is not reused.
    let again = env
        .cmd()
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("agentctl runs");
    assert_eq!(again.status.code(), Some(64), "{}", stderr(&again));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
}
