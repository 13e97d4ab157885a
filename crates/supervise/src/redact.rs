//! Redacting secret values from captured output and from anything else agentctl records.
//!
//! A [`Redactor`] is built from the run's secrets (name and value). Each value is looked for in
//! every form an agent is likely to print it in:
//!
//! - the raw bytes;
//! - base64, standard and URL-safe alphabets, padded and unpadded;
//! - the base64 *cores* at the three byte alignments: the characters determined by the secret's
//!   bytes alone, so the secret is found inside a longer base64 blob (`echo $SECRET | base64`,
//!   with its trailing newline; `base64("user:" + secret)`), also wrapped at 76 or 64 columns
//!   with `\n` or `\r\n` (GNU `base64`, MIME, `openssl base64`, PEM) for values up to
//!   [`WRAP_MAX_SECRET`] bytes;
//! - percent-encoded (RFC 3986, HTML form and `encodeURIComponent` sets, `%20` or `+` for a
//!   space, upper- and lowercase hex digits);
//! - lower- and uppercase hex;
//! - JSON-string-escaped, when the value contains characters JSON escapes (also `\uXXXX` for
//!   non-ASCII and `\/` for a slash, as some encoders write them).
//!
//! Every match becomes `[redacted:NAME]`, leftmost-longest. Values shorter than
//! [`MIN_SECRET_LEN`] bytes are not redacted (they would shred ordinary output) and are listed by
//! [`Redactor::skipped`]; derived forms shorter than [`MIN_SECRET_LEN`] characters are not used.
//!
//! [`StreamRedactor`] redacts a byte stream chunk by chunk: it holds back only the longest tail
//! of what it was given that could still be the start of a match, so output without secrets is
//! not delayed, and a secret split across any chunk boundaries never comes out in clear. Its
//! output is exactly what [`Redactor::redact_bytes`] gives for the concatenated input.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// Values shorter than this (bytes) are not redacted; derived forms shorter than this
/// (characters) are not used.
pub const MIN_SECRET_LEN: usize = 8;

/// Line-wrapped base64 forms are generated only for values up to this many bytes (API keys and
/// tokens are far shorter; a longer value still gets every other form).
pub const WRAP_MAX_SECRET: usize = 4096;

/// What a stream emits, once, in place of all its output if the matcher could not be built
/// (only possible with absurdly large secrets): redaction fails closed.
const WITHHELD: &[u8] = b"[redacted: output withheld, secret redaction unavailable]";

/// Redacts a set of secrets. Cheap to clone (the automaton is shared).
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<Inner>,
}

struct Inner {
    matcher: Matcher,
    /// `[redacted:NAME]`, by pattern id.
    replacements: Vec<Vec<u8>>,
    /// Every pattern, sorted: finds whether a tail could still grow into a match.
    sorted: Vec<Vec<u8>>,
    /// Whether some pattern starts with this byte.
    first_bytes: [bool; 256],
    max_len: usize,
    names: Vec<String>,
    skipped: Vec<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            matcher: Matcher::Nothing,
            replacements: Vec::new(),
            sorted: Vec::new(),
            first_bytes: [false; 256],
            max_len: 0,
            names: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

#[derive(Default)]
enum Matcher {
    /// Nothing to redact.
    #[default]
    Nothing,
    Patterns(AhoCorasick),
    /// The automaton could not be built: withhold everything.
    FailClosed,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("names", &self.inner.names)
            .field("skipped", &self.inner.skipped)
            .field("patterns", &self.inner.replacements.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `secrets` (name, value). Values shorter than [`MIN_SECRET_LEN`] are
    /// skipped and reported by [`skipped`](Self::skipped).
    pub fn new(secrets: &[(String, Vec<u8>)]) -> Redactor {
        let mut names = Vec::new();
        let mut skipped = Vec::new();
        let mut seen = HashSet::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                if !skipped.contains(name) {
                    skipped.push(name.clone());
                }
                continue;
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
            let replacement = format!("[redacted:{name}]").into_bytes();
            for form in forms(value) {
                if form.len() >= MIN_SECRET_LEN && seen.insert(form.clone()) {
                    patterns.push(form);
                    replacements.push(replacement.clone());
                }
            }
        }
        if patterns.is_empty() {
            return Redactor {
                inner: Arc::new(Inner {
                    names,
                    skipped,
                    ..Inner::default()
                }),
            };
        }
        let matcher = match build(&patterns, None) {
            Ok(ac) => Matcher::Patterns(ac),
            Err(first) => match build(&patterns, Some(AhoCorasickKind::NoncontiguousNFA)) {
                Ok(ac) => Matcher::Patterns(ac),
                Err(e) => {
                    tracing::error!(error = %e, first_error = %first, "cannot build the secret matcher; withholding output");
                    Matcher::FailClosed
                }
            },
        };
        let mut first_bytes = [false; 256];
        for p in &patterns {
            first_bytes[usize::from(p[0])] = true;
        }
        let max_len = patterns.iter().map(Vec::len).max().unwrap_or(0);
        patterns.sort();
        Redactor {
            inner: Arc::new(Inner {
                matcher,
                replacements,
                sorted: patterns,
                first_bytes,
                max_len,
                names,
                skipped,
            }),
        }
    }

