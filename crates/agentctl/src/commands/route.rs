//! `agentctl route`: the router's ranked recommendations for a task, or with `--eval` its
//! accuracy and latency on a labeled set. Routing reads the registry, this machine's PATH and
//! the state directory's history here, whether or not a daemon runs: it starts nothing.

use std::io::Write;

use model::ErrorCode;
use router::{Candidate, Encoder, eval};

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
    let engine = engine(g, args)?;
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
    if let Some(model) = &result.model {
        let _ = writeln!(out, "(with the semantic tier: {model})");
    }
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
            let registry = agents::load_registry(Some(file), None).map_err(engine::EngineError::from)?;
            let own = registry
                .iter()
                .filter(|(_, _, origin)| matches!(origin, agents::Origin::File(_)))
                .map(|(name, def, _)| (name, def.tags.as_slice(), def.description.as_str()));
            eval::candidates_with_examples(own, &Default::default())
        }
        None => context::engine_at(&context::state_dir(g)?)?.route_candidates(repo, None)?,
    };
    let loo = match &args.examples {
        Some(file) => {
            let pool = eval::examples_by_agent(&eval::load_cases(file).map_err(|e| bad(&e))?);
            for c in &mut candidates {
                c.examples = pool.get(&c.name).cloned().unwrap_or_default();
            }
            true
        }
        None => false,
    };
    // Only --model brings the semantic tier into a measurement (never the environment or the
    // configuration: a figure says what it measured), and its embeddings stay in memory.
    let encoder = match &args.model {
        Some(dir) => Some(std::sync::Arc::new(router::CachingEncoder::new(
            engine::route::load_model(&context::absolute(dir)?)?,
        ))),
        None => None,
    };
    let model = encoder.as_ref().map(|e| e.model_id().to_owned());
    let build = |c: Vec<Candidate>| match &encoder {
        Some(e) => router::Router::with_encoder(c, e.clone())
            .map_err(|e| CliError::new(ErrorCode::RouterModelUnusable, format!("router model: {e}"))),
        None => Ok(router::Router::new(c)),
    };
    let report = if loo {
        eval::evaluate_loo_with(&candidates, &cases, build)?
    } else {
        eval::evaluate(&build(candidates)?, &cases)
    };
    if g.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(model) = &model {
            v["model"] = model.clone().into();
        }
        view::print_json(&v);
    } else {
        if let Some(model) = &model {
            println!("model  {model}");
        }
        println!("{report}");
    }
    Ok(0)
}

/// The engine of the state directory, routing with `--model` when it is given.
fn engine(g: &GlobalArgs, args: &RouteArgs) -> Result<engine::Engine, CliError> {
    let mut engine = context::engine_at(&context::state_dir(g)?)?;
    if let Some(dir) = &args.model {
        engine.set_router_model(context::absolute(dir)?);
    }
    Ok(engine)
}
