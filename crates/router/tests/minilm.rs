//! The real sentence-embedding model (the `embed` feature): it loads from a directory made by
//! `scripts/fetch-minilm`, whose path is `AGENTCTL_TEST_MINILM` (`scripts/test` fetches it and
//! sets it), embeds paraphrases close together, refuses a broken directory with a clear error,
//! and with it the router meets the goal on the third sealed set.
#![cfg(feature = "embed")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use router::eval::{self, Case};
use router::{CachingEncoder, Encoder, MiniLm, Router};

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("AGENTCTL_TEST_MINILM")
        .expect("AGENTCTL_TEST_MINILM names the model directory (run `scripts/fetch-minilm DIR`)");
    PathBuf::from(dir)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn paraphrases_are_closer_than_unrelated_sentences() {
    let model = MiniLm::load(&model_dir()).unwrap();
    // The shape, then a digest of the config, the tokenizer and samples of the weights.
    let digest = model.model_id().strip_prefix("bert-384x6@").expect("bert-384x6@DIGEST");
    assert!(
        digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        model.model_id()
    );
    let bug = model
        .encode("The export button does nothing since Friday's deploy")
        .unwrap();
    let same = model
        .encode("Clicking export stopped working after the last release")
        .unwrap();
    let other = model
        .encode("Write a getting-started guide for the command-line tool")
        .unwrap();
    assert_eq!(bug.len(), 384);
    assert!(
        cosine(&bug, &same) > cosine(&bug, &other) + 0.2,
        "{} vs {}",
        cosine(&bug, &same),
        cosine(&bug, &other)
    );
    // The same text, the same vector: no state carried between calls.
    assert_eq!(
        model
            .encode("The export button does nothing since Friday's deploy")
            .unwrap(),
        bug
    );
    // A text far past the model's 128 tokens is cut, not refused.
    assert_eq!(model.encode(&"very long task ".repeat(400)).unwrap().len(), 384);
}

#[test]
fn a_broken_model_directory_is_refused_with_what_is_wrong() {
    let missing = tempfile::tempdir().unwrap();
    let err = MiniLm::load(missing.path())
        .err()
        .expect("an empty directory")
        .to_string();
    assert!(
        err.contains("has no config.json") && err.contains("scripts/fetch-minilm"),
        "{err}"
    );

    let broken = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(file), broken.path().join(file)).unwrap();
    }
    std::fs::write(broken.path().join("model.safetensors"), b"not weights").unwrap();
    let err = MiniLm::load(broken.path()).err().expect("garbage weights").to_string();
    assert!(err.contains("invalid model.safetensors"), "{err}");
}

/// The registry's agents, with the labelled tasks of `router/HISTORY` as their examples.
fn with_history(history: &str) -> Vec<router::Candidate> {
    common::candidates(&eval::examples_by_agent(&common::cases(history)))
}

/// Top-1 of the router with and without the model on `set`, every task of `history` (all
/// the labelled tasks written before the set) as the agents' examples.
fn both_tiers(set: &str, history: &str) -> (eval::Report, eval::Report) {
    let cases: Vec<Case> = common::cases(set);
    assert_eq!(cases.len(), 72);
    let encoder = Arc::new(CachingEncoder::new(MiniLm::load(&model_dir()).unwrap()));
    let semantic = eval::evaluate(&Router::with_encoder(with_history(history), encoder).unwrap(), &cases);
    let lexical = eval::evaluate(&Router::new(with_history(history)), &cases);
    (semantic, lexical)
}

/// The sealed sets `holdout-3.jsonl` and `holdout-4.jsonl` were each read for the first time
/// when the tiers were measured on them, once, after the semantic tier's constants were fixed
/// on the tuning set and the spent held-out sets. Measured with the model: 94.4% (68 of 72)
/// and 87.5% (63); without: 88.9% (64) and 84.7% (61). These are floors (less one task): a
/// change that makes routing worse fails here.
#[test]
fn the_model_lifts_the_router_on_the_sealed_sets() {
    for (set, history, floor) in [
        ("holdout-3.jsonl", "history-3.jsonl", 68),
        ("holdout-4.jsonl", "history-4.jsonl", 63),
    ] {
        let (semantic, lexical) = both_tiers(set, history);
        // One task of slack: floating point on another CPU may tip a near tie.
        assert!(
            semantic.top1_hits + 1 >= floor,
            "{set}, below the measured figure: {semantic}"
        );
        assert!(
            semantic.top1 > lexical.top1,
            "{set}: the tier must beat the lexical router: {semantic}\n{lexical}"
        );
    }
}

/// The goal, 90% top-1 on tasks not tuned on: met on `holdout-3.jsonl` (94.4%), not on
/// `holdout-4.jsonl` (87.5%); 91.0% over the 144 tasks of both.
#[test]
#[ignore = "the goal (90% top-1 on every sealed set) is met on holdout-3 (94.4%) but not holdout-4 (87.5%)"]
fn with_the_model_the_router_meets_the_goal_on_every_sealed_set() {
    for (set, history) in [
        ("holdout-3.jsonl", "history-3.jsonl"),
        ("holdout-4.jsonl", "history-4.jsonl"),
    ] {
        let (semantic, _) = both_tiers(set, history);
        assert!(semantic.top1 >= 0.9, "{set}: {semantic}");
    }
}
