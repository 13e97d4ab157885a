//! Checks of the document: the router and [`super::ROUTES`] agree, answers match their schemas,
//! the document is valid and `docs/openapi.json` is up to date.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine::{CheckpointEntry, DiffSide};
use model::{Event, RunId};

use super::*;
use crate::wire::*;

/// `docs/openapi.json`, from this crate.
fn checked_in() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let path = checked_in();
    let want = pretty();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/openapi.json is not the document the code generates (or is missing): regenerate it \
         with `UPDATE_OPENAPI=1 cargo test -p agentctl-api openapi` and commit it"
    );
}

/// Where `name(` is called in `text` (not as the end of a longer name).
fn calls(text: &str, name: &str) -> Vec<usize> {
    let needle = format!("{name}(");
    text.match_indices(&needle)
        .map(|(k, _)| k)
        .filter(|&k| {
            let before = text[..k].chars().next_back().unwrap_or(' ');
            !(before.is_alphanumeric() || before == '_')
        })
        .collect()
}

/// The (method, path) pairs `routes/mod.rs` registers, read from its source.
fn router_routes() -> BTreeSet<(String, String)> {
    routes_in(include_str!("../routes/mod.rs"))
}

/// The (method, path) pairs of every `.route("PATH", get(…).post(…))` in `src`.
fn routes_in(src: &str) -> BTreeSet<(String, String)> {
    for unsupported in [
        "nest",
        "nest_service",
        "route_service",
        "any",
        "on",
        "any_service",
        "on_service",
    ] {
        assert!(
            calls(src, unsupported).is_empty(),
            "routes/mod.rs calls `{unsupported}`: teach this test (and ROUTES) about it"
        );
    }
    let mut out = BTreeSet::new();
    for start in calls(src, "route") {
        let rest = &src[start + "route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(j, _)| j)
            .expect("a closed .route(");
        let args = &rest[..end];
        let open = args.find('"').expect("a path literal");
        let close = open + 1 + args[open + 1..].find('"').expect("a path literal");
        let path = &args[open + 1..close];
        let handlers = &args[close + 1..];
        let mut found = false;
        for m in [
            "get", "post", "put", "patch", "delete", "head", "options", "trace", "connect",
        ] {
            if !calls(handlers, m).is_empty() {
                out.insert((m.to_ascii_uppercase(), path.to_owned()));
                found = true;
            }
        }
        assert!(found, "no method in .route(\"{path}\" …)");
    }
    out
}

#[test]
fn the_route_reader_sees_every_route() {
    let src = r#"
        let r = Router::new()
            .route("/a", get(x::list).post(x::create))
            .route(
                "/a/{id}",
                axum::routing::delete(x::delete).get(x::get),
            )
            .route_layer(middleware::from_fn(auth));
        fn router() {}
    "#;
    let want: BTreeSet<(String, String)> = [("GET", "/a"), ("POST", "/a"), ("DELETE", "/a/{id}"), ("GET", "/a/{id}")]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(routes_in(src), want);
    let result = std::panic::catch_unwind(|| routes_in(".nest(\"/b\", other)"));
    assert!(result.is_err(), "a nested router must not go unnoticed");
}

fn documented_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in document()["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let router = router_routes();
    let doc = documented_routes();
    let table: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "a route is twice in ROUTES");
    assert_eq!(doc, table);
    let missing: Vec<_> = router.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes/mod.rs and openapi::ROUTES disagree: served but not documented {missing:?}, \
         documented but not served {extra:?}. Add the route to ROUTES (crates/api/src/openapi.rs), \
         then regenerate docs/openapi.json with `UPDATE_OPENAPI=1 cargo test -p agentctl-api openapi`"
    );
    assert!(router.len() >= 16, "the router's routes were not all found: {router:?}");
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_well_formed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a component schema"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    let mut ids = BTreeSet::new();
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.as_str().to_ascii_lowercase()];
        assert!(ids.insert(r.operation_id), "operationId {} twice", r.operation_id);
        // Path parameters are exactly the template's.
        let template: BTreeSet<&str> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = r
            .params
            .iter()
            .filter(|p| p.location == In::Path)
            .map(|p| p.name)
            .collect();
        assert_eq!(template, declared, "{} {}", r.method.as_str(), r.path);
        // Every error status the route can answer is there, with the error body.
        for code in r.error_codes() {
            let status = status_of(code).as_u16().to_string();
            let answer = &op["responses"][&status];
            assert!(
                answer["description"].as_str().unwrap().contains(code.as_str()),
                "{} {}: {status} does not name {code}",
                r.method.as_str(),
                r.path
            );
            let mut rs = Vec::new();
            refs(&answer["content"]["application/json"], &mut rs);
            assert!(
                rs.contains(&"#/components/schemas/ErrorBody"),
                "{} {} {status}",
                r.method.as_str(),
                r.path
            );
        }
        assert_eq!(op["security"] == json!([]), r.public);
    }
}

