//! The optional semantic tier: sentence embeddings of each candidate's profile (its name, tags
//! and the sentences of its description) and of its examples, compared with the task's by
//! cosine similarity. Word overlap cannot see that "the PDF download gives a blank file since
//! Tuesday" is a bug report; a sentence-embedding model can. The model itself is behind the
//! [`Encoder`] trait (the `embed` feature provides [`crate::MiniLm`]), so the scoring here is
//! built and tested without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Turns a text into a vector; similar meanings give vectors with a high cosine similarity.
pub trait Encoder: Send + Sync {
    /// Names the model (and its revision), so vectors of different models are never mixed.
    fn model_id(&self) -> &str;
    /// The text's embedding (any length; it is normalised where it is used).
    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError>;

    /// The embedding of a task being routed: like [`Encoder::encode`], but caches neither keep
    /// nor answer it (tasks are seen once, and the cost of routing one, as measured, is the
    /// model's; profiles and examples are encoded again and again, and cached).
    fn encode_query(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        self.encode(text)
    }
}

impl<T: Encoder + ?Sized> Encoder for Arc<T> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        (**self).encode(text)
    }

    fn encode_query(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        (**self).encode_query(text)
    }
}

/// An encoder that failed: the model could not be loaded, or a text could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// An [`Encoder`] that remembers every vector it computed, so a set of routers built from the
/// same examples (leave-one-out evaluation, a long-running daemon) encodes each text once.
pub struct CachingEncoder<E> {
    inner: E,
    cache: Mutex<HashMap<String, Vec<f32>>>,
}

impl<E: Encoder> CachingEncoder<E> {
    pub fn new(inner: E) -> Self {
        CachingEncoder {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped encoder.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Encoder> Encoder for CachingEncoder<E> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        if let Some(v) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(text) {
            return Ok(v.clone());
        }
        let v = self.inner.encode(text)?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(text.to_owned(), v.clone());
        Ok(v)
    }

    fn encode_query(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        self.inner.encode_query(text)
    }
}

// The numbers below are quoted in the documentation of `Router` and in router/README.md:
// keep them in step.
/// How much the semantic part counts: its score (about `[0, 1]`) is multiplied by this before
/// it is added to the lexical one.
pub(crate) const SEMANTIC_WEIGHT: f64 = 20.0;
/// Share of the semantic score that comes from the examples (the rest from the profile).
pub(crate) const SEMANTIC_EXAMPLE_SHARE: f64 = 0.75;
/// How many of a candidate's most similar examples are averaged (fewer count as zeros).
pub(crate) const SEMANTIC_NEIGHBOURS: usize = 2;
/// Cosine similarity below this is noise for a sentence-embedding model: unrelated sentences
/// still score around 0.1. Similarities are measured above it.
pub(crate) const SEMANTIC_FLOOR: f64 = 0.1;
/// An example is quoted as a reason when its similarity in meaning reaches this.
pub(crate) const SEMANTIC_QUOTE: f64 = 0.5;
/// A piece of the profile is quoted as a reason when its similarity in meaning reaches this.
pub(crate) const SEMANTIC_PROFILE_QUOTE: f64 = 0.25;

/// The embeddings of the candidates, built with the router.
pub(crate) struct Semantic {
    encoder: Arc<dyn Encoder>,
    /// Per candidate: its profile's pieces and their unit vectors.
    profiles: Vec<Vec<(String, Vec<f32>)>>,
    /// Every example: its candidate, its text and its unit vector.
    examples: Vec<(u32, String, Vec<f32>)>,
    /// The examples the encoder failed on (left out), and the first failure.
    unencoded: (usize, Option<EncodeError>),
}

impl std::fmt::Debug for Semantic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semantic")
            .field("model", &self.encoder.model_id())
            .field("examples", &self.examples.len())
            .finish()
    }
}

/// What the semantic tier says of one task: a score per candidate and, per candidate, its most
/// similar example and profile piece when they are close enough to quote.
pub(crate) struct SemanticAnswer<'a> {
    pub scores: Vec<f64>,
    pub quotes: Vec<Option<&'a str>>,
    pub profile_quotes: Vec<Option<&'a str>>,
}

