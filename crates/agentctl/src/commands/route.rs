//! `agentctl route`: the router's ranked recommendations for a task, or with `--eval` its
//! accuracy and latency on a labeled set. Routing reads the registry, this machine's PATH and
//! the state directory's history here, whether or not a daemon runs: it starts nothing.

use std::io::Write;

use model::ErrorCode;
use router::{Candidate, Router, eval};

use crate::cli::{GlobalArgs, RouteArgs};
use crate::context;
use crate::exit::CliError;
use crate::view;

pub fn route(g: &GlobalArgs, args: &RouteArgs) -> Result<i32, CliError> {
    let dir = context::repo_dir(args.repo.as_deref())?;
    let repo = vcs::Git::toplevel(&dir).ok();
    if let Some(set) = &args.eval {
        return evaluate(g, args, set, repo.as_deref());
    }
    let task = args.task.as_deref().unwrap_or_default();
    let engine = context::engine_at(&context::state_dir(g)?)?;
    let result = engine.route(task, repo.as_deref(), None)?;
    if g.json {
        view::print_json(&result);
        return Ok(0);
    }
    let mut out = anstream::stdout();
    if result.recommendations.is_empty() {
        let _ = writeln!(out, "no installed agent matches this task (see `agentctl agents`)");
        return Ok(0);
    }
    let bold = anstyle::Style::new().bold();
    let _ = writeln!(out, "{bold}{:<16} {:>10}  REASONS{bold:#}", "AGENT", "CONFIDENCE");
    for r in &result.recommendations {
        let _ = writeln!(
            out,
            "{:<16} {:>10.2}  {}",
            r.agent,
            r.confidence,
            view::truncate(&r.reasons.join("; "), 100)
        );
    }
    Ok(0)
}

fn evaluate(
    g: &GlobalArgs,
    args: &RouteArgs,
    set: &std::path::Path,
    repo: Option<&std::path::Path>,
) -> Result<i32, CliError> {
    let bad = |e: &dyn std::fmt::Display| CliError::new(ErrorCode::InvalidArgument, e.to_string());
    let cases = eval::load_cases(set).map_err(|e| bad(&e))?;
    let mut candidates: Vec<Candidate> = match &args.agents {
        // A registry of its own: its agents only (not the presets), all counted as installed.
        Some(file) => {
            if !file.is_file() {
                return Err(CliError::new(
                    ErrorCode::InvalidArgument,
                    format!("no registry file {}", file.display()),
                ));
            }
            agents::load_registry(Some(file), None)
                .map_err(engine::EngineError::from)?
                .iter()
                .filter(|(_, _, origin)| matches!(origin, agents::Origin::File(_)))
                .map(|(name, def, _)| Candidate {
                    name: name.to_owned(),
                    tags: def.tags.clone(),
                    description: def.description.clone(),
                    available: true,
                    history: None,
                    examples: Vec::new(),
                })
                .collect()
        }
        None => context::engine_at(&context::state_dir(g)?)?.route_candidates(repo, None)?,
    };
    let report = match &args.examples {
        Some(file) => {
            let pool = eval::examples_by_agent(&eval::load_cases(file).map_err(|e| bad(&e))?);
            for c in &mut candidates {
                c.examples = pool.get(&c.name).cloned().unwrap_or_default();
            }
            eval::evaluate_loo(&candidates, &cases)
        }
        None => eval::evaluate(&Router::new(candidates), &cases),
    };
    if g.json {
        view::print_json(&report);
    } else {
        println!("{report}");
    }
    Ok(0)
}
