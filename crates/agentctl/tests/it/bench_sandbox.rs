//! `agentctl bench sandbox`: a few runs end to end, checking the JSON report carries every
//! figure (sandboxed and unsandboxed side by side, their difference against the goal, the
//! ratio, and bubblewrap's own setup beside `true`). No timing is asserted: performance lives
//! in the benchmark, not in tests.

use serde_json::Value;

use crate::harness::{Env, stderr};

/// A positive number at `v[key]`.
fn positive(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"));
    assert!(x > 0.0, "{key} is not positive in {v}");
    x
}

/// Median, p90 and max in order.
fn figures(v: &Value) {
    let median = positive(v, "median_ms");
    let p90 = positive(v, "p90_ms");
    let max = positive(v, "max_ms");
    assert!(median <= p90 && p90 <= max, "median <= p90 <= max fails in {v}");
    positive(v, "min_ms");
    positive(v, "cold_ms");
}

#[test]
fn bench_sandbox_reports_both_figures() {
    let env = Env::new();
    let (v, out) = env.json(&["bench", "sandbox", "--iterations", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = &v["sandbox"];
    assert_eq!(s["iterations"], 3, "{v}");
    for key in ["sandboxed", "unsandboxed"] {
        figures(&s[key]);
        figures(&s[key]["recorded"]);
        let phases = s[key]["phase_medians_ms"]
            .as_object()
            .unwrap_or_else(|| panic!("{key}: {v}"));
        for name in ["supervisor", "worktree", "isolation", "checkpoint", "agent", "finish"] {
            assert!(phases[name].as_f64().is_some_and(|x| x >= 0.0), "{key}.{name}: {v}");
        }
    }
    assert!(s["difference_ms"].is_f64(), "{v}");
    positive(s, "ratio");
    assert_eq!(s["goal_difference_ms"], 50.0, "{v}");
    assert!(s["goal_met"].is_boolean(), "{v}");
    figures(&s["setup"]["bwrap"]);
    figures(&s["setup"]["baseline"]);
    assert!(s["setup"]["difference_ms"].is_f64(), "{v}");
}