    /// Names of the secrets too short to redact (fewer than [`MIN_SECRET_LEN`] bytes): the
    /// caller should warn that their values may appear in the output.
    pub fn skipped(&self) -> &[String] {
        &self.inner.skipped
    }

    /// Names of the secrets being redacted.
    pub fn names(&self) -> &[String] {
        &self.inner.names
    }

    /// Whether there is nothing to redact (no secrets, or all too short).
    pub fn is_empty(&self) -> bool {
        matches!(self.inner.matcher, Matcher::Nothing)
    }

    /// A streaming redactor over these secrets.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            pending: Vec::new(),
            withheld: false,
        }
    }

    /// `bytes` with every secret replaced.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.inner.matcher {
            Matcher::Nothing => bytes.to_vec(),
            Matcher::FailClosed if bytes.is_empty() => Vec::new(),
            Matcher::FailClosed => WITHHELD.to_vec(),
            Matcher::Patterns(ac) => {
                let mut out = Vec::with_capacity(bytes.len());
                let mut pos = 0;
                for m in ac.find_iter(bytes) {
                    out.extend_from_slice(&bytes[pos..m.start()]);
                    out.extend_from_slice(&self.inner.replacements[m.pattern().as_usize()]);
                    pos = m.end();
                }
                out.extend_from_slice(&bytes[pos..]);
                out
            }
        }
    }

    /// `text` with every secret replaced. (Should a secret that is not UTF-8 match inside a
    /// character, the broken remainder is replaced with U+FFFD.)
    pub fn redact_str(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        match String::from_utf8(self.redact_bytes(text.as_bytes())) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    #[cfg(test)]
    fn patterns(&self) -> &[Vec<u8>] {
        &self.inner.sorted
    }
}

impl Inner {
    /// The length of the longest suffix of `buf` that is a proper prefix of some pattern.
    fn hold_len(&self, buf: &[u8]) -> usize {
        let n = buf.len();
        let lo = n.saturating_sub(self.max_len.saturating_sub(1));
        (lo..n)
            .find(|&s| self.first_bytes[usize::from(buf[s])] && self.is_proper_prefix(&buf[s..]))
            .map_or(0, |s| n - s)
    }

    /// Whether some pattern is longer than `x` and starts with it.
    fn is_proper_prefix(&self, x: &[u8]) -> bool {
        // The patterns starting with `x` are contiguous in sorted order, beginning at the first
        // pattern >= x; if `x` is itself a pattern it comes first, and patterns are distinct.
        let i = self.sorted.partition_point(|p| p.as_slice() < x);
        self.sorted[i..]
            .iter()
            .take(2)
            .any(|p| p.len() > x.len() && p.starts_with(x))
    }
}

/// Redacts a byte stream pushed in chunks of any size. See the [module docs](self).
pub struct StreamRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
    withheld: bool,
}

impl fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the pending bytes: they may be the start of a secret.
        f.debug_struct("StreamRedactor")
            .field("redactor", &self.redactor)
            .field("pending_len", &self.pending.len())
            .finish()
    }
}

