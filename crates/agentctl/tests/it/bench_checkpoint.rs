//! `agentctl bench checkpoint`: a small run end to end, checking the JSON report carries every
//! figure (ours and the git baseline beside it, with ratios and goals).

use serde_json::Value;

use crate::harness::{Env, stderr};

/// A positive number of milliseconds at `v[key]`.
fn positive(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"));
    assert!(x > 0.0, "{key} is not positive in {v}");
    x
}

fn figures(v: &Value) {
    let median = positive(v, "median_ms");
    let p95 = positive(v, "p95_ms");
    assert!(p95 >= median, "p95 below the median in {v}");
}

#[test]
fn bench_checkpoint_smoke() {
    let env = Env::new();
    let (v, out) = env.json(&[
        "bench",
        "checkpoint",
        "--files",
        "300",
        "--changes",
        "5",
        "--iterations",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = &v["checkpoint"];
    let cases = c["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 1, "{v}");
    let case = &cases[0];
    assert_eq!(case["files"], 300);
    assert_eq!(case["changes"], 5);
    for key in ["watcher", "full_scan", "baseline"] {
        figures(&case[key]);
        assert!(case[key]["phase_medians_ms"].is_object(), "{key}: {case}");
    }
    positive(case, "watcher_ratio");
    positive(case, "full_scan_ratio");
    // Goals are set for 10k and 50k files only.
    assert!(case["goal"].is_null(), "{case}");
    for kind in ["rollback", "diff"] {
        let rows = c[kind].as_array().expect(kind);
        assert_eq!(rows.len(), 1, "{v}");
        let row = &rows[0];
        assert_eq!(row["files"], 300);
        assert_eq!(row["paths"], 100);
        figures(&row["ours"]);
        figures(&row["baseline"]);
        positive(row, "ratio");
    }
    assert!(
        c["diff"][0]["goal"]["met"].is_boolean(),
        "the diff goal applies at every size: {v}"
    );
}
