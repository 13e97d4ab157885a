//! Text normalisation shared by the index and the query, so both sides agree on every term.
//!
//! A text becomes a sequence of [`Token`]s: runs of alphanumeric characters, lowercased, and for
//! a task the parts of camel-case words too (see [`tokens`]). Each token carries its [`stem`] and
//! whether it is a stopword; the caller decides what to do with stopwords (the lexicon's phrases
//! may contain them, plain term matching skips them).
//!
//! The stemmer is deliberately light: it folds plurals, `-ing`/`-ed`, `-ly`, a few
//! nominalisations (`-ization`, `-ation`, `-ction`, `-ssion`), agent nouns and comparatives
//! (`reviewer`, `faster`) and a final `e`, so that `tests`, `testing` and `tested` meet, as do
//! `optimise`, `optimized` and `optimization`. Stems are not words (`cache` → `cach`); they only
//! have to be equal for related words and are never shown.

use std::collections::HashSet;
use std::sync::OnceLock;

/// One word of a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// The word as written, lowercased.
    pub word: String,
    /// Its stem.
    pub stem: String,
    /// Whether it carries no meaning on its own (`the`, `please`, `could`, one letter).
    pub stop: bool,
    /// Whether it is a part of the camel-case word before it (`user` after `usermanager`).
    pub part: bool,
}

/// Splits `text` into tokens, in order. With `split_camel`, a camel-case word (`UserManager`)
/// is followed by its parts (`user`, `manager`): the router does that for tasks, which name
/// identifiers, but not for agents' descriptions, which name products (`GitHub`, `PostgreSQL`).
pub(crate) fn tokens(text: &str, split_camel: bool) -> Vec<Token> {
    let mut out = Vec::new();
    for run in text.split(|c: char| !c.is_alphanumeric()).filter(|r| !r.is_empty()) {
        push(&mut out, &run.to_lowercase(), false);
        if split_camel {
            let parts = camel_parts(run);
            if parts.len() > 1 {
                for part in parts {
                    push(&mut out, &part.to_lowercase(), true);
                }
            }
        }
    }
    out
}

fn push(out: &mut Vec<Token>, word: &str, part: bool) {
    let stem = stem(word);
    let stop = word.chars().count() < 2 || STOPWORDS.contains(&word) || stop_stems().contains(stem.as_str());
    out.push(Token {
        word: word.to_owned(),
        stem,
        stop,
        part,
    });
}

/// The stems of the generic verbs among the stopwords, so that their inflections (`writes`,
/// `fixing`, `checked`) are stopwords too. (Not all stopwords: `theme` would stem like `them`.)
fn stop_stems() -> &'static HashSet<String> {
    static STEMS: OnceLock<HashSet<String>> = OnceLock::new();
    STEMS.get_or_init(|| GENERIC_VERBS.iter().map(|w| stem(w)).collect())
}

#[rustfmt::skip]
const GENERIC_VERBS: &[&str] = &[
    "add", "build", "change", "check", "create", "find", "fix", "get", "give", "improve", "know", "let", "like",
    "make", "need", "read", "see", "show", "take", "tell", "thank", "update", "use", "want", "write",
];

/// `UserManager` → `User`, `Manager`; `HTTPServer` → `HTTPServer` (only a lowercase letter
/// followed by an uppercase one splits).
fn camel_parts(run: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut prev_lower = false;
    for (i, c) in run.char_indices() {
        if c.is_uppercase() && prev_lower {
            parts.push(&run[start..i]);
            start = i;
        }
        prev_lower = c.is_lowercase();
    }
    parts.push(&run[start..]);
    parts
}