impl StreamRedactor {
    /// Takes the next chunk; returns what can be emitted now, redacted. Only a tail that could
    /// still be the start of a secret (in some form) is held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let inner = &*self.redactor.inner;
        let ac = match &inner.matcher {
            Matcher::Nothing => {
                let mut out = std::mem::take(&mut self.pending);
                out.extend_from_slice(chunk);
                return out;
            }
            Matcher::FailClosed => return self.withhold(chunk),
            Matcher::Patterns(ac) => ac,
        };
        self.pending.extend_from_slice(chunk);
        let buf = &self.pending;
        // A match that could still grow past the end of `buf` starts inside the held tail, so
        // every match starting before `cut` is final, and no match can start between the last
        // of them and `cut`.
        let cut = buf.len() - inner.hold_len(buf);
        let mut out = Vec::with_capacity(cut + 32);
        let mut pos = 0;
        for m in ac.find_iter(buf.as_slice()) {
            if m.start() >= cut {
                break;
            }
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&inner.replacements[m.pattern().as_usize()]);
            pos = m.end();
        }
        let emit_to = pos.max(cut);
        out.extend_from_slice(&buf[pos..emit_to]);
        self.pending.drain(..emit_to);
        out
    }

    /// Ends the stream: the held-back tail, redacted.
    pub fn finish(&mut self) -> Vec<u8> {
        if matches!(self.redactor.inner.matcher, Matcher::FailClosed) {
            return self.withhold(&[]);
        }
        let pending = std::mem::take(&mut self.pending);
        self.redactor.redact_bytes(&pending)
    }

    /// How many bytes are held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn withhold(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.withheld || chunk.is_empty() {
            return Vec::new();
        }
        self.withheld = true;
        WITHHELD.to_vec()
    }
}

fn build(patterns: &[Vec<u8>], kind: Option<AhoCorasickKind>) -> Result<AhoCorasick, aho_corasick::BuildError> {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .kind(kind)
        .build(patterns)
}