// A small JSON Schema checker for what the generated schemas use: enough to tell whether
// the JSON the handlers write is what the document says.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{at}: {why} (value {v}, schema {schema})"));
    let s = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return fail("nothing is allowed".into()),
        Value::Object(s) => s,
        _ => return fail("not a schema".into()),
    };
    if let Some(Value::String(r)) = s.get("$ref") {
        let name = r.strip_prefix("#/components/schemas/").expect("a component ref");
        conforms(doc, &doc["components"]["schemas"][name], v, at)?;
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
            _ => unreachable!(),
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            other => panic!("type {other}"),
        });
        if !ok {
            return fail(format!("not of type {t}"));
        }
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        return fail(format!("not {c}"));
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.contains(v)
    {
        return fail("not in the enum".into());
    }
    if let (Some(n), Some(min)) = (v.as_f64(), s.get("minimum").and_then(Value::as_f64))
        && n < min
    {
        return fail("below the minimum".into());
    }
    if let Value::Object(obj) = v {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(req.as_str().unwrap()) {
                return fail(format!("{req} is missing"));
            }
        }
        let patterns = s.get("patternProperties").and_then(Value::as_object);
        for (k, item) in obj {
            // The only key pattern the generated schemas use: map keys that are numbers.
            let by_pattern = patterns.and_then(|ps| {
                ps.iter().find_map(|(pattern, p)| {
                    assert_eq!(pattern, r"^\d+$", "teach `conforms` the pattern {pattern}");
                    (!k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())).then_some(p)
                })
            });
            match props.and_then(|p| p.get(k)).or(by_pattern) {
                Some(p) => conforms(doc, p, item, &format!("{at}.{k}"))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => return fail(format!("{k} is not allowed")),
                    Some(extra) => conforms(doc, extra, item, &format!("{at}.{k}"))?,
                    None => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(min)) = (v, s.get("minItems").and_then(Value::as_u64))
        && (items.len() as u64) < min
    {
        return fail("too few items".into());
    }
    if let (Value::Array(items), Some(item_schema)) = (v, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            conforms(doc, sub, v, at)?;
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf")
        && !any.iter().any(|sub| conforms(doc, sub, v, at).is_ok())
    {
        return fail("matches none of anyOf".into());
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let n = one.iter().filter(|sub| conforms(doc, sub, v, at).is_ok()).count();
        if n != 1 {
            let why: Vec<_> = one.iter().filter_map(|sub| conforms(doc, sub, v, at).err()).collect();
            return fail(format!("matches {n} of oneOf: {why:?}"));
        }
    }
    Ok(())
}

fn assert_conforms(name: &str, v: &Value) {
    let doc = document();
    let schema = json!({ "$ref": format!("#/components/schemas/{name}") });
    if let Err(e) = conforms(doc, &schema, v, name) {
        panic!("{e}");
    }
}

fn ts() -> jiff::Timestamp {
    "2025-01-02T03:04:05.123456789Z".parse().unwrap()
}

fn run_id() -> RunId {
    RunId::parse("fix-1").unwrap()
}

