//! The path policy: which paths a run may change, and how. [`PolicyDef`] is the `[policy]` table
//! of an agent, a workflow or a run (layered with [`PolicyDef::merge`]); [`Policy`] is its
//! compiled form, which judges [`PathFacts`] — what the engine found on disk for each changed
//! path — and the worktree's disk usage, and returns every [`Violation`]. Pure: gathering the
//! facts is the engine's job (`engine::policy`).
//!
//! Globs are matched against paths relative to the worktree root, `/`-separated:
//! - A glob is anchored at the worktree root (`*.pem` is only the top level; `**/*.pem` is any
//!   depth). A leading `/` is allowed and changes nothing; a trailing `/` is dropped.
//! - `*` matches any run of characters within one path component (dotfiles included), `?` one
//!   character, `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one character of (not of) a set, `\x`
//!   the character `x`. A component that is exactly `**` matches zero or more components; `**`
//!   inside a component is an ordinary `*`.
//! - A glob that matches a directory matches everything below it: `secrets` and `secrets/**`
//!   both cover `secrets/key.pem`.
//! - Matching is case-sensitive.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Definition (the TOML/JSON shape)

/// What to do when a change breaks the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Record the violation and let the agent go on.
    #[default]
    Flag,
    /// Record it and restore the violating paths from the last good checkpoint.
    Revert,
    /// Record it and stop the run.
    Stop,
}

impl OnViolation {
    pub fn as_str(self) -> &'static str {
        match self {
            OnViolation::Flag => "flag",
            OnViolation::Revert => "revert",
            OnViolation::Stop => "stop",
        }
    }
}

impl fmt::Display for OnViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[policy]` table of an agent, a workflow or a run. Every field is optional; an empty
/// table still forbids changes under `.git`, paths that resolve outside the worktree, symlinks
/// leading out of it, hard links and new executable files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    /// Globs (relative to the worktree root) of the paths the run may change. Empty: everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// Globs of paths the run must not change (create, modify or delete), allowed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden: Vec<String>,
    /// The largest a changed file may be: bytes, or a string like `"10MB"` or `"1.5GiB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<ByteSize>,
    /// The most disk space the worktree may take (allocated blocks, `.git` file included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_quota: Option<ByteSize>,
    /// Whether the run may create executable files or set exec bits (default: false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_executables: Option<bool>,
    /// `flag` (default), `revert` or `stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<OnViolation>,
}

impl PolicyDef {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == PolicyDef::default()
    }

    /// `self` with `over` laid on top (agent → workflow → run): every field set in `over` wins;
    /// a non-empty list in `over` replaces the one in `self` (an empty list is "not set").
    pub fn merge(&self, over: &PolicyDef) -> PolicyDef {
        let list = |base: &Vec<String>, over: &Vec<String>| {
            if over.is_empty() { base.clone() } else { over.clone() }
        };
        PolicyDef {
            allowed: list(&self.allowed, &over.allowed),
            forbidden: list(&self.forbidden, &over.forbidden),
            max_file_size: over.max_file_size.or(self.max_file_size),
            disk_quota: over.disk_quota.or(self.disk_quota),
            allow_executables: over.allow_executables.or(self.allow_executables),
            on_violation: over.on_violation.or(self.on_violation),
        }
    }

    /// Every problem with the definition (bad globs, named with their list and position).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        Policy::new(self).map(drop)
    }
}

// ---------------------------------------------------------------------------------------------
// Byte sizes

/// A number of bytes. Written as an integer (bytes) or a string: a number (fractions allowed,
/// rounded down to a whole byte) and an optional unit, case-insensitive, space allowed between.
/// `B` is bytes; `kB`, `MB`, `GB`, `TB`, `PB` are decimal (powers of 1000); a bare `k`, `M`,
/// `G`, `T`, `P` and `Ki`/`KiB`, `Mi`/`MiB`, … are binary (powers of 1024), as in `docker
/// --memory` and cgroup limits.
/// Serialized as the number of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(n: u64) -> Self {
        ByteSize(n)
    }
}

/// Why a string is not a [`ByteSize`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a size: {reason} (use bytes, or a number with a unit like 10MB, 512KiB, 1.5G)")]
pub struct InvalidByteSize {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = InvalidByteSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| InvalidByteSize {
            input: s.to_owned(),
            reason,
        };
        let t = s.trim();
        let int_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (int, rest) = t.split_at(int_end);
        if int.is_empty() {
            return Err(fail(if t.starts_with('-') {
                "sizes cannot be negative"
            } else {
                "no number"
            }));
        }
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                if end == 0 {
                    return Err(fail("no digits after the decimal point"));
                }
                r.split_at(end)
            }
            None => ("", rest),
        };
        let mult: u128 = match rest.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "pb" => 1_000_000_000_000_000,
            "k" | "ki" | "kib" => 1 << 10,
            "m" | "mi" | "mib" => 1 << 20,
            "g" | "gi" | "gib" => 1 << 30,
            "t" | "ti" | "tib" => 1 << 40,
            "p" | "pi" | "pib" => 1 << 50,
            _ => return Err(fail("unknown unit")),
        };
        let too_large = || fail("too large");
        // 30 digits overflow u64 whatever the unit; fewer fit u128 with any multiplier.
        if int.trim_start_matches('0').len() > 25 {
            return Err(too_large());
        }
        let int: u128 = int.parse().map_err(|_| too_large())?;
        // Digits past the 18th cannot change the whole number of bytes (multipliers < 10^18).
        let frac = &frac[..frac.len().min(18)];
        let frac_bytes = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| fail("bad fraction"))?;
            digits * mult / 10u128.pow(frac.len() as u32)
        };
        let total = int
            .checked_mul(mult)
            .and_then(|n| n.checked_add(frac_bytes))
            .ok_or_else(too_large)?;
        u64::try_from(total).map(ByteSize).map_err(|_| too_large())
    }
}

