//! Measuring a router: a labelled set of tasks in, top-1/top-3 accuracy and latency out.
//!
//! A set is a JSON-lines file, one case a line: `{"task": "...", "expected": "AGENT"}`; blank
//! lines are skipped, and other fields are ignored (room for notes). [`evaluate`] scores the
//! router's answer to each case, and times every call over [`LATENCY_PASSES`] passes through the
//! set (so one scheduling hiccup does not become the p99 of a small set); the latency
//! percentiles are nearest-rank over those calls: what one `recommend` costs on this machine,
//! not counting process start-up or loading the registry.
//!
//! A labelled set can also serve as the candidates' examples ([`examples_by_agent`]), standing
//! in for the prompts of their past successful runs. A set measured against examples drawn from
//! itself must be measured with [`evaluate_loo`] (leave-one-out), so that no task is answered by
//! finding itself among the examples.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{Candidate, Router};

/// One labelled task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub task: String,
    /// The agent that should come first.
    pub expected: String,
}

/// A set that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads a JSON-lines set from `path`.
pub fn load_cases(path: &Path) -> Result<Vec<Case>, EvalError> {
    let text = fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_cases(path, &text)
}

/// Parses a JSON-lines set; `path` only names it in errors.
pub fn parse_cases(path: &Path, text: &str) -> Result<Vec<Case>, EvalError> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).map_err(|e| EvalError::Invalid {
            path: path.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        cases.push(case);
    }
    Ok(cases)
}

/// A case the router did not put first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Miss {
    pub task: String,
    pub expected: String,
    /// The router's first three answers (fewer if fewer agents matched).
    pub got: Vec<String>,
}

/// The outcome of [`evaluate`]. Accuracies are fractions in `[0, 1]` (0 for an empty set).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub cases: usize,
    /// Cases whose expected agent came first.
    pub top1_hits: usize,
    /// Cases whose expected agent was among the first three.
    pub top3_hits: usize,
    pub top1: f64,
    pub top3: f64,
    /// Median latency of one recommendation, in milliseconds (over [`LATENCY_PASSES`] passes).
    pub p50_ms: f64,
    /// 99th-percentile latency of one recommendation, in milliseconds.
    pub p99_ms: f64,
    /// Every case not answered first, in the set's order.
    pub misses: Vec<Miss>,
}

/// How many times [`evaluate`] times each case.
pub const LATENCY_PASSES: usize = 5;

/// The tasks of a set grouped by their expected agent, in the set's order: the `examples` of
/// each [`Candidate`].
pub fn examples_by_agent(cases: &[Case]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in cases {
        out.entry(case.expected.clone()).or_default().push(case.task.clone());
    }
    out
}

