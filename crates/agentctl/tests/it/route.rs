//! The router through the CLI: `route` ranks only installed agents, `run --agent auto` runs the
//! first and records the advice, `route --eval` measures a labeled set, and `agents` shows
//! recent outcomes.

use serde_json::Value;

use crate::harness::{Env, git};

/// A repository with three agents: two installed scripts and one whose program is missing.
fn env_with_agents() -> Env {
    let env = Env::new();
    let dir = env.repo.join(".agentctl");
    std::fs::create_dir_all(env.repo.join("agents")).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agents.toml"),
        r#"
[agents.tester]
command = ["./agents/ok.sh", "{prompt}"]
tags = ["test", "unit", "coverage"]
description = "Writes unit and integration tests"

[agents.writer]
command = ["./agents/ok.sh", "{prompt}"]
tags = ["docs", "readme"]
description = "Writes documentation and READMEs"

[agents.auditor]
command = ["no-such-auditor-binary", "{prompt}"]
tags = ["security", "audit", "test"]
description = "Audits code for vulnerabilities and writes security tests"
"#,
    )
    .unwrap();
    let script = env.repo.join("agents/ok.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"did: $1\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "agents"]);
    env
}

/// `agentctl [--json] run --detach --agent auto TASK` with `AGENTCTL_ROUTER_MODEL=model`.
fn run_auto(env: &Env, model: &std::ffi::OsStr, task: &str, json: bool) -> std::process::Output {
    let mut cmd = env.cmd();
    cmd.env("AGENTCTL_ROUTER_MODEL", model);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["run", "--detach", "--agent", "auto", task]).output().unwrap()
}

