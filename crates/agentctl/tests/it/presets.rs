//! The built-in agent presets against scripted fakes of the real agent CLIs. The fakes in
//! `tests/fixtures/fake-agents/` are named like the real binaries (`claude`, `codex`, `gemini`,
//! `aider`, `opencode`) and reproduce each tool's documented headless flags, auth variables,
//! exit codes and output format (see the header of each fake and `AGENT-CLIS.md`); they reject
//! a flag the real tool would reject. With the fakes first on `PATH`, these tests run the real
//! `agentctl` binary and check the whole integration: the rendered preset is accepted, the prompt
//! reaches the agent intact by the preset's delivery method (argument, stdin or file), the
//! agent's edit lands in the run's worktree and not in the user's repository, its formatted
//! output is in the run's logs, preset and user environment is passed, secrets are passed but
//! never recorded, and availability detection (`agentctl agents`, `AGENT_UNAVAILABLE`) follows
//! `PATH`. Each fake records what it received in `.fake-agent/<name>.*` in its working
//! directory (see `fake-lib.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::{Env, git, stderr, stdout};

const FAKES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-agents");

/// A prompt that would break naive quoting or placeholder substitution.
const PROMPT: &str = "fix the \"login\" bug in 'auth' — keep $HOME, `whoami` & {workdir} literal";

/// Every variable any fake accepts as credentials: removed from the agentctl process so the
/// developer's own keys never leak into a test, then set per test.
const AUTH_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CODEX_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GEMINI_CLI_TRUST_WORKSPACE",
    "OPENROUTER_API_KEY",
];

/// (preset, binary, version line the fake prints).
const PRESETS: &[(&str, &str, &str)] = &[
    ("claude-code", "claude", "2.1.240 (Claude Code)"),
    ("codex", "codex", "codex-cli 0.124.0"),
    ("gemini", "gemini", "0.56.0-nightly"),
    ("aider", "aider", "aider 0.86.3.dev"),
    ("opencode", "opencode", "1.4.7"),
];

fn fakes_path() -> String {
    format!("{FAKES}:{}", std::env::var("PATH").unwrap())
}

/// An agentctl command with `path` as PATH, no credentials, and a private HOME (so logins of
/// the developer's real tools, such as `~/.codex/auth.json`, are not found). `IS_SANDBOX=1`
/// lets the claude fake accept `bypassPermissions` when the tests run as root (see
/// `claude_code_preset_runs_as_root`).
fn cmd(env: &Env, path: &str) -> Command {
    let mut c = env.cmd();
    c.env("PATH", path)
        .env("HOME", env.dir.path().join("home"))
        .env("IS_SANDBOX", "1")
        .env_remove("CLAUDE_CODE_BUBBLEWRAP");
    for var in AUTH_VARS {
        c.env_remove(var);
    }
    c
}

/// Runs `agentctl --json ARGS` with `vars` set; returns stdout parsed and the output.
fn json_with(env: &Env, path: &str, vars: &[(&str, &str)], args: &[&str]) -> (Value, Output) {
    let out = cmd(env, path)
        .envs(vars.iter().copied())
        .arg("--json")
        .args(args)
        .output()
        .expect("agentctl runs");
    let text = stdout(&out);
    let v = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}\nstderr: {}", stderr(&out)));
    (v, out)
}

/// Runs `agentctl --json run --agent AGENT PROMPT` in the foreground with the fakes on PATH.
fn run_agent(env: &Env, agent: &str, prompt: &str, vars: &[(&str, &str)]) -> Value {
    let (v, out) = json_with(env, &fakes_path(), vars, &["run", "--agent", agent, prompt]);
    assert!(v["id"].is_string(), "no run: {v}\nstderr: {}", stderr(&out));
    v
}

fn worktree(run: &Value) -> PathBuf {
    PathBuf::from(run["worktree"].as_str().expect("worktree"))
}

