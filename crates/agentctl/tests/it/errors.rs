//! Every user-facing error: a stable code, a one-line message, a hint and a documented exit
//! code — snapshotted as users see them, and checked as JSON.

use crate::harness::{Env, stderr};

/// Runs a failing command; returns (code from JSON, exit status, human stderr).
fn fail(env: &Env, args: &[&str]) -> (String, i32, String) {
    let (v, out) = env.json(args);
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {args:?}: {v}"))
        .to_owned();
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let human = env.run(args);
    assert_eq!(
        human.status.code(),
        out.status.code(),
        "same exit code with and without --json"
    );
    let text = stderr(&human).replace(env.dir.path().to_str().unwrap(), "[TMP]");
    (code, out.status.code().unwrap(), text)
}

#[test]
fn error_codes_messages_and_exit_codes() {
    let env = Env::new();
    let outside = tempfile::tempdir().unwrap();
    let mut report = String::new();
    let mut check = |name: &str, env: &Env, args: &[&str], code: &str, exit: i32| {
        let (got, status, text) = fail(env, args);
        assert_eq!(got, code, "{name}: {text}");
        assert_eq!(status, exit, "{name}: {text}");
        let text = text.replace(outside.path().to_str().unwrap(), "[OUTSIDE]");
        report.push_str(&format!("## {name} (exit {status})\n{text}\n"));
    };
    check("unknown run", &env, &["show", "nope"], "RUN_NOT_FOUND", 66);
    check(
        "bad id",
        &env,
        &["run", "--id", "../x", "--", "true"],
        "INVALID_ARGUMENT",
        64,
    );
    check("no agent", &env, &["run"], "INVALID_ARGUMENT", 64);
    check(
        "unknown agent",
        &env,
        &["run", "--agent", "nope", "task"],
        "AGENT_NOT_FOUND",
        66,
    );
    check(
        "bad base",
        &env,
        &["run", "--base", "no-such-branch", "--", "true"],
        "BASE_NOT_FOUND",
        66,
    );
    check(
        "bad state filter",
        &env,
        &["ls", "--state", "sleeping"],
        "INVALID_ARGUMENT",
        64,
    );
    let mut not_repo = env.cmd();
    not_repo.current_dir(outside.path());
    let (v, out) = {
        let out = not_repo.args(["--json", "run", "--", "true"]).output().unwrap();
        (serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), out)
    };
    assert_eq!(v["error"]["code"], "NOT_A_GIT_REPO");
    assert_eq!(out.status.code(), Some(69));
    check(
        "repo flag not a repo",
        &env,
        &["run", "--repo", outside.path().to_str().unwrap(), "--", "true"],
        "NOT_A_GIT_REPO",
        69,
    );
    let gone = outside.path().join("no-such-dir");
    check(
        "repo flag names no directory",
        &env,
        &["run", "--repo", gone.to_str().unwrap(), "--", "true"],
        "NOT_A_GIT_REPO",
        69,
    );
    // Preset whose binary is missing (PATH without it).
    let mut missing = env.cmd();
    missing.env("PATH", "/usr/bin:/bin");
    let out = missing
        .args(["--json", "run", "--agent", "opencode", "x"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "AGENT_UNAVAILABLE");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("npm install -g opencode-ai")
    );
    assert_eq!(out.status.code(), Some(69));
    // Conflicting id.
    env.json(&["run", "--id", "one", "--", "true"]);
    check(
        "id conflict",
        &env,
        &["run", "--id", "one", "--", "false"],
        "RUN_ID_CONFLICT",
        75,
    );
    // Ambiguous prefix.
    env.json(&["run", "--id", "one-more", "--", "true"]);
    check("ambiguous prefix", &env, &["show", "on"], "RUN_AMBIGUOUS", 66);
    // Active run.
    let active = env.start(&["--id", "busy", "--", "sleep", "30"]);
    env.until(&active, std::time::Duration::from_secs(10), |v| v["state"] == "running");
    check("rm active", &env, &["rm", &active], "RUN_ACTIVE", 75);
    env.run(&["stop", "--grace", "100ms", &active]);
    // A worktree that cannot be saved as a checkpoint (the agent damaged its .git).
    // Unsandboxed: in a sandbox the agent cannot damage the worktree's .git file.
    env.json(&[
        "run",
        "--sandbox",
        "off",
        "--id",
        "dirty",
        "--",
        "sh",
        "-c",
        "echo x > wip.txt; echo junk > .git",
    ]);
    check("rm unsaveable worktree", &env, &["rm", "dirty"], "WORKTREE_DIRTY", 75);
    // Checkpoints that do not exist, a worktree that is gone, paths outside the worktree.
    env.json(&["run", "--id", "cps", "--", "sh", "-c", "echo x > a.txt"]);
    check(
        "rollback to a missing checkpoint",
        &env,
        &["rollback", "cps", "42"],
        "CHECKPOINT_NOT_FOUND",
        66,
    );
    check(
        "diff from a missing checkpoint",
        &env,
        &["diff", "cps", "--from", "42"],
        "CHECKPOINT_NOT_FOUND",
        66,
    );
    check(
        "rollback outside the worktree",
        &env,
        &["rollback", "cps", "0", "--", "../x"],
        "INVALID_ARGUMENT",
        64,
    );
    env.json(&["gc", "--older-than", "0s"]);
    check("checkpoint after gc", &env, &["checkpoint", "cps"], "WORKTREE_GONE", 66);
    check(
        "live diff after gc",
        &env,
        &["diff", "cps", "--live"],
        "WORKTREE_GONE",
        66,
    );
    // Bad repo config.
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        "[agents.x]\ncommand = \"not a list\"\n",
    )
    .unwrap();
    check(
        "bad agents.toml",
        &env,
        &["run", "--agent", "x", "task"],
        "INVALID_CONFIG",
        78,
    );
    std::fs::remove_file(env.repo.join(".agentctl/agents.toml")).unwrap();
    // Unusable state dir.
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    check(
        "state dir is a file",
        &env,
        &["--state-dir", file.to_str().unwrap(), "ls"],
        "STATE_DIR_UNUSABLE",
        74,
    );
    insta::assert_snapshot!("error_messages", report);
}

#[test]
fn usage_errors_exit_2_with_help() {
    let env = Env::new();
    let out = env.run(&["run", "--timeout", "soon", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use e.g. 30s, 5m, 2h"), "{}", stderr(&out));
    let out = env.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
