//! What the tests over the evaluation data in `router/` share: its files, and its registry's
//! agents as candidates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use router::Candidate;
use router::eval::{self, Case};

/// A file of `router/` at the repository root.
pub fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../router")
        .join(file)
}

/// The labelled tasks of `router/FILE`.
pub fn cases(file: &str) -> Vec<Case> {
    eval::load_cases(&data(file)).unwrap()
}

/// The registry's own agents (the loader also adds the built-in presets, which are left out),
/// each with its examples from `pool`.
pub fn candidates(pool: &BTreeMap<String, Vec<String>>) -> Vec<Candidate> {
    let reg = agents::load_registry(Some(&data("agents.toml")), None).expect("router/agents.toml parses");
    let own = reg
        .iter()
        .filter(|(_, _, origin)| matches!(origin, agents::Origin::File(_)))
        .map(|(name, def, _)| (name, def.tags.as_slice(), def.description.as_str()));
    eval::candidates_with_examples(own, pool)
}