impl Semantic {
    /// Encodes the profile of each candidate (`name`, `tags`, `description`) and every example
    /// (`(candidate index, text)`). A profile the encoder fails on is an error (the tier would
    /// be blind to that agent); an example it fails on is left out, and counted.
    pub(crate) fn build(
        encoder: Arc<dyn Encoder>,
        profiles: &[(&str, &[String], &str)],
        examples: &[(u32, &str)],
    ) -> Result<Self, EncodeError> {
        let unit = |text: &str| encoder.encode(text).map(normalised);
        let profiles = profiles
            .iter()
            .map(|(name, tags, description)| {
                profile_pieces(name, tags, description)
                    .into_iter()
                    .map(|p| Ok((p.clone(), unit(&p)?)))
                    .collect::<Result<Vec<_>, EncodeError>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut unencoded = (0, None);
        let examples = examples
            .iter()
            .filter_map(|&(doc, text)| match unit(text) {
                Ok(v) => Some((doc, text.to_owned(), v)),
                Err(e) => {
                    unencoded.0 += 1;
                    unencoded.1.get_or_insert(e);
                    None
                }
            })
            .collect();
        Ok(Semantic {
            encoder,
            profiles,
            examples,
            unencoded,
        })
    }

    /// How many examples the encoder failed on (left out of the tier), and the first failure.
    pub(crate) fn unencoded(&self) -> (usize, Option<&EncodeError>) {
        (self.unencoded.0, self.unencoded.1.as_ref())
    }

    pub(crate) fn model_id(&self) -> &str {
        self.encoder.model_id()
    }

    /// The semantic score of every candidate for `task` (see [`crate::Router`]), or `None` when
    /// the task cannot be encoded (the router then answers on the lexical part alone).
    pub(crate) fn answer(&self, task: &str) -> Option<SemanticAnswer<'_>> {
        let task = normalised(self.encoder.encode_query(task).ok()?);
        let above = |v: &[f32]| above_floor(f64::from(dot(&task, v)));
        let n = self.profiles.len();
        let mut scores = Vec::with_capacity(n);
        let mut profile_quotes = Vec::with_capacity(n);
        for pieces in &self.profiles {
            let best = pieces
                .iter()
                .map(|(text, v)| (text.as_str(), f64::from(dot(&task, v))))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let score = best.map_or(0.0, |(_, cos)| above_floor(cos));
            scores.push((1.0 - SEMANTIC_EXAMPLE_SHARE) * score);
            profile_quotes.push(
                best.filter(|&(_, cos)| cos >= SEMANTIC_PROFILE_QUOTE)
                    .map(|(text, _)| text),
            );
        }
        let mut sims: Vec<(usize, f64)> = self
            .examples
            .iter()
            .enumerate()
            .map(|(e, (_, _, v))| (e, above(v)))
            .filter(|&(_, s)| s > 0.0)
            .collect();
        sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut seen = vec![0usize; n];
        let mut quotes = vec![None; n];
        for (e, s) in sims {
            let (doc, text, v) = &self.examples[e];
            let d = *doc as usize;
            if seen[d] == 0 && f64::from(dot(&task, v)) >= SEMANTIC_QUOTE {
                quotes[d] = Some(text.as_str());
            }
            if seen[d] < SEMANTIC_NEIGHBOURS {
                seen[d] += 1;
                scores[d] += SEMANTIC_EXAMPLE_SHARE * s / SEMANTIC_NEIGHBOURS as f64;
            }
        }
        Some(SemanticAnswer {
            scores,
            quotes,
            profile_quotes,
        })
    }
}

/// The texts a candidate's profile is made of: `"NAME: TAG, TAG, …"`, then each sentence of its
/// description (a sentence-embedding model reads a short text best, and a long description
/// would be cut).
fn profile_pieces(name: &str, tags: &[String], description: &str) -> Vec<String> {
    let mut pieces = vec![format!("{name}: {}", tags.join(", ").replace('-', " "))];
    let mut sentence = String::new();
    for word in description.split_whitespace() {
        if !sentence.is_empty() {
            sentence.push(' ');
        }
        sentence.push_str(word);
        if word.ends_with('.') || word.ends_with(':') {
            pieces.push(std::mem::take(&mut sentence));
        }
    }
    if !sentence.is_empty() {
        pieces.push(sentence);
    }
    pieces
}

/// A cosine similarity as the tier counts it: 0 up to [`SEMANTIC_FLOOR`], then rising to 1.
fn above_floor(cos: f64) -> f64 {
    (cos - SEMANTIC_FLOOR).max(0.0) / (1.0 - SEMANTIC_FLOOR)
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_its_tags_then_its_sentences() {
        let pieces = profile_pieces(
            "tester",
            &["unit-test".into(), "coverage".into()],
            "Writes tests. Fixes flaky ones:\nmocks, fixtures",
        );
        assert_eq!(
            pieces,
            [
                "tester: unit test, coverage",
                "Writes tests.",
                "Fixes flaky ones:",
                "mocks, fixtures"
            ]
        );
    }
}
