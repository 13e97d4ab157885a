//! The workflow routes: a run's progress (`GET /v1/runs/{id}/workflow`), its messages (`GET` and
//! `POST /v1/runs/{id}/messages`), resuming it (`POST /v1/runs/{id}/resume`) and the workflows a
//! repository defines (`GET /v1/workflows`) — success and error paths.

use serde_json::{Value, json};

use crate::harness::{Daemon, Env, SLEEPING_WORKFLOW, code, workflow_run};

const NEW_ROUTES: [(&str, &str); 5] = [
    ("GET", "/v1/runs/x/workflow"),
    ("GET", "/v1/runs/x/messages"),
    ("POST", "/v1/runs/x/messages"),
    ("POST", "/v1/runs/x/resume"),
    ("GET", "/v1/workflows?repo=/tmp"),
];

#[test]
fn workflow_routes_need_a_token() {
    let env = Env::new();
    let d = Daemon::start(&env);
    for (method, path) in NEW_ROUTES {
        let body = (method == "POST").then(|| r#"{"text": "hi"}"#.to_owned());
        for token in [None, Some("agentctl_wrong")] {
            let (status, head, answer) = d.raw(method, path, token, body.clone());
            assert_eq!(status, 401, "{method} {path} with {token:?}: {answer}");
            assert_eq!(code(&answer), "UNAUTHORIZED");
            assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
        }
    }
}

#[test]
fn an_unknown_run_is_not_found() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let body = json!({"text": "hi"});
    for (method, path, body) in [
        ("GET", "/v1/runs/no-such-run/workflow", None),
        ("GET", "/v1/runs/no-such-run/messages", None),
        ("POST", "/v1/runs/no-such-run/messages", Some(&body)),
        ("POST", "/v1/runs/no-such-run/resume", None),
    ] {
        let (status, answer) = d.call(method, path, body);
        assert_eq!(
            (status, code(&answer)),
            (404, "RUN_NOT_FOUND"),
            "{method} {path}: {answer}"
        );
    }
}

#[test]
fn a_single_agent_run_is_not_a_workflow_run() {
    let env = Env::new();
    let d = Daemon::start(&env);
    let run = d.create(&json!({"repo": env.repo, "command": ["true"]}));
    let id = run["id"].as_str().unwrap();
    let body = json!({"text": "hi"});
    for (method, route, body) in [
        ("GET", "workflow", None),
        ("GET", "messages", None),
        ("POST", "messages", Some(&body)),
        ("POST", "resume", None),
    ] {
        let (status, answer) = d.call(method, &format!("/v1/runs/{id}/{route}"), body);
        assert_eq!(
            (status, code(&answer)),
            (400, "NOT_A_WORKFLOW_RUN"),
            "{method} {route}: {answer}"
        );
    }
    d.until(&format!("/v1/runs/{id}"), |r| r["state"] == "succeeded");
}

