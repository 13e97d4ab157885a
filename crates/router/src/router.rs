//! Scoring: an index over the available candidates, built once, and the query against it. The
//! rules are documented on [`Router`], where users of the crate can read them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use std::sync::Arc;

use crate::lexicon::{Lexicon, MAX_PHRASE};
use crate::semantic::{EncodeError, Encoder, SEMANTIC_WEIGHT, Semantic};
use crate::text::{self, Token};
use crate::{Candidate, History, Recommendation};

// The numbers below are quoted in the documentation of `Router`: keep them in step.
/// How much a tag counts relative to a word of the description.
const TAG_WEIGHT: f64 = 3.0;
/// How much a synonym (concept) match counts relative to a word match.
const CONCEPT_WEIGHT: f64 = 0.8;
/// How fast a task's words lose weight with their position: the word after `n` content words
/// weighs `1 / (1 + POSITION_DECAY · n)`. Requests name their subject first.
const POSITION_DECAY: f64 = 0.2;
/// How much the examples' vote counts: the mean similarity of a candidate's best examples (in
/// `[0, 1]`) is multiplied by this before it is added to the lexical score.
const EXAMPLE_WEIGHT: f64 = 60.0;
/// How many of a candidate's most similar examples are averaged (fewer count as zeros).
const NEIGHBOURS: usize = 5;
/// Only this many content words at the start of an example are indexed (prompts can be long).
const MAX_EXAMPLE_WORDS: u32 = 64;
/// The most a perfect (or hopeless) track record moves a score, as a fraction of it.
const HISTORY_WEIGHT: f64 = 0.25;
/// The fewest runs for history to count.
const MIN_RUNS: u32 = 3;
/// Score mass reserved for "none of these", so weak evidence gives low confidence.
const PRIOR_MASS: f64 = 1.0;
/// The score a generalist (an agent tagged `general`) gets on any task with content.
const GENERALIST_SCORE: f64 = 0.5;

const K1: f64 = 1.2;
const B: f64 = 0.75;
const TAGS: usize = 0;
const DESC: usize = 1;
/// An example is quoted as a reason when its similarity to the task reaches this.
const QUOTE_SIMILARITY: f64 = 0.2;
/// At most this many characters of an example are quoted.
const MAX_QUOTE: usize = 80;
/// At most this many description words are quoted in a reason.
const MAX_MENTIONS: usize = 6;

type TermId = u32;

/// A piece of analysed text that can be quoted in a reason: a word, or a phrase from the
/// synonym table, with the terms it contributes.
#[derive(Debug)]
struct Unit {
    surface: String,
    terms: Vec<TermId>,
    /// The word term among `terms`, if the unit is a non-stopword.
    word: Option<TermId>,
    /// How many content words of the text come before it.
    pos: u32,
}

#[derive(Debug)]
struct Doc {
    name: String,
    /// Tagged `general`: the fallback when nothing more specific matches.
    generalist: bool,
    history: Option<History>,
    /// One entry per tag: the tag as written and its units.
    tags: Vec<(String, Vec<Unit>)>,
    name_units: Vec<Unit>,
    desc: Vec<Unit>,
}

#[derive(Clone, Copy, Debug)]
struct Posting {
    doc: u32,
    /// Length-normalised, field-weighted term frequency (`tf'`).
    tf: f64,
}

