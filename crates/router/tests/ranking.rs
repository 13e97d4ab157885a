//! The router's contract, through its public API: ranking, availability, history, confidence,
//! reasons and odd input.

use router::{Candidate, History, Recommendation, Router};

fn registry() -> Vec<Candidate> {
    vec![
        Candidate::new(
            "reviewer",
            &["review", "feedback"],
            "Reviews pull requests and diffs and leaves comments.",
        ),
        Candidate::new(
            "tester",
            &["test", "unit"],
            "Writes unit and integration tests, fixtures and mocks.",
        ),
        Candidate::new(
            "docs",
            &["docs", "readme"],
            "Writes documentation, guides and changelogs.",
        ),
        Candidate::new(
            "security",
            &["security", "audit"],
            "Finds vulnerabilities such as injection and checks authentication.",
        ),
        Candidate::new(
            "dba",
            &["database", "migration"],
            "SQL schema design, migrations and queries.",
        ),
    ]
}

fn names(recs: &[Recommendation]) -> Vec<&str> {
    recs.iter().map(|r| r.agent.as_str()).collect()
}

fn first(router: &Router, task: &str) -> String {
    router
        .recommend(task)
        .first()
        .map(|r| r.agent.clone())
        .unwrap_or_default()
}

#[test]
fn the_specialist_comes_first_by_word_and_by_synonym() {
    let router = Router::new(registry());
    // Words the agents use.
    assert_eq!(first(&router, "Please review my pull request"), "reviewer");
    assert_eq!(first(&router, "Add unit tests for the parser"), "tester");
    assert_eq!(first(&router, "The README needs an install section"), "docs");
    assert_eq!(first(&router, "Add a migration for the orders table"), "dba");
    // Words only the synonym table connects to the agents.
    assert_eq!(first(&router, "Raise coverage of the billing code"), "tester");
    assert_eq!(first(&router, "Critique this code before I merge it"), "reviewer");
    assert_eq!(first(&router, "Is this endpoint exploitable via XSS?"), "security");
    assert_eq!(first(&router, "Tutorial explaining how to get started"), "docs");
    // Stemming: plural, -ing, -ed.
    assert_eq!(first(&router, "audited vulnerabilities"), "security");
    assert_eq!(first(&router, "migrating schemas"), "dba");
}

#[test]
fn unavailable_agents_are_never_recommended() {
    let mut candidates = registry();
    candidates.iter_mut().find(|c| c.name == "security").unwrap().available = false;
    let router = Router::new(candidates);
    for task in [
        "security audit of the login: injection, authentication, vulnerabilities",
        "security",
        "review the security of this pull request",
    ] {
        assert!(!names(&router.recommend(task)).contains(&"security"), "{task}");
    }

    let mut none = registry();
    for c in &mut none {
        c.available = false;
    }
    assert!(Router::new(none).recommend("review the tests").is_empty());
    assert!(Router::new(Vec::new()).recommend("review the tests").is_empty());
}

#[test]
fn history_breaks_lexical_ties_and_is_explained() {
    let twin = |name: &str, history: Option<History>| Candidate {
        history,
        ..Candidate::new(name, &["review"], "Reviews pull requests.")
    };
    let task = "review this pull request";

    // Identical text: without history the name decides.
    let plain = Router::new(vec![twin("alpha", None), twin("beta", None)]);
    assert_eq!(names(&plain.recommend(task)), ["alpha", "beta"]);

    // A good record moves beta ahead, and says so.
    let good = Some(History {
        runs: 12,
        succeeded: 11,
    });
    let bad = Some(History { runs: 10, succeeded: 3 });
    let router = Router::new(vec![twin("alpha", bad), twin("beta", good)]);
    let recs = router.recommend(task);
    assert_eq!(names(&recs), ["beta", "alpha"]);
    assert!(recs[0].confidence > recs[1].confidence);
    assert!(
        recs[0].reasons.contains(&"success rate 92% over 12 runs".to_owned()),
        "{:?}",
        recs[0].reasons
    );
    assert!(
        recs[1].reasons.contains(&"success rate 30% over 10 runs".to_owned()),
        "{:?}",
        recs[1].reasons
    );

    // Too few runs to count: the tie stands, and the reason says why.
    let router = Router::new(vec![
        twin("alpha", None),
        twin("beta", Some(History { runs: 2, succeeded: 2 })),
    ]);
    let recs = router.recommend(task);
    assert_eq!(names(&recs), ["alpha", "beta"]);
    assert_eq!(recs[0].confidence, recs[1].confidence);
    assert!(
        recs[1]
            .reasons
            .iter()
            .any(|r| r == "only 2 runs so far; history not weighed"),
        "{:?}",
        recs[1].reasons
    );

    // History never recommends an agent the task does not match, nor outweighs a clear match.
    let mut candidates = registry();
    for c in &mut candidates {
        c.history = Some(if c.name == "docs" {
            History {
                runs: 50,
                succeeded: 50,
            }
        } else {
            History {
                runs: 50,
                succeeded: 10,
            }
        });
    }
    let router = Router::new(candidates);
    let recs = router.recommend("write unit tests with mocks");
    assert_eq!(recs[0].agent, "tester");
    assert!(!names(&router.recommend("sql schema")).contains(&"docs"));
}

