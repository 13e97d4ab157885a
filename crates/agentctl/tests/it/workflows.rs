//! Workflows end to end with the scripted example agents of `examples/workflows/review`: the
//! coder → reviewer loop, a reviewer who is never satisfied, a gate, validation errors,
//! messages, and crash-resume — the supervisor killed (SIGKILL) at every step boundary and in
//! the middle of every step, then resumed by `agentctl resume` or by a daemon: no completed
//! step runs twice and every message is delivered once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::Daemon;
use crate::harness::{Env, git, stdout};

/// The example repository's files, copied into the test repository.
fn example_env() -> Env {
    let env = Env::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/review");
    copy_dir(&src, &env.repo);
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "example workflows"]);
    env
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Starts `workflow` detached with extra environment `vars` for its agents (`--env`: a
/// sandboxed agent gets none of the caller's own; `AGENTCTL_*` go to the supervisor); returns
/// the run id.
fn start_workflow(env: &Env, vars: &[(&str, &str)], workflow: &str, task: &str) -> String {
    let mut args: Vec<String> = ["--json", "run", "--detach", "--workflow", workflow, task]
        .map(str::to_owned)
        .to_vec();
    // Fault injection (`AGENTCTL_CRASH_AT`) is for the supervisor, which gets the caller's env.
    let (ours, theirs): (Vec<_>, Vec<_>) = vars.iter().partition(|(k, _)| k.starts_with("AGENTCTL_"));
    for (k, v) in theirs {
        args.extend(["--env".to_owned(), format!("{k}={v}")]);
    }
    let out = env.cmd().envs(ours.iter().copied()).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn steps(show: &Value) -> Vec<(String, String)> {
    show["workflow"]["steps"]
        .as_array()
        .expect("workflow steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn kinds<'a>(events: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["data"]["type"] == kind)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// The review example's full history: 4 executions, one change request, then approval.
fn assert_review_completed(env: &Env, id: &str) {
    let show = env.show(id);
    assert_eq!(show["state"], "succeeded", "{show}");
    assert_eq!(
        steps(&show),
        pairs(&[
            ("code", "success"),
            ("review", "changes_requested"),
            ("code", "success"),
            ("review", "approved"),
        ]),
        "{show}"
    );
    let events = env.events(id);
    // No completed step ran twice: one step_finished per hop, hops 1..=4.
    let hops: Vec<u64> = kinds(&events, "step_finished")
        .map(|e| e["data"]["hop"].as_u64().unwrap())
        .collect();
    assert_eq!(hops, vec![1, 2, 3, 4], "{events:#?}");
    // Every message counted is delivered once: into exactly one finished execution.
    let finished: BTreeSet<(u64, u64)> = kinds(&events, "step_finished")
        .map(|e| {
            (
                e["data"]["hop"].as_u64().unwrap(),
                e["data"]["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut deliveries: BTreeMap<u64, usize> = BTreeMap::new();
    for e in kinds(&events, "step_started") {
        let key = (
            e["data"]["hop"].as_u64().unwrap(),
            e["data"]["attempt"].as_u64().unwrap(),
        );
        if finished.contains(&key) {
            for seq in e["data"]["delivered"].as_array().unwrap() {
                *deliveries.entry(seq.as_u64().unwrap()).or_default() += 1;
            }
        }
    }
    let messages = &show["workflow"]["messages"];
    let change_request = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["verdict"] == "changes_requested" && m["status"] != "void")
        .expect("the counted change request");
    let seq = change_request["seq"].as_u64().unwrap();
    assert_eq!(deliveries.get(&seq), Some(&1), "{deliveries:?} {messages}");
    assert!(deliveries.values().all(|n| *n == 1), "{deliveries:?}");
    assert_eq!(change_request["status"], "delivered");
    assert_eq!(change_request["delivered_hop"], 3);
    // The worktree holds both passes and nothing of an interrupted one.
    let worktree = Path::new(show["worktree"].as_str().unwrap());
    let work = std::fs::read_to_string(worktree.join("WORK.md")).unwrap();
    assert_eq!(work.matches("## pass").count(), 2, "{work}");
    assert!(
        work.contains("Feedback: - from review (hop 2, verdict changes_requested): Handle the empty input"),
        "{work}"
    );
    assert!(
        !worktree.join("NOTES.tmp").exists(),
        "an interrupted pass's notes survived"
    );
}

#[test]
fn the_coder_reviewer_example_loops_once_then_succeeds() {
    let env = example_env();
    let out = env.run(&["run", "--workflow", "review", "Add a parser for the config file"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert_eq!(text.matches("reviewer: cycle").count(), 2, "{text}");
    let id = env.json(&["ls"]).0["runs"][0]["id"].as_str().unwrap().to_owned();
    assert_review_completed(&env, &id);
    let events = env.events(&id);
    // A checkpoint per step, each a different one.
    let cps: Vec<u64> = kinds(&events, "step_finished")
        .map(|e| e["data"]["checkpoint"].as_u64().expect("a checkpoint per step"))
        .collect();
    assert_eq!(cps.iter().collect::<BTreeSet<_>>().len(), 4, "{cps:?}");
    // The verdicts are in the log, and each step saw its variables.
    let verdicts: Vec<&str> = kinds(&events, "message_sent")
        .map(|e| e["data"]["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["changes_requested", "approved"]);
    let prompts: Vec<&str> = kinds(&events, "step_started")
        .map(|e| e["data"]["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(
        prompts[0],
        "Task: Add a parser for the config file\nFeedback: \nCycle 1 of 2"
    );
    assert!(prompts[2].ends_with("Cycle 2 of 2"), "{}", prompts[2]);
    assert!(text.contains("coder: step code, cycle 2 of 2, 2 hops left"), "{text}");
    // `show` says where the loop stands; `msgs` lists the messages.
    let human = stdout(&env.run(&["show", &id]));
    assert!(human.contains("review       cycle 2 of 2"), "{human}");
    let msgs = stdout(&env.run(&["msgs", &id]));
    assert!(
        msgs.contains("review → code [changes_requested] (hop 2, delivered to hop 3)"),
        "{msgs}"
    );
}

#[test]
fn a_reviewer_who_always_requests_changes_is_consulted_twice_then_the_workflow_is_exhausted() {
    let env = example_env();
    let out = env.run(&["run", "--workflow", "review-strict", "Add a parser"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let id = env.json(&["ls"]).0["runs"][0]["id"].as_str().unwrap().to_owned();
    let show = env.show(&id);
    assert_eq!(show["state"], "failed");
    assert!(
        show["reason"].as_str().unwrap().starts_with("exhausted: cycle 2 of 2"),
        "{show}"
    );
    assert_eq!(show["workflow"]["end"]["exhausted"], true);
    assert_eq!(
        steps(&show),
        pairs(&[
            ("code", "success"),
            ("review", "changes_requested"),
            ("code", "success"),
            ("review", "changes_requested"),
        ])
    );
    let human = stdout(&env.run(&["show", &id]));
    assert!(human.contains("review       cycle 2 of 2"), "{human}");
}

#[test]
fn a_failing_gate_routes_back_like_a_verdict() {
    let env = example_env();
    let id = env.start(&["--workflow", "gated", "Write two passes"]);
    let done = env.wait(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        steps(&env.show(&id)),
        pairs(&[
            ("code", "success"),
            ("check", "failure"),
            ("code", "success"),
            ("check", "success"),
        ])
    );
}

fn write_workflow(env: &Env, name: &str, body: &str) {
    let dir = env.repo.join(".agentctl/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), body).unwrap();
}

/// Runs `run --workflow NAME` expecting an error; returns (exit code, error JSON).
fn refused(env: &Env, name: &str) -> (i32, Value) {
    let out = env
        .cmd()
        .args(["--json", "run", "--workflow", name, "task"])
        .output()
        .unwrap();
    let err: Value = serde_json::from_slice(&out.stderr)
        .or_else(|_| serde_json::from_slice(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), err["error"].clone())
}

#[test]
fn invalid_workflows_are_refused_with_the_problem_named() {
    let env = example_env();
    let cases = [
        (
            "unknown",
            "name = \"unknown\"\n[[steps]]\nid = \"a\"\nagent = \"coder\"\n[[edges]]\nfrom = \"a\"\nto = \"b\"\n",
            "`to` names unknown step `b`",
        ),
        (
            "unreachable",
            "name = \"unreachable\"\n[[steps]]\nid = \"a\"\nagent = \"coder\"\n[[steps]]\nid = \"b\"\nagent = \"coder\"\n",
            "step `b` is unreachable from `a`",
        ),
        (
            "unbounded",
            "name = \"unbounded\"\n[[steps]]\nid = \"a\"\nagent = \"coder\"\n[[steps]]\nid = \"b\"\nagent = \"reviewer\"\n[[edges]]\nfrom = \"a\"\nto = \"b\"\n[[edges]]\nfrom = \"b\"\nto = \"a\"\nwhen = \"changes_requested\"\n",
            "the cycle a → b → a has no bound",
        ),
        (
            "noagent",
            "name = \"noagent\"\n[[steps]]\nid = \"a\"\nagent = \"ghost\"\n",
            "step `a` uses agent `ghost`, which is not defined",
        ),
        (
            "typo",
            "name = \"typo\"\n[[stepz]]\nid = \"a\"\n",
            "unknown field `stepz`",
        ),
    ];
    for (name, body, expect) in cases {
        write_workflow(&env, name, body);
        let (code, err) = refused(&env, name);
        assert_eq!(code, 78, "{name}: {err}");
        assert_eq!(err["code"], "WORKFLOW_INVALID", "{name}: {err}");
        assert!(err["message"].as_str().unwrap().contains(expect), "{name}: {err}");
    }
    let (code, err) = refused(&env, "missing");
    assert_eq!(
        (code, err["code"].as_str().unwrap()),
        (66, "WORKFLOW_NOT_FOUND"),
        "{err}"
    );
    assert!(err["hint"].as_str().unwrap().contains("review"), "{err}");
    // `workflows` lists them all and says which cannot run, undefined agents included.
    let out = env.run(&["workflows"]);
    assert_eq!(out.status.code(), Some(78));
    let text = stdout(&out);
    assert!(
        text.contains("review-strict") && text.contains("invalid: the cycle a → b → a"),
        "{text}"
    );
    assert!(
        text.contains("invalid: step `a` uses agent `ghost`, which is not defined"),
        "{text}"
    );
    // No run was recorded for any of them.
    assert_eq!(env.json(&["ls"]).0["runs"].as_array().unwrap().len(), 0);
}

#[test]
fn messages_are_refused_outside_a_running_step() {
    let env = example_env();
    let out = env.run(&["msg", "send", "--run", "not-a-run", "hello"]);
    assert_eq!(out.status.code(), Some(66), "{}", String::from_utf8_lossy(&out.stderr));
    // A single-agent run has no steps to send from.
    let id = env.start(&["--", "true"]);
    env.wait(&id);
    let out = env.run(&["msg", "send", "--run", &id, "hello"]);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a workflow run"));
    // A finished workflow run no longer takes messages.
    let wf = env.start(&["--workflow", "review", "task"]);
    env.wait(&wf);
    let out = env.run(&["msg", "send", "--run", &wf, "late"]);
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Polls until `pred` holds for the run's events (at most 20 s).
fn until_events(env: &Env, id: &str, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let events = env.events(id);
        if pred(&events) {
            return events;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never {what}: {events:#?}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Sends `signal` to the supervisor of the run `show` describes.
fn signal_supervisor(show: &Value, signal: nix::sys::signal::Signal) {
    let pid = show["supervisor_pid"].as_u64().expect("a supervisor pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

fn supervisor_gone(env: &Env, id: &str) {
    until_events(env, id, "supervisor gone", |_| {
        let show = env.show(id);
        show["state"] == "interrupted"
            || show["supervisor_pid"]
                .as_u64()
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
}

/// Resumes with `agentctl resume` until the workflow ends (a resumed supervisor may itself be
/// crashed by the fault point; then it is resumed again).
fn resume_to_end(env: &Env, id: &str) {
    for _ in 0..5 {
        supervisor_gone(env, id);
        let out = env.run(&["resume", id]);
        assert!(out.status.success(), "resume: {}", String::from_utf8_lossy(&out.stderr));
        let done = env.wait(id);
        if done["state"] != "interrupted" {
            return;
        }
    }
    panic!("the workflow did not end after 5 resumes");
}

/// Crashes the supervisor at the Nth pass of each fault point in turn (AGENTCTL_CRASH_AT),
/// resumes, and checks the finished history.
fn crash_at(point: &str, passes: std::ops::RangeInclusive<u32>) {
    for n in passes {
        let env = example_env();
        let at = format!("{point}:{n}");
        let id = start_workflow(&env, &[("AGENTCTL_CRASH_AT", &at)], "review", "Add a parser");
        let first = env.wait(&id);
        assert_eq!(first["state"], "interrupted", "{point}:{n}: {first}");
        resume_to_end(&env, &id);
        assert_review_completed(&env, &id);
        let events = env.events(&id);
        assert_eq!(kinds(&events, "interrupted").count(), 1, "{point}:{n}");
        assert_eq!(kinds(&events, "workflow_resumed").count(), 1, "{point}:{n}");
    }
}

#[test]
fn a_supervisor_killed_as_a_step_starts_is_resumed_without_repeating_finished_steps() {
    crash_at("step_started", 1..=4);
}

#[test]
fn a_supervisor_killed_after_a_steps_checkpoint_restarts_only_that_step() {
    crash_at("step_checkpointed", 1..=4);
}

#[test]
fn a_supervisor_killed_between_steps_continues_with_the_decided_next_step() {
    crash_at("step_finished", 1..=3);
}

#[test]
fn a_supervisor_killed_in_the_middle_of_each_step_restarts_it_from_its_start_checkpoint() {
    for hop in 1..=4u64 {
        let env = example_env();
        let sleep_hop = hop.to_string();
        let id = start_workflow(
            &env,
            &[("EXAMPLE_SLEEP", "5"), ("EXAMPLE_SLEEP_HOP", &sleep_hop)],
            "review",
            "Add a parser",
        );
        // Mid-step: the step's process started (and, for the coder, wrote its notes).
        until_events(&env, &id, &format!("hop {hop} running"), |evs| {
            let Some(at) = evs
                .iter()
                .position(|e| e["data"]["type"] == "step_started" && e["data"]["hop"] == hop)
            else {
                return false;
            };
            let after = &evs[at..];
            kinds(after, "started").count() == 1 && kinds(after, "step_finished").count() == 0
        });
        // The coder writes its notes first thing; the reviewer changes nothing.
        let show = env.show(&id);
        let notes = Path::new(show["worktree"].as_str().unwrap()).join("NOTES.tmp");
        let start = Instant::now();
        while hop % 2 == 1 && !notes.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "the coder wrote no notes");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        signal_supervisor(&show, nix::sys::signal::Signal::SIGKILL);
        resume_to_end(&env, &id);
        assert_review_completed(&env, &id);
        let events = env.events(&id);
        let resumed: Vec<&Value> = kinds(&events, "workflow_resumed").collect();
        assert_eq!(resumed.len(), 1, "hop {hop}");
        assert_eq!(resumed[0]["data"]["hop"], hop, "hop {hop}: {}", resumed[0]);
        // The cut-short step's partial work was saved as a checkpoint before it was undone.
        let saved = resumed[0]["data"]["saved_checkpoint"]
            .as_u64()
            .expect("saved checkpoint");
        let restored = resumed[0]["data"]["restored_to"].as_u64().expect("restored");
        if hop % 2 == 1 {
            assert!(saved > restored, "{}", resumed[0]);
            let diff = stdout(&env.run(&[
                "diff",
                &id,
                "--name-only",
                "--from",
                &restored.to_string(),
                "--to",
                &saved.to_string(),
            ]));
            assert!(diff.contains("NOTES.tmp"), "hop {hop}: {diff}");
        }
        // The restarted execution is attempt 2 of the same hop.
        let attempts: Vec<u64> = kinds(&events, "step_started")
            .filter(|e| e["data"]["hop"] == hop)
            .map(|e| e["data"]["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(attempts, vec![1, 2], "hop {hop}");
    }
}

#[test]
fn a_crash_while_resuming_is_resumed_again() {
    let env = example_env();
    let id = start_workflow(
        &env,
        &[("AGENTCTL_CRASH_AT", "step_started:2")],
        "review",
        "Add a parser",
    );
    assert_eq!(env.wait(&id)["state"], "interrupted");
    // The first resume dies right after recording that it resumed.
    let out = env
        .cmd()
        .env("AGENTCTL_CRASH_AT", "resumed:1")
        .args(["resume", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    resume_to_end(&env, &id);
    assert_review_completed(&env, &id);
    let events = env.events(&id);
    let resumed: Vec<&Value> = kinds(&events, "workflow_resumed").collect();
    assert_eq!(resumed.len(), 2);
    // The second resume found the worktree as the first restored it: nothing to undo again.
    assert_eq!(kinds(&events, "rolled_back").count(), 1, "{events:#?}");
    assert!(resumed[1]["data"].get("restored_to").is_none(), "{}", resumed[1]);
}

#[test]
fn a_daemon_resumes_an_interrupted_workflow_by_itself() {
    let env = example_env();
    let daemon = Daemon::start(&env);
    let id = start_workflow(
        &env,
        &[("AGENTCTL_CRASH_AT", "step_finished:2")],
        "review",
        "Add a parser",
    );
    let start = Instant::now();
    loop {
        let show = env.show(&id);
        if show["state"] == "succeeded" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not resumed: {show}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_review_completed(&env, &id);
    drop(daemon);
}

#[test]
fn stopping_a_workflow_ends_the_step_and_starts_no_other() {
    let env = example_env();
    let id = start_workflow(
        &env,
        &[("EXAMPLE_SLEEP", "30"), ("EXAMPLE_SLEEP_HOP", "1")],
        "review",
        "Add a parser",
    );
    until_events(&env, &id, "the first step running", |evs| {
        kinds(evs, "started").count() == 1
    });
    let out = env.run(&["stop", "--grace", "1s", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = env.wait(&id);
    assert_eq!(done["state"], "cancelled", "{done}");
    let events = env.events(&id);
    assert_eq!(kinds(&events, "step_started").count(), 1);
    let end = kinds(&events, "step_finished").next().expect("the step's end")["data"]["end"].clone();
    assert_eq!(end["state"], "cancelled", "{end}");
}

#[test]
fn an_interrupted_workflow_can_be_stopped_instead_of_resumed() {
    let env = example_env();
    let id = start_workflow(
        &env,
        &[("AGENTCTL_CRASH_AT", "step_finished:1")],
        "review",
        "Add a parser",
    );
    // A following `wait` returns at the interruption with 75, saying how to go on.
    let out = env.run(&["wait", &id]);
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.show(&id)["state"], "interrupted");
    let out = env.run(&["stop", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let show = env.show(&id);
    assert_eq!(show["state"], "cancelled", "{show}");
    assert_eq!(show["reason"], "stopped while interrupted (not resumed)");
    // Nothing to resume any more.
    let out = env.run(&["resume", &id]);
    assert_eq!(out.status.code(), Some(75));
    // And a single-agent run is not a workflow.
    let single = env.start(&["--", "true"]);
    env.wait(&single);
    assert_eq!(env.run(&["resume", &single]).status.code(), Some(64));
    assert_eq!(env.run(&["msgs", &single]).status.code(), Some(64));
}

#[test]
fn workflows_lists_definitions_as_json() {
    let env = example_env();
    let (v, out) = env.json(&["workflows"]);
    assert!(out.status.success());
    let names: Vec<&str> = v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gated", "review", "review-strict"]);
    assert_eq!(v["workflows"][1]["steps"], serde_json::json!(["code", "review"]));
    assert_eq!(v["workflows"][1]["problems"], serde_json::json!([]));
}

#[test]
fn a_step_past_its_own_time_limit_failed_and_its_failure_edge_is_taken() {
    let env = example_env();
    write_workflow(
        &env,
        "slow",
        r#"name = "slow"
[[steps]]
id = "slow"
gate = "agentctl msg send --verdict fine 'said before the limit' && sleep 30"
timeout = "1s"
[[steps]]
id = "after"
gate = "echo recovered"
[[edges]]
from = "slow"
to = "after"
when = "failure"
"#,
    );
    let id = env.start(&["--workflow", "slow", "task"]);
    let done = env.wait(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        steps(&env.show(&id)),
        pairs(&[("slow", "failure"), ("after", "success")])
    );
    assert!(env.logs(&id).contains("recovered"));
}

#[test]
fn a_signalled_supervisor_leaves_the_workflow_interrupted_not_cancelled() {
    let env = example_env();
    let id = start_workflow(
        &env,
        &[("EXAMPLE_SLEEP", "30"), ("EXAMPLE_SLEEP_HOP", "2")],
        "review",
        "Add a parser",
    );
    until_events(&env, &id, "the review running", |evs| {
        kinds(evs, "started").count() == 2
    });
    // As at shutdown: SIGTERM to the supervisor.
    signal_supervisor(&env.show(&id), nix::sys::signal::Signal::SIGTERM);
    let out = env.run(&["wait", &id]);
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    let show = env.show(&id);
    assert_eq!(show["state"], "interrupted", "{show}");
    let events = env.events(&id);
    let why = kinds(&events, "interrupted").next().unwrap()["data"]["detected_by"].clone();
    assert_eq!(why, "supervisor");
    resume_to_end(&env, &id);
    assert_review_completed(&env, &id);
}

#[test]
fn a_daemon_leaves_a_run_whose_agents_need_a_secret_it_lacks_for_agentctl_resume() {
    let env = example_env();
    // The coder takes a secret from the environment, as API keys are.
    let agents = env.repo.join(".agentctl/agents.toml");
    let text = std::fs::read_to_string(&agents).unwrap().replace(
        "[agents.coder]\ncommand = [\"./agents/coder.sh\", \"{prompt}\"]",
        "[agents.coder]\ncommand = [\"./agents/coder.sh\", \"{prompt}\"]\nsecret_env = [\"WF_SECRET\"]",
    );
    std::fs::write(&agents, text).unwrap();
    git(&env.repo, &["commit", "-qam", "coder takes a secret"]);
    let daemon = Daemon::start(&env);
    let id = start_workflow(
        &env,
        &[("WF_SECRET", "s3cr3t"), ("AGENTCTL_CRASH_AT", "step_finished:1")],
        "review",
        "Add a parser",
    );
    until_events(&env, &id, "interrupted", |evs| kinds(evs, "interrupted").count() == 1);
    // The daemon looks every 2 s; it must not resume without the secret.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(env.show(&id)["state"], "interrupted");
    // `agentctl resume` from a shell that has it (sent to the daemon as the launch env).
    let out = env
        .cmd()
        .env("WF_SECRET", "s3cr3t")
        .args(["resume", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    while env.show(&id)["state"] != "succeeded" {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", env.show(&id));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_review_completed(&env, &id);
    drop(daemon);
}

#[test]
fn a_step_cut_short_three_times_is_not_started_again() {
    let env = example_env();
    let crash = [("AGENTCTL_CRASH_AT", "step_started:1")];
    let id = start_workflow(&env, &crash, "review", "Add a parser");
    assert_eq!(env.wait(&id)["state"], "interrupted");
    // Each resumed supervisor dies as the restarted step starts: attempts 2 and 3.
    for attempt in 2..=3 {
        let out = env.cmd().envs(crash).args(["resume", &id]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let after = env.wait(&id);
        assert_eq!(after["state"], "interrupted", "attempt {attempt}: {after}");
    }
    let out = env.run(&["resume", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = env.wait(&id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(
        done["reason"],
        "step `code` (hop 1) was cut short 3 times; not starting it again"
    );
    let attempts: Vec<u64> = kinds(&env.events(&id), "step_started")
        .map(|e| e["data"]["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[test]
fn a_step_whose_process_cannot_start_failed_and_its_event_says_why() {
    let env = example_env();
    // Defined and found in the checkout, but not committed: the run's worktree lacks it.
    let agents = env.repo.join(".agentctl/agents.toml");
    let mut text = std::fs::read_to_string(&agents).unwrap();
    text.push_str("\n[agents.uncommitted]\ncommand = [\"./agents/uncommitted.sh\", \"{prompt}\"]\n");
    std::fs::write(&agents, text).unwrap();
    let script = env.repo.join("agents/uncommitted.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_workflow(
        &env,
        "nostart",
        "name = \"nostart\"\n[[steps]]\nid = \"a\"\nagent = \"uncommitted\"\n[[steps]]\nid = \"b\"\ngate = \"true\"\n\
         [[edges]]\nfrom = \"a\"\nto = \"b\"\nwhen = \"failure\"\n",
    );
    let id = env.start(&["--workflow", "nostart", "task"]);
    assert_eq!(env.wait(&id)["state"], "succeeded");
    assert_eq!(steps(&env.show(&id)), pairs(&[("a", "failure"), ("b", "success")]));
    let events = env.events(&id);
    let first = kinds(&events, "step_finished").next().unwrap();
    let error = first["data"]["error"].as_str().expect("the reason in the event");
    assert!(error.starts_with("cannot start `./agents/uncommitted.sh"), "{error}");
    assert!(
        kinds(&events, "step_finished").nth(1).unwrap()["data"]
            .get("error")
            .is_none()
    );
}
