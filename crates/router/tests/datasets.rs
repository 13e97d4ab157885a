//! The evaluation data in `router/` at the repository root: the registry parses with the agents
//! crate's loader, every label names one of its agents, and the router's accuracy on the tuning
//! set (`eval.jsonl`) does not regress, with and without the example pool (`examples.jsonl`,
//! measured leave-one-out since the pool holds the same tasks), and the held-out sets keep their
//! figures. The fifth sealed set shows the lexical tier meeting the goal; the semantic
//! tier is measured in `minilm.rs` (`embed` feature).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{candidates, cases};
use router::Router;
use router::eval;

fn pool() -> BTreeMap<String, Vec<String>> {
    eval::examples_by_agent(&cases("examples.jsonl"))
}

#[test]
fn the_registry_parses_and_every_label_names_an_agent() {
    let candidates = candidates(&BTreeMap::new());
    assert!((8..=12).contains(&candidates.len()), "{} agents", candidates.len());
    for c in &candidates {
        assert!(!c.tags.is_empty() && !c.description.is_empty(), "{}", c.name);
    }
    let names: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let (tuning, examples) = (cases("eval.jsonl"), cases("examples.jsonl"));
    assert!(tuning.len() >= 60, "{}", tuning.len());
    // Every agent is expected somewhere in each set, and every label is an agent.
    for set in [&tuning, &examples] {
        let expected: BTreeSet<&str> = set.iter().map(|c| c.expected.as_str()).collect();
        assert_eq!(expected, names);
    }
}

/// Registry text and synonyms alone (no examples): 96.1% top-1 when tuning stopped.
#[test]
fn the_router_fits_the_tuning_set_without_examples() {
    let router = Router::new(candidates(&BTreeMap::new()));
    let report = eval::evaluate(&router, &cases("eval.jsonl"));
    assert!(report.top1 >= 0.9, "{report}");
    assert!(report.top3 >= report.top1, "{report}");
}

/// With the example pool, leave-one-out (no task is answered by finding itself among the
/// examples): 95.0% top-1, 98.9% top-3 since the example vote was retuned for larger pools
/// (97.8% and 100% before).
#[test]
fn the_router_meets_the_goal_leave_one_out_on_the_tuning_set() {
    let report = eval::evaluate_loo(&candidates(&pool()), &cases("eval.jsonl"));
    assert!(report.top1 >= 0.9, "{report}");
    assert!(report.top3 >= 0.97, "{report}");
}

/// The spent held-out sets: `holdout.jsonl` (60 tasks written, sealed, by someone who never saw
/// the router, its registry or its data) and `holdout-earlier.jsonl` (48 tasks written before
/// an earlier router was tuned), with the example pool as the agents' history; `holdout-2.jsonl`,
/// `holdout-3.jsonl` and `holdout-4.jsonl` with every set written before each as history. Their
/// labels are agents of the registry and none of their tasks is an example. Each was measured
/// once while sealed (router/README.md has those figures); all of them, and `pool.jsonl`, were
/// then used to retune the example vote (weight 60, 5 closest), so the floors are the figures
/// after that retuning (85.0%, 77.1%, 88.3%, 93.1% and 91.7% top-1): a change that makes
/// routing worse fails here. They say nothing about new tasks: `holdout-5.jsonl` did, once.
#[test]
fn the_held_out_sets_keep_their_measured_accuracy() {
    let pool = pool();
    let history = eval::examples_by_agent(&cases("history.jsonl"));
    let with_history = candidates(&history);
    let candidates_with = candidates;
    let candidates = candidates(&pool);
    let names: BTreeSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let examples: BTreeSet<&str> = pool.values().flatten().map(String::as_str).collect();
    let history_tasks: BTreeSet<&str> = history.values().flatten().map(String::as_str).collect();
    let second = cases("holdout-2.jsonl");
    assert!(second.iter().all(|c| !history_tasks.contains(c.task.as_str())));
    let report = eval::evaluate(&Router::new(with_history), &second);
    assert!(report.top1 >= 0.883 - 1e-9, "holdout-2.jsonl: {report}");
    // The third and fourth, each with every labelled task before it as history: 93.1% (67 of
    // 72) and 91.7% (66 of 72).
    for (set, history, size, floor) in [
        ("holdout-3.jsonl", "history-3.jsonl", 348, 0.930),
        ("holdout-4.jsonl", "history-4.jsonl", 420, 0.916),
    ] {
        let history = eval::examples_by_agent(&cases(history));
        let held_out = cases(set);
        let earlier: BTreeSet<&str> = history.values().flatten().map(String::as_str).collect();
        assert_eq!(earlier.len(), size);
        assert!(held_out.iter().all(|c| !earlier.contains(c.task.as_str())));
        let report = eval::evaluate(&Router::new(candidates_with(&history)), &held_out);
        assert!(report.top1 >= floor, "{set}: {report}");
        assert!(report.top3 >= 0.98, "{set}: {report}");
    }
    for (file, floor) in [("holdout.jsonl", 0.85), ("holdout-earlier.jsonl", 0.770)] {
        let holdout = cases(file);
        assert!(holdout.len() >= 40, "{file}");
        for case in &holdout {
            assert!(names.contains(case.expected.as_str()), "unknown agent in {case:?}");
        }
        // Held out means held out: no task of the set is an example.
        assert!(holdout.iter().all(|c| !examples.contains(c.task.as_str())), "{file}");
        let report = eval::evaluate(&Router::new(candidates.clone()), &holdout);
        assert!(report.top1 >= floor - 1e-9, "{file}: {report}");
        assert!(report.top3 >= 0.9, "{file}: {report}");
    }
}