fn checkpoint_info() -> CheckpointInfo {
    CheckpointInfo {
        n: 1,
        trigger: model::CheckpointTrigger::Manual,
        commit: "c".repeat(40),
        tree: "t".repeat(40),
        parent: "p".repeat(40),
        git_ref: "refs/agentctl/runs/fix-1/1".into(),
        message: None,
        ts: ts(),
        scan: model::ScanKind::Paths,
        elapsed_ms: 3,
        created: true,
    }
}

#[test]
fn answers_match_their_schemas() {
    // Error bodies, as `ApiError` writes them, with and without a hint.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for e in [
        crate::ApiError::new(ErrorCode::RunNotFound, "no run").hint("list runs"),
        crate::ApiError::new(ErrorCode::Io, "disk"),
    ] {
        let resp = e.into_response();
        let bytes = rt.block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_conforms("ErrorBody", &v);
        let parsed: ErrorBody = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), v);
    }

    // Output chunks, as the engine writes them.
    for data in [b"hello\n".to_vec(), vec![0xff, 0xfe]] {
        let chunk = model::provider::OutputChunk {
            ts: ts(),
            stream: model::provider::Stream::Stderr,
            data,
            end: 10,
        };
        let v = engine::view::chunk_json(&chunk);
        serde_json::from_value::<LogChunk>(v.clone()).unwrap();
        let logs = RunLogs {
            chunks: vec![v],
            next_offset: 10,
            run: run_id(),
        };
        assert_conforms("RunLogs", &serde_json::to_value(&logs).unwrap());
    }

    // A diff, as the engine writes it (plus `text`, as the handler adds it).
    let side = |name: &str| DiffSide {
        name: name.into(),
        commit: (name != "live").then(|| "c".repeat(40)),
        tree: "t".repeat(40),
    };
    let result = engine::DiffResult {
        from: side("base"),
        to: side("live"),
        stats: checkpoint::diff::TreeDiff {
            files: vec![
                checkpoint::diff::FileStat {
                    path: "a.txt".into(),
                    status: checkpoint::diff::Status::Modified,
                    insertions: Some(2),
                    deletions: Some(1),
                    old_mode: "100644".into(),
                    new_mode: "100644".into(),
                },
                checkpoint::diff::FileStat {
                    path: "b.bin".into(),
                    status: checkpoint::diff::Status::TypeChanged,
                    insertions: None,
                    deletions: None,
                    old_mode: "100644".into(),
                    new_mode: "120000".into(),
                },
            ],
            insertions: 2,
            deletions: 1,
        },
        text: None,
    };
    let mut v = engine::view::diff_json(&run_id(), &result);
    assert_conforms("DiffBody", &v);
    v["text"] = "diff --git …".into();
    assert_conforms("DiffBody", &v);

    // Checkpoints (flattened into their list entries), rollbacks, rm reports.
    let entry = CheckpointEntry {
        info: checkpoint_info(),
        files_changed: Some(1),
        insertions: Some(2),
        deletions: Some(0),
        pruned: false,
    };
    let pruned = CheckpointEntry {
        files_changed: None,
        insertions: None,
        deletions: None,
        pruned: true,
        ..entry.clone()
    };
    let list = CheckpointList {
        checkpoints: vec![entry, pruned],
        run: run_id(),
    };
    assert_conforms("CheckpointList", &serde_json::to_value(&list).unwrap());
    let rm = RmReport {
        id: run_id(),
        worktree_removed: true,
        branch: "agentctl/fix-1".into(),
        branch_deleted: false,
        branch_commits: 2,
        checkpoint: Some(checkpoint_info()),
        shadow_branch: Some("agentctl/_shadow/fix-1".into()),
        shadow_branch_deleted: false,
        shadow_unpromoted: 1,
    };
    assert_conforms("RmReport", &serde_json::to_value(&rm).unwrap());

    // Events, with optional fields left out and present.
    let events = vec![
        Event {
            v: 1,
            seq: 7,
            ts: ts(),
            run_id: run_id(),
            data: model::EventData::Checkpointed {
                n: 1,
                trigger: model::CheckpointTrigger::Watch,
                commit: "c".into(),
                tree: "t".into(),
                parent: "p".into(),
                message: None,
                scan: model::ScanKind::Full,
                paths_read: 0,
                full_scan_reason: Some("overflow".into()),
                paused: false,
                scan_ms: 1,
                elapsed_ms: 2,
            },
        },
        Event {
            v: 1,
            seq: 8,
            ts: ts(),
            run_id: run_id(),
            data: model::EventData::Finished {
                state: RunState::Succeeded,
                reason: "agent exited with code 0".into(),
                exit_code: Some(0),
                signal: None,
            },
        },
    ];
    let body = RunEvents { events, run: run_id() };
    assert_conforms("RunEvents", &serde_json::to_value(&body).unwrap());

    // A workflow run's progress and messages, folded from its events by the model's own code.
    let events: Vec<Event> = [
        json!({"type": "step_started", "step": "code", "hop": 1, "attempt": 1, "cycle": 1, "max_cycles": 3,
               "remaining_hops": 5, "agent": "claude-code", "prompt": "p", "delivered": [], "from_checkpoint": 0}),
        json!({"type": "message_sent", "from": "code", "to": "review", "text": "look at a.txt", "hop": 1,
               "attempt": 1}),
        json!({"type": "step_finished", "step": "code", "hop": 1, "attempt": 1, "exit_code": 0, "signal": null,
               "verdict": "success", "checkpoint": 1, "next": "review", "edge": 0, "elapsed_ms": 12}),
        json!({"type": "step_started", "step": "review", "hop": 2, "attempt": 1, "cycle": 1, "max_cycles": 3,
               "remaining_hops": 4, "gate": "true", "delivered": [2], "from_checkpoint": 1}),
        json!({"type": "message_sent", "from": "review", "verdict": "approve", "text": "fine", "hop": 2,
               "attempt": 1}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, data)| {
        serde_json::from_value(json!({"v": 1, "seq": i + 1, "ts": ts(), "run_id": run_id(), "data": data})).unwrap()
    })
    .collect();
    let progress = model::workflow::Progress::from_events(&events);
    assert_eq!(progress.messages.len(), 2);
    assert!(!progress.taken.is_empty() && progress.current.is_some());
    let body = WorkflowProgress {
        run: run_id(),
        workflow: "wf".into(),
        progress: progress.clone(),
    };
    assert_conforms("WorkflowProgress", &serde_json::to_value(&body).unwrap());
    let messages = MessageList {
        messages: progress.messages,
    };
    assert_conforms("MessageList", &serde_json::to_value(&messages).unwrap());
    // A message receipt: the wire type is the engine's (the CLI reads it as that).
    let receipt: engine::workflow::messages::MessageReceipt =
        serde_json::from_value(json!({"seq": 4, "from": "review", "to": null, "verdict": "approve", "hop": 2}))
            .unwrap();
    let engine_json = serde_json::to_value(&receipt).unwrap();
    let wire_json = serde_json::to_value(MessageReceipt { ..receipt }).unwrap();
    assert_eq!(wire_json, engine_json);
    assert_conforms("MessageReceipt", &wire_json);
    // Workflow definitions, valid and not, as the engine lists them.
    let repo = tempfile::tempdir().unwrap();
    let wf_dir = repo.path().join(engine::workflow::REPO_DIR);
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(
        wf_dir.join("ok.toml"),
        "name = \"ok\"\ndescription = \"d\"\n[[steps]]\nid = \"only\"\ngate = \"true\"\n",
    )
    .unwrap();
    std::fs::write(wf_dir.join("broken.toml"), "name = ").unwrap();
    let workflows: Vec<WorkflowEntry> = engine::workflow::list(repo.path(), None, None);
    assert_eq!(workflows.len(), 2);
    let listed = serde_json::to_value(WorkflowList { workflows }).unwrap();
    assert_conforms("WorkflowList", &listed);
    let engine_listed = serde_json::to_value(engine::workflow::list(repo.path(), None, None)).unwrap();
    assert_eq!(
        listed["workflows"], engine_listed,
        "the same JSON as `agentctl workflows --json`"
    );

    // A wrong answer is caught.
    let mut bad = serde_json::to_value(&list).unwrap();
    bad["checkpoints"][0]["trigger"] = "sometimes".into();
    assert!(
        conforms(
            document(),
            &json!({"$ref": "#/components/schemas/CheckpointList"}),
            &bad,
            "x"
        )
        .is_err()
    );
}