/// Candidates for measuring a registry: each agent (`name`, `tags`, `description`) available,
/// without history, with its tasks of `pool` (see [`examples_by_agent`]) as its examples.
pub fn candidates_with_examples<'a>(
    agents: impl IntoIterator<Item = (&'a str, &'a [String], &'a str)>,
    pool: &BTreeMap<String, Vec<String>>,
) -> Vec<Candidate> {
    agents
        .into_iter()
        .map(|(name, tags, description)| Candidate {
            name: name.to_owned(),
            tags: tags.to_vec(),
            description: description.to_owned(),
            available: true,
            history: None,
            examples: pool.get(name).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Runs every case through `router` and scores the answers.
pub fn evaluate(router: &Router, cases: &[Case]) -> Report {
    match score(cases, |_| Ok::<_, Infallible>(router)) {
        Ok(report) => report,
    }
}

/// A task as evaluation compares it: ignoring case and spacing. Two labelled tasks with the
/// same key are the same task (a held-out set must share none with the examples).
pub fn task_key(task: &str) -> String {
    task.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Like [`evaluate`], leave-one-out: each case is answered by a router built from `candidates`
/// without any example that is the case's task (compared ignoring case and spacing), so a task
/// never matches itself. Cases that are no candidate's example share one router.
pub fn evaluate_loo(candidates: &[Candidate], cases: &[Case]) -> Report {
    match evaluate_loo_with(candidates, cases, |c| Ok::<_, Infallible>(Router::new(c))) {
        Ok(report) => report,
    }
}

/// [`evaluate_loo`] with routers made by `build` (e.g. [`Router::with_encoder`] over a
/// [`crate::CachingEncoder`], so each text is embedded once); the first error of `build` ends
/// the evaluation.
pub fn evaluate_loo_with<E>(
    candidates: &[Candidate],
    cases: &[Case],
    build: impl Fn(Vec<Candidate>) -> Result<Router, E>,
) -> Result<Report, E> {
    let full = build(candidates.to_vec())?;
    let normal = task_key;
    let examples: Vec<Vec<String>> = candidates
        .iter()
        .map(|c| c.examples.iter().map(|e| normal(e)).collect())
        .collect();
    score(cases, |case| {
        let task = normal(&case.task);
        if !examples.iter().flatten().any(|e| *e == task) {
            return Ok(Held::Shared(&full));
        }
        let reduced = candidates
            .iter()
            .zip(&examples)
            .map(|(c, normals)| Candidate {
                examples: c
                    .examples
                    .iter()
                    .zip(normals)
                    .filter(|&(_, n)| *n != task)
                    .map(|(e, _)| e.clone())
                    .collect(),
                ..c.clone()
            })
            .collect();
        Ok(Held::Own(Box::new(build(reduced)?)))
    })
}

/// The router that answers one case: the shared one, or one built for it.
enum Held<'a> {
    Shared(&'a Router),
    Own(Box<Router>),
}

impl Borrow<Router> for Held<'_> {
    fn borrow(&self) -> &Router {
        match self {
            Held::Shared(r) => r,
            Held::Own(r) => r,
        }
    }
}

/// Scores the answers of `router_for(case)` to every case.
fn score<R: Borrow<Router>, E>(cases: &[Case], mut router_for: impl FnMut(&Case) -> Result<R, E>) -> Result<Report, E> {
    let mut latencies = Vec::with_capacity(cases.len() * LATENCY_PASSES);
    let mut top1_hits = 0;
    let mut top3_hits = 0;
    let mut misses = Vec::new();
    for case in cases {
        let held = router_for(case)?;
        let router: &Router = held.borrow();
        let mut recs = Vec::new();
        for _ in 0..LATENCY_PASSES {
            let start = Instant::now();
            recs = router.recommend(&case.task);
            latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let rank = recs.iter().position(|r| r.agent == case.expected);
        if rank == Some(0) {
            top1_hits += 1;
        } else {
            misses.push(Miss {
                task: case.task.clone(),
                expected: case.expected.clone(),
                got: recs.iter().take(3).map(|r| r.agent.clone()).collect(),
            });
        }
        if rank.is_some_and(|r| r < 3) {
            top3_hits += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let share = |hits: usize| {
        if cases.is_empty() {
            0.0
        } else {
            hits as f64 / cases.len() as f64
        }
    };
    Ok(Report {
        cases: cases.len(),
        top1_hits,
        top3_hits,
        top1: share(top1_hits),
        top3: share(top3_hits),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        misses,
    })
}

/// Nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl fmt::Display for Report {
    /// The summary (`cases`, `top-1`, `top-3`, `p50`, `p99`), then one line per miss.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cases  {}", self.cases)?;
        writeln!(
            f,
            "top-1  {:.1}% ({}/{})",
            100.0 * self.top1,
            self.top1_hits,
            self.cases
        )?;
        writeln!(
            f,
            "top-3  {:.1}% ({}/{})",
            100.0 * self.top3,
            self.top3_hits,
            self.cases
        )?;
        writeln!(f, "p50    {:.3} ms", self.p50_ms)?;
        write!(f, "p99    {:.3} ms", self.p99_ms)?;
        for m in &self.misses {
            let got = if m.got.is_empty() {
                "nothing".to_owned()
            } else {
                m.got.join(", ")
            };
            write!(f, "\nmiss   expected {}, got {}: {}", m.expected, got, m.task)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Candidate;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn cases_parse_skipping_blank_lines_and_errors_name_the_line() {
        let p = Path::new("set.jsonl");
        let text =
            "{\"task\": \"a\", \"expected\": \"x\", \"note\": \"ok\"}\n\n{\"task\": \"b\", \"expected\": \"y\"}\n";
        let cases = parse_cases(p, text).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(
            cases[1],
            Case {
                task: "b".into(),
                expected: "y".into()
            }
        );
        let err = parse_cases(p, "{\"task\": \"a\", \"expected\": \"x\"}\n{\"task\": 1}\n").unwrap_err();
        assert!(err.to_string().starts_with("set.jsonl, line 2: "), "{err}");
        let err = load_cases(Path::new("/nonexistent/set.jsonl")).unwrap_err();
        assert!(matches!(err, EvalError::Io { .. }), "{err}");
    }

    #[test]
    fn metrics_count_first_and_top_three_places() {
        // Words outside the synonym table, so only plain word matches count: a tag beats the
        // description, and a word nobody has matches nobody.
        let router = Router::new(vec![
            Candidate::new("a", &["apple"], "apple banana"),
            Candidate::new("b", &["banana"], "banana cherry"),
            Candidate::new("c", &["cherry"], "cherry"),
        ]);
        let case = |task: &str, expected: &str| Case {
            task: task.into(),
            expected: expected.into(),
        };
        let cases = [
            case("apple", "a"),  // first: hit
            case("banana", "a"), // b has the tag, a only the description: second
            case("cherry", "b"), // c first, b second
            case("durian", "a"), // nothing matches
            case("apple", "z"),  // not an agent
        ];
        let report = evaluate(&router, &cases);
        assert_eq!(report.cases, 5);
        assert_eq!(report.top1_hits, 1);
        assert_eq!(report.top3_hits, 3);
        assert_eq!(report.top1, 0.2);
        assert_eq!(report.top3, 0.6);
        assert_eq!(report.misses.len(), 4);
        assert_eq!(report.misses[0].got, ["b", "a"]);
        assert_eq!(report.misses[1].got, ["c", "b"]);
        assert!(report.misses[2].got.is_empty());
        assert!(report.p50_ms >= 0.0 && report.p99_ms >= report.p50_ms);
        let text = report.to_string();
        assert!(
            text.contains("top-1  20.0% (1/5)") && text.contains("top-3  60.0% (3/5)"),
            "{text}"
        );
        assert!(text.contains("miss   expected a, got nothing: durian"), "{text}");

        let empty = evaluate(&router, &[]);
        assert_eq!((empty.cases, empty.top1, empty.top3, empty.p99_ms), (0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn examples_are_grouped_by_agent_in_order() {
        let case = |task: &str, expected: &str| Case {
            task: task.into(),
            expected: expected.into(),
        };
        let pool = examples_by_agent(&[case("t1", "b"), case("t2", "a"), case("t3", "b")]);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool["a"], ["t2"]);
        assert_eq!(pool["b"], ["t1", "t3"]);
        assert!(examples_by_agent(&[]).is_empty());
    }

    #[test]
    fn leave_one_out_never_answers_a_task_with_itself() {
        // Words outside the synonym table and the registry text: only examples connect them.
        let cases = [
            Case {
                task: "quux zorp".into(),
                expected: "a".into(),
            },
            Case {
                task: "blorb fnord".into(),
                expected: "b".into(),
            },
            Case {
                task: "quux blorb".into(),
                expected: "a".into(),
            },
        ];
        let pool = examples_by_agent(&cases);
        let candidates: Vec<Candidate> = ["a", "b"]
            .iter()
            .map(|&name| Candidate {
                examples: pool[name].clone(),
                ..Candidate::new(name, &["x"], "y")
            })
            .collect();
        // With itself among the examples every task is answered right.
        let cheating = evaluate(&Router::new(candidates.clone()), &cases);
        assert_eq!(cheating.top1_hits, 3);
        // Leave-one-out: "quux zorp" still finds "quux blorb" (a), "blorb fnord" finds only
        // "quux blorb" (a, wrong), and "quux blorb" ties, a first by name.
        let loo = evaluate_loo(&candidates, &cases);
        assert_eq!(loo.top1_hits, 2, "{loo}");
        assert_eq!(loo.misses.len(), 1, "{loo}");
        assert_eq!(loo.misses[0].task, "blorb fnord");
        assert_eq!(loo.misses[0].got, ["a"]);

        // The same task written with other spacing or case is the same task.
        let mut candidates = candidates;
        candidates[1].examples = vec!["  BLORB   fnord ".into()];
        let loo = evaluate_loo(&candidates, &cases[1..2]);
        assert_eq!(loo.top1_hits, 0, "{loo}");
    }
}