/// The index over the available candidates. Build it once with [`Router::new`], then query it
/// with [`Router::recommend`]. Queries take well under a millisecond (about half a millisecond
/// in a debug build with a dozen agents and 200 examples, tens of microseconds in a release
/// build) and do not change the router.
///
/// **Analysis.** Tags, the agent's name, the description, the examples and the task are split
/// into lowercase words and stemmed (`tests`, `testing`, `tested` meet); stopwords, generic
/// verbs (`add`, `fix`, `write`, …) and words every task uses (`code`, `app`, `user`) are
/// dropped. In a task or an example, camel-case identifiers are split too (`UserManager` →
/// `user`, `manager`). Every remaining word is a *word term*. A built-in synonym table groups
/// words and phrases by speciality (`coverage`, `mock`, `flaky` → test; `xss`, `credentials` →
/// security; `segfault`, `returns wrong`, `since upgrading` → debugging; …); every word or
/// phrase in it also yields a *concept term*, on both sides, so `coverage` in a task meets an
/// agent tagged `test`. A phrase of the table is matched on whole words, the longest one wins,
/// and its words do not count on their own unless they name the same speciality:
/// `dependency injection` is refactoring (not security), `requests` alone does not match
/// `pull requests`, but `500 error` still has the word `error`.
///
/// **Index.** Each candidate is a document with two fields: *tags* (its tags and the words of
/// its name) and *description*. A tag of several words (`pull-request`) is one phrase term,
/// matched only by those words in a row; its single words count as description words. Each of
/// its *examples* (tasks it handled well) is a TF-IDF vector of unit length (word terms weigh
/// 1, concept terms 0.8 per distinct word or phrase naming them, times their idf over all the
/// examples), in one inverted index; only the first 64 content words of an example count.
///
/// **Score.** Two parts, added. The *lexical* part is BM25F: for each distinct term `t` of the
/// task that some candidate has, `score += w(t) · idf(t) · tf'·(k1+1) / (tf'+k1)` with
/// `tf' = Σ_field weight_field · tf_field / (1 − b + b · len_field / avg_len_field)`,
/// `idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5))`, `k1 = 1.2`, `b = 0.75`, tags weighing 3 and
/// the description 1. A word term has `w = 1` however often the task repeats it; a concept term
/// has `w = 0.8` for each distinct word or phrase of the task that names it (`prometheus alerts`
/// is twice as much devops as `alerts`). An exact word also brings its concept, so it beats a
/// synonym. Requests name their subject first, so a word (or phrase) that comes after `n`
/// content words of the task has its weight multiplied by `1 / (1 + 0.2 · n)`, so the subject
/// of a request outweighs what it goes on to mention. The *examples* part is a nearest-neighbour
/// vote: the task is a vector like an example (with those positional weights), its cosine
/// similarity to every example is computed, and each candidate gets `60 ×` the mean
/// similarity of its 5 most similar examples (missing ones count as 0, so one lucky example
/// does not outvote a consistent record). A candidate without examples gets 0 here.
///
/// **Generalists.** A candidate tagged `general` is the fallback: on any task with at least one
/// content word it gets 0.5 on top of its score, so it is recommended when nothing more
/// specific matches, and ranks below a specialist that matches (one word match is worth several
/// times more).
///
/// **History.** When a candidate has at least 3 runs, its score is multiplied by
/// `1 + 0.25 · (2p − 1)`, where `p = (succeeded + 1) / (runs + 2)` is the Laplace-smoothed
/// success rate: a perfect record raises the score by at most a quarter, a hopeless one lowers
/// it as much, a coin flip changes nothing. History reorders agents that match the task; it
/// never recommends one that does not. The reasons quote the raw rate
/// (`success rate 92% over 12 runs`), or say that there are too few runs to weigh.
///
/// **Result.** Only available candidates with a positive score are returned, best first, ties
/// broken by name. An empty task, a task of stopwords only, or one that shares nothing with any
/// agent or example (in a registry without a generalist) gets an empty list: no
/// recommendation. The confidence is `score / (Σ scores + 1)`: the candidate's share of the
/// evidence, shrunk when the evidence is thin, so it lies in `[0, 1)` and the confidences add up
/// to less than 1. The reasons name the matched tags, name and description words, then the
/// candidate's most similar example when its similarity is at least 0.2
/// (`similar to past task: "…"`, cut to 80 characters), then the track record.
///
/// **Semantic tier** (optional: [`Router::with_encoder`], e.g. with `MiniLm` of the `embed`
/// feature). Each candidate's *profile* (`"NAME: TAG, TAG"` and each sentence of its
/// description) and examples are embedded when the router is built, the task when it is asked.
/// A cosine similarity counts as `(cos − 0.1) / 0.9` (0 below 0.1, which is noise for a
/// sentence-embedding model), and each candidate gets
/// `20 × (0.25 × its best profile piece + 0.75 × the mean of its 2 most similar examples)` on
/// top of the two parts above (history then multiplies the sum). Reasons add the closest
/// example (`close in meaning to past task: "…"`, when its cosine is at least 0.5 and it is not
/// already quoted) or, when nothing else explains the candidate, its closest profile piece
/// (cosine at least 0.25). A candidate that nothing above matches gets this part only when it
/// has such a quotable reason, so a task like nothing in particular still gets no
/// recommendation; a task the model cannot encode gets the lexical answer, and a past task it
/// cannot encode counts for the lexical part only ([`Router::unencoded_examples`]).
#[derive(Debug)]
pub struct Router {
    docs: Vec<Doc>,
    vocab: HashMap<String, TermId>,
    /// Term id → its text (a stem, or `#concept`).
    terms: Vec<String>,
    postings: Vec<Vec<Posting>>,
    idf: Vec<f64>,
    /// The candidates' examples.
    examples: Vec<Example>,
    /// Term id → the examples that have it, with its weight in their unit-length vector.
    example_postings: Vec<Vec<(u32, f64)>>,
    /// Term id → its idf over the examples (0 for a term no example has).
    example_idf: Vec<f64>,
    /// The semantic tier, when the router was built with an encoder.
    semantic: Option<Semantic>,
}