impl fmt::Display for ByteSize {
    /// `512 B`, `10 MB`, `1.5 GB`, `1 GiB`, or the nearest tenth of the largest decimal unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 10] = [
            (1_000_000_000_000_000, "PB"),
            (1 << 50, "PiB"),
            (1_000_000_000_000, "TB"),
            (1 << 40, "TiB"),
            (1_000_000_000, "GB"),
            (1 << 30, "GiB"),
            (1_000_000, "MB"),
            (1 << 20, "MiB"),
            (1_000, "kB"),
            (1 << 10, "KiB"),
        ];
        let n = u128::from(self.0);
        let tenths = |unit: u64| {
            let t = n * 10 / u128::from(unit);
            if t % 10 == 0 {
                format!("{}", t / 10)
            } else {
                format!("{}.{}", t / 10, t % 10)
            }
        };
        for (unit, name) in UNITS {
            if n >= u128::from(unit) && (n * 10) % u128::from(unit) == 0 {
                return write!(f, "{} {name}", tenths(unit));
            }
        }
        match UNITS.iter().step_by(2).find(|(unit, _)| n >= u128::from(*unit)) {
            Some((unit, name)) => write!(f, "{} {name}", tenths(*unit)),
            None => write!(f, "{} B", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, or a string like \"10MB\" or \"1.5GiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size: sizes cannot be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of bytes, or a string: a number and a unit (B; kB, MB, GB, TB, PB decimal; k, M, G, T, P, Ki, Mi, … or KiB, MiB, … binary), case-insensitive.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([kKmMgGtTpP][iI]?)?[bB]?\s*$"}
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Globs

/// A compiled glob (see the module documentation for the syntax and how it matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more components.
    AnyComponents,
    /// One component.
    Component(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`
    Any,
    /// `?`
    One,
    /// `[...]`: inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    pub fn new(source: &str) -> Result<Glob, String> {
        let body = source.strip_prefix('/').unwrap_or(source);
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        for part in body.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err("`..` never matches: paths are inside the worktree".to_owned()),
                "**" => {
                    if segments.last() != Some(&Segment::AnyComponents) {
                        segments.push(Segment::AnyComponents);
                    }
                }
                _ => segments.push(Segment::Component(parse_component(part)?)),
            }
        }
        if segments.is_empty() {
            return Err("empty glob".to_owned());
        }
        Ok(Glob {
            source: source.to_owned(),
            segments,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the glob matches `path` (relative, `/`-separated) or one of its ancestors.
    pub fn matches(&self, path: &str) -> bool {
        self.match_components(&components(path), false)
    }

    /// Whether the glob matches `path` or one of its ancestors, or could match a path below it.
    pub fn matches_or_contains_match(&self, path: &str) -> bool {
        self.match_components(&components(path), true)
    }

    /// `done[i][j]`: segments `i..` match components `j..` (with everything after a full match
    /// below it, and, with `below`, a path that ends before the glob does counting as a match).
    /// Quadratic, never exponential, in the number of `**`.
    fn match_components(&self, path: &[&str], below: bool) -> bool {
        let (p, n) = (self.segments.len(), path.len());
        let mut next = vec![true; n + 1]; // row i = p: the glob is used up
        for i in (0..p).rev() {
            let mut row = vec![false; n + 1];
            for j in (0..=n).rev() {
                row[j] = match &self.segments[i] {
                    Segment::AnyComponents => next[j] || (j < n && row[j + 1]),
                    Segment::Component(tokens) => {
                        if j == n {
                            below
                        } else {
                            next[j + 1] && match_tokens(tokens, path[j])
                        }
                    }
                };
            }
            next = row;
        }
        next[0]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_component(part: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' => {
                if tokens.last() == Some(&Token::Any) {
                    continue;
                }
                Token::Any
            }
            '?' => Token::One,
            '\\' => Token::Char(chars.next().ok_or("a `\\` at the end of a component escapes nothing")?),
            '[' => {
                let negated = chars.next_if(|&c| c == '!' || c == '^').is_some();
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = match chars.next() {
                        None => return Err("unclosed `[`".to_owned()),
                        Some(']') if !first => break,
                        Some('\\') => chars.next().ok_or("unclosed `[`")?,
                        Some(c) => c,
                    };
                    first = false;
                    let hi = if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        match ahead.next() {
                            Some(']') | None => c, // a trailing `-` is literal
                            Some(h) => {
                                chars.next();
                                chars.next();
                                let h = if h == '\\' {
                                    chars.next().ok_or("unclosed `[`")?
                                } else {
                                    h
                                };
                                if h < c {
                                    return Err(format!("range `{c}-{h}` is backwards"));
                                }
                                h
                            }
                        }
                    } else {
                        c
                    };
                    ranges.push((c, hi));
                }
                Token::Class { negated, ranges }
            }
            c => Token::Char(c),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Wildcard matching with one backtrack point (enough: `*` is the only variable-width token).
fn match_tokens(tokens: &[Token], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut c) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while c < name.len() {
        match tokens.get(t) {
            Some(Token::Any) => {
                star = Some((t, c));
                t += 1;
                continue;
            }
            Some(tok) if single_matches(tok, name[c]) => {
                t += 1;
                c += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sc)) => {
                t = st + 1;
                c = sc + 1;
                star = Some((st, sc + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Any)
}

fn single_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Char(x) => *x == c,
        Token::One => true,
        Token::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated,
        Token::Any => false,
    }
}

/// The components of a relative `/`-separated path (empty and `.` components dropped).
fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

// ---------------------------------------------------------------------------------------------
// Facts and violations

/// What a path is, as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FactKind {
    File,
    Dir,
    /// A symbolic link; `escapes`: its target resolves outside the worktree (a dangling target
    /// judged lexically).
    Symlink {
        target: String,
        escapes: bool,
    },
    /// The path does not exist (it was deleted).
    Missing,
    /// Anything else (a FIFO, a socket, a device), or an entry that could not be examined.
    Other,
}

/// What the engine found about one changed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFacts {
    /// Relative to the worktree root, `/`-separated.
    pub path: String,
    pub kind: FactKind,
    /// The entry's size in bytes (not following a symlink).
    pub size: u64,
    /// A regular file with an exec bit set.
    pub executable: bool,
    /// Whether it was executable in the last good checkpoint; `None`: it was not there.
    pub was_executable: Option<bool>,
    /// Hard links to the entry.
    pub nlink: u64,
    /// The entry itself lies outside the worktree (its parent directories lead out through a
    /// symlink, or the path is absolute or contains `..`).
    pub escapes: bool,
}

impl PathFacts {
    /// Facts with nothing remarkable: size 0, not executable, new, one link, inside.
    pub fn new(path: impl Into<String>, kind: FactKind) -> PathFacts {
        PathFacts {
            path: path.into(),
            kind,
            size: 0,
            executable: false,
            was_executable: None,
            nlink: 1,
            escapes: false,
        }
    }
}

/// A rule a change broke. Serialized with a `rule` tag holding [`Rule::id`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// The path is (or is under) a `.git` entry — the worktree's own `.git` file included.
    GitMetadata,
    /// The path lies outside the worktree.
    OutsideWorktree,
    /// A symlink whose target resolves outside the worktree.
    SymlinkEscape,
    /// A regular file with more than one hard link.
    Hardlink,
    /// The path matches a `forbidden` glob.
    Forbidden { glob: String },
    /// `allowed` is set and no glob in it matches the path.
    NotAllowed,
    /// A new executable file, or a file that became executable.
    NewExecutable,
    /// A file larger than `max_file_size` (bytes).
    FileTooLarge { size: u64, limit: u64 },
    /// The worktree takes more than `disk_quota` (bytes).
    QuotaExceeded { used: u64, quota: u64 },
}

impl Rule {
    /// The stable id (also the serialized tag).
    pub fn id(&self) -> &'static str {
        match self {
            Rule::GitMetadata => "git_metadata",
            Rule::OutsideWorktree => "outside_worktree",
            Rule::SymlinkEscape => "symlink_escape",
            Rule::Hardlink => "hardlink",
            Rule::Forbidden { .. } => "forbidden",
            Rule::NotAllowed => "not_allowed",
            Rule::NewExecutable => "new_executable",
            Rule::FileTooLarge { .. } => "file_too_large",
            Rule::QuotaExceeded { .. } => "quota_exceeded",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::GitMetadata => f.write_str("changes git metadata (.git)"),
            Rule::OutsideWorktree => f.write_str("lies outside the worktree"),
            Rule::SymlinkEscape => f.write_str("is a symlink to a target outside the worktree"),
            Rule::Hardlink => f.write_str("is a hard link to a file with other names"),
            Rule::Forbidden { glob } => write!(f, "matches the forbidden glob `{glob}`"),
            Rule::NotAllowed => f.write_str("is outside the allowed paths"),
            Rule::NewExecutable => f.write_str("is a new executable file"),
            Rule::FileTooLarge { size, limit } => write!(
                f,
                "is {} ({size} bytes), over the {} file size limit",
                ByteSize(*size),
                ByteSize(*limit)
            ),
            Rule::QuotaExceeded { used, quota } => write!(
                f,
                "the worktree takes {} ({used} bytes), over the {} disk quota",
                ByteSize(*used),
                ByteSize(*quota)
            ),
        }
    }
}

/// The path [`Rule::QuotaExceeded`] is reported against: the worktree as a whole.
pub const WORKTREE_PATH: &str = ".";

/// One broken rule at one path (the worktree as a whole, `.`, for the quota).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Violation {
    pub path: String,
    #[serde(flatten)]
    pub rule: Rule,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path == WORKTREE_PATH {
            write!(f, "{}", self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled policy

/// A [`PolicyDef`] with its globs compiled and defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<Glob>,
    forbidden: Vec<Glob>,
    max_file_size: Option<u64>,
    disk_quota: Option<u64>,
    allow_executables: bool,
    on_violation: OnViolation,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed: Vec::new(),
            forbidden: Vec::new(),
            max_file_size: None,
            disk_quota: None,
            allow_executables: false,
            on_violation: OnViolation::Flag,
        }
    }
}

impl TryFrom<&PolicyDef> for Policy {
    type Error = Vec<String>;
    fn try_from(def: &PolicyDef) -> Result<Self, Self::Error> {
        Policy::new(def)
    }
}

impl Policy {
    /// Compile `def`; the errors name every bad glob (`allowed[1]: "src/[a": unclosed `[``).
    pub fn new(def: &PolicyDef) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let mut compile = |list: &str, globs: &[String]| -> Vec<Glob> {
            let mut out = Vec::new();
            for (i, g) in globs.iter().enumerate() {
                match Glob::new(g) {
                    Ok(g) => out.push(g),
                    Err(e) => problems.push(format!("policy.{list}[{i}]: {g:?}: {e}")),
                }
            }
            out
        };
        let allowed = compile("allowed", &def.allowed);
        let forbidden = compile("forbidden", &def.forbidden);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policy {
            allowed,
            forbidden,
            max_file_size: def.max_file_size.map(ByteSize::bytes),
            disk_quota: def.disk_quota.map(ByteSize::bytes),
            allow_executables: def.allow_executables.unwrap_or(false),
            on_violation: def.on_violation.unwrap_or_default(),
        })
    }

    pub fn on_violation(&self) -> OnViolation {
        self.on_violation
    }

    /// The disk quota in bytes, if any (no need to measure the worktree without one).
    pub fn disk_quota(&self) -> Option<u64> {
        self.disk_quota
    }

    pub fn max_file_size(&self) -> Option<u64> {
        self.max_file_size
    }

    /// Every violation among `facts`, in their order, then the quota against `usage` (the
    /// worktree's disk usage in bytes, when measured).
    ///
    /// Per path: `.git` anywhere in it is [`Rule::GitMetadata`] and nothing else; then an entry
    /// outside the worktree is [`Rule::OutsideWorktree`] and nothing else; otherwise every rule
    /// that applies is reported (a symlink leading out, a hard link, the first matching
    /// forbidden glob, not allowed, a new executable, too large). A deleted path can only be
    /// `git_metadata`, `forbidden` or `not_allowed`. A directory (or a deleted path, which may
    /// have been one) is allowed when an allowed glob could match something below it.
    pub fn evaluate(&self, facts: &[PathFacts], usage: Option<u64>) -> Vec<Violation> {
        let mut out = Vec::new();
        for f in facts {
            let mut flag = |rule| {
                out.push(Violation {
                    path: f.path.clone(),
                    rule,
                })
            };
            let comps = components(&f.path);
            if is_git_metadata(&f.path) {
                flag(Rule::GitMetadata);
                continue;
            }
            let missing = f.kind == FactKind::Missing;
            if !missing {
                if f.escapes || f.path.starts_with('/') || comps.contains(&"..") {
                    flag(Rule::OutsideWorktree);
                    continue;
                }
                if let FactKind::Symlink { escapes: true, .. } = f.kind {
                    flag(Rule::SymlinkEscape);
                }
                if f.kind == FactKind::File && f.nlink > 1 {
                    flag(Rule::Hardlink);
                }
            }
            if let Some(g) = self.forbidden.iter().find(|g| g.match_components(&comps, false)) {
                flag(Rule::Forbidden { glob: g.source.clone() });
            }
            let dir_like = matches!(f.kind, FactKind::Dir | FactKind::Missing);
            if !self.allowed.is_empty() && !self.allowed.iter().any(|g| g.match_components(&comps, dir_like)) {
                flag(Rule::NotAllowed);
            }
            if f.kind == FactKind::File {
                if f.executable && !self.allow_executables && f.was_executable != Some(true) {
                    flag(Rule::NewExecutable);
                }
                if let Some(limit) = self.max_file_size.filter(|&limit| f.size > limit) {
                    flag(Rule::FileTooLarge { size: f.size, limit });
                }
            }
        }
        if let (Some(used), Some(quota)) = (usage, self.disk_quota)
            && used > quota
        {
            out.push(Violation {
                path: WORKTREE_PATH.to_owned(),
                rule: Rule::QuotaExceeded { used, quota },
            });
        }
        out
    }
}

/// Whether a component of `path` is `.git` (ASCII case-insensitively, as git itself refuses
/// `.GIT` in trees).
pub fn is_git_metadata(path: &str) -> bool {
    path.split('/').any(|c| c.eq_ignore_ascii_case(".git"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn glob(s: &str) -> Glob {
        Glob::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn policy(toml_like: PolicyDef) -> Policy {
        Policy::new(&toml_like).unwrap()
    }

    fn file(path: &str) -> PathFacts {
        PathFacts::new(path, FactKind::File)
    }

    fn rules(p: &Policy, facts: &[PathFacts]) -> Vec<(String, &'static str)> {
        p.evaluate(facts, None)
            .into_iter()
            .map(|v| (v.path, v.rule.id()))
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    // --- globs ---------------------------------------------------------------------------

    #[test]
    fn star_stays_within_a_component() {
        let g = glob("*.rs");
        assert!(g.matches("main.rs"));
        assert!(g.matches(".hidden.rs"));
        assert!(!g.matches("src/main.rs"));
        assert!(!g.matches("main.rsx"));
        assert!(glob("src/*").matches("src/a/b/c"), "a match covers everything below it");
        assert!(glob("s*c/*.rs").matches("src/lib.rs"));
        assert!(glob("*").matches("anything/at/all"));
        assert!(glob("a*b*c").matches("aXXbYYbZc"));
        assert!(!glob("a*b*c").matches("aXXbYY"));
        assert!(glob("*a").matches("aaaa"));
        assert!(glob("**x").matches("x"), "`**` inside a component is `*`");
        assert!(!glob("**x").matches("d/x"));
    }

    #[test]
    fn double_star_spans_components() {
        let g = glob("**/*.pem");
        assert!(g.matches("key.pem"));
        assert!(g.matches("a/b/c/key.pem"));
        assert!(!g.matches("a/b/key.pem.txt"));
        let g = glob("src/**/mod.rs");
        assert!(g.matches("src/mod.rs"));
        assert!(g.matches("src/a/b/mod.rs"));
        assert!(!g.matches("lib/a/mod.rs"));
        assert!(glob("**").matches("x/y"));
        assert!(glob("a/**").matches("a"));
        assert!(glob("a/**").matches("a/b/c"));
        assert!(!glob("a/**").matches("ab"));
        assert!(glob("a/**/b/**/c").matches("a/x/b/y/z/c"));
        assert!(glob("a/**/**/b").matches("a/b"));
        assert!(!glob("a/**/b/**/c").matches("a/x/c/y/b"));
    }

    #[test]
    fn question_mark_classes_and_escapes() {
        assert!(glob("?.txt").matches("a.txt"));
        assert!(!glob("?.txt").matches("ab.txt"));
        assert!(glob("[abc].txt").matches("b.txt"));
        assert!(!glob("[abc].txt").matches("d.txt"));
        assert!(glob("[a-c0-9]").matches("7"));
        assert!(glob("[!a-c]").matches("d"));
        assert!(!glob("[^a-c]").matches("b"));
        assert!(glob("[]]").matches("]"));
        assert!(glob("[!]]").matches("a"));
        assert!(glob("[a-]").matches("-"));
        assert!(glob("[-a]").matches("-"));
        assert!(glob(r"\*").matches("*"));
        assert!(!glob(r"\*").matches("x"));
        assert!(glob(r"[\]]").matches("]"));
        assert!(glob("é?").matches("éü"), "characters, not bytes");
    }

    #[test]
    fn anchoring_and_separators() {
        assert!(glob("/src").matches("src/x"));
        assert!(glob("src/").matches("src/x"));
        assert!(glob("./src//lib.rs").matches("src/lib.rs"));
        assert!(glob("src").matches("./src//x"));
        assert!(!glob("src").matches("a/src"));
        assert!(!glob("Src").matches("src"), "case-sensitive");
    }

    #[test]
    fn prefix_matching_for_directories() {
        let g = glob("src/**/*.rs");
        assert!(g.matches_or_contains_match("src"));
        assert!(g.matches_or_contains_match("src/a/b"));
        assert!(!g.matches_or_contains_match("docs"));
        assert!(!g.matches("src"));
        assert!(glob("a/b/c").matches_or_contains_match("a"));
        assert!(!glob("a/b/c").matches_or_contains_match("a/c"));
        assert!(glob("a").matches_or_contains_match(""));
    }

    #[test]
    fn bad_globs() {
        for (g, why) in [
            ("", "empty"),
            ("/", "empty"),
            ("./", "empty"),
            ("[abc", "unclosed"),
            ("a/[", "unclosed"),
            ("[]", "unclosed"),
            ("[z-a]", "backwards"),
            (r"a\", "escapes nothing"),
            ("../x", ".."),
            ("a/../b", ".."),
            ("[a/b]", "unclosed"),
        ] {
            let err = Glob::new(g).expect_err(g);
            assert!(err.contains(why), "{g:?}: {err}");
        }
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let pattern = "**/a/".repeat(30) + "b";
        let path = "a/".repeat(200) + "c";
        let g = glob(&pattern);
        let start = std::time::Instant::now();
        assert!(!g.matches(&path));
        let stars = "*a".repeat(30) + "b";
        assert!(!glob(&stars).matches(&"a".repeat(2000)));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    // --- byte sizes ----------------------------------------------------------------------

    #[test]
    fn byte_sizes_parse() {
        for (s, n) in [
            ("0", 0u64),
            ("1024", 1024),
            (" 12 ", 12),
            ("10B", 10),
            ("512k", 512 << 10),
            ("512K", 524_288),
            ("512kB", 512_000),
            ("512Ki", 524_288),
            ("512KiB", 524_288),
            ("10MB", 10_000_000),
            ("10 mb", 10_000_000),
            ("10MiB", 10 << 20),
            ("1GiB", 1 << 30),
            ("1.5G", 3 << 29),
            ("1.5GiB", 3 << 29),
            ("0.1KiB", 102),
            ("0.0001k", 0),
            ("2T", 2 << 40),
            ("1PiB", 1 << 50),
            ("18446744073709551615", u64::MAX),
            ("1.000000000000000000000000001M", 1 << 20),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)), "{s}");
        }
    }

    #[test]
    fn byte_sizes_refused() {
        for (s, why) in [
            ("", "no number"),
            ("MB", "no number"),
            ("-1", "negative"),
            ("1.", "decimal point"),
            (".5M", "no number"),
            ("10 XB", "unknown unit"),
            ("10 MBs", "unknown unit"),
            ("1 2", "unknown unit"),
            ("18446744073709551616", "too large"),
            ("20000P", "too large"),
            ("99999999999999999999999999999999999999999999", "too large"),
        ] {
            let err = s.parse::<ByteSize>().expect_err(s);
            assert!(err.reason.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn byte_sizes_display() {
        for (n, s) in [
            (0u64, "0 B"),
            (999, "999 B"),
            (1000, "1 kB"),
            (1024, "1 KiB"),
            (512_000, "512 kB"),
            (10_000_000, "10 MB"),
            (1 << 30, "1 GiB"),
            (1_500_000_000, "1.5 GB"),
            (3 << 29, "1.5 GiB"),
            (12_345_678, "12.3 MB"),
            (u64::MAX, "18446.7 PB"),
        ] {
            assert_eq!(ByteSize(n).to_string(), s, "{n}");
        }
    }

    #[test]
    fn byte_sizes_serde() {
        let v: ByteSize = serde_json::from_str("\"1.5k\"").unwrap();
        assert_eq!(v, ByteSize(1536));
        let v: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(v, ByteSize(4096));
        assert_eq!(serde_json::to_string(&ByteSize(1500)).unwrap(), "1500");
        assert!(
            serde_json::from_str::<ByteSize>("-5")
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
        assert!(serde_json::from_str::<ByteSize>("1.5").is_err());
        assert!(
            serde_json::from_str::<ByteSize>("\"lots\"")
                .unwrap_err()
                .to_string()
                .contains("not a size")
        );
    }

    // --- definition ----------------------------------------------------------------------

    #[test]
    fn definition_shape() {
        let def: PolicyDef = serde_json::from_value(serde_json::json!({
            "allowed": ["src/**"],
            "forbidden": ["src/secrets"],
            "max_file_size": "10MB",
            "disk_quota": 1_000_000_000u64,
            "allow_executables": true,
            "on_violation": "revert",
        }))
        .unwrap();
        assert_eq!(def.max_file_size, Some(ByteSize(10_000_000)));
        assert_eq!(def.disk_quota, Some(ByteSize(1_000_000_000)));
        assert_eq!(def.on_violation, Some(OnViolation::Revert));
        let back: PolicyDef = serde_json::from_str(&serde_json::to_string(&def).unwrap()).unwrap();
        assert_eq!(back, def);

        let empty: PolicyDef = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
        let err = serde_json::from_str::<PolicyDef>(r#"{"alowed": []}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<PolicyDef>(r#"{"on_violation": "explode"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let schema = serde_json::to_string(&schemars::schema_for!(PolicyDef)).unwrap();
        assert!(schema.contains("ByteSize"), "{schema}");
    }

    #[test]
    fn merge_layers() {
        let agent = PolicyDef {
            allowed: strs(&["src/**"]),
            forbidden: strs(&["*.pem"]),
            max_file_size: Some(ByteSize(100)),
            on_violation: Some(OnViolation::Stop),
            ..PolicyDef::default()
        };
        let run = PolicyDef {
            forbidden: strs(&["secrets"]),
            disk_quota: Some(ByteSize(5)),
            allow_executables: Some(true),
            on_violation: Some(OnViolation::Flag),
            ..PolicyDef::default()
        };
        let merged = agent.merge(&run);
        assert_eq!(merged.allowed, strs(&["src/**"]));
        assert_eq!(merged.forbidden, strs(&["secrets"]), "lists replace");
        assert_eq!(merged.max_file_size, Some(ByteSize(100)));
        assert_eq!(merged.disk_quota, Some(ByteSize(5)));
        assert_eq!(merged.allow_executables, Some(true));
        assert_eq!(merged.on_violation, Some(OnViolation::Flag));
    }

    #[test]
    fn validate_names_bad_globs() {
        let def = PolicyDef {
            allowed: strs(&["src/**", "src/[a"]),
            forbidden: strs(&["", "ok"]),
            ..PolicyDef::default()
        };
        let problems = def.validate().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("policy.allowed[1]: \"src/[a\": unclosed"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("policy.forbidden[0]: \"\": empty"),
            "{problems:?}"
        );
        assert_eq!(PolicyDef::default().validate(), Ok(()));
    }

    // --- evaluation ----------------------------------------------------------------------

    #[test]
    fn git_metadata_first_and_only() {
        let p = policy(PolicyDef {
            allowed: strs(&["src"]),
            forbidden: strs(&["**"]),
            max_file_size: Some(ByteSize(1)),
            ..PolicyDef::default()
        });
        let mut big = file(".git");
        big.size = 100;
        big.executable = true;
        big.nlink = 3;
        big.escapes = true;
        let facts = [
            big,
            PathFacts::new("sub/.git/config", FactKind::Missing),
            file("a/.GIT"),
            PathFacts::new(".git/hooks", FactKind::Dir),
        ];
        assert_eq!(
            rules(&p, &facts),
            vec![
                (".git".into(), "git_metadata"),
                ("sub/.git/config".into(), "git_metadata"),
                ("a/.GIT".into(), "git_metadata"),
                (".git/hooks".into(), "git_metadata"),
            ]
        );
        // `.gitignore`, `.github` are ordinary.
        assert_eq!(
            rules(&Policy::default(), &[file(".gitignore"), file(".github/x.yml")]),
            vec![]
        );
    }

    #[test]
    fn outside_worktree_stops_other_checks() {
        let p = policy(PolicyDef {
            forbidden: strs(&["**"]),
            ..PolicyDef::default()
        });
        let mut out = file("link/file");
        out.escapes = true;
        out.nlink = 2;
        assert_eq!(rules(&p, &[out]), vec![("link/file".into(), "outside_worktree")]);
        assert_eq!(rules(&p, &[file("../up")]), vec![("../up".into(), "outside_worktree")]);
        assert_eq!(
            rules(&p, &[file("/etc/passwd")]),
            vec![("/etc/passwd".into(), "outside_worktree")]
        );
    }

    #[test]
    fn symlinks_and_hardlinks() {
        let p = Policy::default();
        let esc = PathFacts::new(
            "l",
            FactKind::Symlink {
                target: "/etc".into(),
                escapes: true,
            },
        );
        let inside = PathFacts::new(
            "m",
            FactKind::Symlink {
                target: "src".into(),
                escapes: false,
            },
        );
        let mut hard = file("h");
        hard.nlink = 2;
        let mut hard_dir = PathFacts::new("d", FactKind::Dir);
        hard_dir.nlink = 5;
        let mut link_nlink = PathFacts::new(
            "n",
            FactKind::Symlink {
                target: "x".into(),
                escapes: false,
            },
        );
        link_nlink.nlink = 2;
        assert_eq!(
            rules(&p, &[esc, inside, hard, hard_dir, link_nlink]),
            vec![("l".into(), "symlink_escape"), ("h".into(), "hardlink")]
        );
    }

    #[test]
    fn forbidden_and_allowed() {
        let p = policy(PolicyDef {
            allowed: strs(&["src/**/*.rs", "docs", "Cargo.toml"]),
            forbidden: strs(&["src/secret*", "**/*.pem"]),
            ..PolicyDef::default()
        });
        let facts = [
            file("src/lib.rs"),
            file("src/a/b.rs"),
            file("docs/guide/intro.md"),
            file("Cargo.toml"),
            file("src/notes.txt"),
            file("README.md"),
            file("src/secret.rs"),
            file("docs/key.pem"),
            file("build.pem"),
            PathFacts::new("src", FactKind::Dir),
            PathFacts::new("src/new", FactKind::Dir),
            PathFacts::new("target", FactKind::Dir),
            PathFacts::new("src/old.rs", FactKind::Missing),
            PathFacts::new("src/olddir", FactKind::Missing),
            PathFacts::new("old.txt", FactKind::Missing),
            PathFacts::new("src/secrets.rs", FactKind::Missing),
        ];
        let got = p.evaluate(&facts, None);
        let want = vec![
            Violation {
                path: "src/notes.txt".into(),
                rule: Rule::NotAllowed,
            },
            Violation {
                path: "README.md".into(),
                rule: Rule::NotAllowed,
            },
            Violation {
                path: "src/secret.rs".into(),
                rule: Rule::Forbidden {
                    glob: "src/secret*".into(),
                },
            },
            Violation {
                path: "docs/key.pem".into(),
                rule: Rule::Forbidden {
                    glob: "**/*.pem".into(),
                },
            },
            Violation {
                path: "build.pem".into(),
                rule: Rule::Forbidden {
                    glob: "**/*.pem".into(),
                },
            },
            Violation {
                path: "build.pem".into(),
                rule: Rule::NotAllowed,
            },
            Violation {
                path: "target".into(),
                rule: Rule::NotAllowed,
            },
            Violation {
                path: "old.txt".into(),
                rule: Rule::NotAllowed,
            },
            Violation {
                path: "src/secrets.rs".into(),
                rule: Rule::Forbidden {
                    glob: "src/secret*".into(),
                },
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn executables() {
        let mut new_exe = file("run.sh");
        new_exe.executable = true;
        let mut became = file("tool");
        became.executable = true;
        became.was_executable = Some(false);
        let mut kept = file("configure");
        kept.executable = true;
        kept.was_executable = Some(true);
        let mut dir = PathFacts::new("bin", FactKind::Dir);
        dir.executable = true;
        let facts = [new_exe, became, kept, dir];
        assert_eq!(
            rules(&Policy::default(), &facts),
            vec![("run.sh".into(), "new_executable"), ("tool".into(), "new_executable")]
        );
        let lax = policy(PolicyDef {
            allow_executables: Some(true),
            ..PolicyDef::default()
        });
        assert_eq!(rules(&lax, &facts), vec![]);
    }

    #[test]
    fn sizes_and_quota() {
        let p = policy(PolicyDef {
            max_file_size: Some(ByteSize(1000)),
            disk_quota: Some(ByteSize(10_000)),
            ..PolicyDef::default()
        });
        let mut at = file("at");
        at.size = 1000;
        let mut over = file("over");
        over.size = 1001;
        let mut link = PathFacts::new(
            "link",
            FactKind::Symlink {
                target: "x".repeat(2000),
                escapes: false,
            },
        );
        link.size = 2000;
        let mut dir = PathFacts::new("dir", FactKind::Dir);
        dir.size = 4096;
        let got = p.evaluate(&[at, over, link, dir], Some(10_001));
        assert_eq!(
            got,
            vec![
                Violation {
                    path: "over".into(),
                    rule: Rule::FileTooLarge {
                        size: 1001,
                        limit: 1000
                    }
                },
                Violation {
                    path: ".".into(),
                    rule: Rule::QuotaExceeded {
                        used: 10_001,
                        quota: 10_000
                    }
                },
            ]
        );
        assert_eq!(p.evaluate(&[], Some(10_000)), vec![]);
        assert_eq!(p.evaluate(&[], None), vec![]);
        assert_eq!(Policy::default().evaluate(&[], Some(u64::MAX)), vec![]);
    }

    #[test]
    fn deletions_only_trip_path_rules() {
        let p = policy(PolicyDef {
            max_file_size: Some(ByteSize(0)),
            forbidden: strs(&["keep"]),
            ..PolicyDef::default()
        });
        let mut gone = PathFacts::new("gone", FactKind::Missing);
        gone.escapes = true;
        gone.executable = true;
        gone.nlink = 2;
        gone.size = 5;
        let kept = PathFacts::new("keep/x", FactKind::Missing);
        assert_eq!(rules(&p, &[gone, kept]), vec![("keep/x".into(), "forbidden")]);
    }

    #[test]
    fn several_rules_at_once() {
        let p = policy(PolicyDef {
            allowed: strs(&["src"]),
            forbidden: strs(&["bin"]),
            max_file_size: Some(ByteSize(1)),
            ..PolicyDef::default()
        });
        let mut f = file("bin/tool");
        f.executable = true;
        f.size = 2;
        f.nlink = 2;
        assert_eq!(
            rules(&p, &[f]),
            vec![
                ("bin/tool".into(), "hardlink"),
                ("bin/tool".into(), "forbidden"),
                ("bin/tool".into(), "not_allowed"),
                ("bin/tool".into(), "new_executable"),
                ("bin/tool".into(), "file_too_large"),
            ]
        );
    }

    #[test]
    fn violation_json_and_display() {
        let v = Violation {
            path: "big".into(),
            rule: Rule::FileTooLarge {
                size: 12_345_678,
                limit: 10_000_000,
            },
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"path": "big", "rule": "file_too_large", "size": 12_345_678, "limit": 10_000_000})
        );
        assert_eq!(serde_json::from_value::<Violation>(json).unwrap(), v);
        assert_eq!(
            v.to_string(),
            "big: is 12.3 MB (12345678 bytes), over the 10 MB file size limit"
        );
        let q = Violation {
            path: ".".into(),
            rule: Rule::QuotaExceeded {
                used: 2048,
                quota: 1024,
            },
        };
        assert_eq!(
            q.to_string(),
            "the worktree takes 2 KiB (2048 bytes), over the 1 KiB disk quota"
        );
        let g = Violation {
            path: ".git".into(),
            rule: Rule::GitMetadata,
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"path":".git","rule":"git_metadata"}"#
        );
        let f = Violation {
            path: "k".into(),
            rule: Rule::Forbidden { glob: "k*".into() },
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"path":"k","rule":"forbidden","glob":"k*"}"#
        );
        let schema = serde_json::to_string(&schemars::schema_for!(Violation)).unwrap();
        assert!(schema.contains("quota_exceeded"), "{schema}");
    }

    #[test]
    fn rule_ids_are_the_serialized_tags() {
        for rule in [
            Rule::GitMetadata,
            Rule::OutsideWorktree,
            Rule::SymlinkEscape,
            Rule::Hardlink,
            Rule::Forbidden { glob: "g".into() },
            Rule::NotAllowed,
            Rule::NewExecutable,
            Rule::FileTooLarge { size: 2, limit: 1 },
            Rule::QuotaExceeded { used: 2, quota: 1 },
        ] {
            let json = serde_json::to_value(&rule).unwrap();
            assert_eq!(json["rule"], rule.id());
            assert!(!rule.to_string().is_empty());
        }
    }

    // --- properties ----------------------------------------------------------------------

    fn arb_kind() -> impl Strategy<Value = FactKind> {
        prop_oneof![
            Just(FactKind::File),
            Just(FactKind::Dir),
            Just(FactKind::Missing),
            Just(FactKind::Other),
            (".{0,12}", any::<bool>()).prop_map(|(target, escapes)| FactKind::Symlink { target, escapes }),
        ]
    }

    fn arb_component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".git".to_owned()),
            Just("..".to_owned()),
            Just("src".to_owned()),
            "[a-z.*?\\[\\]!-]{0,4}",
            "\\PC{1,5}",
        ]
    }

    fn arb_path() -> impl Strategy<Value = String> {
        (any::<bool>(), prop::collection::vec(arb_component(), 0..6))
            .prop_map(|(abs, comps)| format!("{}{}", if abs { "/" } else { "" }, comps.join("/")))
    }

    fn arb_facts() -> impl Strategy<Value = PathFacts> {
        (
            arb_path(),
            arb_kind(),
            any::<u64>(),
            any::<bool>(),
            any::<Option<bool>>(),
            0u64..4,
            any::<bool>(),
        )
            .prop_map(
                |(path, kind, size, executable, was_executable, nlink, escapes)| PathFacts {
                    path,
                    kind,
                    size,
                    executable,
                    was_executable,
                    nlink,
                    escapes,
                },
            )
    }

    fn arb_def() -> impl Strategy<Value = PolicyDef> {
        (
            prop::collection::vec(arb_path(), 0..3),
            prop::collection::vec(arb_path(), 0..3),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<bool>>(),
            prop::option::of(prop_oneof![
                Just(OnViolation::Flag),
                Just(OnViolation::Revert),
                Just(OnViolation::Stop)
            ]),
        )
            .prop_map(|(allowed, forbidden, max, quota, exe, on)| PolicyDef {
                allowed,
                forbidden,
                max_file_size: max.map(ByteSize),
                disk_quota: quota.map(ByteSize),
                allow_executables: exe,
                on_violation: on,
            })
    }

    proptest! {
        #[test]
        fn evaluate_never_panics(def in arb_def(), facts in prop::collection::vec(arb_facts(), 0..8), usage in any::<Option<u64>>()) {
            if let Ok(p) = Policy::new(&def) {
                let vs = p.evaluate(&facts, usage);
                for v in &vs {
                    prop_assert!(v.path == "." || facts.iter().any(|f| f.path == v.path));
                    let _ = v.to_string();
                }
            }
        }

        #[test]
        fn git_anywhere_is_flagged_alone(prefix in prop::collection::vec(arb_component(), 0..3), suffix in prop::collection::vec(arb_component(), 0..3), dot_git in prop_oneof![Just(".git"), Just(".GIT"), Just(".Git")], mut facts in arb_facts(), def in arb_def()) {
            let mut comps = prefix;
            comps.push(dot_git.to_owned());
            comps.extend(suffix);
            facts.path = comps.join("/");
            let p = Policy::new(&def).unwrap_or_default();
            let vs = p.evaluate(std::slice::from_ref(&facts), None);
            prop_assert_eq!(vs, vec![Violation { path: facts.path.clone(), rule: Rule::GitMetadata }]);
        }

        #[test]
        fn merge_with_empty_is_identity(def in arb_def()) {
            prop_assert_eq!(def.merge(&PolicyDef::default()), def.clone());
            prop_assert_eq!(PolicyDef::default().merge(&def), def);
        }

        #[test]
        fn merge_is_associative(a in arb_def(), b in arb_def(), c in arb_def()) {
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        }

        #[test]
        fn byte_sizes_round_trip(n in any::<u64>()) {
            prop_assert_eq!(n.to_string().parse::<ByteSize>(), Ok(ByteSize(n)));
            prop_assert_eq!(format!("{n} B").parse::<ByteSize>(), Ok(ByteSize(n)));
            let json = serde_json::to_string(&ByteSize(n)).unwrap();
            prop_assert_eq!(serde_json::from_str::<ByteSize>(&json).unwrap(), ByteSize(n));
            // Display is exact when it shows no more than one decimal of an exact unit.
            let shown = ByteSize(n).to_string();
            let back = shown.parse::<ByteSize>().unwrap();
            prop_assert!(back.0 <= n, "{} -> {}", shown, back.0);
        }

        #[test]
        fn literal_globs_match_themselves_and_below(comps in prop::collection::vec("[a-z0-9_.-]{1,6}", 1..5), below in prop::collection::vec("[a-z]{1,4}", 0..3)) {
            prop_assume!(comps.iter().all(|c| c != "." && c != ".."));
            let path = comps.join("/");
            let g = Glob::new(&path).unwrap();
            prop_assert!(g.matches(&path));
            let mut longer = comps.clone();
            longer.extend(below);
            prop_assert!(g.matches(&longer.join("/")));
            prop_assert!(g.matches_or_contains_match(&comps[..comps.len() - 1].join("/")));
            let star = Glob::new(&comps.iter().map(|_| "*").collect::<Vec<_>>().join("/")).unwrap();
            prop_assert!(star.matches(&path));
            prop_assert!(Glob::new("**").unwrap().matches(&path));
        }

        #[test]
        fn glob_parsing_never_panics(s in "\\PC{0,20}", path in arb_path()) {
            if let Ok(g) = Glob::new(&s) {
                let _ = g.matches(&path);
                let _ = g.matches_or_contains_match(&path);
            }
        }
    }
}