/// The goal for top-1 accuracy on tasks not tuned on.
const GOAL: f64 = 0.9;

/// The goal, met by the lexical tier on the fifth sealed set (`holdout-5.jsonl`: 96 tasks
/// written blind and read only when the router was measured on it, once), with every labelled
/// task written before it as history — the protocol fixed before it was read
/// (`history-4.jsonl` and `holdout-4.jsonl`, 492 tasks): 90.6% (87 of 96); with
/// `history-5.jsonl`, which adds the 600-task `pool.jsonl`: 91.7% (88 of 96). The floors are
/// those figures. The semantic tier's are in `minilm.rs`.
#[test]
fn the_lexical_router_meets_the_goal_on_the_fifth_sealed_set() {
    let fifth = cases("holdout-5.jsonl");
    assert_eq!(fifth.len(), 96);
    let names: BTreeSet<String> = candidates(&BTreeMap::new()).into_iter().map(|c| c.name).collect();
    assert!(fifth.iter().all(|c| names.contains(&c.expected)));
    let mut protocol = cases("history-4.jsonl");
    protocol.extend(cases("holdout-4.jsonl"));
    assert_eq!(protocol.len(), 492);
    let history_5 = cases("history-5.jsonl");
    assert_eq!(history_5.len(), 1092);
    // history-5 is history-4, holdout-4 and the pool, and holds no task of the fifth set.
    let mut parts = protocol.clone();
    parts.extend(cases("pool.jsonl"));
    assert_eq!(history_5, parts);
    let known: BTreeSet<String> = history_5.iter().map(|c| eval::task_key(&c.task)).collect();
    assert!(fifth.iter().all(|c| !known.contains(&eval::task_key(&c.task))));
    let report = eval::evaluate(&Router::new(candidates(&eval::examples_by_agent(&protocol))), &fifth);
    assert!(
        report.top1 >= 0.906 - 1e-9,
        "holdout-5.jsonl, 492-task history: {report}"
    );
    assert!(report.top1 >= GOAL, "{report}");
    let report = eval::evaluate(&Router::new(candidates(&eval::examples_by_agent(&history_5))), &fifth);
    assert!(report.top1 >= 0.916, "holdout-5.jsonl, history-5.jsonl: {report}");
    assert!(report.top3 >= 0.98, "{report}");
}

/// The example pool is training data: written blind like the sealed sets, in five styles, and
/// disjoint from every held-out set.
#[test]
fn the_pool_labels_agents_and_holds_no_held_out_task() {
    let pool = cases("pool.jsonl");
    assert_eq!(pool.len(), 600);
    let names: BTreeSet<String> = candidates(&BTreeMap::new()).into_iter().map(|c| c.name).collect();
    let expected: BTreeSet<String> = pool.iter().map(|c| c.expected.clone()).collect();
    assert_eq!(expected, names);
    let pooled: BTreeSet<String> = pool.iter().map(|c| eval::task_key(&c.task)).collect();
    assert_eq!(pooled.len(), 600, "no task twice");
    for file in [
        "holdout.jsonl",
        "holdout-earlier.jsonl",
        "holdout-2.jsonl",
        "holdout-3.jsonl",
        "holdout-4.jsonl",
        "holdout-5.jsonl",
        "eval.jsonl",
    ] {
        assert!(
            cases(file).iter().all(|c| !pooled.contains(&eval::task_key(&c.task))),
            "{file}"
        );
    }
}
