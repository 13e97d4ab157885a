//! Run lifecycle through the CLI: every terminal outcome, following output, detaching and
//! attaching later, hooks, PTY agents.

use std::time::Duration;

use crate::harness::{Env, stderr, stdout};

#[test]
fn succeeded_run_reports_json_and_exit_zero() {
    let env = Env::new();
    let (v, out) = env.json(&["run", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for key in ["id", "state", "exit_code", "worktree", "branch"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["exit_code"], 0);
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["branch"], format!("agentctl/{id}"));
    assert!(v["worktree"].as_str().unwrap().starts_with(env.state.to_str().unwrap()));
    // --json never mixes agent output into stdout.
    assert!(!stdout(&out).contains("out\n"));
    assert_eq!(env.logs(id), "out\n");
}

#[test]
fn failed_run_passes_the_agent_exit_code_through() {
    let env = Env::new();
    let out = env.run(&["run", "--", "sh", "-c", "echo partial; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "partial\n", "run prints the agent's stdout exactly");
    assert!(stderr(&out).contains("failed"), "{}", stderr(&out));
}

#[test]
fn hard_timeout_and_idle_timeout_end_as_timed_out() {
    let env = Env::new();
    let hard = env.start(&["--timeout", "500ms", "--grace", "200ms", "--", "sleep", "30"]);
    let idle = env.start(&[
        "--idle-timeout",
        "700ms",
        "--grace",
        "200ms",
        "--",
        "sh",
        "-c",
        "echo tick; sleep 30",
    ]);
    let chatty = env.start(&[
        "--idle-timeout",
        "700ms",
        "--timeout",
        "20s",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do echo $i; sleep 0.25; done",
    ]);
    for (id, reason) in [(&hard, "hard timeout"), (&idle, "idle timeout")] {
        let v = env.wait(id);
        assert_eq!(v["state"], "timed_out", "{v}");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
        let kinds: Vec<String> = env
            .events(id)
            .iter()
            .map(|e| e["data"]["type"].as_str().unwrap().to_owned())
            .collect();
        assert!(kinds.contains(&"stop_requested".to_owned()), "{kinds:?}");
    }
    // Output keeps the idle timer from firing.
    assert_eq!(env.wait(&chatty)["state"], "succeeded");
    let out = env.run(&["wait", &hard]);
    assert_eq!(out.status.code(), Some(124));
}

#[test]
fn runs_outlive_the_cli_and_logs_follow_attaches_later() {
    let env = Env::new();
    let script = env.script(
        "slow.sh",
        "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.2; done\necho done >&2\n",
    );
    // `run --detach` returns at once: the CLI process is gone while the run goes on.
    let id = env.start(&["--", &script]);
    let v = env.show(&id);
    assert!(
        ["pending", "preparing", "running"].contains(&v["state"].as_str().unwrap()),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = env.cmd().args(["logs", "-f", &id]).output().unwrap();
    let expected: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stdout(&out), expected);
    assert_eq!(stderr(&out), "done\n");
    assert_eq!(env.show(&id)["state"], "succeeded");
    // Timestamps only when asked.
    let ts = stdout(&env.run(&["logs", "--timestamps", &id]));
    assert!(ts.lines().all(|l| l.contains("Z line ")), "{ts}");
}

#[test]
fn foreground_run_follows_output_and_survives_a_killed_cli() {
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["run", "--id", "fg", "--", "sh", "-c", "echo a; sleep 1; echo b"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    child.kill().unwrap();
    child.wait().unwrap();
    let v = env.wait("fg");
    assert_eq!(v["state"], "succeeded", "the run must not die with its CLI: {v}");
    assert_eq!(env.logs("fg"), "a\nb\n");
}

#[test]
fn hooks_run_in_the_worktree_and_a_failing_pre_run_fails_the_run() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let hooks = env.repo.join(".agentctl/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let pre = hooks.join("pre-run");
    std::fs::write(&pre, "#!/bin/sh\necho \"$AGENTCTL_RUN_ID $AGENTCTL_HOOK\" > pre.txt\n").unwrap();
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o755)).unwrap();
    let post = hooks.join("post-run");
    std::fs::write(
        &post,
        "#!/bin/sh\necho \"$AGENTCTL_RUN_STATE $AGENTCTL_EXIT_CODE\" > post.txt\n",
    )
    .unwrap();
    std::fs::set_permissions(&post, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (v, _) = env.json(&["run", "--id", "hooked", "--", "sh", "-c", "cat pre.txt"]);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(env.logs("hooked"), "hooked pre-run\n");
    let wt = std::path::PathBuf::from(v["worktree"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(wt.join("post.txt")).unwrap(), "succeeded 0\n");

    std::fs::write(&pre, "#!/bin/sh\necho nope\nexit 3\n").unwrap();
    let (v, out) = env.json(&["run", "--", "touch", "should-not-exist"]);
    assert_eq!(v["state"], "failed");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("pre-run hook failed (exit code 3)"),
        "{v}"
    );
    assert_eq!(out.status.code(), Some(1));
    let wt = std::path::PathBuf::from(v["worktree"].as_str().unwrap());
    assert!(
        !wt.join("should-not-exist").exists(),
        "the agent must not start after a failed pre-run hook"
    );
    let events = env.events(v["id"].as_str().unwrap());
    let hook = events.iter().find(|e| e["data"]["type"] == "hook_finished").unwrap();
    assert_eq!(hook["data"]["exit_code"], 3);
    assert!(hook["data"]["output_tail"].as_str().unwrap().contains("nope"));
}

#[test]
fn tty_agents_get_a_terminal() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        "[agents.termy]\ncommand = [\"sh\", \"-c\", \"if [ -t 1 ]; then echo tty:yes; else echo tty:no; fi; echo \\\"$0\\\"\", \"{prompt}\"]\ntty = true\n",
    )
    .unwrap();
    let (v, out) = env.json(&["run", "--agent", "termy", "hello there"]);
    assert_eq!(v["state"], "succeeded", "{}", stderr(&out));
    let logs = env.logs(v["id"].as_str().unwrap());
    assert!(logs.contains("tty:yes"), "{logs:?}");
    assert!(logs.contains("hello there"), "{logs:?}");
}

#[test]
fn environment_reaches_the_agent() {
    let env = Env::new();
    std::fs::write(env.repo.join(".env"), "FROM_DOTENV=dot\n").unwrap();
    let (v, _) = env.json(&[
        "run",
        "--env",
        "GIVEN=yes",
        "--",
        "sh",
        "-c",
        "echo $GIVEN $FROM_DOTENV $AGENTCTL_RUN_ID $AGENTCTL_BRANCH; pwd",
    ]);
    let id = v["id"].as_str().unwrap();
    let logs = env.logs(id);
    let wt = v["worktree"].as_str().unwrap();
    assert_eq!(logs, format!("yes dot {id} agentctl/{id}\n{wt}\n"));
}

/// Runs `agentctl ARGS` with an extra descriptor (a pipe's write end) open as fd 10 and not
/// close-on-exec, as a careless caller might leave it.
fn run_with_leaked_fd(env: &Env, args: &[&str]) -> std::process::Output {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (_reader, writer) = std::io::pipe().unwrap();
    let raw = writer.as_raw_fd();
    let mut cmd = env.cmd();
    cmd.args(args);
    // SAFETY: dup2 is async-signal-safe; the new descriptor is not close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::dup2(raw, 10) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn agents_get_only_their_stdio_descriptors() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo.join(".agentctl")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        "[agents.tty-sleeper]\ncommand = [\"sleep\", \"30\"]\ntty = true\nprompt_via = \"stdin\"\n\n\
         [agents.tty-counter]\ncommand = [\"wc\", \"-c\"]\ntty = true\nprompt_via = \"stdin\"\n",
    )
    .unwrap();
    // The agent's descriptors, read from outside while it runs (a shell listing its own would
    // see the pipes of its own pipeline).
    let fds_of = |args: &[&str]| {
        let out = run_with_leaked_fd(
            &env,
            &[&["--json", "run", "--detach", "--grace", "200ms"][..], args].concat(),
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let v = env.until(&id, Duration::from_secs(10), |v| v["state"] == "running");
        // The agent itself: the deepest process under the run's (in a sandbox, the run's
        // process is bubblewrap, whose own descriptors are its business).
        let mut pid = v["pid"].as_u64().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
            match children.split_whitespace().next() {
                Some(child) => pid = child.parse().unwrap(),
                None => {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if ["sleep", "wc"].contains(&comm.trim()) || std::time::Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort();
        env.run(&["stop", &id]);
        fds
    };
    assert_eq!(fds_of(&["--", "sleep", "30"]), [0, 1, 2], "a piped agent");
    assert_eq!(
        fds_of(&["--agent", "tty-sleeper", "prompt"]),
        [0, 1, 2],
        "a terminal agent"
    );
    // A terminal agent with a long prompt on stdin gets all of it, and it is not echoed.
    let prompt = "x".repeat(10_000);
    let (v, _) = env.json(&["run", "--agent", "tty-counter", &prompt]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let logs = env.logs(v["id"].as_str().unwrap());
    assert_eq!(logs.trim(), "10000", "{logs:?}");
}

#[test]
fn a_flood_of_output_is_captured_exactly_and_compactly() {
    let env = Env::new();
    let (v, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        "head -c 20000000 /dev/zero; yes hello | head -c 5000000",
    ]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let id = v["id"].as_str().unwrap();
    let out = env.cmd().args(["logs", id]).output().unwrap();
    assert_eq!(out.stdout.len(), 25_000_000);
    assert!(out.stdout[..20_000_000].iter().all(|&b| b == 0));
    assert!(out.stdout[20_000_000..].starts_with(b"hello\nhello\n"));
    // NUL bytes are stored as base64, not as six-byte JSON escapes.
    let size = std::fs::metadata(env.state.join("runs").join(id).join("output.jsonl"))
        .unwrap()
        .len();
    assert!(size < 40_000_000, "output log of {size} bytes for 25 MB of output");
}

#[test]
fn the_prompt_can_come_from_an_option_a_file_or_stdin() {
    use std::io::Write;
    let env = Env::new();
    let echo = ["--", "sh", "-c", "printf %s \"$AGENTCTL_PROMPT\""];
    let (v, _) = env.json(&[&["run", "--prompt", "-starts with a dash"][..], &echo].concat());
    assert_eq!(env.logs(v["id"].as_str().unwrap()), "-starts with a dash");
    let file = env.dir.path().join("task.md");
    std::fs::write(&file, "from a file\nline two").unwrap();
    let (v, _) = env.json(&[&["run", "--prompt-file", file.to_str().unwrap()][..], &echo].concat());
    assert_eq!(env.logs(v["id"].as_str().unwrap()), "from a file\nline two");
    let mut child = env
        .cmd()
        .args([&["--json", "run", "--prompt-file", "-"][..], &echo].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"from stdin").unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env.logs(v["id"].as_str().unwrap()), "from stdin");
    // Two sources at once is a usage error.
    assert_eq!(
        env.run(&["run", "x", "--prompt", "y", "--", "true"]).status.code(),
        Some(2)
    );
}

#[test]
fn logs_json_prints_one_object_per_chunk_with_exact_bytes() {
    let env = Env::new();
    let (v, _) = env.json(&["run", "--", "sh", "-c", "echo out; echo err >&2; printf '\\377'"]);
    let out = env.run(&["--json", "logs", v["id"].as_str().unwrap()]);
    let chunks: Vec<serde_json::Value> = crate::harness::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each chunk is text (`data`) or, if not UTF-8, base64 (`b64`); together: the exact bytes.
    let bytes = |stream: &str| -> Vec<u8> {
        use base64::Engine as _;
        chunks
            .iter()
            .filter(|c| c["stream"] == stream)
            .flat_map(|c| match (c["data"].as_str(), c["b64"].as_str()) {
                (Some(text), _) => text.as_bytes().to_vec(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
                _ => panic!("chunk without data: {c}"),
            })
            .collect()
    };
    assert_eq!(bytes("stdout"), b"out\n\xff");
    assert_eq!(bytes("stderr"), b"err\n");
    assert!(
        chunks.iter().any(|c| c["b64"].is_string()),
        "non-UTF-8 bytes come as base64: {chunks:?}"
    );
}
