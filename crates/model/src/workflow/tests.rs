use std::collections::BTreeMap;

use super::*;
use crate::event::{Event, EventData};
use crate::ids::RunId;

fn step(id: &str, agent: &str) -> StepDef {
    StepDef {
        id: id.to_owned(),
        agent: Some(agent.to_owned()),
        prompt: None,
        gate: None,
        timeout: None,
    }
}

fn edge(from: &str, to: &str, when: Option<&str>, max_cycles: Option<u32>) -> EdgeDef {
    EdgeDef {
        from: from.to_owned(),
        to: to.to_owned(),
        when: when.map(str::to_owned),
        max_cycles,
    }
}

/// The issue's example: code → review, review → code when changes are requested, 2 cycles.
fn review() -> WorkflowDef {
    WorkflowDef {
        name: "review".to_owned(),
        description: String::new(),
        max_hops: Some(5),
        start: None,
        steps: vec![step("code", "coder"), step("review", "reviewer")],
        edges: vec![
            edge("code", "review", None, None),
            edge("review", "code", Some("changes_requested"), Some(2)),
        ],
        policy: None,
    }
}

#[test]
fn the_example_is_valid() {
    assert_eq!(review().problems(), Vec::<String>::new());
}

#[test]
fn every_kind_of_problem_is_named() {
    let mut w = review();
    w.edges.push(edge("review", "deploy", None, None));
    let p = w.problems();
    assert!(p.iter().any(|m| m.contains("unknown step `deploy`")), "{p:?}");

    let mut w = review();
    w.steps.push(step("lint", "coder"));
    let p = w.problems();
    assert_eq!(p, vec!["step `lint` is unreachable from `code`: no edge leads to it"]);

    let mut w = review();
    w.edges[1].max_cycles = None;
    let p = w.problems();
    assert_eq!(
        p,
        vec!["the cycle code → review → code has no bound: set `max_cycles` on one of its edges"]
    );

    let mut w = review();
    w.steps[1].gate = Some("cargo test".to_owned());
    w.steps.push(step("code", "x"));
    w.steps.push(StepDef {
        agent: None,
        ..step("empty", "x")
    });
    let p = w.problems();
    assert!(p.iter().any(|m| m.contains("both `agent` and `gate`")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("`code` is used twice")), "{p:?}");
    assert!(
        p.iter().any(|m| m.contains("`empty` needs an `agent` or a `gate`")),
        "{p:?}"
    );

    let mut w = review();
    w.steps[0].prompt = Some("{{task}} {{feedback}}".to_owned());
    assert!(w.problems()[0].contains("unknown prompt variable `{{feedback}}`"));

    let w = WorkflowDef {
        steps: vec![],
        ..review()
    };
    assert!(w.problems()[0].contains("no steps"));
}

#[test]
fn a_self_loop_needs_a_bound_too() {
    let mut w = review();
    w.edges.push(edge("code", "code", Some("retry"), None));
    assert!(w.problems()[0].contains("code → code"), "{:?}", w.problems());
    w.edges[2].max_cycles = Some(3);
    assert!(w.problems().is_empty());
}

#[test]
fn verdicts_pick_edges_and_the_bound_ends_the_loop() {
    let w = review();
    let none = BTreeMap::new();
    assert_eq!(
        w.decide("code", SUCCESS, true, &none, 1),
        Decision::Next {
            step: "review".to_owned(),
            edge: 0
        }
    );
    // A failed step with no failure edge ends the workflow as failed.
    let Decision::End(end) = w.decide("code", FAILURE, false, &none, 1) else {
        panic!()
    };
    assert_eq!(end.state, RunState::Failed);
    assert!(!end.exhausted);
    // The first request for changes goes back; the second exhausts the 2 cycles.
    assert_eq!(
        w.decide("review", "changes_requested", true, &none, 2),
        Decision::Next {
            step: "code".to_owned(),
            edge: 1
        }
    );
    let once = BTreeMap::from([(1, 1)]);
    let Decision::End(end) = w.decide("review", "changes_requested", true, &once, 4) else {
        panic!()
    };
    assert!(end.exhausted);
    assert_eq!(end.state, RunState::Failed);
    assert!(end.reason.starts_with("exhausted: cycle 2 of 2"), "{}", end.reason);
    // Approval matches no edge: the workflow succeeded.
    let Decision::End(end) = w.decide("review", "approved", true, &once, 4) else {
        panic!()
    };
    assert_eq!(end.state, RunState::Succeeded);
}