/// Function words, request filler, words every software task uses (`code`, `app`, `user`,
/// `project`), and verbs every kind of task uses (`add`, `fix`, `write`, `find`, `check`: "fix
/// the layout", "add tests", "write docs" say what to do, not who should do it). Kept generic:
/// nothing here is specific to any agent. Phrases in the lexicon may still contain them
/// (`build pipeline`, `my changes`, `since upgrading`).
#[rustfmt::skip]
const STOPWORDS: &[&str] = &[
    "a", "able", "about", "above", "across", "actually", "add", "after", "again", "against", "all", "almost",
    "already", "also", "although", "always", "am", "among", "an", "and", "another", "any", "anybody", "anyone",
    "anything", "anyway", "anywhere", "app", "application", "are", "around", "as", "at", "basically", "be", "because",
    "been", "before", "being", "below", "between", "bit", "both", "build", "but", "by", "can", "change", "check",
    "code", "codebase", "could", "create", "currently", "did", "do", "does", "doing", "done", "down", "during",
    "each", "either", "else", "entire", "etc", "even", "ever", "every", "everyone", "everything", "everywhere", "few",
    "find", "fix", "for", "from", "further", "get", "gets", "give", "go", "goes", "going", "gone", "got", "great",
    "had", "has", "have", "having", "he", "hello", "her", "here", "hers", "hey", "hi", "him", "his", "hmm", "how",
    "i", "if", "improve", "in", "instead", "into", "is", "it", "its", "just", "kind", "know", "let", "lets", "like",
    "lot", "lots", "make", "many", "may", "maybe", "me", "might", "mine", "more", "most", "much", "must", "my",
    "need", "needs", "neither", "new", "no", "nor", "not", "now", "of", "off", "ok", "okay", "on", "once", "one",
    "only", "onto", "or", "other", "our", "ours", "out", "over", "own", "perhaps", "please", "pls", "probably",
    "program", "project", "put", "puts", "quite", "rather", "read", "really", "repo", "repository", "right", "same",
    "see", "seem", "seemed", "seems", "set", "setup", "shall", "she", "should", "show", "since", "so", "software",
    "some", "somebody", "someone", "something", "somewhere", "sort", "still", "stuff", "such", "sure", "system",
    "take", "tell", "than", "thank", "thanks", "that", "the", "their", "theirs", "them", "then", "there", "these",
    "they", "thing", "things", "this", "those", "three", "through", "to", "too", "toward", "towards", "tried", "try",
    "trying", "two", "under", "until", "up", "update", "upon", "us", "use", "user", "users", "very", "via", "want",
    "was", "way", "we", "were", "what", "whatever", "when", "where", "whether", "which", "while", "who", "whole",
    "whom", "whose", "will", "with", "within", "without", "would", "write", "yes", "yet", "you", "your", "yours",
];