/// What the semantic tier can quote for a candidate.
#[derive(Clone, Copy)]
struct Meant<'a> {
    /// Its example closest in meaning, when not already quoted.
    example: Option<&'a str>,
    /// The piece of its profile closest in meaning.
    profile: Option<&'a str>,
}

/// One example task of a candidate.
#[derive(Debug)]
struct Example {
    doc: u32,
    text: String,
}

/// A term of the query with its weight and the words that produced it.
#[derive(Debug)]
struct QueryTerm {
    weight: f64,
    /// The words or phrases of the task that produced it, first one first.
    surfaces: Vec<String>,
}

impl Router {
    /// Indexes the available candidates (their tags, names, descriptions and examples);
    /// unavailable ones are dropped here.
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let mut vocab = HashMap::new();
        let mut docs = Vec::new();
        let mut counts: Vec<[HashMap<TermId, f64>; 2]> = Vec::new();
        let mut lens: Vec<[f64; 2]> = Vec::new();
        let mut examples = Vec::new();
        let mut example_bags: Vec<HashMap<TermId, QueryTerm>> = Vec::new();
        for c in candidates.into_iter().filter(|c| c.available) {
            let d = docs.len() as u32;
            let mut intern = |s: String| {
                let next = vocab.len() as TermId;
                *vocab.entry(s).or_insert(next)
            };
            let mut desc = analyse(&c.description, &mut intern);
            let mut tags = Vec::new();
            for tag in &c.tags {
                let (units, words) = analyse_tag(tag, &mut intern);
                tags.push((tag.clone(), units));
                desc.extend(words);
            }
            let name_units = analyse(&c.name, &mut intern);
            for text in c.examples {
                // Like a task, but without looking up runs of words (every run would be new).
                let tokens = text::tokens(&text, true);
                let mut units = analyse_with(&tokens, false, &mut |s| Some(intern(s)));
                units.retain(|u| u.pos < MAX_EXAMPLE_WORDS);
                let bag = bag(units, CONCEPT_WEIGHT, 0.0);
                if !bag.is_empty() {
                    examples.push(Example { doc: d, text });
                    example_bags.push(bag);
                }
            }

            let mut tf: [HashMap<TermId, f64>; 2] = Default::default();
            let mut len = [0.0; 2];
            for unit in tags.iter().flat_map(|(_, u)| u).chain(&name_units) {
                count(&mut tf[TAGS], &mut len[TAGS], unit);
            }
            for unit in &desc {
                count(&mut tf[DESC], &mut len[DESC], unit);
            }
            counts.push(tf);
            lens.push(len);
            let generalist = c
                .tags
                .iter()
                .any(|t| text::tokens(t, false).iter().any(|t| t.stem == "general"));
            docs.push(Doc {
                name: c.name,
                generalist,
                history: c.history,
                tags,
                name_units,
                desc,
            });
        }

        let n = docs.len() as f64;
        let avg = |f: usize| {
            let a = lens.iter().map(|l| l[f]).sum::<f64>() / n.max(1.0);
            if a > 0.0 { a } else { 1.0 }
        };
        let avg_len = [avg(TAGS), avg(DESC)];
        let mut postings: Vec<Vec<Posting>> = vec![Vec::new(); vocab.len()];
        for (d, (tf, len)) in counts.iter().zip(&lens).enumerate() {
            let mut merged: HashMap<TermId, f64> = HashMap::new();
            for (field, weight) in [(TAGS, TAG_WEIGHT), (DESC, 1.0)] {
                let norm = 1.0 - B + B * len[field] / avg_len[field];
                for (&term, &f) in &tf[field] {
                    *merged.entry(term).or_default() += weight * f / norm;
                }
            }
            for (term, tf) in merged {
                postings[term as usize].push(Posting { doc: d as u32, tf });
            }
        }
        let idf = postings.iter().map(|p| bm25_idf(n, p.len() as f64)).collect();

