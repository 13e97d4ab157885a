//! Command implementations: each turns parsed arguments into engine calls and prints the
//! result (human text, or JSON with `--json`).

pub mod checkpoints;
pub mod daemon;
pub mod route;
pub mod run;
pub mod runs;
pub mod workflow;

use std::fs;
use std::io::Write;

use model::{ErrorCode, RunId};
use serde::Serialize;
use store::StateLayout;

use crate::cli::{AdminCommand, AgentsArgs, GlobalArgs, InitArgs};
use crate::context;
use crate::exit::CliError;
use crate::view;

/// The hidden first argument that makes this process a run's supervisor.
pub const SUPERVISE: &str = "__supervise";

/// `__supervise --state-dir DIR RUN`: the supervisor process of one run. Returns the exit code.
pub fn supervise(args: &[std::ffi::OsString]) -> i32 {
    let (dir, run, wake) = match args {
        [flag, dir, run] if flag == "--state-dir" => (std::path::PathBuf::from(dir), run.to_string_lossy(), None),
        // A hibernated supervisor, woken by its keeper with the hibernation's descriptor.
        [flag, dir, run, wake, fd] if flag == "--state-dir" && wake == "--wake" => {
            match fd.to_str().and_then(|f| f.parse::<std::os::fd::RawFd>().ok()) {
                Some(fd) => (std::path::PathBuf::from(dir), run.to_string_lossy(), Some(fd)),
                None => {
                    eprintln!("usage: agentctl {SUPERVISE}: --wake takes a descriptor number");
                    return 64;
                }
            }
        }
        _ => {
            eprintln!("usage: agentctl {SUPERVISE} --state-dir DIR RUN (started by agentctl itself)");
            return 64;
        }
    };
    match (RunId::parse(&run), wake) {
        (Ok(id), None) => engine::supervisor::run_supervisor(StateLayout::new(dir), &id),
        (Ok(id), Some(fd)) => engine::supervisor::wake_supervisor(StateLayout::new(dir), &id, fd),
        (Err(e), _) => {
            eprintln!("{e}");
            64
        }
    }
}

/// The hidden first process inside a proxy-mode sandbox, started by the supervisor as
/// `agentctl __sandbox-bridge --port PORT --upstream SOCKET -- AGENT ARGS...`.
pub const SANDBOX_BRIDGE: &str = "__sandbox-bridge";

/// `__sandbox-bridge`: relays `127.0.0.1:PORT` inside the sandbox to the egress proxy's socket
/// while the agent runs; exits as the agent did.
pub fn sandbox_bridge(args: &[std::ffi::OsString]) -> i32 {
    let usage = || {
        eprintln!(
            "usage: agentctl {SANDBOX_BRIDGE} --port PORT --upstream SOCKET -- PROGRAM [ARGS...] (started by agentctl itself)"
        );
        64
    };
    let [port_flag, port, up_flag, upstream, dashes, argv @ ..] = args else {
        return usage();
    };
    if port_flag != "--port" || up_flag != "--upstream" || dashes != "--" || argv.is_empty() {
        return usage();
    }
    let Ok(port) = port.to_string_lossy().parse::<u16>() else {
        return usage();
    };
    sandbox::net::serve_then_run(port, std::path::Path::new(upstream), argv)
}

/// The hidden first process inside a sandbox without the proxy:
/// `agentctl __sandbox-exec -- AGENT ARGS...` gives stop signals their default action back and
/// becomes the agent.
pub const SANDBOX_EXEC: &str = "__sandbox-exec";

const AGENTS_TOML: &str = r#"# Agent definitions for this repository (agentctl). A definition here replaces a preset or
# user definition of the same name. See docs/agents.md.
#
# [agents.reviewer]
# command = ["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose"]
# prompt_via = "arg"            # arg | stdin | file ({prompt_file})
# env = { CLAUDE_CODE_MAX_OUTPUT_TOKENS = "8000" }
# secret_env = ["ANTHROPIC_API_KEY"]   # passed through from your environment, never recorded
# tags = ["review"]
# description = "Reviews a change"
# tty = false
"#;

const PRE_RUN: &str = "#!/bin/sh\n# Runs in the run's worktree before the agent starts; a non-zero exit fails the run.\n# Environment: AGENTCTL_RUN_ID, AGENTCTL_WORKTREE, AGENTCTL_BRANCH, AGENTCTL_BASE_COMMIT,\n# AGENTCTL_STATE_DIR, AGENTCTL_HOOK.\n# Rename to `pre-run` and make it executable to enable it.\nexit 0\n";
const POST_RUN: &str = "#!/bin/sh\n# Runs in the run's worktree after the agent ends (its outcome is not changed by this hook).\n# Environment: as pre-run, plus AGENTCTL_RUN_STATE and AGENTCTL_EXIT_CODE.\n# Rename to `post-run` and make it executable to enable it.\nexit 0\n";

