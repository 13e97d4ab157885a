//! `agentctl run`: create a run and follow it (or return at once with `--detach`) — through the
//! daemon when one runs, as every command does. Either way the supervisor, and so the agent,
//! starts with this shell's environment (PATH, the agent's API keys): the daemon is sent it for
//! this run, and records none of it.

use engine::RunRequest;
use model::{ErrorCode, RunId};

use crate::backend::Backend;
use crate::cli::{GlobalArgs, NetworkArg, RunArgs, SandboxArg, ShadowArg};
use crate::context;
use crate::exit::{self, CliError};
use crate::follow::{self, FollowOptions, Print};
use crate::view;

pub fn run(g: &GlobalArgs, args: RunArgs) -> Result<i32, CliError> {
    let id = match &args.id {
        Some(text) => Some(RunId::parse(text).map_err(|e| {
            CliError::new(ErrorCode::InvalidArgument, e.to_string()).hint("ids use letters, digits, '.', '_' and '-'")
        })?),
        None => None,
    };
    let req = RunRequest {
        id,
        agent: args.agent.clone(),
        prompt: prompt(&args)?,
        args: args.args.clone(),
        repo_dir: context::repo_dir(args.repo.as_deref())?,
        base: Some(args.base.clone()),
        env: args.env.iter().cloned().collect(),
        labels: args.label.iter().cloned().collect(),
        timeout: args.timeout,
        idle_timeout: args.idle_timeout,
        grace: Some(args.grace),
        keep: args.keep,
        checkpoints: model::CheckpointPolicy {
            watch: !args.no_watch,
            every_changes: args.checkpoint_every,
            every_ms: args.checkpoint_interval.as_millis() as u64,
            consistent: args.consistent_checkpoints,
        },
        launch_env: None,
        workflow: args.workflow.clone(),
        isolation: isolation(&args)?,
        shadow: shadow(&args),
    };
    warn_unconfined(&req.isolation);
    let req_shadow = req.shadow.is_some();
    let backend = Backend::open(g)?;
    let (run, created) = backend.create_run(req)?;
    let id = run.id.clone();
    if !created && !g.json {
        eprintln!("agentctl: run {id} already exists with this request; showing it");
    }
    if args.detach {
        if g.json {
            view::print_json(&run);
        } else {
            println!("{id}");
            eprintln!(
                "started run {id} on branch {}\n  follow: agentctl logs -f {id}\n  stop:   agentctl stop {id}",
                run.branch
            );
        }
        return Ok(0);
    }
    // Following: Ctrl-C once stops the run, twice detaches.
    let presses = follow::count_interrupts();
    if !g.json {
        eprintln!("agentctl: run {id} ({}) on branch {}", run.agent, run.branch);
    }
    let (rec, detached) = follow::follow(
        &backend,
        &id,
        FollowOptions {
            print: if g.json { Print::Nothing } else { Print::Raw },
            once: false,
            interrupts: Some(presses),
            grace: args.grace,
            spinner: !g.json,
        },
    )?;
    if detached {
        if !g.json {
            eprintln!("agentctl: detached; run {id} is {} (agentctl logs -f {id})", rec.state);
        } else {
            view::print_json(&rec);
        }
        return Ok(exit::EXIT_CANCELLED);
    }
    if g.json {
        view::print_json(&rec);
    } else {
        let mut line = format!("agentctl: run {id} {}", view::state_text(rec.state));
        if let Some(reason) = &rec.reason {
            line.push_str(&format!(": {reason}"));
        }
        anstream::eprintln!("{line}");
        if rec.state == model::RunState::Interrupted {
            eprintln!("  its supervisor is gone; continue it with: agentctl resume {id}");
        }
        eprintln!("  worktree: {}\n  branch:   {}", rec.worktree.display(), rec.branch);
        if req_shadow {
            eprintln!("  shadow:   {} (the agent's own commits)", id.shadow_branch());
        }
    }
    Ok(exit::outcome_code(&rec))
}

/// The shadow workspace asked for: `--shadow[=WHEN]`, implied by `--gate` and `--gate-timeout`.
fn shadow(args: &RunArgs) -> Option<model::ShadowSpec> {
    let asked = args.shadow.is_some() || !args.gates.is_empty() || args.gate_timeout.is_some();
    asked.then(|| model::ShadowSpec {
        promote: match args.shadow {
            Some(ShadowArg::Manual) => model::PromoteMode::Manual,
            _ => model::PromoteMode::Auto,
        },
        gates: args.gates.clone(),
        gate_timeout_ms: args.gate_timeout.map(|d| d.as_millis() as u64),
    })
}

/// The task: the PROMPT argument, `--prompt`, or the contents of `--prompt-file`.
fn prompt(args: &RunArgs) -> Result<Option<String>, CliError> {
    let Some(path) = &args.prompt_file else {
        return Ok(args.prompt.clone().or_else(|| args.prompt_opt.clone()));
    };
    let read = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map(Some).map_err(|e| {
        CliError::new(
            ErrorCode::InvalidArgument,
            format!("cannot read the prompt from {}: {e}", path.display()),
        )
    })
}

/// The isolation asked for on the command line.
fn isolation(args: &RunArgs) -> Result<model::IsolationSpec, CliError> {
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::new(
                    ErrorCode::InvalidArgument,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let def: model::policy::PolicyDef = toml::from_str(&text).map_err(|e| {
                CliError::new(ErrorCode::InvalidConfig, format!("{}: {e}", path.display()))
                    .hint("see docs/sandbox.md for the policy keys")
            })?;
            if let Err(problems) = def.validate() {
                return Err(CliError::new(
                    ErrorCode::InvalidConfig,
                    format!("{}: {}", path.display(), problems.join("; ")),
                )
                .hint("globs use `*`, `**`, `?` and `[...]`; see docs/sandbox.md"));
            }
            Some(def)
        }
        None => None,
    };
    Ok(model::IsolationSpec {
        sandbox: args.sandbox.map(|s| match s {
            SandboxArg::On => model::SandboxMode::On,
            SandboxArg::Off => model::SandboxMode::Off,
        }),
        network: args.network.map(|n| match n {
            NetworkArg::None => model::NetworkMode::None,
            NetworkArg::Proxy => model::NetworkMode::Proxy,
            NetworkArg::Host => model::NetworkMode::Host,
        }),
        allow_internal_network: args.allow_internal_network,
        allow_domains: args.allow_domains.clone(),
        secrets: args.secrets.clone(),
        limits: model::ResourceLimitsSpec {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids: args.pids,
            disk_bytes: args.disk,
        },
        policy,
    })
}

/// An unconfined run is said out loud on stderr, `--json` or not (it is also recorded in the
/// run's events).
fn warn_unconfined(iso: &model::IsolationSpec) {
    // Off by `--sandbox=off`, or by `[sandbox] mode = "off"` for runs that do not say.
    let configured_off = || {
        context::settings()
            .ok()
            .is_some_and(|s| s.sandbox.mode == Some(model::SandboxMode::Off))
    };
    if iso.sandbox == Some(model::SandboxMode::Off) {
        eprintln!(
            "agentctl: WARNING: --sandbox=off: the agent runs unconfined; it can read and write everything you can and reach any network"
        );
    } else if iso.sandbox.is_none() && configured_off() {
        eprintln!(
            "agentctl: WARNING: [sandbox] mode = \"off\" in config.toml: the agent runs unconfined; it can read and write everything you can and reach any network"
        );
    } else if iso.network == Some(model::NetworkMode::Host) {
        eprintln!("agentctl: WARNING: --network=host: the agent can reach any address, local services included");
    }
}