        // The examples: TF-IDF vectors of unit length, in an inverted index.
        let mut df = vec![0usize; vocab.len()];
        for bag in &example_bags {
            for &term in bag.keys() {
                df[term as usize] += 1;
            }
        }
        let ne = example_bags.len() as f64;
        let example_idf: Vec<f64> = df
            .iter()
            .map(|&df| if df > 0 { bm25_idf(ne, df as f64) } else { 0.0 })
            .collect();
        let mut terms = vec![String::new(); vocab.len()];
        for (text, &id) in &vocab {
            terms[id as usize] = text.clone();
        }
        let mut example_postings: Vec<Vec<(u32, f64)>> = vec![Vec::new(); vocab.len()];
        for (e, bag) in example_bags.iter().enumerate() {
            let mut weights: Vec<(TermId, f64)> = bag
                .iter()
                .map(|(&t, q)| (t, q.weight * example_idf[t as usize]))
                .collect();
            // Summed in an order fixed by the terms' text (term ids depend on the registry's
            // order), like the scores.
            weights.sort_unstable_by(|a, b| terms[a.0 as usize].cmp(&terms[b.0 as usize]));
            let norm = weights.iter().map(|&(_, w)| w * w).sum::<f64>().sqrt();
            if norm > 0.0 {
                for (t, w) in weights {
                    example_postings[t as usize].push((e as u32, w / norm));
                }
            }
        }