#[derive(Serialize)]
struct InitReport {
    dir: std::path::PathBuf,
    created: Vec<String>,
}

/// `init`: scaffolds `.agentctl/` without overwriting anything.
pub fn init(g: &GlobalArgs, args: &InitArgs) -> Result<i32, CliError> {
    let dir = context::repo_dir(args.repo.as_deref())?;
    let repo = vcs::Git::toplevel(&dir).map_err(engine::EngineError::from)?;
    let root = repo.join(".agentctl");
    let mut created = Vec::new();
    let io = |e: std::io::Error| CliError::new(ErrorCode::Io, format!("cannot write {}: {e}", root.display()));
    for sub in ["workflows", "hooks"] {
        let p = root.join(sub);
        if !p.exists() {
            fs::create_dir_all(&p).map_err(io)?;
            created.push(format!(".agentctl/{sub}/"));
        }
    }
    for (rel, body) in [
        ("agents.toml", AGENTS_TOML),
        ("hooks/pre-run.sample", PRE_RUN),
        ("hooks/post-run.sample", POST_RUN),
    ] {
        let p = root.join(rel);
        if !p.exists() {
            fs::write(&p, body).map_err(io)?;
            created.push(format!(".agentctl/{rel}"));
        }
    }
    if g.json {
        view::print_json(&InitReport { dir: root, created });
    } else if created.is_empty() {
        println!("{} is already initialised", root.display());
    } else {
        println!("initialised {}:", root.display());
        for c in created {
            println!("  {c}");
        }
    }
    Ok(0)
}

/// `agents`: every known agent with its availability.
pub fn agents(g: &GlobalArgs, args: &AgentsArgs) -> Result<i32, CliError> {
    let dir = context::repo_dir(None)?;
    let repo = vcs::Git::toplevel(&dir).ok();
    let rows = crate::backend::Backend::open(g)?.agents(repo.as_deref(), !args.no_version)?;
    if g.json {
        view::print_json(&serde_json::json!({ "agents": rows }));
        return Ok(0);
    }
    let mut out = anstream::stdout();
    let bold = anstyle::Style::new().bold();
    let _ = writeln!(
        out,
        "{bold}{:<13} {:<10} {:<22} {:<8} {:<18} {:<24} DESCRIPTION{bold:#}",
        "NAME", "AVAILABLE", "VERSION", "ORIGIN", "TAGS", "RECENT RUNS"
    );
    for r in &rows {
        let avail = if r.available { "yes".to_owned() } else { "no".to_owned() };
        let origin = if r.origin == "preset" {
            "preset".to_owned()
        } else {
            "config".to_owned()
        };
        let recent = match &r.stats {
            Some(s) => format!(
                "{} run{}, {:.0}% ok, {}",
                s.runs,
                if s.runs == 1 { "" } else { "s" },
                s.success_rate * 100.0,
                s.median_duration_ms
                    .map(view::human_duration)
                    .unwrap_or_else(|| "-".to_owned())
            ),
            None => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<13} {:<10} {:<22} {:<8} {:<18} {:<24} {}",
            r.name,
            avail,
            view::truncate(r.version.as_deref().unwrap_or("-"), 22),
            origin,
            view::truncate(&r.tags.join(","), 18),
            recent,
            view::truncate(&r.description, 60)
        );
    }
    let missing: Vec<&engine::availability::AgentRow> = rows
        .iter()
        .filter(|r| !r.available && !r.install_hint.is_empty())
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(out, "\nto install:");
        for r in missing {
            let _ = writeln!(out, "  {:<13} {}", r.name, r.install_hint);
        }
    }
    Ok(0)
}

/// `admin ...`.
pub fn admin(g: &GlobalArgs, cmd: AdminCommand) -> Result<i32, CliError> {
    match cmd {
        AdminCommand::Reindex => {
            let engine = context::engine(g)?;
            let started = std::time::Instant::now();
            let n = engine.store().reindex()?;
            let ms = started.elapsed().as_millis() as u64;
            if g.json {
                view::print_json(&serde_json::json!({ "runs": n, "elapsed_ms": ms }));
            } else {
                println!("rebuilt the projection of {n} runs from their event logs in {ms} ms");
            }
            Ok(0)
        }
    }
}
