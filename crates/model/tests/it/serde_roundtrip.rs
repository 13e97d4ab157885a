//! Serde round trips of the event schema: every generated `Event` serializes to a JSON object
//! with the documented top-level fields and deserializes back to an equal value.

use model::{Event, RunId};
use proptest::prelude::*;

use crate::strategies::{event, run_id};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn event_json_round_trip(ev in event()) {
        let text = serde_json::to_string(&ev).unwrap();
        prop_assert!(!text.contains('\n'), "an event must fit on one log line");
        let back: Event = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &ev);

        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let obj = json.as_object().unwrap();
        prop_assert_eq!(&obj["v"], &serde_json::json!(1));
        prop_assert_eq!(&obj["seq"], &serde_json::json!(ev.seq));
        prop_assert_eq!(obj["ts"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), ev.ts);
        prop_assert_eq!(obj["run_id"].as_str(), Some(ev.run_id.as_str()));
        prop_assert_eq!(obj["data"]["type"].as_str(), Some(ev.data.kind()));
        prop_assert_eq!(obj.len(), 5, "unexpected top-level fields in {}", text);
    }

    #[test]
    fn run_id_round_trip(id in run_id()) {
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<RunId>(&json).unwrap(), id);
    }
}

#[test]
fn invalid_run_ids_do_not_deserialize() {
    for bad in [r#""""#, r#""../x""#, r#""a b""#, r#""x.lock""#] {
        assert!(serde_json::from_str::<RunId>(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn documented_event_shape_parses() {
    let line = r#"{"v":1,"seq":3,"ts":"2025-01-02T03:04:05.123456789Z","run_id":"fix-1",
        "data":{"type":"finished","state":"timed_out","reason":"hard timeout","exit_code":null,"signal":"SIGKILL"}}"#;
    let ev: Event = serde_json::from_str(line).unwrap();
    assert_eq!(ev.seq, 3);
    assert_eq!(
        ev.data,
        model::EventData::Finished {
            state: model::RunState::TimedOut,
            reason: "hard timeout".into(),
            exit_code: None,
            signal: Some("SIGKILL".into()),
        }
    );
    let unknown = line.replace("finished", "exploded");
    assert!(serde_json::from_str::<Event>(&unknown).is_err());
}