/// What the fake `bin` recorded about its invocation (`kind`: prompt, argv, env, cwd).
fn received(run: &Value, bin: &str, kind: &str) -> String {
    let p = worktree(run).join(".fake-agent").join(format!("{bin}.{kind}"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}; run: {run}", p.display()))
}

fn argv(run: &Value, bin: &str) -> Vec<String> {
    received(run, bin, "argv").lines().map(str::to_owned).collect()
}

fn assert_succeeded(env: &Env, run: &Value) {
    assert_eq!(
        run["state"],
        "succeeded",
        "{run}\nlogs:\n{}",
        env.logs(run["id"].as_str().unwrap_or(""))
    );
    assert_eq!(run["exit_code"], 0, "{run}");
}

/// The checks every preset shares: the agent ran in the run's worktree with agentctl's
/// environment, received the prompt intact, and its edit is in the worktree only.
fn assert_ran_in_worktree(run: &Value, bin: &str, prompt: &str, env: &Env) {
    let wt = worktree(run);
    assert_eq!(
        received(run, bin, "prompt"),
        prompt,
        "prompt as the agent understood it"
    );
    assert_eq!(received(run, bin, "agentctl-prompt"), prompt, "AGENTCTL_PROMPT");
    assert_eq!(
        Path::new(received(run, bin, "cwd").trim()).canonicalize().unwrap(),
        wt.canonicalize().unwrap(),
        "the agent's cwd is the worktree"
    );
    let vars = received(run, bin, "env");
    let id = run["id"].as_str().unwrap();
    assert!(vars.lines().any(|l| l == format!("AGENTCTL_RUN_ID={id}")), "{vars}");
    assert!(
        vars.lines()
            .any(|l| l == format!("AGENTCTL_BRANCH={}", run["branch"].as_str().unwrap())),
        "{vars}"
    );
    let edit = std::fs::read_to_string(wt.join(format!("{bin}.txt"))).expect("the agent's edit");
    assert_eq!(edit, format!("{prompt}\n"));
    assert!(
        !env.repo.join(format!("{bin}.txt")).exists(),
        "the edit must not reach the user's checkout"
    );
    assert!(!env.repo.join(".fake-agent").exists());
}

/// The non-empty lines of the run's logs that parse as JSON objects.
fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// `agentctl logs ID`: the agent's stdout and then its stderr (which `logs` writes to stderr).
fn all_logs(env: &Env, id: &str) -> String {
    let out = env.run(&["logs", id]);
    format!("{}{}", stdout(&out), stderr(&out))
}

fn sha256(s: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_owned()
}

#[test]
fn claude_code_gets_the_prompt_as_an_argument_and_streams_json() {
    let env = Env::new();
    let run = run_agent(&env, "claude-code", PROMPT, &[("ANTHROPIC_API_KEY", "sk-ant-test")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "claude", PROMPT, &env);
    let args = argv(&run, "claude");
    assert_eq!(args[0], "-p", "{args:?}");
    assert_eq!(
        args[args.len() - 2..],
        ["--", PROMPT],
        "the prompt is one argument after `--`: {args:?}"
    );
    for flag in ["--verbose", "bypassPermissions"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }

    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"system"), "{types:?}");
    assert_eq!(lines[0]["subtype"], "init");
    assert_eq!(lines[0]["apiKeySource"], "ANTHROPIC_API_KEY");
    assert!(types.contains(&"assistant"), "{types:?}");
    let result = lines.last().unwrap();
    assert_eq!(result["type"], "result", "the last line is the result");
    assert_eq!(result["is_error"], false);
    assert!(result["total_cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(result["session_id"], lines[0]["session_id"]);
    assert_eq!(result["permission_denials"], serde_json::json!([]));
}

/// Claude Code refuses `bypassPermissions` (and `--dangerously-skip-permissions`) with exit 1
/// when its euid is 0 unless `IS_SANDBOX=1` or `CLAUDE_CODE_BUBBLEWRAP=1` (see the header of the
/// fake for sources). The preset keeps the mode (an agent in its own worktree must be able to
/// edit and run commands unattended); as root the documented workaround is
/// `--env IS_SANDBOX=1` (docs/agents.md) for an unsandboxed run; a sandboxed run gets it set.
/// As another user, no workaround is needed.
#[test]
fn claude_code_as_root_fails_clearly_and_the_documented_workaround_works() {
    let env = Env::new();
    // /proc/self belongs to the effective user of this process.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let out = cmd(&env, &fakes_path())
        .env_remove("IS_SANDBOX")
        .env("ANTHROPIC_API_KEY", "k")
        .args(["--json", "run", "--sandbox", "off", "--agent", "claude-code", PROMPT])
        .output()
        .unwrap();
    let run: Value = serde_json::from_str(stdout(&out).trim()).expect("run JSON");
    if root {
        assert_eq!(run["state"], "failed", "{run}");
        assert_eq!(run["exit_code"], 1);
        let logs = all_logs(&env, run["id"].as_str().unwrap());
        assert!(logs.contains("root"), "claude's own message reaches the logs: {logs}");
        let out = cmd(&env, &fakes_path())
            .env_remove("IS_SANDBOX")
            .env("ANTHROPIC_API_KEY", "k")
            .args([
                "--json",
                "run",
                "--sandbox",
                "off",
                "--env",
                "IS_SANDBOX=1",
                "--agent",
                "claude-code",
                PROMPT,
            ])
            .output()
            .unwrap();
        let run: Value = serde_json::from_str(stdout(&out).trim()).expect("run JSON");
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_ran_in_worktree(&run, "claude", PROMPT, &env);
    } else {
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_ran_in_worktree(&run, "claude", PROMPT, &env);
    }
    // Sandboxed (the default), the agent is told so (IS_SANDBOX=1): no workaround needed.
    let out = cmd(&env, &fakes_path())
        .env_remove("IS_SANDBOX")
        .env("ANTHROPIC_API_KEY", "k")
        .args(["--json", "run", "--agent", "claude-code", PROMPT])
        .output()
        .unwrap();
    let run: Value = serde_json::from_str(stdout(&out).trim()).expect("run JSON");
    assert_eq!(run["state"], "succeeded", "{run}");
}

#[test]
fn codex_gets_the_prompt_on_stdin_and_prints_jsonl_events() {
    let env = Env::new();
    let run = run_agent(&env, "codex", PROMPT, &[("CODEX_API_KEY", "codex-test")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "codex", PROMPT, &env);
    let args = argv(&run, "codex");
    assert_eq!(args[0], "exec");
    assert_eq!(
        args.last().map(String::as_str),
        Some("-"),
        "prompt `-` = stdin: {args:?}"
    );
    assert!(!args.iter().any(|a| a.contains("login")), "not an argument: {args:?}");
    assert!(
        received(&run, "codex", "env").lines().any(|l| l == "NO_COLOR=1"),
        "preset env"
    );

    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"thread.started"), "{types:?}");
    assert_eq!(types.get(1), Some(&"turn.started"), "{types:?}");
    assert_eq!(types.last(), Some(&"turn.completed"), "{types:?}");
    assert!(lines.iter().any(|l| l["type"] == "item.completed"
        && l["item"]["type"] == "agent_message"
        && l["item"]["text"].is_string()));
    assert!(lines.iter().any(|l| l["item"]["type"] == "file_change"), "{types:?}");
    assert_eq!(lines.last().unwrap()["usage"]["output_tokens"], 122);
}

#[test]
fn gemini_gets_the_prompt_as_an_argument_in_a_trusted_workspace() {
    let env = Env::new();
    let run = run_agent(&env, "gemini", PROMPT, &[("GEMINI_API_KEY", "gemini-test")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "gemini", PROMPT, &env);
    let args = argv(&run, "gemini");
    assert_eq!(args[0], format!("--prompt={PROMPT}"), "{args:?}");
    assert!(args.iter().any(|a| a == "--approval-mode=yolo"), "{args:?}");
    assert!(
        received(&run, "gemini", "env")
            .lines()
            .any(|l| l == "GEMINI_CLI_TRUST_WORKSPACE=true"),
        "the preset's env trusts the worktree"
    );

    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    assert_eq!(lines[0]["type"], "init");
    let said: String = lines
        .iter()
        .filter(|l| l["type"] == "message" && l["role"] == "assistant" && l["delta"] == true)
        .filter_map(|l| l["content"].as_str())
        .collect();
    assert!(said.contains("gemini.txt"), "{said:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "tool_result" && l["status"] == "success")
    );
    let result = lines.last().unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["status"], "success");
    assert_eq!(result["stats"]["tool_calls"], 1);
}

#[test]
fn aider_reads_the_prompt_from_a_file_and_commits_on_the_run_branch() {
    let env = Env::new();
    let run = run_agent(&env, "aider", PROMPT, &[("OPENAI_API_KEY", "sk-openai-test")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "aider", PROMPT, &env);
    let args = argv(&run, "aider");
    assert_eq!(args[0], "--message-file", "{args:?}");
    let file = Path::new(&args[1]);
    assert!(
        file.starts_with(&env.state),
        "the prompt file is in the state dir: {args:?}"
    );
    assert!(!file.starts_with(worktree(&run)), "not in the worktree the agent edits");
    assert!(!args.iter().any(|a| a == PROMPT), "not an argument: {args:?}");
    assert!(
        received(&run, "aider", "env").lines().any(|l| l == "COLUMNS=1000"),
        "preset env"
    );

    let logs = env.logs(run["id"].as_str().unwrap());
    assert!(logs.contains("Aider v0.86.3.dev"), "{logs}");
    assert!(logs.contains("Applied edit to aider.txt"), "{logs}");
    assert!(
        logs.lines().any(|l| l.starts_with("Tokens: ") && l.contains("Cost: $")),
        "{logs}"
    );

    // Aider commits its edit: on the run's branch, never on the user's.
    let branch = run["branch"].as_str().unwrap();
    let log = git(&env.repo, &["log", "--format=%s", branch]);
    assert_eq!(log.lines().next(), Some("feat: Record the task in aider.txt"), "{log}");
    assert_eq!(git(&env.repo, &["log", "--format=%s", "main"]).trim(), "initial");
}

#[test]
fn opencode_gets_the_prompt_as_a_positional_message_and_prints_json_events() {
    let env = Env::new();
    let run = run_agent(&env, "opencode", PROMPT, &[("ANTHROPIC_API_KEY", "sk-ant-test")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "opencode", PROMPT, &env);
    let args = argv(&run, "opencode");
    assert_eq!(args[0], "run");
    assert_eq!(args.last().map(String::as_str), Some(PROMPT), "{args:?}");

    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    let types: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"step_start"), "{types:?}");
    assert_eq!(types.last(), Some(&"step_finish"), "{types:?}");
    assert!(types.contains(&"text"), "{types:?}");
    let session = lines[0]["sessionID"].as_str().unwrap();
    assert!(session.starts_with("ses_"));
    assert!(
        lines
            .iter()
            .all(|l| l["sessionID"] == session && l["timestamp"].is_u64())
    );
    let finish = &lines.last().unwrap()["part"];
    assert!(finish["cost"].as_f64().unwrap() > 0.0);
    assert!(finish["tokens"]["input"].as_u64().unwrap() > 0);
}

#[test]
fn missing_credentials_fail_the_run_with_the_agents_exit_code() {
    let env = Env::new();
    // Claude reports "Not logged in" as an error result and exits 1.
    let run = run_agent(&env, "claude-code", "task", &[]);
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 1, "{run}");
    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    let result = lines.last().unwrap();
    assert_eq!(result["type"], "result");
    assert_eq!(result["is_error"], true);
    assert!(!worktree(&run).join("claude.txt").exists(), "no edit without auth");

    // Gemini's documented auth exit code is 41.
    let run = run_agent(&env, "gemini", "task", &[]);
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 41, "{run}");
    assert!(all_logs(&env, run["id"].as_str().unwrap()).contains("GEMINI_API_KEY"));

    // Codex: the turn fails (JSON error events) and exit is 1.
    let run = run_agent(&env, "codex", "task", &[]);
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 1, "{run}");
    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    assert_eq!(lines.last().unwrap()["type"], "turn.failed");

    // Each preset's credential variable is enough on its own.
    for (agent, var) in [
        ("claude-code", "CLAUDE_CODE_OAUTH_TOKEN"),
        ("codex", "OPENAI_API_KEY"),
        ("aider", "ANTHROPIC_API_KEY"),
        ("opencode", "OPENAI_API_KEY"),
    ] {
        let run = run_agent(&env, agent, "task", &[(var, "k")]);
        assert_succeeded(&env, &run);
    }
}