/// Every form of `value` looked for (possibly with duplicates and short ones, filtered by the
/// caller).
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec(), hex(value, false), hex(value, true)];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(value).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for k in 0..3 {
            base64_core(engine, value, k, &mut out);
        }
    }
    for keep in [&b"-._~"[..], b"*-._", b"!'()*-._~"] {
        for plus in [false, true] {
            for upper in [true, false] {
                out.push(percent(value, keep, plus, upper));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(value) {
        json_forms(text, &mut out);
    }
    out
}

fn hex(value: &[u8], upper: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    value
        .iter()
        .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

/// The base64 characters determined only by `value`'s bytes when it follows `k` other bytes
/// (k = 0, 1, 2: its offset modulo 3 in the encoded data), plus the same wrapped into lines.
fn base64_core(engine: &GeneralPurpose, value: &[u8], k: usize, out: &mut Vec<Vec<u8>>) {
    let mut data = vec![0u8; k];
    data.extend_from_slice(value);
    let encoded = engine.encode(&data).into_bytes();
    // Character i carries bits 6i..6i+6 of the data; keep those entirely within the value's
    // bits, 8k..8(k+len).
    let start = (8 * k).div_ceil(6);
    let end = (8 * data.len()) / 6;
    if end <= start {
        return;
    }
    let core = &encoded[start..end];
    out.push(core.to_vec());
    if value.len() > WRAP_MAX_SECRET {
        return;
    }
    // Wrapping breaks lines every `width` characters of the whole blob, and `width` is a
    // multiple of 4, so a break falls on a 4-character group boundary: relative to `encoded`
    // (which starts on one), at the positions congruent to some multiple of 4 mod `width`.
    for width in [76usize, 64] {
        for phase in (0..width).step_by(4) {
            let breaks: Vec<usize> = (phase..end).step_by(width).filter(|&p| p > start).collect();
            if breaks.is_empty() {
                continue;
            }
            for sep in [&b"\n"[..], b"\r\n"] {
                let mut wrapped = Vec::with_capacity(core.len() + breaks.len() * sep.len());
                let mut from = start;
                for &p in &breaks {
                    wrapped.extend_from_slice(&encoded[from..p]);
                    wrapped.extend_from_slice(sep);
                    from = p;
                }
                wrapped.extend_from_slice(&encoded[from..end]);
                out.push(wrapped);
            }
        }
    }
}

/// Percent-encoding keeping ASCII alphanumerics and `keep`; a space is `+` when `plus`.
fn percent(value: &[u8], keep: &[u8], plus: bool, upper: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
        }
    }
    out
}

/// The value as it appears inside a JSON string, if that differs from the raw value: as
/// serde_json writes it, with non-ASCII as `\uXXXX` (Python's default), and each with `\/`.
fn json_forms(text: &str, out: &mut Vec<Vec<u8>>) {
    let escaped = json_escape(text, false);
    let ascii = json_escape(text, true);
    for form in [escaped, ascii] {
        if form.contains('/') {
            out.push(form.replace('/', "\\/").into_bytes());
        }
        if form != text {
            out.push(form.into_bytes());
        }
    }
}

fn json_escape(text: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if ascii_only && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "sk-test-0123456789abcdefXYZ";

    fn redactor(secrets: &[(&str, &[u8])]) -> Redactor {
        let owned: Vec<(String, Vec<u8>)> = secrets.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        Redactor::new(&owned)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Whether `out` shows `needle`, also once line breaks are taken out (wrapped base64).
    fn leaks(out: &[u8], needle: &[u8]) -> bool {
        let unwrapped: Vec<u8> = out.iter().copied().filter(|&b| b != b'\n' && b != b'\r').collect();
        contains(out, needle) || contains(&unwrapped, needle)
    }

    /// Feeds `input` in the given chunk sizes (cycled), returns everything emitted.
    fn stream_chunks(r: &Redactor, input: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut s = r.stream();
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            out.extend(s.push(&rest[..n]));
            rest = &rest[n..];
            i += 1;
        }
        out.extend(s.finish());
        out
    }

    fn b64(engine: &GeneralPurpose, data: &[u8]) -> String {
        engine.encode(data)
    }

    fn wrap(text: &str, width: usize, sep: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        chars
            .chunks(width)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// Texts that embed KEY (or a value like it) in each supported form.
    fn encoded_texts(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
        let s = secret;
        let mut with_newline = s.to_vec();
        with_newline.push(b'\n');
        let mut basic = b"user:".to_vec();
        basic.extend_from_slice(s);
        let mut one_before = b"x".to_vec();
        one_before.extend_from_slice(s);
        one_before.extend_from_slice(b"tail bytes");
        let mut long = b"prefix that is long enough to wrap: ".to_vec();
        long.extend_from_slice(s);
        long.extend_from_slice(b" and a suffix that pushes this past one line of base64 output");
        let mut texts = vec![
            ("raw".to_owned(), s.to_vec()),
            ("hex".to_owned(), hex(s, false)),
            ("HEX".to_owned(), hex(s, true)),
            ("b64".to_owned(), b64(&STANDARD, s).into_bytes()),
            ("b64 nopad".to_owned(), b64(&STANDARD_NO_PAD, s).into_bytes()),
            ("b64url".to_owned(), b64(&URL_SAFE, s).into_bytes()),
            ("b64url nopad".to_owned(), b64(&URL_SAFE_NO_PAD, s).into_bytes()),
            ("echo | base64".to_owned(), b64(&STANDARD, &with_newline).into_bytes()),
            (
                "basic auth".to_owned(),
                format!("Authorization: Basic {}", b64(&STANDARD, &basic)).into_bytes(),
            ),
            ("offset 1".to_owned(), b64(&URL_SAFE, &one_before).into_bytes()),
            ("pct upper".to_owned(), percent(s, b"-._~", false, true)),
            ("pct lower".to_owned(), percent(s, b"-._~", false, false)),
            ("pct form".to_owned(), percent(s, b"*-._", true, true)),
        ];
        for (width, sep) in [(76, "\n"), (76, "\r\n"), (64, "\n")] {
            for pad in 0..6 {
                let mut data = vec![b'#'; pad];
                data.extend_from_slice(&long);
                texts.push((
                    format!("wrapped {width} {sep:?} pad {pad}"),
                    wrap(&b64(&STANDARD, &data), width, sep).into_bytes(),
                ));
            }
        }
        if let Ok(text) = std::str::from_utf8(s) {
            texts.push(("json".to_owned(), serde_json::to_string(text).unwrap().into_bytes()));
        }
        texts
    }

    /// The forms of KEY-like values, as they appear in `encoded_texts` (for leak checks).
    fn leak_needles(secret: &[u8]) -> Vec<Vec<u8>> {
        let mut needles = vec![secret.to_vec(), hex(secret, false), hex(secret, true)];
        for e in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for k in 0..3 {
                let mut data = vec![0u8; k];
                data.extend_from_slice(secret);
                let enc = e.encode(&data).into_bytes();
                needles.push(enc[(8 * k).div_ceil(6)..(8 * data.len()) / 6].to_vec());
            }
        }
        needles.push(percent(secret, b"-._~", false, true));
        needles.push(percent(secret, b"-._~", false, false));
        needles.push(percent(secret, b"*-._", true, true));
        needles
    }

    #[test]
    fn every_form_is_redacted_one_shot() {
        let secret = b"sk-ant \"q\\uo+te/d\" 0123456789";
        let r = redactor(&[("API_KEY", secret)]);
        for (what, text) in encoded_texts(secret) {
            let mut input = b"before ".to_vec();
            input.extend_from_slice(&text);
            input.extend_from_slice(b" after");
            let out = r.redact_bytes(&input);
            assert!(
                contains(&out, b"[redacted:API_KEY]"),
                "{what}: {}",
                String::from_utf8_lossy(&out)
            );
            for needle in leak_needles(secret) {
                assert!(
                    !contains(&out, &needle),
                    "{what} leaks: {}",
                    String::from_utf8_lossy(&out)
                );
            }
            assert!(out.starts_with(b"before "), "{what}");
        }
    }

    #[test]
    fn long_secrets_wrapped_over_several_lines() {
        let secret: Vec<u8> = (0..150u8).map(|i| b'A' + i % 26).collect();
        let r = redactor(&[("LONG", &secret)]);
        for (width, sep) in [(76, "\n"), (76, "\r\n"), (64, "\n"), (64, "\r\n")] {
            for pad in 0..40 {
                let mut data = vec![b'#'; pad];
                data.extend_from_slice(&secret);
                data.extend_from_slice(b"trailing data");
                let text = wrap(&b64(&STANDARD, &data), width, sep);
                let out = r.redact_bytes(text.as_bytes());
                assert!(contains(&out, b"[redacted:LONG]"), "{width} {pad}");
                for needle in leak_needles(&secret) {
                    assert!(
                        !leaks(&out, &needle),
                        "{width} {sep:?} pad {pad}: {}",
                        String::from_utf8_lossy(&out)
                    );
                }
            }
        }
    }

    #[test]
    fn exact_forms_are_replaced_whole() {
        let r = redactor(&[("K", KEY.as_bytes())]);
        assert_eq!(r.redact_str(&format!("key={KEY};")), "key=[redacted:K];");
        let b = STANDARD.encode(KEY);
        assert_eq!(r.redact_str(&format!("x {b} y")), "x [redacted:K] y");
        let h = String::from_utf8(hex(KEY.as_bytes(), true)).unwrap();
        assert_eq!(r.redact_str(&format!("{h}\n")), "[redacted:K]\n");
    }

    #[test]
    fn json_escaped_values_are_redacted() {
        let secret = "pa\"ss\\wörd/with\ttab";
        let r = redactor(&[("PW", secret.as_bytes())]);
        let serde = serde_json::to_string(&serde_json::json!({ "pw": secret })).unwrap();
        assert_eq!(r.redact_str(&serde), r#"{"pw":"[redacted:PW]"}"#);
        let python = r#"{"pw": "pa\"ss\\w\u00f6rd\/with\ttab"}"#;
        assert_eq!(r.redact_str(python), r#"{"pw": "[redacted:PW]"}"#);
    }

    #[test]
    fn percent_encoded_space_both_ways() {
        let secret = "my pass:word@1";
        let r = redactor(&[("P", secret.as_bytes())]);
        for text in ["my%20pass%3Aword%401", "my+pass%3aword%401", "my%20pass%3aword%401"] {
            assert_eq!(r.redact_str(&format!("u={text}&")), "u=[redacted:P]&", "{text}");
        }
    }

    #[test]
    fn short_secrets_are_skipped_and_reported() {
        let r = redactor(&[("SHORT", b"abc1234"), ("LONG", KEY.as_bytes())]);
        assert_eq!(r.skipped(), ["SHORT".to_owned()]);
        assert_eq!(r.names(), ["LONG".to_owned()]);
        assert!(!r.is_empty());
        assert_eq!(r.redact_str("abc1234 stays"), "abc1234 stays");
        let only_short = redactor(&[("SHORT", b"abc")]);
        assert!(only_short.is_empty());
        assert_eq!(only_short.redact_bytes(b"abc"), b"abc");
        assert!(Redactor::new(&[]).is_empty());
    }

    #[test]
    fn short_derived_forms_are_not_used() {
        let r = redactor(&[("K", b"12345678")]);
        assert!(r.patterns().iter().all(|p| p.len() >= MIN_SECRET_LEN));
        assert!(r.patterns().iter().any(|p| p == b"12345678"));
    }

    #[test]
    fn leftmost_longest_between_secrets() {
        let r = redactor(&[("SHORTER", b"abcdefgh"), ("LONGER", b"abcdefgh-ijkl")]);
        assert_eq!(
            r.redact_str("abcdefgh-ijkl abcdefgh"),
            "[redacted:LONGER] [redacted:SHORTER]"
        );
        let mut s = r.stream();
        let mut out = s.push(b"abcdefgh");
        out.extend(s.push(b"-ij"));
        out.extend(s.push(b"kl!"));
        out.extend(s.finish());
        assert_eq!(out, b"[redacted:LONGER]!");
    }

    #[test]
    fn every_split_point_of_every_form() {
        let secret = b"sk-ant \"q\\uo+te/d\" 0123456789";
        let r = redactor(&[("API_KEY", secret)]);
        for (what, text) in encoded_texts(secret) {
            let mut input = b"<<".to_vec();
            input.extend_from_slice(&text);
            input.extend_from_slice(b">>");
            let expected = r.redact_bytes(&input);
            for i in 0..=input.len() {
                let mut s = r.stream();
                let mut out = s.push(&input[..i]);
                out.extend(s.push(&input[i..]));
                out.extend(s.finish());
                assert_eq!(out, expected, "{what} split at {i}");
            }
            // Two split points (three chunks) for the shorter texts.
            let n = if input.len() <= 100 { input.len() } else { 0 };
            for i in 0..=n {
                for j in i..=n {
                    let mut s = r.stream();
                    let mut out = s.push(&input[..i]);
                    out.extend(s.push(&input[i..j]));
                    out.extend(s.push(&input[j..]));
                    out.extend(s.finish());
                    assert_eq!(out, expected, "{what} split at {i},{j}");
                }
            }
            assert_eq!(stream_chunks(&r, &input, &[1]), expected, "{what} byte by byte");
        }
    }

    #[test]
    fn ordinary_output_is_not_delayed() {
        let r = redactor(&[("K", KEY.as_bytes())]);
        let mut s = r.stream();
        assert_eq!(s.push(b"hello world\n"), b"hello world\n");
        // A tail that could start the key is held back, and released once it cannot.
        assert_eq!(s.push(b"look: sk-te"), b"look: ");
        assert_eq!(s.pending_len(), 5);
        assert_eq!(s.push(b"a time"), b"sk-tea time");
        assert_eq!(s.pending_len(), 0);
        assert_eq!(s.push(b"sk"), b"");
        assert_eq!(s.finish(), b"sk");
        assert_eq!(s.finish(), b"");
    }

    #[test]
    fn empty_redactor_passes_through() {
        let r = Redactor::default();
        let mut s = r.stream();
        assert_eq!(s.push(b"\xff\xfe any bytes"), b"\xff\xfe any bytes");
        assert_eq!(s.finish(), b"");
        assert_eq!(r.redact_str("text"), "text");
    }

    #[test]
    fn non_utf8_output_and_secrets() {
        let secret = b"\xff\x00\x01binary-secret\xfe";
        let r = redactor(&[("BIN", secret)]);
        let mut input = b"\xc3(".to_vec();
        input.extend_from_slice(secret);
        input.extend_from_slice(b"\x80");
        assert_eq!(r.redact_bytes(&input), b"\xc3([redacted:BIN]\x80");
        assert_eq!(stream_chunks(&r, &input, &[1]), b"\xc3([redacted:BIN]\x80");
    }

    #[test]
    fn debug_never_shows_values() {
        let r = redactor(&[("K", KEY.as_bytes())]);
        let mut s = r.stream();
        s.push(&KEY.as_bytes()[..10]);
        let shown = format!("{r:?} {s:?}");
        assert!(!shown.contains(&KEY[..10]), "{shown}");
        assert!(shown.contains("\"K\""));
    }

    #[test]
    fn clones_share_the_matcher() {
        let r = redactor(&[("K", KEY.as_bytes())]);
        let c = r.clone();
        assert!(Arc::ptr_eq(&r.inner, &c.inner));
        std::thread::spawn(move || assert_eq!(c.redact_str(KEY), "[redacted:K]"))
            .join()
            .unwrap();
    }

    fn secret_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::sample::select(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".to_vec()),
                1 => proptest::sample::select(b"-_+/=.\"\\ @!%$~\n".to_vec()),
            ],
            MIN_SECRET_LEN..48,
        )
    }

    fn filler_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn prop_secrets_never_leak(
            secret in secret_strategy(),
            fillers in proptest::collection::vec(filler_strategy(), 20),
            sizes in proptest::collection::vec(1usize..24, 1..8),
        ) {
            let r = redactor(&[("S", &secret)]);
            let mut input = Vec::new();
            for (i, (_, text)) in encoded_texts(&secret).into_iter().enumerate() {
                input.extend_from_slice(&fillers[i % fillers.len()]);
                input.extend_from_slice(&text);
            }
            input.extend_from_slice(&fillers[fillers.len() - 1]);
            let once = r.redact_bytes(&input);
            let streamed = stream_chunks(&r, &input, &sizes);
            prop_assert_eq!(&streamed, &once);
            for needle in leak_needles(&secret) {
                prop_assert!(!leaks(&streamed, &needle), "leaked {:?}", String::from_utf8_lossy(&needle));
            }
        }

        #[test]
        fn prop_text_without_secrets_is_unchanged(
            secret in secret_strategy(),
            text in proptest::collection::vec(any::<u8>(), 0..400),
            sizes in proptest::collection::vec(1usize..24, 1..8),
        ) {
            let r = redactor(&[("S", &secret)]);
            prop_assume!(!r.patterns().iter().any(|p| contains(&text, p)));
            prop_assert_eq!(stream_chunks(&r, &text, &sizes), text.clone());
            prop_assert_eq!(r.redact_bytes(&text), text);
        }

        #[test]
        fn prop_text_near_secret_prefixes_is_unchanged(
            secret in secret_strategy(),
            pieces in proptest::collection::vec((0usize..48, filler_strategy()), 0..12),
            sizes in proptest::collection::vec(1usize..24, 1..8),
        ) {
            // Text full of proper prefixes of the secret (the held-back case) still comes out
            // byte-identical when no whole secret is in it.
            let r = redactor(&[("S", &secret)]);
            let mut text = Vec::new();
            for (n, filler) in pieces {
                text.extend_from_slice(&secret[..n.min(secret.len() - 1)]);
                text.extend_from_slice(&filler);
            }
            prop_assume!(!r.patterns().iter().any(|p| contains(&text, p)));
            prop_assert_eq!(stream_chunks(&r, &text, &sizes), text);
        }
    }
}
