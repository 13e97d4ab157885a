//! The real sentence-embedding model (the `embed` feature): it loads from a directory made by
//! `scripts/fetch-minilm`, whose path is `AGENTCTL_TEST_MINILM` (`scripts/test` fetches it and
//! sets it), embeds paraphrases close together, refuses a broken directory with a clear error,
//! and the router's figures with it on the sealed sets hold.
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

/// The registry's agents, with the labelled tasks of the `router/` files `history` as their
/// examples.
fn with_history(history: &[&str]) -> Vec<router::Candidate> {
    let tasks: Vec<Case> = history.iter().flat_map(|file| common::cases(file)).collect();
    common::candidates(&eval::examples_by_agent(&tasks))
}

/// One model for the tests of this file, remembering what it encoded: the histories overlap.
fn encoder() -> Arc<CachingEncoder<MiniLm>> {
    static ENCODER: std::sync::OnceLock<Arc<CachingEncoder<MiniLm>>> = std::sync::OnceLock::new();
    ENCODER
        .get_or_init(|| Arc::new(CachingEncoder::new(MiniLm::load(&model_dir()).unwrap())))
        .clone()
}

/// Top-1 of the router with and without the model on `set`, every task of `history` (all
/// the labelled tasks written before the set) as the agents' examples.
fn both_tiers(set: &str, history: &[&str]) -> (eval::Report, eval::Report) {
    let cases: Vec<Case> = common::cases(set);
    let semantic = eval::evaluate(&Router::with_encoder(with_history(history), encoder()).unwrap(), &cases);
    let lexical = eval::evaluate(&Router::new(with_history(history)), &cases);
    (semantic, lexical)
}

/// The sealed sets, each read for the first time when the tiers were measured on it, once:
/// `holdout-3.jsonl` and `holdout-4.jsonl` after the semantic tier's constants were fixed
/// (94.4% and 87.5% top-1 with the model then); `holdout-5.jsonl` after the lexical tier's
/// example vote was retuned on every spent set and the pool. The floors are today's figures,
/// less one task: holdout-3 94.4% (68 of 72) and holdout-4 95.8% (69 of 72), both spent and
/// tuned on since; holdout-5 with `history-5.jsonl` (the pool included) 95.8% (92 of 96),
/// against 91.7% (88) without the model. With the 492-task history the protocol fixed before
/// holdout-5 was read, the model did not help there: 89.6% (86) against 90.6% (87).
#[test]
fn the_model_lifts_the_router_on_the_sealed_sets() {
    for (set, history, floor) in [
        ("holdout-3.jsonl", &["history-3.jsonl"][..], 68),
        ("holdout-4.jsonl", &["history-4.jsonl"][..], 69),
        ("holdout-5.jsonl", &["history-5.jsonl"][..], 92),
    ] {
        let (semantic, lexical) = both_tiers(set, history);
        // One task of slack: floating point on another CPU may tip a near tie.
        assert!(
            semantic.top1_hits + 1 >= floor,
            "{set}, below the measured figure: {semantic}"
        );
        assert!(
            semantic.top1 >= lexical.top1,
            "{set}: the tier must not do worse than the lexical router here: {semantic}\n{lexical}"
        );
    }
    let (semantic, _) = both_tiers("holdout-5.jsonl", &["history-4.jsonl", "holdout-4.jsonl"]);
    assert!(
        semantic.top1_hits + 1 >= 86,
        "holdout-5.jsonl, 492-task history: {semantic}"
    );
}