#[test]
fn agents_reports_availability_and_versions_from_path() {
    let env = Env::new();
    let (v, out) = json_with(&env, &fakes_path(), &[], &["agents"]);
    assert!(out.status.success(), "{v}");
    let agents = v["agents"].as_array().unwrap();
    let find = |agents: &[Value], name: &str| -> Value {
        agents
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .clone()
    };
    for (preset, bin, version) in PRESETS {
        let a = find(agents, preset);
        assert_eq!(a["available"], true, "{a}");
        assert_eq!(a["version"], *version, "{a}");
        assert_eq!(a["path"], format!("{FAKES}/{bin}"), "{a}");
        assert_eq!(a["origin"], "preset");
    }

    // Without the fakes nothing is found (the `command` agent needs no program).
    let (v, _) = json_with(&env, "/usr/bin:/bin", &[], &["agents"]);
    let agents = v["agents"].as_array().unwrap();
    for (preset, _, _) in PRESETS {
        let a = find(agents, preset);
        assert_eq!(a["available"], false, "{a}");
        assert_eq!(a["version"], Value::Null, "{a}");
        assert!(!a["install_hint"].as_str().unwrap().is_empty(), "{a}");
    }
    assert_eq!(find(agents, "command")["available"], true);

    // One missing binary: only that preset is unavailable.
    let some = env.dir.path().join("some-agents");
    std::fs::create_dir_all(&some).unwrap();
    for (_, bin, _) in PRESETS.iter().filter(|(_, b, _)| *b != "codex") {
        std::os::unix::fs::symlink(format!("{FAKES}/{bin}"), some.join(bin)).unwrap();
    }
    let (v, _) = json_with(&env, &format!("{}:/usr/bin:/bin", some.display()), &[], &["agents"]);
    let agents = v["agents"].as_array().unwrap();
    for (preset, _, version) in PRESETS {
        let a = find(agents, preset);
        if *preset == "codex" {
            assert_eq!(a["available"], false, "{a}");
        } else {
            assert_eq!(a["available"], true, "{a}");
            assert_eq!(a["version"], *version, "{a}");
        }
    }
}

