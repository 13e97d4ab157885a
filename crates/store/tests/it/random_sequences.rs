//! Randomized (seeded, reproducible) check that events appended one by one through
//! `RunWriter::append` project to exactly what `reindex()` rebuilds, and that every event the
//! state machine rejects is refused before reaching the log.

use model::state::transition;
use store::{LockMode, StoreError};

use crate::common::*;

const CASES: u64 = 32;
const RUNS_PER_CASE: usize = 3;

#[test]
fn incremental_projection_equals_reindex() {
    for case in 0..CASES {
        let mut rng = Rng(0x5eed_0000 + case);
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let layout = store.layout().clone();
        for r in 0..RUNS_PER_CASE {
            let rid = id(&format!("c{case}-r{r}"));
            let labels = [("case", case.to_string()), ("slot", r.to_string())];
            let labels: Vec<(&str, &str)> = labels[..rng.below(3) as usize]
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            store
                .create_run(&rid, spec("claude", &labels), plan(&layout, &rid))
                .unwrap();
            let mut w = store.writer(&rid, LockMode::NoWait).unwrap();
            for _ in 0..rng.below(40) {
                let ev = random_event(&mut rng, &layout, &rid);
                let before = w.events().len();
                let expected = transition(w.state(), &ev);
                match (w.append(ev), expected) {
                    (Ok(e), Ok(next)) => {
                        assert_eq!(e.seq as usize, before + 1);
                        assert_eq!(w.state(), Some(next));
                    }
                    (Err(StoreError::Transition(got)), Err(want)) => assert_eq!(got, want),
                    (got, want) => panic!("case {case}: append gave {got:?}, state machine {want:?}"),
                }
                let rec = store.get(&rid).unwrap().unwrap();
                assert_eq!((Some(rec.state), rec.last_seq), (w.state(), w.events().len() as u64));
            }
            assert_eq!(
                store.events(&rid).unwrap(),
                w.events(),
                "case {case}: log differs from writer"
            );
        }
        let incremental = store.dump().unwrap();
        assert_eq!(store.reindex().unwrap(), RUNS_PER_CASE, "case {case}");
        assert_eq!(
            store.dump().unwrap(),
            incremental,
            "case {case} (seed {:#x})",
            0x5eed_0000 + case
        );
    }
}