#[test]
fn request_schemas_accept_what_handlers_accept() {
    let doc = document();
    let body_schema = |path: &str, method: &str| {
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"].clone()
    };
    let create = body_schema("/v1/runs", "post");
    for ok in [
        json!({"repo": "/r", "agent": "claude-code"}),
        json!({"repo": "/r", "id": "fix-1", "command": ["sh", "-c", "true"], "checkpoints": {"watch": false}}),
        json!({"repo": "/r", "workflow": "review-loop", "prompt": "fix it"}),
    ] {
        serde_json::from_value::<CreateRun>(ok.clone()).unwrap();
        conforms(doc, &create, &ok, "createRun").unwrap();
    }
    for bad in [
        json!({}),
        json!({"repo": "/r", "nope": 1}),
        json!({"repo": 3, "agent": "a"}),
    ] {
        assert!(serde_json::from_value::<CreateRun>(bad.clone()).is_err());
        assert!(conforms(doc, &create, &bad, "createRun").is_err(), "{bad}");
    }
    // Well-typed, but neither an agent nor a command: the handler refuses it too.
    assert!(conforms(doc, &create, &json!({"repo": "/r", "command": []}), "createRun").is_err());
    let rollback = body_schema("/v1/runs/{id}/rollback", "post");
    for ok in [json!({"to": 2}), json!({"to": "last", "paths": ["a"]})] {
        conforms(doc, &rollback, &ok, "rollback").unwrap();
    }
    assert!(conforms(doc, &rollback, &json!({"to": true}), "rollback").is_err());
    let checkpoint = body_schema("/v1/runs/{id}/checkpoints", "post");
    conforms(doc, &checkpoint, &json!({"message": "m"}), "checkpoint").unwrap();
    let send = body_schema("/v1/runs/{id}/messages", "post");
    for ok in [
        json!({"text": "hi"}),
        json!({"text": "", "to": "review", "verdict": "changes_requested", "from": "code"}),
        // As `agentctl msg send` sends it through a daemon.
        json!({"text": "hi", "to": null, "verdict": null, "from": null}),
    ] {
        serde_json::from_value::<SendMessage>(ok.clone()).unwrap();
        conforms(doc, &send, &ok, "sendRunMessage").unwrap();
    }
    for bad in [json!({}), json!({"text": "x", "nope": 1}), json!({"text": 1})] {
        assert!(serde_json::from_value::<SendMessage>(bad.clone()).is_err());
        assert!(conforms(doc, &send, &bad, "sendRunMessage").is_err(), "{bad}");
    }
    let resume = body_schema("/v1/runs/{id}/resume", "post");
    for ok in [
        json!({}),
        json!({"launch_env": {"PATH": "/bin"}}),
        json!({"launch_env": null}),
    ] {
        serde_json::from_value::<ResumeRun>(ok.clone()).unwrap();
        conforms(doc, &resume, &ok, "resumeRun").unwrap();
    }
    let bad = json!({"launch_env": {"PATH": 1}});
    assert!(serde_json::from_value::<ResumeRun>(bad.clone()).is_err());
    assert!(conforms(doc, &resume, &bad, "resumeRun").is_err());
}