#[test]
fn max_hops_caps_step_executions() {
    let mut w = review();
    w.max_hops = Some(3);
    w.edges[1].max_cycles = Some(10);
    let Decision::End(end) = w.decide("code", SUCCESS, true, &BTreeMap::from([(1, 1)]), 3) else {
        panic!()
    };
    assert!(end.exhausted && end.reason.contains("max_hops 3"), "{}", end.reason);
    // Without max_hops: steps × product of max_cycles.
    w.max_hops = None;
    assert_eq!(w.max_hops(), 20);
}

#[test]
fn cycles_count_passes_through_the_loop() {
    let w = review();
    assert_eq!(w.cycle_of("code", &BTreeMap::new()), (1, 2));
    assert_eq!(w.cycle_of("review", &BTreeMap::from([(1, 1)])), (2, 2));
    let mut lin = review();
    lin.edges.truncate(1);
    assert_eq!(lin.cycle_of("review", &BTreeMap::new()), (1, 1));
}

fn ev(seq: u64, data: EventData) -> Event {
    Event {
        v: 1,
        seq,
        ts: jiff::Timestamp::UNIX_EPOCH,
        run_id: RunId::parse("wf-test").unwrap(),
        data,
    }
}

fn started(step: &str, hop: u32, attempt: u32, delivered: Vec<u64>) -> EventData {
    EventData::StepStarted {
        step: step.to_owned(),
        hop,
        attempt,
        cycle: 1,
        max_cycles: 2,
        remaining_hops: 5 - hop,
        agent: Some("a".to_owned()),
        gate: None,
        prompt: None,
        delivered,
        from_checkpoint: Some(hop - 1),
    }
}

fn finished(step: &str, hop: u32, attempt: u32, verdict: &str, next: Option<&str>, edge: Option<u32>) -> EventData {
    EventData::StepFinished {
        step: step.to_owned(),
        hop,
        attempt,
        exit_code: Some(0),
        signal: None,
        verdict: verdict.to_owned(),
        checkpoint: Some(hop),
        next: next.map(str::to_owned),
        edge,
        end: None,
        elapsed_ms: 1,
        error: None,
    }
}

fn message(from: &str, to: Option<&str>, verdict: Option<&str>, hop: u32, attempt: u32) -> EventData {
    EventData::MessageSent {
        from: from.to_owned(),
        to: to.map(str::to_owned),
        verdict: verdict.map(str::to_owned),
        text: format!("from {from} hop {hop}"),
        hop,
        attempt,
    }
}

#[test]
fn messages_count_once_their_sender_finished_and_are_delivered_once() {
    let events = [
        ev(1, started("code", 1, 1, vec![])),
        ev(2, finished("code", 1, 1, SUCCESS, Some("review"), Some(0))),
        ev(3, started("review", 2, 1, vec![])),
        ev(4, message("review", None, Some("changes_requested"), 2, 1)),
    ];
    let p = Progress::from_events(&events);
    assert_eq!(p.current_verdict(), Some("changes_requested"));
    assert_eq!(p.pending_for("code").count(), 0, "in flight until review finishes");

    let mut more = events.to_vec();
    more.push(ev(
        5,
        finished("review", 2, 1, "changes_requested", Some("code"), Some(1)),
    ));
    let p = Progress::from_events(&more);
    assert_eq!(p.pending_for("code").map(|m| m.seq).collect::<Vec<_>>(), vec![4]);
    assert_eq!(p.taken, BTreeMap::from([(0, 1), (1, 1)]));
    assert_eq!(p.next.as_deref(), Some("code"));

    // Delivered into code's second execution: once it finishes, nothing is pending.
    more.push(ev(6, started("code", 3, 1, vec![4])));
    more.push(ev(7, finished("code", 3, 1, SUCCESS, Some("review"), Some(0))));
    let p = Progress::from_events(&more);
    assert_eq!(p.pending_for("code").count(), 0);
    assert_eq!(p.messages[0].status, progress::MessageStatus::Delivered);
    assert_eq!(p.messages[0].delivered_hop, Some(3));
    assert_eq!(p.hops_done, 3);
}

