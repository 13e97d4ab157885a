//! The path policy (`--policy FILE`, `[policy]` in config.toml) on real runs: scripted agents
//! change files, the supervisor's watcher reports them, the policy judges them, and
//! `on_violation` flags, reverts or stops. Checked from the run's events and outcome and from
//! the worktree as it is left.
//!
//! Tests marked `#[ignore = "BUG: …"]` or `#[ignore = "WEAKNESS: …"]` fail today: run them
//! with `--ignored`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, events_of, git, stderr};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Every `(path, rule)` of every `policy_violation` event, with the event's action.
fn violations(env: &Env, id: &str) -> Vec<(String, String, String)> {
    events_of(env, id, "policy_violation")
        .iter()
        .flat_map(|ev| {
            let action = ev["action"].as_str().unwrap_or_default().to_owned();
            ev["violations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |v| {
                    (
                        v["path"].as_str().unwrap_or_default().to_owned(),
                        v["rule"].as_str().unwrap_or_default().to_owned(),
                        action.clone(),
                    )
                })
        })
        .collect()
}

/// Whether `(path, rule)` was reported.
fn has(vs: &[(String, String, String)], path: &str, rule: &str) -> bool {
    vs.iter().any(|(p, r, _)| p == path && r == rule)
}

/// Writes a policy file outside the repository and returns its path.
fn policy_file(env: &Env, name: &str, toml: &str) -> String {
    let p = env.dir.path().join(name);
    std::fs::write(&p, toml).unwrap();
    p.to_string_lossy().into_owned()
}

/// Runs in the foreground with `--json`; returns the run object, its worktree and how long it
/// took.
fn run(env: &Env, args: &[&str]) -> (Value, PathBuf, Duration) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let (v, out) = env.json(&all);
    let took = start.elapsed();
    let wt = PathBuf::from(
        v["worktree"]
            .as_str()
            .unwrap_or_else(|| panic!("no run: {v}\n{}", stderr(&out))),
    );
    (v, wt, took)
}

fn id(v: &Value) -> &str {
    v["id"].as_str().expect("id")
}

/// Commits `files` (path, content, executable) to the repository's `main`.
fn commit(env: &Env, files: &[(&str, &str, bool)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content, exec) in files {
        let p = env.repo.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "more files"]);
}

/// Live processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::read_link(e.path().join("cwd")).ok().as_deref() == Some(dir))
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            !stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// on_violation

/// `flag` (the default): a write under a forbidden glob is recorded as a `policy_violation`
/// (rule `forbidden`, the glob, action `flagged`) and nothing else happens: the file stays,
/// the run succeeds. Files outside the glob are not reported. The agent exits at once: the
/// last changes are judged too.
#[test]
fn a_forbidden_write_is_flagged_and_the_run_goes_on() {
    let env = Env::new();
    let policy = policy_file(&env, "policy.toml", "forbidden = [\"secrets/**\"]\n");
    let (v, wt, _) = run(
        &env,
        &[
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            "mkdir -p secrets docs && echo key > secrets/key && echo fine > docs/notes.md",
        ],
    );
    assert_eq!(v["state"], "succeeded", "{v}");
    let evs = events_of(&env, id(&v), "policy_violation");
    assert!(!evs.is_empty(), "no policy_violation: {:?}", env.events(id(&v)));
    let key = evs
        .iter()
        .flat_map(|e| e["violations"].as_array().cloned().unwrap_or_default())
        .find(|x| x["path"] == "secrets/key")
        .unwrap_or_else(|| panic!("secrets/key not reported: {evs:?}"));
    assert_eq!(key["rule"], "forbidden", "{key}");
    assert_eq!(key["glob"], "secrets/**", "{key}");
    let vs = violations(&env, id(&v));
    assert!(vs.iter().all(|(_, _, a)| a == "flagged"), "{vs:?}");
    assert!(vs.iter().all(|(p, _, _)| p.starts_with("secrets")), "{vs:?}");
    assert_eq!(std::fs::read_to_string(wt.join("secrets/key")).unwrap(), "key\n");
    assert_eq!(std::fs::read_to_string(wt.join("docs/notes.md")).unwrap(), "fine\n");
}