#[test]
fn running_an_agent_whose_program_is_missing_is_agent_unavailable() {
    let env = Env::new();
    let (v, out) = json_with(&env, "/usr/bin:/bin", &[], &["run", "--agent", "codex", "x"]);
    assert_eq!(v["error"]["code"], "AGENT_UNAVAILABLE", "{v}");
    assert_eq!(out.status.code(), Some(69), "{v}");
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("@openai/codex"),
        "install hint: {v}"
    );
    let (runs, _) = json_with(&env, "/usr/bin:/bin", &[], &["ls"]);
    assert_eq!(runs["runs"], serde_json::json!([]), "no run was recorded");
    // The same request succeeds once the program is on PATH.
    let run = run_agent(&env, "codex", "x", &[("CODEX_API_KEY", "k")]);
    assert_succeeded(&env, &run);
}

#[test]
fn repository_definitions_add_agents_and_override_presets() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        r#"
# codex with the prompt on stdin and no `-`: exec reads stdin when PROMPT is omitted.
[agents.mine]
command = ["codex", "exec", "--json", "--full-auto"]
prompt_via = "stdin"
env = { OPENAI_BASE_URL = "http://127.0.0.1:9" }
secret_env = ["CODEX_API_KEY"]
description = "codex, my way"

# claude-code with one JSON result instead of a stream, and edits only.
[agents.claude-code]
command = ["claude", "-p", "{prompt}", "--output-format", "json", "--permission-mode", "acceptEdits"]
secret_env = ["ANTHROPIC_API_KEY"]
"#,
    )
    .unwrap();
    let file = env.repo.join(".agentctl/agents.toml");

    let (v, _) = json_with(&env, &fakes_path(), &[], &["agents"]);
    let agents = v["agents"].as_array().unwrap();
    let mine = agents.iter().find(|a| a["name"] == "mine").expect("mine listed");
    assert_eq!(mine["available"], true, "{mine}");
    // A repository's definitions are its code: `agents` does not run their version commands.
    assert_eq!(mine["version"], serde_json::Value::Null, "{mine}");
    assert_eq!(mine["prompt_via"], "stdin");
    assert_eq!(mine["origin"], file.display().to_string(), "{mine}");
    let claude = agents.iter().find(|a| a["name"] == "claude-code").unwrap();
    assert_eq!(claude["origin"], file.display().to_string(), "{claude}");

    let run = run_agent(&env, "mine", PROMPT, &[("CODEX_API_KEY", "k")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "codex", PROMPT, &env);
    assert_eq!(argv(&run, "codex"), ["exec", "--json", "--full-auto"]);
    assert!(
        received(&run, "codex", "env")
            .lines()
            .any(|l| l == "OPENAI_BASE_URL=http://127.0.0.1:9"),
        "the definition's env"
    );

    let run = run_agent(&env, "claude-code", PROMPT, &[("ANTHROPIC_API_KEY", "k")]);
    assert_succeeded(&env, &run);
    assert_ran_in_worktree(&run, "claude", PROMPT, &env);
    let args = argv(&run, "claude");
    assert!(args.contains(&"acceptEdits".to_owned()) && !args.contains(&"--verbose".to_owned()));
    let lines = json_lines(&env.logs(run["id"].as_str().unwrap()));
    assert_eq!(lines.len(), 1, "json mode prints only the result: {lines:?}");
    assert_eq!(lines[0]["type"], "result");
}