#[test]
fn an_interrupted_execution_is_restarted_and_what_it_sent_is_void() {
    let events = [
        ev(1, started("code", 1, 1, vec![])),
        ev(2, finished("code", 1, 1, SUCCESS, Some("review"), Some(0))),
        ev(3, started("review", 2, 1, vec![])),
        ev(4, message("review", Some("code"), Some("changes_requested"), 2, 1)),
        // The supervisor died here; a new one took over.
        ev(
            5,
            EventData::WorkflowResumed {
                reason: "r".to_owned(),
                step: Some("review".to_owned()),
                hop: Some(2),
                saved_checkpoint: Some(2),
                restored_to: Some(1),
            },
        ),
    ];
    let p = Progress::from_events(&events);
    assert!(p.current.is_none());
    let restart = p.restart.clone().expect("the interrupted execution");
    assert_eq!((restart.step.as_str(), restart.hop, restart.attempt), ("review", 2, 1));
    assert_eq!(p.messages[0].status, progress::MessageStatus::Void);
    assert_eq!(p.resumes, 1);

    let mut more = events.to_vec();
    more.push(ev(6, started("review", 2, 2, vec![])));
    more.push(ev(7, message("review", Some("code"), Some("changes_requested"), 2, 2)));
    more.push(ev(
        8,
        finished("review", 2, 2, "changes_requested", Some("code"), Some(1)),
    ));
    let p = Progress::from_events(&more);
    assert!(p.restart.is_none());
    assert_eq!(p.pending_for("code").map(|m| m.seq).collect::<Vec<_>>(), vec![7]);
    assert_eq!(p.hops_done, 2);
}

/// plan → code ⇄ review (max 3) → test → plan (max 2): a review loop inside a planning loop.
fn nested() -> WorkflowDef {
    WorkflowDef {
        name: "nested".to_owned(),
        description: String::new(),
        max_hops: None,
        start: None,
        steps: vec![
            step("plan", "a"),
            step("code", "a"),
            step("review", "a"),
            step("test", "a"),
        ],
        edges: vec![
            edge("plan", "code", None, None),
            edge("code", "review", None, None),
            edge("review", "code", Some("changes_requested"), Some(3)),
            edge("review", "test", None, None),
            edge("test", "plan", Some("failure"), Some(2)),
        ],
        policy: None,
    }
}

#[test]
fn nested_loops_count_their_own_cycles_and_an_outer_pass_renews_the_inner_bound() {
    let w = nested();
    assert!(w.problems().is_empty(), "{:?}", w.problems());
    let none = w.loop_counts(&[]);
    assert_eq!(w.cycle_of("code", &none), (1, 3), "code is in the inner loop");
    assert_eq!(w.cycle_of("review", &none), (1, 3));
    assert_eq!(w.cycle_of("plan", &none), (1, 2), "plan only in the outer loop");
    assert_eq!(w.cycle_of("test", &none), (1, 2));
    // Two change requests in the first pass: the inner loop is at cycle 3 of 3.
    let inner_twice = w.loop_counts(&[0, 1, 2, 1, 2, 1]);
    assert_eq!(w.cycle_of("review", &inner_twice), (3, 3));
    assert!(matches!(
        w.decide("review", "changes_requested", true, &inner_twice, 6),
        Decision::End(WorkflowEnd { exhausted: true, .. })
    ));
    // Then the tests fail and the outer edge is taken: the inner loop starts afresh.
    let outer = w.loop_counts(&[0, 1, 2, 1, 2, 1, 3, 4]);
    assert_eq!(w.cycle_of("code", &outer), (1, 3));
    assert_eq!(w.cycle_of("plan", &outer), (2, 2));
    assert_eq!(
        w.decide("review", "changes_requested", true, &outer, 9),
        Decision::Next {
            step: "code".to_owned(),
            edge: 2
        }
    );
}
