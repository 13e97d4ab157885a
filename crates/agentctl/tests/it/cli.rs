//! The command-line surface: help text of every command (snapshotted so changes are reviewed),
//! completions, and `init`.

use crate::harness::{Env, stdout};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["init"],
    &["run"],
    &["ls"],
    &["show"],
    &["logs"],
    &["wait"],
    &["stop"],
    &["rm"],
    &["gc"],
    &["agents"],
    &["demo"],
    &["bench"],
    &["admin", "reindex"],
    &["completions"],
];

#[test]
fn help_texts() {
    let env = Env::new();
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let out = env.cmd().env("COLUMNS", "100").args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let name = if cmd.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", cmd.join("_"))
        };
        insta::assert_snapshot!(name, stdout(&out));
    }
}

#[test]
fn completions_for_common_shells() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("agentctl"), "{shell}");
        assert!(
            !stdout(&out).contains("__supervise"),
            "the internal command stays hidden"
        );
    }
}

#[test]
fn init_scaffolds_and_is_idempotent() {
    let env = Env::new();
    let (v, out) = env.json(&["init"]);
    assert!(out.status.success());
    assert_eq!(v["created"].as_array().unwrap().len(), 5, "{v}");
    for p in [
        ".agentctl/agents.toml",
        ".agentctl/hooks/pre-run.sample",
        ".agentctl/workflows",
    ] {
        assert!(env.repo.join(p).exists(), "{p}");
    }
    std::fs::write(env.repo.join(".agentctl/agents.toml"), "# mine\n").unwrap();
    let (v, _) = env.json(&["init"]);
    assert!(v["created"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(env.repo.join(".agentctl/agents.toml")).unwrap(),
        "# mine\n"
    );
    // The commented template is a valid, empty agents file.
    let (agents, out) = env.json(&["agents", "--no-version"]);
    assert!(out.status.success(), "{agents}");
}

#[test]
fn ls_on_an_empty_state_dir() {
    let env = Env::new();
    let (v, _) = env.json(&["ls"]);
    assert_eq!(v["runs"].as_array().unwrap().len(), 0);
    let out = env.run(&["ls"]);
    assert!(stdout(&out).contains("no runs yet"));
}