#[test]
fn confidences_lie_in_the_unit_interval_and_are_sorted() {
    let router = Router::new(registry());
    for task in [
        "review",
        "review the tests",
        "security audit of the sql migrations and their tests and docs",
        "review review review review review",
        "tests tests tests docs docs security",
    ] {
        let recs = router.recommend(task);
        assert!(!recs.is_empty(), "{task}");
        for r in &recs {
            assert!((0.0..=1.0).contains(&r.confidence), "{task}: {r:?}");
            assert!(r.confidence > 0.0, "{task}: {r:?}");
            assert!(!r.reasons.is_empty(), "{task}: {r:?}");
        }
        for pair in recs.windows(2) {
            let ordered = pair[0].confidence > pair[1].confidence
                || (pair[0].confidence == pair[1].confidence && pair[0].agent < pair[1].agent);
            assert!(ordered, "{task}: {pair:?}");
        }
        let total: f64 = recs.iter().map(|r| r.confidence).sum();
        assert!(total <= 1.0, "{task}: {total}");
    }
    // More evidence, more confidence.
    let weak = router.recommend("feedback")[0].confidence;
    let strong = router.recommend("review feedback on the pull request diff")[0].confidence;
    assert!(strong > weak, "{weak} vs {strong}");
}

#[test]
fn the_same_question_gets_the_same_answer() {
    let router = Router::new(registry());
    let task = "review the docs and the tests";
    let a = router.recommend(task);
    for _ in 0..10 {
        assert_eq!(router.recommend(task), a);
    }
    let mut reversed = registry();
    reversed.reverse();
    assert_eq!(Router::new(reversed).recommend(task), a);
}

#[test]
fn reasons_name_tags_synonyms_and_description_words() {
    let router = Router::new(registry());
    let recs = router.recommend("review the sql schema");
    let dba = recs.iter().find(|r| r.agent == "dba").unwrap();
    assert_eq!(
        dba.reasons[0], "matched tags: database (via \"sql\")",
        "{:?}",
        dba.reasons
    );
    assert!(
        dba.reasons.iter().any(|r| r == "description mentions: sql, schema"),
        "{:?}",
        dba.reasons
    );
    let reviewer = recs.iter().find(|r| r.agent == "reviewer").unwrap();
    assert_eq!(reviewer.reasons[0], "matched tags: review", "{:?}", reviewer.reasons);
    assert!(
        reviewer.reasons.contains(&"name matches: reviewer".to_owned()),
        "{:?}",
        reviewer.reasons
    );
}

#[test]
fn empty_and_garbage_tasks_give_no_recommendation() {
    let router = Router::new(registry());
    let long = "lorem ipsum ".repeat(10_000);
    for task in [
        "",
        "   ",
        "!!! ??? ---",
        "the of and to please",
        "日本語のテキスト",
        "x",
        long.as_str(),
        "\u{0}\u{feff}",
    ] {
        assert!(router.recommend(task).is_empty(), "{task:?}");
    }
    // Garbage around a real word still finds it.
    assert_eq!(first(&router, "¿¿review?? ✨ 🚀"), "reviewer");
}

#[test]
fn a_generalist_is_the_fallback_but_not_ahead_of_a_match() {
    let mut candidates = registry();
    candidates.push(Candidate::new(
        "coder",
        &["code", "general"],
        "General-purpose coding agent.",
    ));
    let router = Router::new(candidates);
    let recs = router.recommend("add exponential backoff to the http client");
    assert_eq!(names(&recs), ["coder"]);
    assert_eq!(recs[0].reasons, ["general-purpose agent (the fallback)"]);
    assert!(recs[0].confidence < 0.5, "{recs:?}");
    assert_eq!(first(&router, "add unit tests"), "tester");
    // No content, no fallback.
    assert!(router.recommend("the of please").is_empty());
}

