//! Evaluates the router on a labelled set, like `agentctl route --eval`:
//! `cargo run --release -p agentctl-router --example eval -- router/eval.jsonl [router/agents.toml]
//! [--examples router/examples.jsonl]`.
//!
//! The registry file is read with the agents crate's loader; only its own agents are used (not
//! the built-in presets). With `--examples`, the tasks of that set become the agents' examples
//! (by expected agent) and the set is measured leave-one-out (`eval::evaluate_loo`): a task that
//! is also an example never matches itself.

use std::path::PathBuf;
use std::process::ExitCode;

use agents::Origin;
use router::{Candidate, Router, eval};

const USAGE: &str = "usage: eval SET.jsonl [AGENTS.toml] [--examples EXAMPLES.jsonl] [--model DIR]";

fn main() -> ExitCode {
    match run() {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<eval::Report, (u8, String)> {
    let mut positional = Vec::new();
    let mut examples = None;
    let mut model: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--examples" {
            let file = args.next().ok_or((2, USAGE.to_owned()))?;
            examples = Some(PathBuf::from(file));
        } else if arg == "--model" {
            model = Some(PathBuf::from(args.next().ok_or((2, USAGE.to_owned()))?));
        } else if arg.to_string_lossy().starts_with("--") {
            return Err((2, USAGE.to_owned()));
        } else {
            positional.push(PathBuf::from(arg));
        }
    }
    let (set, registry) = match positional.as_slice() {
        [set] => (set.clone(), PathBuf::from("router/agents.toml")),
        [set, registry] => (set.clone(), registry.clone()),
        _ => return Err((2, USAGE.to_owned())),
    };
    let failed = |e: &dyn std::fmt::Display| (1, e.to_string());
    let reg = agents::load_registry(Some(&registry), None).map_err(|e| failed(&e))?;
    let pool = match &examples {
        Some(file) => eval::examples_by_agent(&eval::load_cases(file).map_err(|e| failed(&e))?),
        None => Default::default(),
    };
    let own = reg
        .iter()
        .filter(|(_, _, origin)| matches!(origin, Origin::File(_)))
        .map(|(name, def, _)| (name, def.tags.as_slice(), def.description.as_str()));
    let candidates = eval::candidates_with_examples(own, &pool);
    let cases = eval::load_cases(&set).map_err(|e| failed(&e))?;
    let build = builder(model.as_deref())?;
    let failed = |e: router::EncodeError| (1, e.to_string());
    if examples.is_some() {
        eval::evaluate_loo_with(&candidates, &cases, build).map_err(failed)
    } else {
        Ok(eval::evaluate(&build(candidates).map_err(failed)?, &cases))
    }
}

/// Makes a router from the candidates.
type Build = Box<dyn Fn(Vec<Candidate>) -> Result<Router, router::EncodeError>>;

/// How routers are made: lexical only, or with the semantic tier of the model in `dir`.
fn builder(model: Option<&std::path::Path>) -> Result<Build, (u8, String)> {
    let Some(dir) = model else {
        return Ok(Box::new(|c| Ok(Router::new(c))));
    };
    #[cfg(feature = "embed")]
    {
        let encoder = router::MiniLm::load(dir).map_err(|e| (1, e.to_string()))?;
        let encoder: std::sync::Arc<dyn router::Encoder> = std::sync::Arc::new(router::CachingEncoder::new(encoder));
        Ok(Box::new(move |c| Router::with_encoder(c, encoder.clone())))
    }
    #[cfg(not(feature = "embed"))]
    {
        Err((
            2,
            format!(
                "--model {}: this build has no semantic tier (build with --features embed)",
                dir.display()
            ),
        ))
    }
}