/// The light stemmer described in the module documentation. Words shorter than four letters and
/// words with anything but ASCII lowercase letters are left alone.
pub(crate) fn stem(word: &str) -> String {
    if word.len() < 4 || !word.bytes().all(|b| b.is_ascii_lowercase()) {
        return word.to_owned();
    }
    let mut w = word.to_owned();

    // Plurals and third person.
    if w.ends_with("ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if ["sses", "xes", "ches", "shes", "zes"].iter().any(|s| w.ends_with(s)) {
        w.truncate(w.len() - 2);
    } else if w.ends_with('s') && !["ss", "us", "is"].iter().any(|s| w.ends_with(s)) {
        w.truncate(w.len() - 1);
    }

    // Verb endings.
    if w.ends_with("ing") && w.len() >= 6 {
        w.truncate(w.len() - 3);
        undouble(&mut w);
        unk(&mut w);
    } else if w.ends_with("ied") && w.len() >= 5 {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.ends_with("ed") && !w.ends_with("eed") && w.len() >= 5 {
        w.truncate(w.len() - 2);
        undouble(&mut w);
        unk(&mut w);
    }

    if w.ends_with("ly") && w.len() >= 6 {
        w.truncate(w.len() - 2);
    }

    // Nominalisations.
    for (suffix, replacement) in [
        ("ization", "iz"),
        ("isation", "iz"),
        ("ation", "at"),
        ("ction", "ct"),
        ("ssion", "ss"),
    ] {
        if w.ends_with(suffix) && w.len() - suffix.len() >= 3 {
            w.truncate(w.len() - suffix.len());
            w.push_str(replacement);
            break;
        }
    }

    // Agent nouns and comparatives: reviewer → review, debugger → debug, profiler → profil,
    // faster → fast. Only after the letters that such words end with, so that `container`,
    // `header`, `spinner` or `looker` do not become `contain`, `head`, `spin` or `look`.
    if w.len() >= 6
        && ["wer", "ger", "ler", "zer", "ser", "ter"]
            .iter()
            .any(|s| w.ends_with(s))
        && !ER_KEPT.contains(&w.as_str())
    {
        w.truncate(w.len() - 2);
        undouble(&mut w);
    }
    if w.ends_with("ise") && w.len() >= 6 {
        w.truncate(w.len() - 3);
        w.push_str("iz");
    }
    if w.ends_with('e') && w.len() >= 4 {
        w.truncate(w.len() - 1);
    }
    w
}

/// Words ending in `-ter` that are not `-er` forms of a shorter word.
const ER_KEPT: &[&str] = &["center", "counter", "footer", "poster", "printer", "chapter", "twitter"];

/// `runn` → `run`, `mapp` → `map`; not `pass`, `fall`, `fuzz`, nor a three-letter stem (`add`).
fn undouble(w: &mut String) {
    let b = w.as_bytes();
    let n = b.len();
    if n > 3 && b[n - 1] == b[n - 2] && !matches!(b[n - 1], b'l' | b's' | b'z') && !is_vowel(b[n - 1]) {
        w.truncate(n - 1);
    }
}

/// `panick` → `panic`, `mimick` → `mimic` (an `-ic` verb that took a `k`); not `click`, `stick`,
/// whose `ick` follows consonants only.
fn unk(w: &mut String) {
    let b = w.as_bytes();
    let n = b.len();
    if n >= 6 && w.ends_with("ick") && !is_vowel(b[n - 4]) && b[..n - 4].iter().any(|&c| is_vowel(c)) {
        w.truncate(n - 1);
    }
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| stem(w)).collect()
    }

    #[test]
    fn related_forms_share_a_stem() {
        for group in [
            &["test", "tests", "testing", "tested", "tester"][..],
            &["cache", "caches", "caching", "cached"],
            &[
                "optimize",
                "optimise",
                "optimized",
                "optimizing",
                "optimization",
                "optimizer",
            ],
            &["migrate", "migration", "migrations", "migrating"],
            &["query", "queries"],
            &["review", "reviews", "reviewer", "reviewing"],
            &["debug", "debugging", "debugger"],
            &["fix", "fixes", "fixed", "fixing"],
            &["profile", "profiling", "profiler", "profiled"],
            &["inject", "injection", "injections"],
            &["regress", "regression", "regressions"],
            &["run", "running"],
            &["add", "adding", "added"],
            &["panic", "panics", "panicked", "panicking"],
            &["click", "clicked", "clicking"],
            &["fast", "faster"],
            &["log", "logger", "logging"],
            &["handle", "handler"],
        ] {
            let s = stems(group);
            assert!(s.iter().all(|x| *x == s[0]), "{group:?} → {s:?}");
        }
    }

    #[test]
    fn unrelated_words_do_not_meet() {
        // `-er` is only taken off after the letters that agent nouns end with.
        for (a, b) in [
            ("container", "contains"),
            ("header", "head"),
            ("spinner", "spin"),
            ("runner", "run"),
            ("looker", "look"),
            ("center", "cent"),
            ("footer", "foot"),
        ] {
            assert_ne!(stem(a), stem(b), "{a} / {b}");
        }
    }

    #[test]
    fn short_and_non_ascii_words_are_left_alone() {
        assert_eq!(stem("css"), "css");
        assert_eq!(stem("ui"), "ui");
        assert_eq!(stem("p99"), "p99");
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("analysis"), "analysis");
        assert_eq!(stem("speed"), "speed");
        assert_eq!(stem("pass"), "pass");
        assert_eq!(stem("naïve"), "naïve");
    }

    #[test]
    fn tokens_lowercase_split_and_mark_stopwords() {
        let t = tokens("Please debug the UserManager's CSS_bug!", true);
        let words: Vec<&str> = t.iter().map(|t| t.word.as_str()).collect();
        assert_eq!(
            words,
            [
                "please",
                "debug",
                "the",
                "usermanager",
                "user",
                "manager",
                "s",
                "css",
                "bug"
            ]
        );
        let stop: Vec<bool> = t.iter().map(|t| t.stop).collect();
        // `user` is a stopword: every kind of task mentions users.
        assert_eq!(stop, [true, false, true, false, true, false, true, false, false]);
        let part: Vec<bool> = t.iter().map(|t| t.part).collect();
        assert_eq!(part, [false, false, false, false, true, true, false, false, false]);
        assert_eq!(tokens("UserManager", false).len(), 1);
        assert!(tokens("", true).is_empty());
        assert!(tokens("  --- !!! ", true).is_empty());
        // Inflections of stopwords are stopwords.
        assert!(tokens("writes fixing checked", false).iter().all(|t| t.stop));
    }
}