#[test]
fn fakes_reject_the_mistakes_a_wrong_preset_would_make() {
    // Each definition gets one documented detail wrong; the fake fails (or, for a missing
    // auto-approval, makes no edit) the way the real tool does.
    let cases: &[(&str, &str, &str, i64, &str)] = &[
        (
            "claude-no-verbose",
            r#"["claude", "-p", "{prompt}", "--output-format", "stream-json"]"#,
            "ANTHROPIC_API_KEY",
            1,
            "requires --verbose",
        ),
        (
            "claude-bad-mode",
            r#"["claude", "-p", "{prompt}", "--permission-mode", "yolo"]"#,
            "ANTHROPIC_API_KEY",
            1,
            "Allowed choices",
        ),
        (
            "claude-no-print",
            r#"["claude", "{prompt}"]"#,
            "ANTHROPIC_API_KEY",
            1,
            "Raw mode is not supported",
        ),
        (
            "codex-no-exec",
            r#"["codex", "--json", "{prompt}"]"#,
            "CODEX_API_KEY",
            1,
            "stdin is not a terminal",
        ),
        (
            "codex-unknown-flag",
            r#"["codex", "exec", "--jsonl", "{prompt}"]"#,
            "CODEX_API_KEY",
            2,
            "unexpected argument '--jsonl'",
        ),
        (
            "codex-yolo-and-full-auto",
            r#"["codex", "exec", "--full-auto", "--yolo", "{prompt}"]"#,
            "CODEX_API_KEY",
            2,
            "cannot be used with",
        ),
        (
            "gemini-untrusted",
            r#"["gemini", "-p", "{prompt}", "--approval-mode=yolo"]"#,
            "GEMINI_API_KEY",
            55,
            "not running in a trusted directory",
        ),
        (
            "aider-stdin",
            r#"["aider", "--yes-always", "--stdin"]"#,
            "OPENAI_API_KEY",
            2,
            "unrecognized arguments: --stdin",
        ),
        (
            "opencode-no-run",
            r#"["opencode", "--format", "json", "{prompt}"]"#,
            "OPENAI_API_KEY",
            1,
            "opencode run",
        ),
        (
            "opencode-bad-format",
            r#"["opencode", "run", "--format", "jsonl", "{prompt}"]"#,
            "OPENAI_API_KEY",
            1,
            "Invalid values",
        ),
    ];
    let env = Env::new();
    let mut toml = String::new();
    for (name, command, _, _, _) in cases {
        let via = if name.starts_with("aider") { "stdin" } else { "arg" };
        toml.push_str(&format!(
            "[agents.{name}]\ncommand = {command}\nprompt_via = \"{via}\"\n\n"
        ));
    }
    toml.push_str(
        "[agents.claude-no-approval]\ncommand = [\"claude\", \"-p\", \"{prompt}\", \"--output-format\", \"json\"]\nsecret_env = [\"ANTHROPIC_API_KEY\"]\n\n",
    );
    toml.push_str(
        "[agents.codex-read-only]\ncommand = [\"codex\", \"exec\", \"--json\", \"-\"]\nprompt_via = \"stdin\"\nsecret_env = [\"CODEX_API_KEY\", \"OPENAI_API_KEY\"]\n",
    );
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(env.repo.join(".agentctl/agents.toml"), toml).unwrap();

    for (name, _, var, code, message) in cases {
        let run = run_agent(&env, name, "task", &[(*var, "k")]);
        let logs = all_logs(&env, run["id"].as_str().unwrap());
        assert_eq!(run["state"], "failed", "{name}: {run}\n{logs}");
        assert_eq!(run["exit_code"], *code, "{name}: {run}\n{logs}");
        assert!(logs.contains(message), "{name}: {logs}");
    }

    // Without auto-approval the run "succeeds" but nothing is edited.
    let run = run_agent(&env, "claude-no-approval", "task", &[("ANTHROPIC_API_KEY", "k")]);
    assert_succeeded(&env, &run);
    assert!(!worktree(&run).join("claude.txt").exists());
    let result = json_lines(&env.logs(run["id"].as_str().unwrap())).pop().unwrap();
    assert_eq!(result["permission_denials"].as_array().unwrap().len(), 1, "{result}");
    let run = run_agent(&env, "codex-read-only", "task", &[("CODEX_API_KEY", "k")]);
    assert_succeeded(&env, &run);
    assert!(!worktree(&run).join("codex.txt").exists());
    assert!(env.logs(run["id"].as_str().unwrap()).contains("read-only"));
}

