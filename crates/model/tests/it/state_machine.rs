//! Properties of `model::state::transition` over random event sequences, folded the way a writer
//! does it: rejected events are skipped and leave the state unchanged.

use model::state::{replay, transition};
use model::{EventData, RunState, TransitionError};
use proptest::prelude::*;

use crate::strategies::{event_data, event_sequence, run_state};

/// One event offered to the simulated writer.
struct Step {
    before: Option<RunState>,
    event: EventData,
    result: Result<RunState, TransitionError>,
}

/// Folds `events`, skipping rejected ones; returns every step, the accepted events and the
/// final state.
fn simulate(events: &[EventData]) -> (Vec<Step>, Vec<EventData>, Option<RunState>) {
    let mut state = None;
    let mut steps = Vec::new();
    let mut accepted = Vec::new();
    for ev in events {
        let result = transition(state, ev);
        steps.push(Step {
            before: state,
            event: ev.clone(),
            result: result.clone(),
        });
        if let Ok(next) = result {
            state = Some(next);
            accepted.push(ev.clone());
        }
    }
    (steps, accepted, state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Never panics; a rejection names the current state and the event's kind, is
    /// deterministic, and the fold keeps the state.
    #[test]
    fn rejection_leaves_state_unchanged(events in event_sequence()) {
        let (steps, _, _) = simulate(&events);
        let mut state = None;
        for s in &steps {
            prop_assert_eq!(s.before, state);
            prop_assert_eq!(&transition(s.before, &s.event), &s.result, "transition is not deterministic");
            match &s.result {
                Ok(next) => state = Some(*next),
                Err(e) => {
                    prop_assert_eq!(e.from, s.before);
                    prop_assert_eq!(e.event, s.event.kind());
                }
            }
        }
    }

    /// (b) Once terminal, only `WorktreeRemoved` is accepted and the state never changes.
    #[test]
    fn terminal_states_are_absorbing(events in event_sequence()) {
        let (steps, _, _) = simulate(&events);
        let mut terminal: Option<RunState> = None;
        for s in &steps {
            if let Some(t) = terminal {
                prop_assert_eq!(s.before, Some(t));
                match (&s.event, &s.result) {
                    (EventData::WorktreeRemoved { .. }, Ok(next)) => prop_assert_eq!(*next, t),
                    (EventData::WorktreeRemoved { .. }, Err(e)) => prop_assert!(false, "rejected in {t}: {e}"),
                    (_, Ok(next)) => prop_assert!(false, "{} accepted in terminal {t} -> {next}", s.event.kind()),
                    (_, Err(_)) => {}
                }
            }
            if let Ok(next) = s.result && next.is_terminal() {
                terminal = Some(next);
            }
        }
    }

    /// (c) Before the first event only `Created` is accepted; afterwards never again.
    #[test]
    fn created_first_and_only_once(events in event_sequence()) {
        let (steps, accepted, _) = simulate(&events);
        if let Some(first) = accepted.first() {
            prop_assert_eq!(first.kind(), "created");
        }
        prop_assert!(accepted.iter().filter(|e| e.kind() == "created").count() <= 1);
        for s in &steps {
            let is_created = matches!(s.event, EventData::Created { .. });
            match s.before {
                None => {
                    prop_assert_eq!(s.result.is_ok(), is_created);
                    if is_created {
                        prop_assert_eq!(s.result.clone(), Ok(RunState::Pending));
                    }
                }
                Some(_) if is_created => prop_assert!(s.result.is_err()),
                Some(_) => {}
            }
        }
    }

    /// (d) `Running` only after an accepted `Started`, and `Started` only from `Preparing` or,
    /// for the next step of a workflow, from `Running`.
    #[test]
    fn running_requires_started(events in event_sequence()) {
        let (steps, _, _) = simulate(&events);
        let mut started = false;
        for s in &steps {
            if let EventData::Started { .. } = s.event {
                prop_assert_eq!(
                    s.result.is_ok(),
                    matches!(s.before, Some(RunState::Preparing | RunState::Running))
                );
            }
            if let Ok(next) = s.result {
                if matches!(s.event, EventData::Started { .. }) {
                    started = true;
                }
                if next == RunState::Running {
                    prop_assert!(started, "Running via {} without Started", s.event.kind());
                }
                if matches!(next, RunState::Paused | RunState::NeedsInput) {
                    prop_assert!(started, "{next} via {} without Started", s.event.kind());
                }
            }
        }
    }

    /// (e) `Finished` at most once, only to a terminal target other than `Lost`, landing on
    /// that target; `Lost` only from a non-terminal state.
    #[test]
    fn finished_and_lost_rules(events in event_sequence()) {
        let (steps, accepted, _) = simulate(&events);
        prop_assert!(accepted.iter().filter(|e| e.kind() == "finished").count() <= 1);
        for s in &steps {
            match (&s.event, &s.result) {
                (EventData::Finished { state: to, .. }, Ok(next)) => {
                    prop_assert!(to.is_terminal() && *to != RunState::Lost, "accepted Finished -> {to}");
                    prop_assert_eq!(next, to);
                    prop_assert!(s.before.is_some_and(|b| !b.is_terminal()));
                }
                (EventData::Finished { state: to, .. }, Err(_)) => {
                    // Only Pending restricts the legal terminal targets further.
                    let legal_elsewhere = to.is_terminal() && *to != RunState::Lost;
                    if let Some(b) = s.before && !b.is_terminal() && b != RunState::Pending {
                        prop_assert!(!legal_elsewhere, "Finished -> {to} rejected in {b}");
                    }
                }
                (EventData::Lost { .. }, Ok(next)) => {
                    prop_assert_eq!(*next, RunState::Lost);
                    prop_assert!(s.before.is_some_and(|b| !b.is_terminal()));
                }
                (EventData::Lost { .. }, Err(_)) => {
                    prop_assert!(s.before.is_none_or(RunState::is_terminal));
                }
                _ => {}
            }
        }
    }

    /// (f) Replaying the accepted events gives the same final state; replaying the raw sequence
    /// fails exactly at the first rejected event.
    #[test]
    fn replay_is_deterministic(events in event_sequence()) {
        let (steps, accepted, state) = simulate(&events);
        prop_assert_eq!(replay(&accepted), Ok(state));
        prop_assert_eq!(replay(&accepted), replay(accepted.iter()));
        match steps.iter().find(|s| s.result.is_err()) {
            Some(first) => prop_assert_eq!(replay(&events), Err(first.result.clone().unwrap_err())),
            None => prop_assert_eq!(replay(&events), Ok(state)),
        }
    }

    /// `Pending` accepts `Finished` only to `Cancelled` or `Failed`.
    #[test]
    fn pending_finishes_only_cancelled_or_failed(ev in event_data(), to in run_state()) {
        let finished = EventData::Finished { state: to, reason: "r".into(), exit_code: None, signal: None };
        let ok = transition(Some(RunState::Pending), &finished).is_ok();
        prop_assert_eq!(ok, matches!(to, RunState::Cancelled | RunState::Failed));
        // And nothing but Created is accepted before the first event.
        prop_assert_eq!(transition(None, &ev).is_ok(), ev.kind() == "created");
    }
}

/// (g) Terminal and supervised states are disjoint and, with `Pending`, cover every state.
#[test]
fn terminal_and_supervised_partition_states() {
    for st in RunState::ALL {
        assert!(!(st.is_terminal() && st.needs_supervisor()), "{st} is both");
        assert_eq!(
            st.is_terminal() || st.needs_supervisor(),
            !matches!(st, RunState::Pending | RunState::Interrupted),
            "{st} is neither terminal nor supervised"
        );
        assert_eq!(st.as_str().parse::<RunState>().unwrap(), st);
        assert_eq!(st.to_string(), st.as_str());
        assert_eq!(serde_json::to_value(st).unwrap(), serde_json::json!(st.as_str()));
    }
    let terminal: Vec<_> = RunState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(
        terminal,
        [
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::TimedOut,
            RunState::Lost
        ]
    );
    assert!("nope".parse::<RunState>().is_err());
    let mut names: Vec<_> = RunState::ALL.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RunState::ALL.len(), "state names are unique");
}