#[test]
fn examples_route_tasks_the_registry_text_does_not_cover() {
    // No tag, description word or synonym covers the ledger; without examples nobody matches.
    let task = "Reconcile the ledger balances for March";
    assert!(Router::new(registry()).recommend(task).is_empty());

    let mut candidates = registry();
    let dba = candidates.iter_mut().find(|c| c.name == "dba").unwrap();
    dba.examples = vec![
        "Reconcile the ledger balances for February".to_owned(),
        "Add a column for the currency".to_owned(),
    ];
    candidates.iter_mut().find(|c| c.name == "docs").unwrap().examples =
        vec!["Document the ledger format in the guide".to_owned()];
    let router = Router::new(candidates);
    let recs = router.recommend(task);
    assert_eq!(names(&recs), ["dba", "docs"]);
    assert_eq!(
        recs[0].reasons,
        ["similar to past task: \"Reconcile the ledger balances for February\""]
    );
    // A weak likeness is not quoted.
    assert!(
        !recs[1].reasons.iter().any(|r| r.starts_with("similar to")),
        "{:?}",
        recs[1].reasons
    );
}

#[test]
fn examples_add_to_a_match_without_outweighing_a_clear_one() {
    let mut candidates = registry();
    // The reviewer once handled a task that mentioned tests.
    candidates.iter_mut().find(|c| c.name == "reviewer").unwrap().examples =
        vec!["Review the pull request that adds tests for the parser".to_owned()];
    let router = Router::new(candidates);
    assert_eq!(first(&router, "Add unit tests with mocks for the parser"), "tester");
    assert_eq!(first(&router, "review the pull request for the parser"), "reviewer");
    let recs = router.recommend("review the pull request for the parser");
    assert!(
        recs[0]
            .reasons
            .contains(&"similar to past task: \"Review the pull request that adds tests for the parser\"".to_owned()),
        "{:?}",
        recs[0].reasons
    );
}

#[test]
fn examples_of_unavailable_agents_and_empty_examples_are_ignored() {
    let task = "Reconcile the ledger balances for March";
    let mut candidates = registry();
    let dba = candidates.iter_mut().find(|c| c.name == "dba").unwrap();
    dba.examples = vec!["Reconcile the ledger balances for February".to_owned()];
    dba.available = false;
    candidates.iter_mut().find(|c| c.name == "docs").unwrap().examples =
        vec![String::new(), "   ".to_owned(), "the of and".to_owned()];
    assert!(Router::new(candidates).recommend(task).is_empty());

    // Examples that share nothing with a task change nothing about its answer.
    let mut candidates = registry();
    for c in &mut candidates {
        c.examples = vec!["quux zorp".to_owned()];
    }
    let with = Router::new(candidates);
    let without = Router::new(registry());
    for task in ["review the tests", "sql schema", "security audit of the login"] {
        assert_eq!(with.recommend(task), without.recommend(task), "{task}");
    }
}

#[test]
fn a_long_example_is_quoted_cut() {
    let long = format!(
        "Reconcile the ledger balances {}",
        "and the journal entries ".repeat(10)
    );
    let mut candidates = registry();
    candidates.iter_mut().find(|c| c.name == "dba").unwrap().examples = vec![long];
    let recs = Router::new(candidates).recommend("reconcile the ledger balances and journal entries");
    let quote = recs[0]
        .reasons
        .iter()
        .find(|r| r.starts_with("similar to past task: "))
        .unwrap();
    assert!(quote.ends_with("…\""), "{quote}");
    assert!(
        quote.chars().count() <= "similar to past task: \"\"".len() + 80,
        "{quote}"
    );
}

#[test]
fn the_subject_of_a_request_weighs_more_than_what_follows() {
    // Each task names one tag of each agent; the one named first wins, whichever it is.
    let router = Router::new(vec![
        Candidate::new("a", &["apple"], "Fruit."),
        Candidate::new("b", &["banana"], "Fruit."),
    ]);
    assert_eq!(names(&router.recommend("apple and banana")), ["a", "b"]);
    assert_eq!(names(&router.recommend("banana, then apple")), ["b", "a"]);
}

#[test]
fn examples_keep_answers_deterministic() {
    let with_examples = |mut candidates: Vec<Candidate>| {
        for c in &mut candidates {
            c.examples = vec![format!("{} the ledger", c.name), format!("{} the reports", c.tags[0])];
        }
        Router::new(candidates)
    };
    let task = "review the ledger reports and the tests";
    let a = with_examples(registry()).recommend(task);
    let mut reversed = registry();
    reversed.reverse();
    assert_eq!(with_examples(reversed).recommend(task), a);
}