#[test]
fn secrets_reach_the_agent_but_are_never_recorded() {
    let env = Env::new();
    let secret = "sk-ant-SECRET-4f1c9a7e2b";
    let dotenv_secret = "oauth-DOTENV-SECRET-93b2";
    // A repository `.env` is passed to the agent too (and is not in the worktree: untracked).
    std::fs::write(
        env.repo.join(".env"),
        format!("CLAUDE_CODE_OAUTH_TOKEN={dotenv_secret}\n"),
    )
    .unwrap();
    let run = run_agent(&env, "claude-code", PROMPT, &[("ANTHROPIC_API_KEY", secret)]);
    assert_succeeded(&env, &run);
    let id = run["id"].as_str().unwrap();

    let vars = received(&run, "claude", "env");
    assert!(
        vars.lines()
            .any(|l| l == format!("ANTHROPIC_API_KEY sha256={}", sha256(secret))),
        "the agent got the caller's key: {vars}"
    );
    assert!(
        vars.lines()
            .any(|l| l == format!("CLAUDE_CODE_OAUTH_TOKEN sha256={}", sha256(dotenv_secret))),
        "the agent got the .env value: {vars}"
    );

    let shown = cmd(&env, &fakes_path())
        .args(["--json", "show", "--events", id])
        .output()
        .unwrap();
    assert!(shown.status.success());
    let shown = stdout(&shown);
    assert!(shown.contains("ANTHROPIC_API_KEY"), "the name is recorded: {shown}");
    for s in [secret, dotenv_secret] {
        assert!(!shown.contains(s), "secret in events: {shown}");
        assert!(!all_logs(&env, id).contains(s));
    }

    // No file of the state dir holds a secret (the fake writes only hashes into the worktree).
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, found);
            } else if p.is_file() {
                found.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&env.state, &mut files);
    assert!(files.iter().any(|p| p.ends_with("events.jsonl")), "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in [secret, dotenv_secret] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "secret in {}",
                f.display()
            );
        }
    }
}

