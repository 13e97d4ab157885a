//! The semantic tier through the public API, with a scripted encoder standing in for the model
//! (the real one is tested in `minilm.rs`, with the `embed` feature): meaning routes what words
//! cannot, it adds to a clear lexical match without overturning it, its reasons quote the
//! example, a failing model leaves the lexical answer, and a caching encoder keeps profiles and
//! examples but never answers for the tasks being routed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use router::{CachingEncoder, Candidate, EncodeError, Encoder, Router};

/// Embeds a text as counts over a few "meanings", each known by some words: a toy model in
/// which "blank", "crash" and "broken" mean the same thing without sharing a letter.
struct Meanings {
    calls: AtomicUsize,
    fail_on: Option<&'static str>,
}

const MEANINGS: [&[&str]; 4] = [
    &[
        "kaput", "blank", "crash", "crashes", "broken", "stopped", "bug", "wrong",
    ],
    &["slow", "forever", "latency", "faster", "sluggish"],
    &["docs", "readme", "guide", "explain"],
    &["button", "page", "layout", "css"],
];

impl Meanings {
    fn new() -> Self {
        Meanings {
            calls: AtomicUsize::new(0),
            fail_on: None,
        }
    }

    /// One that fails on every text containing `word`.
    fn failing_on(word: &'static str) -> Self {
        Meanings {
            fail_on: Some(word),
            ..Meanings::new()
        }
    }
}

impl Encoder for Meanings {
    fn model_id(&self) -> &str {
        "meanings@test"
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_on.is_some_and(|f| text.contains(f)) {
            return Err(EncodeError("scripted failure".into()));
        }
        let mut v = vec![0.01f32; MEANINGS.len() + 1];
        for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
            if let Some(m) = MEANINGS.iter().position(|m| m.contains(&word)) {
                v[m] += 1.0;
            }
        }
        Ok(v)
    }
}

fn registry() -> Vec<Candidate> {
    let mut debugger = Candidate::new("debugger", &["debug"], "Finds the cause of a reported bug.");
    debugger.examples = vec!["The invoice page crashes since the upgrade".into()];
    let perf = Candidate::new("perf", &["performance"], "Makes slow things faster.");
    let docs = Candidate::new("docs", &["docs"], "Writes the readme and guides.");
    vec![debugger, perf, docs]
}

#[test]
fn meaning_routes_a_task_that_shares_no_word_with_any_agent() {
    let task = "Everything went kaput";
    assert!(Router::new(registry()).recommend(task).is_empty(), "no word in common");
    let router = Router::with_encoder(registry(), Arc::new(Meanings::new())).unwrap();
    let recs = router.recommend(task);
    assert_eq!(recs[0].agent, "debugger", "{recs:?}");
    assert_eq!(router.model_id(), Some("meanings@test"));
    assert!(
        recs[0]
            .reasons
            .iter()
            .any(|r| r == "close in meaning to past task: \"The invoice page crashes since the upgrade\""),
        "{:?}",
        recs[0].reasons
    );
    assert!(recs.iter().all(|r| (0.0..1.0).contains(&r.confidence)));
}

#[test]
fn meaning_adds_to_a_clear_word_match_without_overturning_it() {
    let router = Router::with_encoder(registry(), Arc::new(Meanings::new())).unwrap();
    // "readme" names docs outright; "broken" leans to the debugger only by meaning.
    let recs = router.recommend("Update the docs readme: the install guide link is broken");
    assert_eq!(recs[0].agent, "docs", "{recs:?}");
}

#[test]
fn a_task_the_model_cannot_encode_gets_the_lexical_answer() {
    let model = Meanings::failing_on("UNENCODABLE");
    let router = Router::with_encoder(registry(), Arc::new(model)).unwrap();
    let task = "the readme UNENCODABLE";
    assert_eq!(
        router.recommend(task),
        Router::new(registry()).recommend(task),
        "the same as without the tier"
    );
}

#[test]
fn a_past_task_the_model_cannot_encode_is_left_out_of_the_tier_only() {
    let model = Meanings::failing_on("UNENCODABLE");
    let mut candidates = registry();
    candidates[1].examples = vec!["An UNENCODABLE slow page".into()];
    let router = Router::with_encoder(candidates.clone(), Arc::new(model)).unwrap();
    let (count, first) = router.unencoded_examples();
    assert_eq!(
        (count, first.map(ToString::to_string)),
        (1, Some("scripted failure".to_owned()))
    );
    // The lexical tier still has it: its words still vote for its agent.
    let recs = router.recommend("an unencodable page");
    assert_eq!(recs[0].agent, "perf", "{recs:?}");
    // Meaning still routes by the examples that were encoded.
    assert_eq!(router.recommend("Everything went kaput")[0].agent, "debugger");
    assert_eq!(Router::new(candidates).unencoded_examples().0, 0);
}

#[test]
fn a_model_that_cannot_encode_the_registry_is_an_error() {
    let model = Meanings::failing_on("faster");
    let err = Router::with_encoder(registry(), Arc::new(model)).unwrap_err();
    assert_eq!(err.to_string(), "scripted failure");
}

#[test]
fn a_caching_encoder_keeps_profiles_and_examples_but_not_tasks() {
    let cached = Arc::new(CachingEncoder::new(Meanings::new()));
    let calls = || cached.inner().calls.load(Ordering::SeqCst);
    let _ = Router::with_encoder(registry(), cached.clone()).unwrap();
    let built = calls();
    assert!(built > 0);
    let router = Router::with_encoder(registry(), cached.clone()).unwrap();
    assert_eq!(calls(), built, "a second router encodes nothing again");
    router.recommend("the page is sluggish");
    router.recommend("the page is sluggish");
    assert_eq!(calls(), built + 2, "tasks are encoded each time");
    // Even a task that is also an example: routing a task costs one encoding, always.
    router.recommend("The invoice page crashes since the upgrade");
    assert_eq!(calls(), built + 3);
}

#[test]
fn unavailable_agents_are_not_recommended_by_meaning_either() {
    let mut candidates = registry();
    candidates[0].available = false;
    let router = Router::with_encoder(candidates, Arc::new(Meanings::new())).unwrap();
    // Exactly as if the debugger (and its examples) were not there at all.
    let without = Router::with_encoder(registry().split_off(1), Arc::new(Meanings::new())).unwrap();
    for task in [
        "Everything went kaput",
        "The invoice page crashes",
        "the readme is sluggish",
    ] {
        let recs = router.recommend(task);
        assert!(recs.iter().all(|r| r.agent != "debugger"), "{recs:?}");
        assert_eq!(recs, without.recommend(task), "{task}");
    }
}

#[test]
fn an_agent_found_by_its_profile_alone_says_so() {
    let mut candidates = registry();
    candidates[0].examples.clear();
    let router = Router::with_encoder(candidates, Arc::new(Meanings::new())).unwrap();
    let recs = router.recommend("Everything went kaput");
    assert_eq!(recs[0].agent, "debugger", "{recs:?}");
    assert_eq!(
        recs[0].reasons,
        ["close in meaning to its profile: \"Finds the cause of a reported bug.\""]
    );
}