        Router {
            docs,
            vocab,
            terms,
            postings,
            idf,
            examples,
            example_postings,
            example_idf,
            semantic: None,
        }
    }

    /// Like [`Router::new`], with the semantic tier: `encoder` embeds every available
    /// candidate's profile and examples now, and each task when it is asked (see [`Router`]).
    pub fn with_encoder(candidates: Vec<Candidate>, encoder: Arc<dyn Encoder>) -> Result<Self, EncodeError> {
        let available: Vec<&Candidate> = candidates.iter().filter(|c| c.available).collect();
        let profiles: Vec<(&str, &[String], &str)> = available
            .iter()
            .map(|c| (c.name.as_str(), c.tags.as_slice(), c.description.as_str()))
            .collect();
        let examples: Vec<(u32, &str)> = available
            .iter()
            .enumerate()
            .flat_map(|(d, c)| c.examples.iter().map(move |e| (d as u32, e.as_str())))
            .filter(|(_, e)| !e.trim().is_empty())
            .collect();
        let semantic = Semantic::build(encoder, &profiles, &examples)?;
        let names: Vec<String> = available.iter().map(|c| c.name.clone()).collect();
        let mut router = Router::new(candidates);
        // The semantic scores are zipped with the documents: both must list the same agents.
        assert!(
            names.iter().eq(router.docs.iter().map(|d| &d.name)),
            "the semantic profiles and the index list different agents"
        );
        router.semantic = Some(semantic);
        Ok(router)
    }

    /// How many of the candidates' examples the semantic tier's encoder failed on, and the first
    /// failure: those examples count for the lexical tier only. `(0, None)` without the tier.
    pub fn unencoded_examples(&self) -> (usize, Option<&EncodeError>) {
        self.semantic.as_ref().map_or((0, None), Semantic::unencoded)
    }

    /// The model of the semantic tier, if the router has one.
    pub fn model_id(&self) -> Option<&str> {
        self.semantic.as_ref().map(|s| s.model_id())
    }

    /// The available candidates that match `task`, best first (see [`Router`] for the rules).
    /// Empty when nothing matches, including for an empty task.
    pub fn recommend(&self, task: &str) -> Vec<Recommendation> {
        let (query, has_content) = self.query(task);
        // Sum in an order fixed by the terms' text, so equal candidates get bit-equal scores
        // whatever the hash seeds and the registry's order.
        let mut terms: Vec<(&str, TermId, &QueryTerm)> = query
            .iter()
            .map(|(&t, q)| (self.terms[t as usize].as_str(), t, q))
            .collect();
        terms.sort_unstable_by_key(|&(text, _, _)| text);
        let mut scores = vec![0.0; self.docs.len()];
        let mut similarity = vec![0.0; self.examples.len()];
        let mut norm = 0.0;
        for &(_, term, q) in &terms {
            let idf = self.idf[term as usize];
            for p in &self.postings[term as usize] {
                scores[p.doc as usize] += q.weight * idf * p.tf * (K1 + 1.0) / (p.tf + K1);
            }
            let w = q.weight * self.example_idf[term as usize];
            if w > 0.0 {
                norm += w * w;
                for &(e, ew) in &self.example_postings[term as usize] {
                    similarity[e as usize] += w * ew;
                }
            }
        }
        if norm > 0.0 {
            let norm = norm.sqrt();
            for s in &mut similarity {
                *s /= norm;
            }
        }
        let (vote, closest) = self.neighbours(&similarity);
        for (score, v) in scores.iter_mut().zip(vote) {
            *score += EXAMPLE_WEIGHT * v;
        }
        let meaning = if has_content {
            self.semantic.as_ref().and_then(|s| s.answer(task))
        } else {
            None
        };
        if let Some(meaning) = &meaning {
            for (d, (score, s)) in scores.iter_mut().zip(&meaning.scores).enumerate() {
                // Meaning alone recommends an agent only with something to show for it: an
                // example or a piece of its profile close enough to quote (a vague likeness
                // to everything is not a reason; "zzz qqq" gets no agent).
                let quotable = meaning.quotes[d].is_some() || meaning.profile_quotes[d].is_some();
                if *score > 0.0 || quotable {
                    *score += SEMANTIC_WEIGHT * s;
                }
            }
        }
        if has_content {
            for (score, doc) in scores.iter_mut().zip(&self.docs) {
                if doc.generalist {
                    *score += GENERALIST_SCORE;
                }
            }
        }
        let mut ranked: Vec<(usize, f64)> = scores
            .into_iter()
            .enumerate()
            .filter(|&(_, s)| s > 0.0)
            .map(|(d, s)| (d, s * history_factor(self.docs[d].history)))
            .collect();
        ranked.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docs[a.0].name.cmp(&self.docs[b.0].name))
        });
        let total: f64 = ranked.iter().map(|&(_, s)| s).sum();
        ranked
            .into_iter()
            .map(|(d, s)| {
                let similar = closest[d]
                    .filter(|&(_, sim)| sim >= QUOTE_SIMILARITY)
                    .map(|(e, _)| self.examples[e].text.as_str());
                let meant = meaning.as_ref().map(|m| Meant {
                    example: m.quotes[d].filter(|q| Some(*q) != similar),
                    profile: m.profile_quotes[d],
                });
                let reasons = self.reasons(&self.docs[d], &query, similar, meant);
                Recommendation {
                    agent: self.docs[d].name.clone(),
                    confidence: (s / (total + PRIOR_MASS)).clamp(0.0, 1.0),
                    reasons,
                }
            })
            .collect()
    }

    /// Each candidate's vote from its examples: the mean similarity of its [`NEIGHBOURS`] most
    /// similar ones (missing ones count as 0), and its most similar one, if any is similar at
    /// all.
    fn neighbours(&self, similarity: &[f64]) -> (Vec<f64>, Vec<Option<(usize, f64)>>) {
        let mut order: Vec<usize> = (0..similarity.len()).filter(|&e| similarity[e] > 0.0).collect();
        order.sort_by(|&a, &b| similarity[b].total_cmp(&similarity[a]).then(a.cmp(&b)));
        let mut vote = vec![0.0; self.docs.len()];
        let mut closest = vec![None; self.docs.len()];
        let mut seen = vec![0usize; self.docs.len()];
        for e in order {
            let d = self.examples[e].doc as usize;
            if seen[d] == 0 {
                closest[d] = Some((e, similarity[e]));
            }
            if seen[d] < NEIGHBOURS {
                seen[d] += 1;
                vote[d] += similarity[e] / NEIGHBOURS as f64;
            }
        }
        (vote, closest)
    }

    /// The task's terms that the index knows, each once (see [`bag`]), and whether the task
    /// has any content word at all.
    fn query(&self, task: &str) -> (HashMap<TermId, QueryTerm>, bool) {
        let mut lookup = |s: String| self.vocab.get(&s).copied();
        let (units, has_content) = analyse_task(task, &mut lookup);
        (bag(units, CONCEPT_WEIGHT, POSITION_DECAY), has_content)
    }

    /// Reasons, most specific first: tags the task names (or, for a synonym, one tag per
    /// concept with the task's word that led there), the name, description words the task
    /// uses, synonyms reached only through the description, the most similar example (if
    /// close enough), then the track record.
    fn reasons(
        &self,
        doc: &Doc,
        query: &HashMap<TermId, QueryTerm>,
        similar: Option<&str>,
        meant: Option<Meant<'_>>,
    ) -> Vec<String> {
        let mut reasons = Vec::new();
        let in_query = |t: &TermId| query.contains_key(t);
        let direct = |units: &[Unit]| units.iter().any(|u| u.word.is_some_and(|w| in_query(&w)));
        let concepts = |units: &[Unit]| -> Vec<TermId> {
            let mut out: Vec<TermId> = Vec::new();
            for u in units {
                for &t in &u.terms {
                    if Some(t) != u.word && in_query(&t) && !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
            out
        };
        let via = |t: TermId| format!("\"{}\"", query[&t].surfaces[0]);

        let mut explained: Vec<TermId> = Vec::new();
        let mut tags = Vec::new();
        for (tag, units) in &doc.tags {
            if direct(units) {
                tags.push(tag.clone());
                explained.extend(concepts(units));
            }
        }
        for (tag, units) in &doc.tags {
            if direct(units) {
                continue;
            }
            let new: Vec<TermId> = concepts(units).into_iter().filter(|t| !explained.contains(t)).collect();
            if let Some(&first) = new.first() {
                tags.push(format!("{tag} (via {})", via(first)));
                explained.extend(new);
            }
        }
        if !tags.is_empty() {
            reasons.push(format!("matched tags: {}", tags.join(", ")));
        }
        if direct(&doc.name_units) {
            reasons.push(format!("name matches: {}", doc.name));
            explained.extend(concepts(&doc.name_units));
        }

        let mut mentions: Vec<String> = Vec::new();
        for unit in &doc.desc {
            if unit.word.is_some_and(|w| in_query(&w)) {
                explained.extend(concepts(std::slice::from_ref(unit)));
                if !mentions.contains(&unit.surface) {
                    mentions.push(unit.surface.clone());
                }
            }
        }
        for unit in &doc.desc {
            let new: Vec<TermId> = concepts(std::slice::from_ref(unit))
                .into_iter()
                .filter(|t| !explained.contains(t))
                .collect();
            if let Some(&first) = new.first() {
                mentions.push(format!("{} (via {})", unit.surface, via(first)));
                explained.extend(new);
            }
        }
        mentions.truncate(MAX_MENTIONS);
        if !mentions.is_empty() {
            reasons.push(format!("description mentions: {}", mentions.join(", ")));
        }

        if let Some(example) = similar {
            reasons.push(format!("similar to past task: \"{}\"", quote(example)));
        }
        if let Some(example) = meant.and_then(|m| m.example) {
            reasons.push(format!("close in meaning to past task: \"{}\"", quote(example)));
        }
        // What the profile brought, when nothing above explains the agent.
        if let Some(piece) = meant.and_then(|m| m.profile).filter(|_| reasons.is_empty()) {
            reasons.push(format!("close in meaning to its profile: \"{}\"", quote(piece)));
        }

        if doc.generalist && reasons.is_empty() {
            reasons.push("general-purpose agent (the fallback)".to_owned());
        }

        if let Some(h) = doc.history {
            let succeeded = h.succeeded.min(h.runs);
            if h.runs >= MIN_RUNS {
                let rate = (100.0 * f64::from(succeeded) / f64::from(h.runs)).round();
                reasons.push(format!("success rate {rate}% over {} runs", h.runs));
            } else if h.runs > 0 {
                let runs = if h.runs == 1 { "run" } else { "runs" };
                reasons.push(format!("only {} {runs} so far; history not weighed", h.runs));
            }
        }
        reasons
    }
}

/// The terms of analysed text, each once: a word term weighs 1 however often the word is
/// repeated; a concept term weighs `concept_weight` for each distinct word or phrase that names
/// it. Each of these weights is multiplied by `1 / (1 + decay · n)` for a word or phrase after
/// `n` content words (a repeated word keeps its best place).
fn bag(units: Vec<Unit>, concept_weight: f64, decay: f64) -> HashMap<TermId, QueryTerm> {
    let mut bag: HashMap<TermId, QueryTerm> = HashMap::new();
    for unit in units {
        let factor = 1.0 / (1.0 + decay * f64::from(unit.pos));
        for &term in &unit.terms {
            let is_word = Some(term) == unit.word;
            match bag.entry(term) {
                Entry::Occupied(mut e) => {
                    let q = e.get_mut();
                    if is_word {
                        q.weight = q.weight.max(factor);
                    } else if !q.surfaces.contains(&unit.surface) {
                        q.surfaces.push(unit.surface.clone());
                        q.weight += concept_weight * factor;
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(QueryTerm {
                        weight: if is_word { factor } else { concept_weight * factor },
                        surfaces: vec![unit.surface.clone()],
                    });
                }
            }
        }
    }
    bag
}

fn count(tf: &mut HashMap<TermId, f64>, len: &mut f64, unit: &Unit) {
    if unit.word.is_some() {
        *len += 1.0;
    }
    for &t in &unit.terms {
        *tf.entry(t).or_default() += 1.0;
    }
}

/// `ln(1 + (n − df + 0.5) / (df + 0.5))`: never negative, small for a term most documents have.
fn bm25_idf(n: f64, df: f64) -> f64 {
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// Multiplier on a matching agent's score from its track record (1 without enough history).
fn history_factor(history: Option<History>) -> f64 {
    match history {
        Some(h) if h.runs >= MIN_RUNS => {
            let p = (f64::from(h.succeeded.min(h.runs)) + 1.0) / (f64::from(h.runs) + 2.0);
            1.0 + HISTORY_WEIGHT * (2.0 * p - 1.0)
        }
        _ => 1.0,
    }
}

/// Analyses a field of the index, adding its terms to the vocabulary.
fn analyse(text: &str, intern: &mut impl FnMut(String) -> TermId) -> Vec<Unit> {
    analyse_with(&text::tokens(text, false), false, &mut |s| Some(intern(s)))
}

/// Analyses a task (camel-case words split, runs of words looked up as multi-word tags; see
/// [`analyse_with`]), resolving terms with `resolve`; also says whether it has a content word.
fn analyse_task(task: &str, resolve: &mut impl FnMut(String) -> Option<TermId>) -> (Vec<Unit>, bool) {
    let tokens = text::tokens(task, true);
    let has_content = tokens.iter().any(|t| !t.stop);
    (analyse_with(&tokens, true, resolve), has_content)
}

/// Analyses one tag into its units for the tags field and the units it adds to the description.
/// A one-word tag is one word. A tag of several words (`pull-request`) is one *phrase term*,
/// matched only by the same words in a row in the task (so `requests` alone does not match
/// it), plus its concepts; its single words count as description words.
fn analyse_tag(tag: &str, intern: &mut impl FnMut(String) -> TermId) -> (Vec<Unit>, Vec<Unit>) {
    let units = analyse(tag, intern);
    let words: Vec<Token> = text::tokens(tag, false).into_iter().filter(|t| !t.stop).collect();
    if words.len() < 2 {
        return (units, Vec::new());
    }
    let phrase = intern(join(words.iter().map(|t| t.stem.as_str())));
    let mut tag_units = vec![Unit {
        surface: join(words.iter().map(|t| t.word.as_str())),
        terms: vec![phrase],
        word: Some(phrase),
        pos: 0,
    }];
    let mut desc_units = Vec::new();
    for unit in units {
        let (words, concepts): (Vec<TermId>, Vec<TermId>) = unit.terms.iter().partition(|&&t| Some(t) == unit.word);
        if !concepts.is_empty() {
            tag_units.push(Unit {
                surface: unit.surface.clone(),
                terms: concepts,
                word: None,
                pos: unit.pos,
            });
        }
        if !words.is_empty() {
            desc_units.push(Unit {
                surface: unit.surface,
                terms: words,
                word: unit.word,
                pos: unit.pos,
            });
        }
    }
    (tag_units, desc_units)
}

/// A task as quoted in a reason: whitespace collapsed, long ones cut with an ellipsis.
fn quote(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= MAX_QUOTE {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_QUOTE - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

fn join<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.collect::<Vec<_>>().join(" ")
}

/// Splits `tokens` into units: one per phrase of the synonym table (one *phrase term*, the
/// stems of its non-stopwords joined, and the phrase's concepts) and one per other non-stopword
/// (its stem, and the concepts of that word). Each unit records how many content words come
/// before it. Phrases are matched on whole words (not the parts of a camel-case word) and the
/// longest wins. The words of a phrase do not count on their own, so `dependency injection` is
/// about refactoring, not security, and `pull requests` is not about HTTP `requests` — unless
/// a word names only the phrase's own concepts (`error` in `500 error`), when it also counts as
/// a word. A stopword has no concepts of its own (`them` is not `theme`), though it may be part
/// of a phrase (`out of memory`).
///
/// With `windows` (for a task), every run of two or three non-stopwords is also looked up as a
/// phrase term (multi-word tags, see [`analyse_tag`]).
///
/// `resolve` maps a term to its id, or to `None` when the index does not know it (the term is
/// then dropped).
fn analyse_with(tokens: &[Token], windows: bool, resolve: &mut impl FnMut(String) -> Option<TermId>) -> Vec<Unit> {
    let lexicon = Lexicon::get();
    // Phrases are matched on whole words; the parts of a camel-case word count as single words
    // when the word itself is not part of a phrase.
    let mut whole: Vec<(&Token, Vec<&Token>)> = Vec::new();
    for token in tokens {
        match whole.last_mut() {
            Some((_, parts)) if token.part => parts.push(token),
            _ => whole.push((token, Vec::new())),
        }
    }
    let mut before = Vec::with_capacity(whole.len());
    let mut seen = 0;
    for (t, _) in &whole {
        before.push(seen);
        seen += u32::from(!t.stop);
    }
    let mut units = Vec::new();
    let mut i = 0;
    while i < whole.len() {
        let pos = before[i];
        let phrase = (2..=MAX_PHRASE.min(whole.len() - i))
            .rev()
            .map(|n| {
                (
                    n,
                    lexicon.concepts(whole[i..i + n].iter().map(|(t, _)| t.stem.as_str())),
                )
            })
            .find(|(_, concepts)| !concepts.is_empty());
        if let Some((n, concepts)) = phrase {
            let window: Vec<&Token> = whole[i..i + n].iter().map(|&(t, _)| t).collect();
            let content: Vec<&str> = window.iter().filter(|t| !t.stop).map(|t| t.stem.as_str()).collect();
            let word = if content.is_empty() {
                None
            } else {
                resolve(join(content.into_iter()))
            };
            let mut terms: Vec<TermId> = word.into_iter().collect();
            terms.extend(concepts.iter().filter_map(|c| resolve(format!("#{c}"))));
            if !terms.is_empty() {
                units.push(Unit {
                    surface: join(window.iter().map(|t| t.word.as_str())),
                    terms,
                    word,
                    pos,
                });
            }
            // A word of the phrase that names only the phrase's own concepts still counts as a
            // word (`error` in `500 error`); one that names another concept does not
            // (`injection` in `dependency injection`).
            for token in window.iter().filter(|t| !t.stop) {
                let own = lexicon.concepts(std::iter::once(token.stem.as_str()));
                if !own.is_empty()
                    && own.iter().all(|c| concepts.contains(c))
                    && let Some(word) = resolve(token.stem.clone())
                {
                    units.push(Unit {
                        surface: token.word.clone(),
                        terms: vec![word],
                        word: Some(word),
                        pos,
                    });
                }
            }
            i += n;
            continue;
        }
        let (token, parts) = &whole[i];
        i += 1;
        for token in std::iter::once(token).chain(parts) {
            if token.stop {
                continue;
            }
            let word = resolve(token.stem.clone());
            let mut terms: Vec<TermId> = word.into_iter().collect();
            let concepts = lexicon.concepts(std::iter::once(token.stem.as_str()));
            terms.extend(concepts.iter().filter_map(|c| resolve(format!("#{c}"))));
            if !terms.is_empty() {
                units.push(Unit {
                    surface: token.word.clone(),
                    terms,
                    word,
                    pos,
                });
            }
        }
    }
    if windows {
        let content: Vec<&Token> = tokens.iter().filter(|t| !t.stop && !t.part).collect();
        for n in 2..=MAX_PHRASE {
            for (pos, window) in content.windows(n).enumerate() {
                if let Some(id) = resolve(join(window.iter().map(|t| t.stem.as_str()))) {
                    units.push(Unit {
                        surface: join(window.iter().map(|t| t.word.as_str())),
                        terms: vec![id],
                        word: Some(id),
                        pos: pos as u32,
                    });
                }
            }
        }
    }
    units
}