fn agents_of(v: &Value) -> Vec<String> {
    v["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn route_ranks_installed_agents_and_never_recommends_a_missing_one() {
    let env = env_with_agents();
    let (v, out) = env.json(&["route", "add unit tests for the security audit log"]);
    assert!(out.status.success());
    let agents = agents_of(&v);
    assert_eq!(agents.first().map(String::as_str), Some("tester"), "{v}");
    assert!(
        !agents.contains(&"auditor".to_owned()),
        "an unavailable agent was recommended: {v}"
    );
    let first = &v["recommendations"][0];
    let c = first["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c), "{first}");
    assert!(!first["reasons"].as_array().unwrap().is_empty(), "{first}");
    assert!(v["elapsed_ms"].as_f64().is_some());
    let (v, _) = env.json(&["route", "update the README"]);
    assert_eq!(agents_of(&v).first().map(String::as_str), Some("writer"), "{v}");
}

#[test]
fn run_with_agent_auto_runs_the_first_recommendation_and_records_the_advice() {
    let env = env_with_agents();
    let id = env.start(&["--agent", "auto", "write unit tests with good coverage"]);
    let done = env.wait(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["agent"], "tester");
    let events = env.events(&id);
    let routed = events
        .iter()
        .find(|e| e["data"]["type"] == "routed")
        .expect("a routed event");
    assert_eq!(routed["seq"], 2, "recorded right after created");
    assert_eq!(routed["data"]["chosen"], "tester");
    assert_eq!(routed["data"]["recommendations"][0]["agent"], "tester");
    // The advice and the choice are on the create span too.
    let out = env
        .cmd()
        .args([
            "-v",
            "--log-format",
            "json",
            "run",
            "--detach",
            "--agent",
            "auto",
            "raise test coverage",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(r#""router.choice":"tester""#), "{log}");
    assert!(log.contains(r#""router.confidence":"#), "{log}");
    // No task, or nothing that fits: a clear error, no run.
    let out = env.run(&["run", "--agent", "auto", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env.run(&["run", "--agent", "auto", "zzz qqq"]);
    assert_eq!(out.status.code(), Some(66), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no available agent"));
}

#[test]
fn route_eval_prints_accuracy_and_latency() {
    let env = env_with_agents();
    let set = env.dir.path().join("set.jsonl");
    std::fs::write(
        &set,
        "{\"task\": \"raise the test coverage of the parser\", \"expected\": \"tester\"}\n\
         {\"task\": \"document the config options in the README\", \"expected\": \"writer\"}\n\
         {\"task\": \"audit for vulnerabilities\", \"expected\": \"auditor\"}\n",
    )
    .unwrap();
    let registry = env.repo.join(".agentctl/agents.toml");
    let (v, out) = env.json(&[
        "route",
        "--eval",
        set.to_str().unwrap(),
        "--agents",
        registry.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // With its own registry every agent counts as installed: all three are found.
    assert_eq!(v["cases"], 3);
    assert_eq!(v["top1"], 1.0, "{v}");
    assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
    let text = String::from_utf8_lossy(&env.run(&["route", "--eval", set.to_str().unwrap()]).stdout).into_owned();
    assert!(text.contains("top-1") && text.contains("p99"), "{text}");
    let bad = env.run(&["route", "--eval", "/nonexistent.jsonl"]);
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn agents_show_recent_outcomes() {
    let env = env_with_agents();
    for task in ["write unit tests", "write more unit tests"] {
        let id = env.start(&["--agent", "tester", task]);
        env.wait(&id);
    }
    let id = env.start(&["--", "false"]);
    env.wait(&id);
    let (v, _) = env.json(&["agents", "--no-version"]);
    let row = |name: &str| {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row("tester")["stats"]["runs"], 2, "{v}");
    assert_eq!(row("tester")["stats"]["success_rate"], 1.0);
    assert!(row("tester")["stats"]["median_duration_ms"].as_u64().is_some());
    assert_eq!(row("command")["stats"]["succeeded"], 0);
    assert!(row("writer").get("stats").is_none());
    assert_eq!(row("tester")["tags"], serde_json::json!(["test", "unit", "coverage"]));
}

/// A build without the `embed` feature cannot use a router model: asked for one (by flag, by
/// environment or by `[router] model`), it says so with a stable code, and creates no run.
#[cfg(not(feature = "embed"))]
#[test]
fn a_router_model_needs_a_build_with_the_semantic_tier() {
    let env = env_with_agents();
    let model = env.dir.path().join("model");
    let (v, out) = env.json(&["route", "--model", model.to_str().unwrap(), "update the README"]);
    assert_eq!(out.status.code(), Some(78), "{v}");
    assert_eq!(v["error"]["code"], "ROUTER_MODEL_UNUSABLE", "{v}");
    assert!(v["error"]["hint"].as_str().unwrap().contains("--features embed"), "{v}");

    let out = run_auto(&env, model.as_ref(), "update the README", false);
    assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[ROUTER_MODEL_UNUSABLE]"));

    std::fs::create_dir_all(env.dir.path().join("config")).unwrap();
    std::fs::write(
        env.dir.path().join("config/config.toml"),
        "[router]\nmodel = \"model\"\n",
    )
    .unwrap();
    let (v, out) = env.json(&["route", "update the README"]);
    assert_eq!(out.status.code(), Some(78), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("config/model"),
        "relative to the config dir: {v}"
    );
    assert_eq!(env.json(&["ls"]).0["runs"], serde_json::json!([]), "no run was created");

    // An empty --model (a failed `$(scripts/fetch-minilm)`) is a usage error.
    let out = env.run(&["route", "--model", "", "update the README"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With the `embed` feature and the model (`AGENTCTL_TEST_MINILM`, made by
/// `scripts/fetch-minilm`): the meaning of a task counts, the answer names the model, the
/// embeddings are kept in the state directory, and `run --agent auto` records the model.
#[cfg(feature = "embed")]
#[test]
fn with_a_router_model_the_meaning_of_a_task_counts() {
    let model = std::env::var("AGENTCTL_TEST_MINILM").expect("AGENTCTL_TEST_MINILM names the model directory");
    let env = env_with_agents();
    // Nothing here shares a word (or a synonym) with any agent's tags or description.
    let task = "Put the setup steps on paper for newcomers";
    let (v, out) = env.json(&["route", task]);
    assert!(out.status.success());
    assert!(v.get("model").is_none(), "{v}");
    assert_eq!(agents_of(&v), Vec::<String>::new(), "{v}");
    let (v, out) = env.json(&["route", "--model", &model, task]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(v["model"].as_str().unwrap().starts_with("bert-384x6@"), "{v}");
    assert_eq!(agents_of(&v).first().map(String::as_str), Some("writer"), "{v}");
    assert!(!agents_of(&v).contains(&"auditor".to_owned()), "{v}");
    let reasons = v["recommendations"][0]["reasons"].to_string();
    assert!(reasons.contains("close in meaning to its profile"), "{reasons}");

    let kept: Vec<_> = std::fs::read_dir(env.state.join("router")).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1, "one file of embeddings");
    let size = kept[0].metadata().unwrap().len();
    assert!(size > 0);
    let (v2, _) = env.json(&["route", "--model", &model, "write a tutorial"]);
    assert_eq!(v2["model"], v["model"]);
    assert_eq!(
        kept[0].metadata().unwrap().len(),
        size,
        "nothing encoded again, tasks not kept"
    );

    let out = run_auto(&env, model.as_ref(), task, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["id"].as_str().unwrap();
    let routed = env
        .events(id)
        .into_iter()
        .find(|e| e["data"]["type"] == "routed")
        .expect("a routed event");
    assert_eq!(routed["data"]["chosen"], "writer", "{routed}");
    assert_eq!(routed["data"]["model"], v["model"], "{routed}");
    env.wait(id);

    // --eval measures the tier it is told to, and says which: the configured model does not
    // slip into a lexical measurement, --model does, and nothing is kept in the state dir.
    let set = env.dir.path().join("set.jsonl");
    std::fs::write(&set, format!("{{\"task\": \"{task}\", \"expected\": \"writer\"}}\n")).unwrap();
    let registry = env.repo.join(".agentctl/agents.toml");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "route",
            "--eval",
            set.to_str().unwrap(),
            "--agents",
            registry.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = env
            .cmd()
            .env("AGENTCTL_ROUTER_MODEL", &model)
            .arg("--json")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let lexical = eval(&[]);
    assert!(lexical.get("model").is_none(), "{lexical}");
    assert_eq!(lexical["top1"], 0.0, "no word in common: {lexical}");
    let semantic = eval(&["--model", &model]);
    assert_eq!(semantic["model"], v["model"], "{semantic}");
    assert_eq!(semantic["top1"], 1.0, "{semantic}");
    assert_eq!(kept[0].metadata().unwrap().len(), size, "evaluations keep nothing");

    // Gibberish is like nothing in particular: no agent, with the model as without.
    let (v, out) = env.json(&["route", "--model", &model, "zzz qqq"]);
    assert!(out.status.success());
    assert_eq!(agents_of(&v), Vec::<String>::new(), "{v}");
    let out = run_auto(&env, model.as_ref(), "zzz qqq", false);
    assert_eq!(out.status.code(), Some(66), "{}", String::from_utf8_lossy(&out.stderr));

    let (v, out) = env.json(&["route", "--model", "/nonexistent-model", task]);
    assert_eq!(out.status.code(), Some(78), "{v}");
    assert_eq!(v["error"]["code"], "ROUTER_MODEL_UNUSABLE", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("has no config.json"),
        "{v}"
    );
}
