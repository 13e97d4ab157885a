//! The streaming substitution of an intercepted connection (`Substituter`): byte strings
//! replaced in a stream that arrives in chunks, with the same result as on one buffer however
//! the stream is cut, holding back only the bytes that may begin a match.

/// Replaces byte strings in a stream of chunks, as if the stream were one buffer: at each
/// position the first pattern (in order) that matches is replaced, and scanning resumes after
/// it. Bytes that may begin a match are held back until the next chunk decides (fewer than the
/// longest pattern); `finish` releases them at the end of the stream.
pub(crate) struct Substituter {
    /// Pattern and replacement.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which bytes begin a pattern: every other byte passes at once.
    starts: [bool; 256],
    held: Vec<u8>,
    /// Which pairs have replaced something, and which of those were reported.
    hit: Vec<bool>,
    reported: Vec<bool>,
}

/// What the bytes at a position are.
enum Decision {
    /// The start of this pair's pattern.
    Replace(usize),
    /// Perhaps the start of a pattern: more bytes will tell.
    Wait,
    /// Not the start of a pattern.
    Pass,
}

impl Substituter {
    /// A substituter of the given (pattern, replacement) pairs. An empty pattern never matches.
    pub(crate) fn new<'p>(pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>) -> Substituter {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs.into_iter().map(|(p, r)| (p.to_vec(), r.to_vec())).collect();
        let mut starts = [false; 256];
        for (pattern, _) in &pairs {
            if let Some(&b) = pattern.first() {
                starts[usize::from(b)] = true;
            }
        }
        Substituter {
            hit: vec![false; pairs.len()],
            reported: vec![false; pairs.len()],
            pairs,
            starts,
            held: Vec::new(),
        }
    }

    /// Substitutes the next chunk of the stream into `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            let taken = self.scan(input, false, out);
            self.held.extend_from_slice(&input[taken..]);
        } else {
            let mut data = std::mem::take(&mut self.held);
            data.extend_from_slice(input);
            let taken = self.scan(&data, false, out);
            data.drain(..taken);
            self.held = data;
        }
    }

    /// Ends the stream: releases the held-back bytes into `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let data = std::mem::take(&mut self.held);
        self.scan(&data, true, out);
    }

    /// The pairs that replaced something since the last call and never before.
    pub(crate) fn take_fresh(&mut self) -> Vec<usize> {
        let mut fresh = Vec::new();
        for (i, (hit, reported)) in self.hit.iter().zip(self.reported.iter_mut()).enumerate() {
            if *hit && !*reported {
                *reported = true;
                fresh.push(i);
            }
        }
        fresh
    }

    /// Substitutes `data` into `out` up to where it must wait for more (all of it when `last`),
    /// and returns how far that is.
    fn scan(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        let mut copied = 0;
        while let Some(&b) = data.get(i) {
            if !self.starts[usize::from(b)] {
                i += 1;
                continue;
            }
            match self.decide(&data[i..], last) {
                Decision::Replace(k) => {
                    let (pattern, replacement) = &self.pairs[k];
                    out.extend_from_slice(&data[copied..i]);
                    out.extend_from_slice(replacement);
                    self.hit[k] = true;
                    i += pattern.len();
                    copied = i;
                }
                Decision::Wait => break,
                Decision::Pass => i += 1,
            }
        }
        out.extend_from_slice(&data[copied..i]);
        i
    }

    /// Whether `rest` begins with a pattern, trying them in order: the first that matches
    /// wins, but one that might still match (`rest` is a proper prefix of it) must be waited
    /// for first, unless this is the end of the stream.
    fn decide(&self, rest: &[u8], last: bool) -> Decision {
        for (k, (pattern, _)) in self.pairs.iter().enumerate() {
            if pattern.is_empty() {
                continue;
            }
            if rest.starts_with(pattern) {
                return Decision::Replace(k);
            }
            if !last && rest.len() < pattern.len() && pattern.starts_with(rest) {
                return Decision::Wait;
            }
        }
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substitute_in(pairs: &[(&str, &str)], chunks: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut s = Substituter::new(pairs.iter().map(|(p, r)| (p.as_bytes(), r.as_bytes())));
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk, &mut out);
            assert!(s.held.len() < pairs.iter().map(|(p, _)| p.len()).max().unwrap_or(1));
        }
        s.finish(&mut out);
        (out, s.take_fresh())
    }

    fn substitute(pairs: &[(&str, &str)], input: &str) -> String {
        String::from_utf8(substitute_in(pairs, &[input.as_bytes()]).0).unwrap()
    }

    /// Every way of cutting `input` in two and in three gives the one-piece result.
    fn assert_split_invariant(pairs: &[(&str, &str)], input: &str, expected: &str) {
        let bytes = input.as_bytes();
        assert_eq!(substitute(pairs, input), expected);
        for i in 0..=bytes.len() {
            let (out, _) = substitute_in(pairs, &[&bytes[..i], &bytes[i..]]);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split at {i}");
            for j in i..=bytes.len() {
                let (out, _) = substitute_in(pairs, &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(String::from_utf8(out).unwrap(), expected, "split at {i}, {j}");
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(String::from_utf8(substitute_in(pairs, &singles).0).unwrap(), expected);
    }

    #[test]
    fn two_occurrences_are_replaced_at_every_split_point() {
        let pairs = [("PLACEHOLDER", "secretvalu")];
        assert_split_invariant(
            &pairs,
            "Authorization: Bearer PLACEHOLDER\r\nX-Key: PLACEHOLDER",
            "Authorization: Bearer secretvalu\r\nX-Key: secretvalu",
        );
        assert_split_invariant(&pairs, "PLACEHOLDERPLACEHOLDER", "secretvalusecretvalu");
        assert_split_invariant(&pairs, "PLACEHOLDPLACEHOLDERPLACE", "PLACEHOLDsecretvaluPLACE");
    }

    #[test]
    fn overlapping_prefixes_resolve_leftmost_like_a_single_buffer() {
        assert_split_invariant(&[("aab", "XYZ")], "aaab", "aXYZ");
        assert_split_invariant(&[("aab", "XYZ")], "aaaabaab", "aaXYZXYZ");
        assert_split_invariant(&[("abab", "WXYZ")], "ababab", "WXYZab");
        assert_split_invariant(&[("abab", "WXYZ")], "abababab", "WXYZWXYZ");
        assert_split_invariant(&[("abcabd", "123456")], "abcabcabd", "abc123456");
        // A held-back prefix that never completes comes out unchanged at the end.
        assert_split_invariant(&[("abcdef", "123456")], "xxabcde", "xxabcde");
    }

    #[test]
    fn patterns_are_tried_in_order_even_when_a_later_one_is_complete_first() {
        // At position 0 both may match; the first must be waited for, whatever the split.
        let pairs = [("abcd", "1234"), ("ab", "XY")];
        assert_split_invariant(&pairs, "abcd ab abc", "1234 XY XYc");
        let pairs = [
            ("agentctlphAAAA", "valueAAAAAAAAA"),
            ("agentctlphBBBB", "valueBBBBBBBBB"),
        ];
        assert_split_invariant(
            &pairs,
            "agentctlphBBBB,agentctlphAAAA;agentctlph",
            "valueBBBBBBBBB,valueAAAAAAAAA;agentctlph",
        );
    }

    #[test]
    fn fresh_hits_are_reported_once() {
        let mut s = Substituter::new([(&b"aa"[..], &b"bb"[..]), (&b"cc"[..], &b"dd"[..])]);
        let mut out = Vec::new();
        s.feed(b"xx", &mut out);
        assert!(s.take_fresh().is_empty());
        s.feed(b"ccc", &mut out);
        assert_eq!(s.take_fresh(), [1]);
        s.feed(b"c aa cc", &mut out);
        assert_eq!(s.take_fresh(), [0]);
        s.finish(&mut out);
        assert!(s.take_fresh().is_empty());
        assert_eq!(out, b"xxdddd bb dd");
        let (out, fresh) = substitute_in(&[("", "x"), ("a", "b")], &[b"aa"]);
        assert_eq!((out, fresh), (b"bb".to_vec(), vec![1]));
    }
}