/// `revert`: the violating paths are put back as the last good checkpoint has them — a new
/// forbidden file removed, a modified one restored to its base content, a deleted one brought
/// back — while the agent's other work stays. A `rolled_back` event and a `policy_violation`
/// with action `reverted` are recorded, and the run's diff holds only the allowed change.
#[test]
fn revert_puts_violating_paths_back_and_keeps_the_rest() {
    let env = Env::new();
    commit(&env, &[("base.lock", "v1\n", false), ("keep.lock", "keep\n", false)]);
    let policy = policy_file(
        &env,
        "policy.toml",
        "forbidden = [\"*.lock\"]\non_violation = \"revert\"\n",
    );
    let (v, wt, _) = run(
        &env,
        &[
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            "echo bad > a.lock; echo v2 > base.lock; rm keep.lock; echo good > ok.txt; sleep 2",
        ],
    );
    let id = id(&v);
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(!wt.join("a.lock").exists(), "a.lock was not removed");
    assert_eq!(std::fs::read_to_string(wt.join("base.lock")).unwrap(), "v1\n");
    assert_eq!(std::fs::read_to_string(wt.join("keep.lock")).unwrap(), "keep\n");
    assert_eq!(std::fs::read_to_string(wt.join("ok.txt")).unwrap(), "good\n");
    let rolled = events_of(&env, id, "rolled_back");
    assert!(!rolled.is_empty(), "no rolled_back event");
    let rolled_paths: Vec<&str> = rolled
        .iter()
        .flat_map(|r| r["paths"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    for p in ["a.lock", "base.lock", "keep.lock"] {
        assert!(rolled_paths.contains(&p), "{p} not rolled back: {rolled:?}");
    }
    assert!(!rolled_paths.contains(&"ok.txt"), "{rolled:?}");
    let vs = violations(&env, id);
    assert!(has(&vs, "a.lock", "forbidden"), "{vs:?}");
    assert!(vs.iter().all(|(_, _, a)| a == "reverted"), "{vs:?}");
    let changed = env.run(&["diff", "--name-only", id]);
    assert_eq!(String::from_utf8_lossy(&changed.stdout).trim(), "ok.txt");
}

/// `revert` twice on the same path: the agent writes a forbidden file, sees it reverted,
/// writes it again a moment later. The second write must be reverted as well — to the last
/// checkpoint where the policy held, never to the snapshot taken just before the first
/// revert, which holds the violation.
#[test]
fn a_forbidden_file_written_again_after_a_revert_is_reverted_again() {
    let env = Env::new();
    let policy = policy_file(
        &env,
        "policy.toml",
        "forbidden = [\"*.lock\"]\non_violation = \"revert\"\n",
    );
    let script = r#"
echo bad > a.lock
for i in $(seq 1 100); do [ -e a.lock ] || break; sleep 0.05; done
[ -e a.lock ] && echo "NOT REVERTED"
sleep 1
echo again > a.lock
sleep 2
"#;
    let (v, wt, _) = run(&env, &["--policy", &policy, "--", "sh", "-c", script]);
    let log = env.logs(id(&v));
    assert!(!log.contains("NOT REVERTED"), "the first write was not reverted: {log}");
    assert!(
        !wt.join("a.lock").exists(),
        "a.lock is left with {:?}; rolled_back events: {:?}",
        std::fs::read_to_string(wt.join("a.lock")),
        events_of(&env, id(&v), "rolled_back")
    );
    assert!(violations(&env, id(&v)).len() >= 2);
}

/// `stop`: the agent creates a forbidden file and sleeps 30 s; it is stopped within seconds,
/// the run fails with a reason naming the path policy, and no process of it is left.
#[test]
fn stop_ends_the_run_on_a_violation() {
    let env = Env::new();
    let policy = policy_file(
        &env,
        "policy.toml",
        "forbidden = [\".github/workflows/**\"]\non_violation = \"stop\"\n",
    );
    let (v, wt, took) = run(
        &env,
        &[
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            "mkdir -p .github/workflows && echo evil > .github/workflows/ci.yml; sleep 30",
        ],
    );
    let id = id(&v);
    let reason = v["reason"].as_str().unwrap_or_default();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(reason.contains("path policy"), "reason: {reason:?}");
    assert!(reason.contains(".github/workflows/ci.yml"), "reason: {reason:?}");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let vs = violations(&env, id);
    assert!(has(&vs, ".github/workflows/ci.yml", "forbidden"), "{vs:?}");
    assert!(vs.iter().all(|(_, _, a)| a == "stopped"), "{vs:?}");
    let stops = events_of(&env, id, "stop_requested");
    assert!(stops.iter().any(|s| s["reason"] == "policy"), "{stops:?}");
    assert_eq!(processes_in(&wt), 0, "processes left in the worktree");
}

/// `stop` and an agent that breaks the policy as its last act: the violation is found after
/// it exited (the final drain of the watcher), recorded with action `stopped` — and the run
/// must not end `succeeded` with it. Three quick runs, all must fail.
#[test]
fn a_stop_violation_at_exit_still_fails_the_run() {
    let env = Env::new();
    let policy = policy_file(
        &env,
        "policy.toml",
        "forbidden = [\"*.lock\"]\non_violation = \"stop\"\n",
    );
    for _ in 0..3 {
        let (v, _, _) = run(&env, &["--policy", &policy, "--", "sh", "-c", "echo bad > a.lock"]);
        let vs = violations(&env, id(&v));
        assert!(has(&vs, "a.lock", "forbidden"), "{vs:?}");
        assert_eq!(
            v["state"], "failed",
            "a `stop` policy was broken ({vs:?}) but the run: {v}"
        );
    }
}

/// The same in a workflow: a gate step that breaks a `stop` policy just before it exits ends
/// the workflow `failed`, and the next step never starts.
#[test]
fn a_stop_violation_at_a_steps_exit_ends_the_workflow() {
    let env = Env::new();
    let policy = policy_file(
        &env,
        "policy.toml",
        "forbidden = [\"*.lock\"]\non_violation = \"stop\"\n",
    );
    let dir = env.repo.join(".agentctl/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("locky.toml"),
        "name = \"locky\"\n[[steps]]\nid = \"a\"\ngate = \"echo bad > a.lock\"\n\
         [[steps]]\nid = \"b\"\ngate = \"touch b-ran\"\n[[edges]]\nfrom = \"a\"\nto = \"b\"\n",
    )
    .unwrap();
    let (v, wt, _) = run(&env, &["--policy", &policy, "--workflow", "locky", "task"]);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("path policy"), "{v}");
    assert!(!wt.join("b-ran").exists(), "the next step ran");
    let starts = events_of(&env, id(&v), "step_started");
    assert_eq!(starts.len(), 1, "only step a started: {starts:?}");
}

// ---------------------------------------------------------------------------------------------
// Default protections

/// With no policy at all: a new executable file and a file made executable are
/// `new_executable`, a symlink out of the worktree is `symlink_escape`, a hard link is
/// `hardlink` — flagged, the run succeeds. Not reported: a
/// symlink inside the worktree, a change to a file that was executable in the base commit.
#[test]
fn default_protections_flag_executables_escaping_symlinks_and_hardlinks() {
    let env = Env::new();
    commit(&env, &[("run.sh", "#!/bin/sh\necho one\n", true)]);
    let script = r#"
printf '#!/bin/sh\necho hi\n' > tool.sh && chmod +x tool.sh
chmod +x src/lib.txt
ln -s /etc/passwd leak
mkdir -p deep && ln -s ../../../.. deep/up
ln -s README.md inside
ln README.md hard
printf '#!/bin/sh\necho two\n' > run.sh
echo plain > plain.txt
"#;
    let (v, _, _) = run(&env, &["--", "sh", "-c", script]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let vs = violations(&env, id(&v));
    for (path, rule) in [
        ("tool.sh", "new_executable"),
        ("src/lib.txt", "new_executable"),
        ("leak", "symlink_escape"),
        ("deep/up", "symlink_escape"),
        ("hard", "hardlink"),
    ] {
        assert!(has(&vs, path, rule), "{path} {rule} not reported: {vs:?}");
    }
    for clean in ["inside", "run.sh", "plain.txt"] {
        assert!(vs.iter().all(|(p, _, _)| p != clean), "{clean} reported: {vs:?}");
    }
    assert!(vs.iter().all(|(_, _, a)| a == "flagged"), "{vs:?}");
}

/// A nested repository planted in the worktree (`vendor/.git/config` with a `core.fsmonitor`
/// that runs when the user reviews the worktree with `git status`) is what the default
/// `git_metadata` rule is for: it must be reported.
#[test]
fn a_planted_nested_git_dir_is_flagged_as_git_metadata() {
    let env = Env::new();
    let script = r#"
mkdir -p vendor/.git
printf '[core]\n\tfsmonitor = touch /tmp/planted\n' > vendor/.git/config
echo visible > vendor/README
sleep 1
"#;
    let (v, _, _) = run(&env, &["--", "sh", "-c", script]);
    let vs = violations(&env, id(&v));
    assert!(
        vs.iter()
            .any(|(p, r, _)| p.starts_with("vendor/.git") && r == "git_metadata"),
        "{vs:?}; files_changed: {:?}",
        events_of(&env, id(&v), "files_changed")
    );
    // A sandboxed run's planted repository leaves the worktree (kept in the run's directory);
    // the rest of the directory stays.
    assert!(
        vs.iter()
            .any(|(p, r, a)| p == "vendor/.git" && r == "git_metadata" && a == "quarantined"),
        "{vs:?}"
    );
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    assert!(!wt.join("vendor/.git").exists());
    assert!(wt.join("vendor/README").exists());
    let quarantine = env.state.join("runs").join(id(&v)).join("quarantine");
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 1);
}

/// `allow_executables = true` lets the agent create executables; the other protections stay.
#[test]
fn allow_executables_lifts_only_the_executable_rule() {
    let env = Env::new();
    let policy = policy_file(&env, "policy.toml", "allow_executables = true\n");
    let (v, _, _) = run(
        &env,
        &[
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            "printf '#!/bin/sh\\n' > tool.sh && chmod +x tool.sh && ln -s /etc leak",
        ],
    );
    assert_eq!(v["state"], "succeeded", "{v}");
    let vs = violations(&env, id(&v));
    assert!(!has(&vs, "tool.sh", "new_executable"), "{vs:?}");
    assert!(has(&vs, "leak", "symlink_escape"), "{vs:?}");
}

// ---------------------------------------------------------------------------------------------
// allowed, max_file_size, disk_quota

/// `allowed` and `max_file_size`: a change outside the allowed globs (created, or deleted) is
/// `not_allowed`, a file over the size limit is `file_too_large` with its size and the limit; a
/// file of exactly the limit, and files under the allowed globs, are fine.
#[test]
fn allowed_and_max_file_size_are_enforced() {
    let env = Env::new();
    let policy = policy_file(
        &env,
        "policy.toml",
        "allowed = [\"src/**\", \"docs/*.md\"]\nmax_file_size = \"10kB\"\n",
    );
    let script = r#"
mkdir -p docs/sub
echo ok > src/new.txt
echo ok > docs/guide.md
echo no > top.txt
echo no > docs/sub/deep.md
rm README.md
head -c 20000 /dev/zero > src/big.bin
head -c 10000 /dev/zero > src/edge.bin
"#;
    let (v, _, _) = run(&env, &["--policy", &policy, "--", "sh", "-c", script]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let vs = violations(&env, id(&v));
    for (path, rule) in [
        ("top.txt", "not_allowed"),
        ("docs/sub/deep.md", "not_allowed"),
        ("README.md", "not_allowed"),
        ("src/big.bin", "file_too_large"),
    ] {
        assert!(has(&vs, path, rule), "{path} {rule} not reported: {vs:?}");
    }
    for clean in ["src/new.txt", "docs/guide.md", "src/edge.bin", "docs", "src"] {
        assert!(vs.iter().all(|(p, _, _)| p != clean), "{clean} reported: {vs:?}");
    }
    let big = events_of(&env, id(&v), "policy_violation")
        .iter()
        .flat_map(|e| e["violations"].as_array().cloned().unwrap_or_default())
        .find(|x| x["rule"] == "file_too_large")
        .unwrap();
    assert_eq!(big["size"], 20000, "{big}");
    assert_eq!(big["limit"], 10000, "{big}");
}

/// `disk_quota` with `stop`: an agent filling its worktree is stopped once it passes the
/// quota (`quota_exceeded`, reported against the worktree as a whole, `.`).
#[test]
fn disk_quota_with_stop_ends_a_run_filling_its_worktree() {
    let env = Env::new();
    let policy = policy_file(&env, "policy.toml", "disk_quota = \"5MB\"\non_violation = \"stop\"\n");
    let script = r#"
for i in $(seq 1 50); do
  dd if=/dev/zero of=big.bin bs=1M count=1 seek=$((i-1)) conv=notrunc status=none
  sleep 0.1
done
echo "wrote all 50 MB"
"#;
    let (v, wt, took) = run(&env, &["--policy", &policy, "--", "sh", "-c", script]);
    let log = env.logs(id(&v));
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["reason"].as_str().unwrap_or_default().contains("disk quota"), "{v}");
    assert!(!log.contains("wrote all"), "{log}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let vs = violations(&env, id(&v));
    assert!(has(&vs, ".", "quota_exceeded"), "{vs:?}");
    let size = std::fs::metadata(wt.join("big.bin")).map(|m| m.len()).unwrap_or(0);
    assert!(size < 20 << 20, "the agent went on writing: {size} bytes");
}

/// A directory prepared elsewhere and moved under a forbidden glob is judged by its contents:
/// `secrets/*.pem` catches `tmp/key.pem` renamed to `secrets/key.pem` with its directory.
#[test]
fn a_directory_moved_under_a_forbidden_glob_is_caught() {
    let env = Env::new();
    let policy = policy_file(&env, "policy.toml", "forbidden = [\"secrets/*.pem\"]\n");
    let (v, _, _) = run(
        &env,
        &[
            "--policy",
            &policy,
            "--",
            "sh",
            "-c",
            "mkdir tmp && echo k > tmp/key.pem; sleep 1.2; mv tmp secrets; sleep 1.2",
        ],
    );
    let vs = violations(&env, id(&v));
    assert!(has(&vs, "secrets/key.pem", "forbidden"), "{vs:?}");
    assert!(!has(&vs, "tmp/key.pem", "forbidden"), "{vs:?}");
}

/// `[policy]` in config.toml is under every run's; a run's `--policy` lays its keys on top
/// (here `on_violation = "stop"`) and the config's `forbidden` still applies.
#[test]
fn config_policy_applies_and_a_run_policy_merges_over_it() {
    let env = Env::new();
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "[policy]\nforbidden = [\"*.lock\"]\n").unwrap();
    let (v, _, _) = run(&env, &["--", "sh", "-c", "echo x > a.lock"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let vs = violations(&env, id(&v));
    assert!(has(&vs, "a.lock", "forbidden"), "{vs:?}");
    assert!(vs.iter().all(|(_, _, a)| a == "flagged"), "{vs:?}");
    let policy = policy_file(&env, "policy.toml", "on_violation = \"stop\"\n");
    let (v, _, took) = run(
        &env,
        &["--policy", &policy, "--", "sh", "-c", "echo x > b.lock; sleep 30"],
    );
    assert_eq!(v["state"], "failed", "{v}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let plan = &events_of(&env, id(&v), "created")[0]["plan"]["isolation"]["policy"];
    assert_eq!(
        *plan,
        serde_json::json!({"forbidden": ["*.lock"], "on_violation": "stop"})
    );
}

// ---------------------------------------------------------------------------------------------
// Invalid policy files

/// A bad policy file is refused before anything is created: INVALID_CONFIG (exit 78) with a
/// message that says what is wrong (the bad glob and why; the unknown key and the known ones;
/// the bad value). A policy file that cannot be read is INVALID_ARGUMENT (64).
#[test]
fn an_invalid_policy_file_is_refused_with_invalid_config() {
    let env = Env::new();
    for (toml, needles) in [
        (
            "forbidden = [\"src/[a\"]\n",
            &["src/[a", "unclosed `[`", "forbidden[0]"][..],
        ),
        ("allowed = [\"ok/**\", \"../x\"]\n", &["allowed[1]", "`..`"][..]),
        (
            "forbidden = [\"x\"]\nbogus = 1\n",
            &["unknown field `bogus`", "on_violation"][..],
        ),
        (
            "on_violation = \"explode\"\n",
            &["unknown variant `explode`", "revert"][..],
        ),
        ("max_file_size = \"1x\"\n", &["not a size"][..]),
    ] {
        let policy = policy_file(&env, "bad.toml", toml);
        let (v, out) = env.json(&["run", "--policy", &policy, "--", "true"]);
        assert_eq!(out.status.code(), Some(78), "{toml}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_CONFIG", "{toml}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        for n in needles {
            assert!(msg.contains(n), "{toml}: {n:?} not in {msg:?}");
        }
        let out = env.run(&["run", "--policy", &policy, "--", "true"]);
        assert_eq!(out.status.code(), Some(78));
        assert!(stderr(&out).contains("INVALID_CONFIG"), "{}", stderr(&out));
    }
    let missing = env.dir.path().join("nope.toml");
    let (v, out) = env.json(&["run", "--policy", missing.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{v}");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{v}");
    assert_eq!(env.json(&["ls"]).0["runs"].as_array().unwrap().len(), 0);
    let worktrees = std::fs::read_dir(env.state.join("worktrees"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(worktrees, 0);
}

/// A bad glob's error names the policy file it is in, as a TOML error in the same file does
/// (`/path/policy.toml: TOML parse error …`): with several layers (config.toml, the agent's,
/// the workflow's, --policy) "policy.forbidden[0]" alone does not say where to look.
#[test]
fn a_bad_glob_error_names_the_policy_file() {
    let env = Env::new();
    let policy = policy_file(&env, "team-policy.toml", "forbidden = [\"src/[a\"]\n");
    let (v, _) = env.json(&["run", "--policy", &policy, "--", "true"]);
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("team-policy.toml"), "{v}");
}

/// The hint of a policy file error points at documentation that exists.
#[test]
fn the_policy_error_hint_points_at_existing_docs() {
    let env = Env::new();
    let policy = policy_file(&env, "bad.toml", "bogus = 1\n");
    let (v, _) = env.json(&["run", "--policy", &policy, "--", "true"]);
    let hint = v["error"]["hint"].as_str().unwrap_or_default().to_owned();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for word in hint.split_whitespace().filter(|w| w.ends_with(".md")) {
        assert!(
            docs.join(word).is_file(),
            "the hint names {word}, which does not exist: {hint}"
        );
    }
    assert!(hint.contains(".md"), "{v}");
}