#[test]
fn a_prompt_that_looks_like_an_option_stays_a_prompt() {
    let env = Env::new();
    let vars = [
        ("ANTHROPIC_API_KEY", "k"),
        ("GEMINI_API_KEY", "k"),
        ("ANTHROPIC_API_KEY", "k"),
    ];
    for (agent, bin) in [
        ("claude-code", "claude"),
        ("gemini", "gemini"),
        ("opencode", "opencode"),
    ] {
        let prompt = "--help me rename the -v flag";
        let (run, out) = json_with(
            &env,
            &fakes_path(),
            &vars,
            &["run", "--agent", agent, "--prompt", prompt],
        );
        assert!(run["id"].is_string(), "{run} {}", stderr(&out));
        assert_succeeded(&env, &run);
        assert_eq!(received(&run, bin, "prompt"), prompt, "{agent}");
    }
}

#[test]
fn listing_agents_never_runs_a_repositorys_own_definitions() {
    let env = Env::new();
    let mark = env.dir.path().join("ran");
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        format!(
            "[agents.trap]\ncommand = [\"sh\"]\nversion_args = [\"-c\", \"touch {}\"]\n",
            mark.display()
        ),
    )
    .unwrap();
    let (v, out) = json_with(&env, &fakes_path(), &[], &["agents"]);
    assert!(out.status.success(), "{v}");
    assert!(v["agents"].as_array().unwrap().iter().any(|a| a["name"] == "trap"));
    assert!(
        !mark.exists(),
        "agentctl agents ran a command from the repository's agents.toml"
    );
}