#[test]
fn bad_bodies_are_refused() {
    let env = Env::new();
    env.workflow("wf", SLEEPING_WORKFLOW);
    let d = Daemon::start(&env);
    let run = d.create(&workflow_run(&env, "wf"));
    let id = run["id"].as_str().unwrap().to_owned();
    let messages = format!("/v1/runs/{id}/messages");
    let resume = format!("/v1/runs/{id}/resume");
    for (path, body) in [
        (&messages, ""),
        (&messages, "{}"),
        (&messages, "not json"),
        (&messages, r#"{"text": 3}"#),
        (&messages, r#"{"text": "hi", "nope": 1}"#),
        (&messages, r#"{"text": "a\u0000b"}"#),
        (&messages, r#"{"text": "hi", "to": "two words"}"#),
        (&messages, r#"{"text": "hi", "verdict": ""}"#),
        (&messages, r#"{"text": "hi", "from": "a/b"}"#),
        (&resume, "not json"),
        (&resume, r#"{"nope": 1}"#),
        (&resume, r#"{"launch_env": {"A": 1}}"#),
        (&resume, r#"{"launch_env": {"A": "a\u0000b"}}"#),
        // Over TCP: the environment is for the state directory's owner, on the socket.
        (&resume, r#"{"launch_env": {"PATH": "/usr/bin:/bin"}}"#),
    ] {
        let (status, _, answer) = d.raw("POST", path, Some(&d.token), Some(body.to_owned()));
        assert_eq!(
            (status, code(&answer)),
            (400, "INVALID_ARGUMENT"),
            "POST {path} {body}: {answer}"
        );
    }
    let big = json!({"text": "x".repeat(2 << 20)}).to_string();
    let (status, _, answer) = d.raw("POST", &messages, Some(&d.token), Some(big));
    assert_eq!((status, code(&answer)), (413, "PAYLOAD_TOO_LARGE"), "{answer}");
    // Nothing of that reached the run.
    let (status, list) = d.call("GET", &messages, None);
    assert_eq!((status, list), (200, json!({"messages": []})));
    d.stop(&id);
}

/// The supervisor runs the gate step; meanwhile a message is sent, listed as in flight, and
/// the progress shows the step running. Once the run is stopped, sending and resuming are
/// refused.
#[test]
fn a_workflow_run_has_progress_and_takes_messages_while_a_step_runs() {
    let env = Env::new();
    env.workflow("wf", SLEEPING_WORKFLOW);
    let d = Daemon::start(&env);
    let run = d.create(&workflow_run(&env, "wf"));
    assert_eq!(run["agent"], "workflow:wf");
    let id = run["id"].as_str().unwrap().to_owned();
    let wf = step_running(&d, &id, 1);
    assert_eq!(wf["run"], id.as_str());
    assert_eq!(wf["workflow"], "wf");
    assert_eq!(wf["current"]["hop"], 1);
    assert_eq!(wf["current"]["attempt"], 1);
    assert_eq!(wf["hops_done"], 0);
    assert_eq!(wf["steps"], json!([]));
    assert_eq!(wf["messages"], json!([]));
    assert_eq!(wf["end"], Value::Null);
    // An id prefix works as elsewhere.
    let (status, by_prefix) = d.call("GET", &format!("/v1/runs/{}/workflow", &id[..id.len() - 2]), None);
    assert_eq!((status, &by_prefix["run"]), (200, &json!(id)));

    let messages = format!("/v1/runs/{id}/messages");
    let (status, receipt) = d.call(
        "POST",
        &messages,
        Some(&json!({"text": "hello from the gate", "verdict": "approve", "from": "only"})),
    );
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["from"], "only");
    assert_eq!(receipt["to"], Value::Null);
    assert_eq!(receipt["verdict"], "approve");
    assert_eq!(receipt["hop"], 1);
    let seq = receipt["seq"].as_u64().unwrap();
    // `null`s, as `agentctl msg send` sends them through a daemon.
    let (status, second) = d.call(
        "POST",
        &messages,
        Some(&json!({"text": "second", "to": "only", "verdict": null, "from": null})),
    );
    assert_eq!(status, 201, "{second}");
    assert!(second["seq"].as_u64().unwrap() > seq);

    let (status, list) = d.call("GET", &messages, None);
    assert_eq!(status, 200, "{list}");
    let list = list["messages"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["seq"], seq);
    assert_eq!(list[0]["text"], "hello from the gate");
    assert_eq!(list[0]["from"], "only");
    assert_eq!(list[0]["verdict"], "approve");
    assert_eq!(list[0]["status"], "in_flight");
    assert_eq!(list[1]["to"], "only");
    assert_eq!(list[1]["status"], "in_flight");
    // The progress lists them too.
    let (_, wf) = d.call("GET", &format!("/v1/runs/{id}/workflow"), None);
    assert_eq!(wf["messages"].as_array().unwrap().len(), 2);
    // And the event log has them.
    let (_, events) = d.call("GET", &format!("/v1/runs/{id}/events"), None);
    let sent: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["type"] == "message_sent")
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["seq"], seq);

    // The supervisor checks what only it knows: the steps, and which one is running.
    for (body, why) in [
        (json!({"text": "x", "to": "nope"}), "no step `nope`"),
        (json!({"text": "x", "from": "other"}), "not `other`"),
    ] {
        let (status, answer) = d.call("POST", &messages, Some(&body));
        assert_eq!((status, code(&answer)), (400, "INVALID_ARGUMENT"), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(why), "{answer}");
    }
    // A run whose supervisor is alive is not resumed: it is answered as it is.
    let (status, same) = d.call("POST", &format!("/v1/runs/{id}/resume"), None);
    // (The new supervisor may still be between the step's start and its process's.)
    assert_eq!(status, 200, "{same}");
    assert!(
        matches!(same["state"].as_str(), Some("preparing" | "running")),
        "{same}"
    );
    assert_eq!(same["supervisor_pid"], wf_supervisor(&d, &id));

    let ended = d.stop(&id);
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let (status, answer) = d.call("POST", &messages, Some(&json!({"text": "too late"})));
    assert_eq!((status, code(&answer)), (409, "INVALID_STATE_TRANSITION"), "{answer}");
    let (status, answer) = d.call("POST", &format!("/v1/runs/{id}/resume"), None);
    assert_eq!((status, code(&answer)), (409, "INVALID_STATE_TRANSITION"), "{answer}");
    // The messages stay readable once the run has ended.
    let (status, list) = d.call("GET", &messages, None);
    assert_eq!(status, 200);
    assert_eq!(list["messages"].as_array().unwrap().len(), 2);
}

/// Waits until the gate step `only` of run `id` runs (its `attempt`), and returns the progress.
/// (The step is recorded as started a moment before the run is `running`: messages are
/// accepted from then on.)
fn step_running(d: &Daemon, id: &str, attempt: u32) -> Value {
    d.until(&format!("/v1/runs/{id}"), |r| r["state"] == "running");
    let wf = d.until(&format!("/v1/runs/{id}/workflow"), |p| {
        p["current"]["attempt"] == attempt
    });
    assert_eq!(wf["current"]["step"], "only", "{wf}");
    wf
}

fn wf_supervisor(d: &Daemon, id: &str) -> Value {
    let (_, run) = d.call("GET", &format!("/v1/runs/{id}"), None);
    run["supervisor_pid"].clone()
}

/// A workflow run whose supervisor is killed is resumed by a new one, which restarts the
/// interrupted step.
#[test]
fn resume_takes_an_interrupted_workflow_run_up_again() {
    let env = Env::new();
    env.workflow("wf", SLEEPING_WORKFLOW);
    let d = Daemon::start(&env);
    let run = d.create(&workflow_run(&env, "wf"));
    let id = run["id"].as_str().unwrap().to_owned();
    step_running(&d, &id, 1);
    let pid = wf_supervisor(&d, &id).as_i64().expect("a supervisor pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // Resumed by this request, or by the daemon, which looks for interrupted runs every few
    // seconds: either way a new supervisor has the run when the answer comes.
    let (status, resumed) = d.call("POST", &format!("/v1/runs/{id}/resume"), None);
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["id"], id.as_str());
    let state = resumed["state"].as_str().unwrap();
    assert!(matches!(state, "preparing" | "running"), "{resumed}");
    let wf = step_running(&d, &id, 2);
    assert_eq!(wf["resumes"], 1);
    assert_eq!(wf["current"]["hop"], 1);
    let new_pid = wf_supervisor(&d, &id);
    assert!(new_pid.is_u64() && new_pid != json!(pid), "{new_pid}");
    // On the unix socket the caller's environment is accepted (here: nothing to resume).
    let (status, same) = d.call_unix(
        "POST",
        &format!("/v1/runs/{id}/resume"),
        Some(&json!({"launch_env": {"PATH": "/usr/bin:/bin"}})),
    );
    // (The new supervisor may still be between the step's start and its process's.)
    assert_eq!(status, 200, "{same}");
    assert!(
        matches!(same["state"].as_str(), Some("preparing" | "running")),
        "{same}"
    );
    d.stop(&id);
}

#[test]
fn workflows_are_listed_for_a_repository() {
    let env = Env::new();
    env.workflow("wf", SLEEPING_WORKFLOW);
    env.workflow("broken", "name = \"broken\"\nsteps = []\n");
    env.user_workflow("mine", "name = \"mine\"\n[[steps]]\nid = \"a\"\ngate = \"true\"\n");
    // The repository's shadows the user's of the same name.
    env.user_workflow("wf", "name = \"wf\"\n[[steps]]\nid = \"user\"\ngate = \"true\"\n");
    let d = Daemon::start(&env);
    // Any path in the repository will do.
    let sub = env.repo.join(".agentctl");
    let (status, list) = d.call("GET", &format!("/v1/workflows?repo={}", sub.display()), None);
    assert_eq!(status, 200, "{list}");
    let list = list["workflows"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "mine", "wf"], "{list:?}");
    let wf = &list[2];
    assert_eq!(wf["steps"], json!(["only"]));
    assert_eq!(wf["description"], "sleeps");
    assert_eq!(wf["problems"], json!([]));
    assert_eq!(
        wf["path"].as_str().unwrap(),
        env.repo.join(".agentctl/workflows/wf.toml").to_str().unwrap()
    );
    assert_eq!(list[1]["steps"], json!(["a"]));
    assert!(!list[0]["problems"].as_array().unwrap().is_empty(), "{list:?}");

    let (status, answer) = d.call("GET", "/v1/workflows", None);
    assert_eq!((status, code(&answer)), (400, "INVALID_ARGUMENT"), "{answer}");
    let (status, answer) = d.call("GET", "/v1/workflows?repo=relative/dir", None);
    assert_eq!((status, code(&answer)), (400, "INVALID_ARGUMENT"), "{answer}");
    let not_repo = env.dir.path().join("state");
    let (status, answer) = d.call("GET", &format!("/v1/workflows?repo={}", not_repo.display()), None);
    assert_eq!((status, code(&answer)), (422, "NOT_A_GIT_REPO"), "{answer}");
}

#[test]
fn creating_a_run_of_an_unknown_or_invalid_workflow_is_refused() {
    let env = Env::new();
    env.workflow("broken", "name = \"broken\"\nsteps = []\n");
    let d = Daemon::start(&env);
    let (status, answer) = d.call("POST", "/v1/runs", Some(&workflow_run(&env, "nope")));
    assert_eq!((status, code(&answer)), (404, "WORKFLOW_NOT_FOUND"), "{answer}");
    let (status, answer) = d.call("POST", "/v1/runs", Some(&workflow_run(&env, "broken")));
    assert_eq!((status, code(&answer)), (422, "WORKFLOW_INVALID"), "{answer}");
}