/// A provider with no runs.
struct NoRuns;

impl model::provider::Provider for NoRuns {
    fn name(&self) -> &'static str {
        "none"
    }
    fn create(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
        Ok(())
    }
    fn start(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
        Ok(())
    }
    fn signal(&self, _: &RunId, _: &model::provider::ControlRequest) -> Result<(), model::provider::ProviderError> {
        Ok(())
    }
    fn request(
        &self,
        _: &RunId,
        _: &model::provider::ControlRequest,
        _: std::time::Duration,
    ) -> Result<model::provider::RequestOutcome, model::provider::ProviderError> {
        Ok(model::provider::RequestOutcome::NotTaken)
    }
    fn status(&self, _: &RunId) -> Result<model::provider::SupervisorStatus, model::provider::ProviderError> {
        Ok(model::provider::SupervisorStatus::NotStarted)
    }
    fn list(&self) -> Result<Vec<RunId>, model::provider::ProviderError> {
        Ok(Vec::new())
    }
    fn logs(&self, _: &RunId, _: u64) -> Result<model::provider::LogBatch, model::provider::ProviderError> {
        Ok(Default::default())
    }
    fn destroy(&self, _: &RunId) -> Result<(), model::provider::ProviderError> {
        Ok(())
    }
}

fn exchange(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

#[test]
fn the_router_serves_every_documented_operation_and_no_other_method() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::Store::open(store::StateLayout::new(dir.path().join("state"))).unwrap();
    let engine = engine::Engine::new(store, Arc::new(NoRuns), Default::default());
    let daemon_dir = dir.path().join("daemon");
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let tokens = Arc::new(crate::TokenStore::new(&daemon_dir));
    let token = tokens.ensure_default().unwrap();
    let wakeups = crate::wakeup::Wakeups::polling(dir.path());
    let (journal, _tail) =
        crate::journal::Journal::open(&daemon_dir, store::StateLayout::new(dir.path().join("state"))).unwrap();
    let state = crate::AppState {
        engine: Arc::new(engine),
        tokens,
        metrics: Arc::default(),
        wakeups,
        journal: Arc::new(journal),
        shutdown: tokio::sync::watch::channel(false).1,
        request_timeout: std::time::Duration::from_secs(30),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, crate::routes::router(state)).await });

    let mut paths: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in ROUTES {
        paths.entry(r.path).or_default().push(r.method.as_str());
        let path = r.path.replace("{id}", "no-such-run");
        let body = if r.body.is_some() { "{}" } else { "" };
        let (status, answer) = exchange(addr, r.method.as_str(), &path, Some(&token), body);
        let what = format!("{} {path} answered {status} {answer}", r.method.as_str());
        assert_ne!(status, 405, "{what}");
        assert_ne!(answer["error"]["code"], "NOT_FOUND", "{what}");
        assert!(status < 500, "{what}");
        let documented = document()["paths"][r.path][r.method.as_str().to_ascii_lowercase()]["responses"]
            .get(status.to_string())
            .is_some();
        assert!(documented, "{what}: the status is not documented");
        // Without a token: refused exactly when the document says a token is needed.
        let (status, _) = exchange(addr, r.method.as_str(), &path, None, body);
        assert_eq!(
            status == 401,
            !r.public,
            "{} {path} without a token: {status}",
            r.method.as_str()
        );
    }
    for (path, methods) in paths {
        let path = path.replace("{id}", "no-such-run");
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if !methods.contains(&m) {
                let (status, answer) = exchange(addr, m, &path, Some(&token), "");
                assert_eq!(
                    status, 405,
                    "{m} {path} is not documented, but answered {status} {answer}"
                );
            }
        }
    }
    let (status, served) = exchange(addr, "GET", "/v1/openapi.json", None, "");
    assert_eq!(status, 200);
    assert_eq!(&served, document());
    rt.shutdown_background();
}

#[test]
fn openapi_spec_validator_accepts_the_document() {
    // A real validator, when Python has it (`scripts/fuzz-api` installs it).
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: python3 -m pip install openapi-spec-validator to run this check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, pretty()).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import OpenAPIV31SpecValidator, validate\nvalidate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
