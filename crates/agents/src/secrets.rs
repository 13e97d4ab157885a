//! Resolving secret values by name. Secrets (API keys, tokens) are asked for by name
//! (`--secret NAME`, `secret_env = [...]`); their values go only into the agent's environment,
//! never into agentctl's records, so this module hands them out wrapped in [`SecretValue`],
//! whose `Debug` and `Display` print `[redacted]`.
//!
//! A name is looked up, first match wins, in:
//!
//! 1. its configured source, from the `[secrets]` table of the user's config file
//!    ([`parse_config`], [`load_config`]): `NAME = "env:OTHER_VAR"`, `NAME = "file:/path"` (the
//!    file's content, one trailing newline stripped) or `NAME = "cmd:op read op://vault/item/f"`
//!    (run by `/bin/sh -c` with the caller's environment, outside any sandbox; its standard
//!    output, one trailing newline stripped). Literal values are refused: secrets belong in the
//!    secrets file, not in config files. A configured source is authoritative: when it fails,
//!    the later places are not tried;
//! 2. the caller's environment (given as a map, so the daemon can pass its client's);
//! 3. the repository's `.env` (given as parsed pairs);
//! 4. the user's secrets file, dotenv format ([`default_secrets_file`]), read only if it is a
//!    regular file owned by the current user that neither group nor others may access.
//!
//! An empty value counts as unset. The secrets file's values are taken literally: unlike a
//! repository's `.env`, `$VAR` is not expanded.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a `cmd:` source may run before its process group is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest secret value read from a file, a command or the secrets file.
const MAX_VALUE_BYTES: u64 = 1024 * 1024;

/// How much of a command's standard error is kept (its end), for the error message.
const MAX_STDERR_BYTES: usize = 64 * 1024;

/// Whether `name` can name a secret: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The default secrets file: `secrets.env` in the user's config directory
/// (`AGENTCTL_CONFIG_DIR`, `$XDG_CONFIG_HOME/agentctl` or `~/.config/agentctl`). `None` without
/// a home directory.
pub fn default_secrets_file() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("AGENTCTL_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|x| x.join("agentctl")))
        .or_else(|| var("HOME").map(|h| h.join(".config/agentctl")))?;
    Some(dir.join("secrets.env"))
}

/// A secret's value. Printing it (`{}` or `{:?}`) shows `[redacted]`; [`expose`](Self::expose)
/// is the only way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(value)
    }

    /// The value itself: for the agent's environment and the redactor, nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret's value was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The caller's environment, under the secret's own name.
    Env,
    /// The caller's environment, under the variable a configured `env:` source names.
    EnvVar(String),
    /// The repository's `.env`.
    DotEnv,
    /// The user's secrets file.
    SecretsFile(PathBuf),
    /// A configured `cmd:` source.
    Cmd,
    /// A configured `file:` source.
    File(PathBuf),
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Env => f.write_str("env"),
            SecretOrigin::EnvVar(var) => write!(f, "env:{var}"),
            SecretOrigin::DotEnv => f.write_str(".env"),
            SecretOrigin::SecretsFile(_) => f.write_str("secrets file"),
            SecretOrigin::Cmd => f.write_str("cmd"),
            SecretOrigin::File(_) => f.write_str("file"),
        }
    }
}

/// One resolved secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSecret {
    pub name: String,
    pub value: SecretValue,
    pub from: SecretOrigin,
}

/// A configured source, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `env:VAR`: the caller's environment variable `VAR`.
    Env(String),
    /// `file:PATH`: an absolute path, or `~/...` (the caller's `HOME`).
    File(String),
    /// `cmd:COMMAND`: run with `/bin/sh -c`.
    Cmd(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "env:{v}"),
            SecretSource::File(p) => write!(f, "file:{p}"),
            SecretSource::Cmd(c) => write!(f, "cmd:{c}"),
        }
    }
}

/// A secret that could not be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSecret {
    pub name: String,
    /// The variable its configured `env:` source names, when it has one.
    pub configured_env: Option<String>,
}

/// Why secrets could not be resolved. No message ever contains a secret's value (nor a
/// command's standard output, nor a line of a file holding secrets).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets found nowhere.
    #[error("{}", missing_message(missing, searched))]
    Missing {
        missing: Vec<MissingSecret>,
        /// Where unconfigured names were looked for, in order.
        searched: Vec<String>,
    },
    /// The secrets file may be read or replaced by someone else: it was not read.
    #[error(
        "secrets file {} is insecure: {problem} (mode {mode:04o}); it was not read. It must be a regular file you own that only you can access: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    SecretsFileInsecure { path: PathBuf, mode: u32, problem: String },
    /// The secrets file could not be read or parsed.
    #[error("secrets file {}: {message}", path.display())]
    SecretsFile { path: PathBuf, message: String },
    /// A configured source failed.
    #[error("secret {name} (from `{source_spec}`): {message}")]
    SourceFailed {
        name: String,
        source_spec: String,
        message: String,
    },
    /// A configured source is not one of `env:`, `file:`, `cmd:`, or is malformed.
    #[error("{name}: {message}")]
    InvalidSource { name: String, message: String },
    /// A `[secrets]` table (or the file holding it) is unusable.
    #[error("{}{message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Config { path: Option<PathBuf>, message: String },
    /// A requested name is not a valid secret name.
    #[error("`{0}` is not a valid secret name (letters, digits and `_`, not starting with a digit)")]
    InvalidName(String),
    /// A value that cannot be put in an environment.
    #[error("secret {name} (from {from}): {problem}")]
    InvalidValue {
        name: String,
        from: SecretOrigin,
        problem: String,
    },
}

fn missing_message(missing: &[MissingSecret], searched: &[String]) -> String {
    let plain: Vec<&str> = missing
        .iter()
        .filter(|m| m.configured_env.is_none())
        .map(|m| m.name.as_str())
        .collect();
    let mut parts = Vec::new();
    match plain.as_slice() {
        [] => {}
        [one] => parts.push(format!("secret {one} is not set (looked in {})", searched.join(", "))),
        many => parts.push(format!(
            "secrets {} are not set (looked in {})",
            many.join(", "),
            searched.join(", ")
        )),
    }
    for m in missing {
        if let Some(var) = &m.configured_env {
            parts.push(format!(
                "secret {} is configured as `env:{var}`, but {var} is not set in the environment",
                m.name
            ));
        }
    }
    parts.join("; ")
}

/// Parses one configured source (`env:VAR`, `file:PATH`, `cmd:COMMAND`) for secret `name`.
/// Anything else is refused without echoing it (it may be a pasted secret).
pub fn parse_source(name: &str, spec: &str) -> Result<SecretSource, SecretError> {
    let invalid = |message: &str| SecretError::InvalidSource {
        name: name.to_owned(),
        message: message.to_owned(),
    };
    if !is_valid_secret_name(name) {
        return Err(invalid(
            "not a valid secret name (letters, digits and `_`, not starting with a digit)",
        ));
    }
    if let Some(var) = spec.strip_prefix("env:") {
        if !is_valid_secret_name(var) {
            return Err(invalid(
                "`env:` must name an environment variable (letters, digits and `_`, not starting with a digit)",
            ));
        }
        Ok(SecretSource::Env(var.to_owned()))
    } else if let Some(path) = spec.strip_prefix("file:") {
        if !(path.starts_with('/') || path.starts_with("~/")) {
            return Err(invalid("`file:` needs an absolute path (or one starting with `~/`)"));
        }
        Ok(SecretSource::File(path.to_owned()))
    } else if let Some(cmd) = spec.strip_prefix("cmd:") {
        if cmd.trim().is_empty() {
            return Err(invalid("`cmd:` needs a command"));
        }
        Ok(SecretSource::Cmd(cmd.to_owned()))
    } else {
        Err(invalid(
            "a source is `env:VAR`, `file:PATH` or `cmd:COMMAND`; literal values are refused \
             (secrets do not belong in config files: put the value in the secrets file, \
             `secrets.env` in the config directory, mode 0600)",
        ))
    }
}

/// The `[secrets]` table of a TOML document (the user's config file), each source checked with
/// [`parse_source`]. Other keys of the document are ignored; no table is an empty map.
pub fn parse_config(toml_text: &str) -> Result<BTreeMap<String, String>, SecretError> {
    let config = |message: String| SecretError::Config { path: None, message };
    // Not the error's Display: it quotes the offending line, which may hold a pasted secret.
    let doc: toml::Table = toml::from_str(toml_text).map_err(|e| config(toml_error(toml_text, &e)))?;
    let Some(table) = doc.get("secrets") else {
        return Ok(BTreeMap::new());
    };
    let Some(table) = table.as_table() else {
        return Err(config("`secrets` must be a table: `[secrets]`".to_owned()));
    };
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let Some(spec) = value.as_str() else {
            return Err(config(format!(
                "[secrets] {name}: must be a string: \"env:VAR\", \"file:PATH\" or \"cmd:COMMAND\""
            )));
        };
        parse_source(name, spec).map_err(|e| config(format!("[secrets] {e}")))?;
        out.insert(name.clone(), spec.to_owned());
    }
    Ok(out)
}

/// [`parse_config`] of the file at `path`; a missing file is an empty table.
pub fn load_config(path: &Path) -> Result<BTreeMap<String, String>, SecretError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(SecretError::Config {
                path: Some(path.to_owned()),
                message: format!("cannot read: {e}"),
            });
        }
    };
    parse_config(&text).map_err(|e| match e {
        SecretError::Config { message, .. } => SecretError::Config {
            path: Some(path.to_owned()),
            message,
        },
        other => other,
    })
}

fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Everything secrets are resolved from. See the [module docs](self) for the order.
#[derive(Clone, Debug, Default)]
pub struct SecretSources {
    /// Configured sources by name (`env:VAR`, `file:PATH`, `cmd:COMMAND`), from [`load_config`].
    pub configured: BTreeMap<String, String>,
    /// The caller's environment. Also the environment `cmd:` sources run with.
    pub caller_env: BTreeMap<String, String>,
    /// The repository's `.env`, in file order (a later pair of a name wins).
    pub dotenv: Vec<(String, String)>,
    /// The user's secrets file (a missing file is no file).
    pub secrets_file: Option<PathBuf>,
}

impl SecretSources {
    /// Resolves every name (duplicates once, in first-seen order). All missing names are
    /// reported together; a configured source that fails or an insecure secrets file is an
    /// error of its own.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<ResolvedSecret>, SecretError> {
        self.resolve_with_timeout(names, CMD_TIMEOUT)
    }

    /// [`resolve`](Self::resolve) with another timeout for `cmd:` sources.
    pub fn resolve_with_timeout(
        &self,
        names: &[String],
        cmd_timeout: Duration,
    ) -> Result<Vec<ResolvedSecret>, SecretError> {
        let (found, missing) = self.lookup(names, cmd_timeout)?;
        if missing.is_empty() {
            Ok(found)
        } else {
            Err(SecretError::Missing {
                missing,
                searched: self.searched(),
            })
        }
    }

    /// The names that can be found, and the names of the ones that cannot (optional secrets,
    /// such as an agent's `secret_env`). A configured source that fails is still an error.
    pub fn resolve_available(&self, names: &[String]) -> Result<(Vec<ResolvedSecret>, Vec<String>), SecretError> {
        let (found, missing) = self.lookup(names, CMD_TIMEOUT)?;
        Ok((found, missing.into_iter().map(|m| m.name).collect()))
    }

    fn lookup(
        &self,
        names: &[String],
        cmd_timeout: Duration,
    ) -> Result<(Vec<ResolvedSecret>, Vec<MissingSecret>), SecretError> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let mut file: Option<BTreeMap<String, String>> = None;
        let mut seen = Vec::new();
        for name in names {
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            if !is_valid_secret_name(name) {
                return Err(SecretError::InvalidName(name.clone()));
            }
            if let Some(spec) = self.configured.get(name) {
                match self.configured_value(name, spec, cmd_timeout)? {
                    Some((value, from)) => found.push(checked(name, value, from)?),
                    None => missing.push(MissingSecret {
                        name: name.clone(),
                        configured_env: match parse_source(name, spec)? {
                            SecretSource::Env(var) => Some(var),
                            _ => None,
                        },
                    }),
                }
                continue;
            }
            let value = if let Some(v) = nonempty(self.caller_env.get(name)) {
                Some((v.clone(), SecretOrigin::Env))
            } else if let Some(v) = nonempty(self.dotenv.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)) {
                Some((v.clone(), SecretOrigin::DotEnv))
            } else if let Some(path) = &self.secrets_file {
                if file.is_none() {
                    file = Some(read_secrets_file(path)?.unwrap_or_default());
                }
                nonempty(file.as_ref().and_then(|f| f.get(name)))
                    .map(|v| (v.clone(), SecretOrigin::SecretsFile(path.clone())))
            } else {
                None
            };
            match value {
                Some((value, from)) => found.push(checked(name, value, from)?),
                None => missing.push(MissingSecret {
                    name: name.clone(),
                    configured_env: None,
                }),
            }
        }
        Ok((found, missing))
    }

    /// The value of a configured source; `None` when an `env:` source's variable is unset.
    fn configured_value(
        &self,
        name: &str,
        spec: &str,
        cmd_timeout: Duration,
    ) -> Result<Option<(String, SecretOrigin)>, SecretError> {
        let failed = |message: String| SecretError::SourceFailed {
            name: name.to_owned(),
            source_spec: spec.to_owned(),
            message,
        };
        match parse_source(name, spec)? {
            SecretSource::Env(var) => {
                Ok(nonempty(self.caller_env.get(&var)).map(|v| (v.clone(), SecretOrigin::EnvVar(var))))
            }
            SecretSource::File(path) => {
                let path = match path.strip_prefix("~/") {
                    Some(rest) => match nonempty(self.caller_env.get("HOME")) {
                        Some(home) => Path::new(home).join(rest),
                        None => return Err(failed("cannot expand `~`: HOME is not set".to_owned())),
                    },
                    None => PathBuf::from(path),
                };
                let value = read_value_file(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
                Ok(Some((value, SecretOrigin::File(path))))
            }
            SecretSource::Cmd(cmd) => {
                let value = run_command(&cmd, &self.caller_env, cmd_timeout).map_err(failed)?;
                Ok(Some((value, SecretOrigin::Cmd)))
            }
        }
    }

    fn searched(&self) -> Vec<String> {
        let mut places = vec!["the environment".to_owned(), "the repository's .env".to_owned()];
        match &self.secrets_file {
            Some(path) if path.exists() => places.push(format!("the secrets file {}", path.display())),
            Some(path) => places.push(format!("the secrets file {}, which does not exist", path.display())),
            None => places.push("no secrets file".to_owned()),
        }
        places
    }
}

fn nonempty(value: Option<&String>) -> Option<&String> {
    value.filter(|v| !v.is_empty())
}

fn checked(name: &str, value: String, from: SecretOrigin) -> Result<ResolvedSecret, SecretError> {
    if value.contains('\0') {
        return Err(SecretError::InvalidValue {
            name: name.to_owned(),
            from,
            problem: "the value contains a NUL byte, which an environment variable cannot hold".to_owned(),
        });
    }
    Ok(ResolvedSecret {
        name: name.to_owned(),
        value: SecretValue(value),
        from,
    })
}

/// Strips one trailing newline (`\n` or `\r\n`).
fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// A `file:` source: the whole file, one trailing newline stripped.
fn read_value_file(path: &Path) -> Result<String, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_VALUE_BYTES {
        return Err(format!("larger than {MAX_VALUE_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "the content is not UTF-8".to_owned())?;
    let value = strip_newline(text);
    if value.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(value)
}

/// Reads the secrets file if it exists (`None` if not), refusing one that others could read or
/// replace. Later definitions of a name win.
fn read_secrets_file(path: &Path) -> Result<Option<BTreeMap<String, String>>, SecretError> {
    let io_err = |what: &str, e: io::Error| SecretError::SecretsFile {
        path: path.to_owned(),
        message: format!("cannot {what}: {e}"),
    };
    // Checked before opening (never open a FIFO or a device), and again on the open file (it
    // may have been swapped in between).
    match fs::metadata(path) {
        Ok(meta) => check_secrets_file(path, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", e)),
    }
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", e)),
    };
    check_secrets_file(path, &file.metadata().map_err(|e| io_err("stat", e))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_VALUE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", e))?;
    if bytes.len() as u64 > MAX_VALUE_BYTES {
        return Err(SecretError::SecretsFile {
            path: path.to_owned(),
            message: format!("larger than {MAX_VALUE_BYTES} bytes"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretError::SecretsFile {
        path: path.to_owned(),
        message: "not UTF-8".to_owned(),
    })?;
    let pairs = parse_dotenv(&text).map_err(|message| SecretError::SecretsFile {
        path: path.to_owned(),
        message,
    })?;
    Ok(Some(pairs.into_iter().collect()))
}

fn check_secrets_file(path: &Path, meta: &fs::Metadata) -> Result<(), SecretError> {
    let mode = meta.mode() & 0o7777;
    let insecure = |problem: String| SecretError::SecretsFileInsecure {
        path: path.to_owned(),
        mode,
        problem,
    };
    if !meta.is_file() {
        return Err(insecure("not a regular file".to_owned()));
    }
    let me = current_uid();
    if meta.uid() != me {
        return Err(insecure(format!("owned by uid {}, not by you (uid {me})", meta.uid())));
    }
    if mode & 0o077 != 0 {
        return Err(insecure("group or others have access to it".to_owned()));
    }
    Ok(())
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Parses dotenv text: `NAME=VALUE` lines (optionally `export NAME=VALUE`), `#` comments,
/// values bare (to the end of the line or a ` #` comment, trimmed), in single quotes (literal,
/// may span lines) or in double quotes (`\n`, `\r`, `\t`, `\\`, `\"`, `\'`, `\$` escapes, may
/// span lines). No `$VAR` expansion. Errors name the line, never its content.
fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = Cursor {
        chars: text.chars().peekable(),
        line: 1,
    };
    let mut out = Vec::new();
    loop {
        p.skip_blanks();
        match p.peek() {
            None => break,
            Some('\n') => {
                p.bump();
                continue;
            }
            Some('#') => {
                p.skip_line();
                continue;
            }
            Some(_) => {}
        }
        let line = p.line;
        let expected = || format!("line {line}: expected NAME=VALUE");
        let mut key = p.word();
        if key == "export" && matches!(p.peek(), Some(' ' | '\t')) {
            p.skip_blanks();
            key = p.word();
        }
        if !is_valid_secret_name(&key) {
            return Err(expected());
        }
        p.skip_blanks();
        if p.bump() != Some('=') {
            return Err(expected());
        }
        p.skip_blanks();
        let value = match p.peek() {
            Some(q @ ('\'' | '"')) => {
                p.bump();
                let value = p.quoted(q).map_err(|e| format!("line {line}: {e}"))?;
                p.skip_blanks();
                match p.peek() {
                    None | Some('\n') => {}
                    Some('#') => p.skip_line(),
                    Some(_) => return Err(format!("line {}: unexpected text after the closing quote", p.line)),
                }
                value
            }
            _ => {
                let mut raw = String::new();
                while let Some(c) = p.peek() {
                    if c == '\n' {
                        break;
                    }
                    if c == '#' && (raw.is_empty() || raw.ends_with([' ', '\t'])) {
                        p.skip_line();
                        break;
                    }
                    raw.push(c);
                    p.bump();
                }
                raw.trim_end().to_owned()
            }
        };
        out.push((key, value));
    }
    Ok(out)
}

struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// Spaces, tabs and carriage returns.
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    /// To the end of the line (the newline is left).
    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
            w.push(c);
            self.bump();
        }
        w
    }

    /// After an opening quote `q`: the value up to the closing one.
    fn quoted(&mut self, q: char) -> Result<String, &'static str> {
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated quoted value"),
                Some(c) if c == q => return Ok(value),
                Some('\\') if q == '"' => match self.bump() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(c @ ('\\' | '"' | '\'' | '$')) => value.push(c),
                    None => return Err("unterminated quoted value"),
                    Some(_) => {
                        return Err("unknown escape in a double-quoted value (use single quotes for a literal value)");
                    }
                },
                Some(c) => value.push(c),
            }
        }
    }
}

/// Runs a `cmd:` source: `/bin/sh -c command`, with exactly `env` as its environment, stdin
/// null, in its own process group (killed when `timeout` expires). Its standard output, one
/// trailing newline stripped, is the value. Errors carry the exit status and the last line of
/// standard error, never standard output.
fn run_command(command: &str, env: &BTreeMap<String, String>, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        // The reader keeps the start (the value) and is left behind, blocked, if a process that
        // escaped the group keeps the pipe open.
        thread::spawn(move || {
            let _ = tx.send((true, read_capped(out, MAX_VALUE_BYTES as usize + 1, false)));
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((false, read_capped(err, MAX_STDERR_BYTES, true)));
        });
    }
    drop(tx);
    let kill = || {
        if pgid > 0 {
            // SAFETY: kill has no memory-safety preconditions; a negative pid names the group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill();
                let _ = child.wait();
                let stderr = collect(&rx, Instant::now() + Duration::from_millis(200)).1;
                return Err(format!(
                    "timed out after {} and was killed{}",
                    seconds(timeout),
                    stderr_suffix(stderr.as_deref())
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                kill();
                let _ = child.wait();
                return Err(format!("cannot wait for the command: {e}"));
            }
        }
    };
    let (stdout, stderr) = collect(&rx, deadline);
    let Some(stdout) = stdout else {
        kill();
        return Err(format!(
            "exited ({}) but its output was still open after {} (a background process holding it?){}",
            describe(status),
            seconds(timeout),
            stderr_suffix(stderr.as_deref())
        ));
    };
    if !status.success() {
        return Err(format!(
            "failed ({}){}",
            describe(status),
            stderr_suffix(stderr.as_deref())
        ));
    }
    if stdout.len() > MAX_VALUE_BYTES as usize {
        return Err(format!("printed more than {MAX_VALUE_BYTES} bytes"));
    }
    let text = String::from_utf8(stdout).map_err(|_| "printed output that is not UTF-8".to_owned())?;
    let value = strip_newline(text);
    if value.is_empty() {
        return Err(format!(
            "printed nothing ({}){}",
            describe(status),
            stderr_suffix(stderr.as_deref())
        ));
    }
    Ok(value)
}

/// Reads to the end, keeping at most `cap` bytes: the first ones, or the last ones if `tail`.
fn read_capped(mut r: impl Read, cap: usize, tail: bool) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tail {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > cap {
                        kept.drain(..kept.len() - cap);
                    }
                } else {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

/// Standard output and standard error, each if its reader finished before `deadline`.
fn collect(rx: &mpsc::Receiver<(bool, Vec<u8>)>, deadline: Instant) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut out, mut err) = (None, None);
    while out.is_none() || err.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((true, data)) => out = Some(data),
            Ok((false, data)) => err = Some(data),
            Err(_) => break,
        }
    }
    (out, err)
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

/// `: <last non-empty line of stderr>`, or nothing.
fn stderr_suffix(stderr: Option<&[u8]>) -> String {
    let Some(stderr) = stderr else {
        return String::new();
    };
    let text = String::from_utf8_lossy(stderr);
    match text.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(line) => {
            let mut line = line.to_owned();
            if line.len() > 300 {
                let mut end = 300;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                line.push('…');
            }
            format!(": {line}")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn secrets_file(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("secrets.env");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn one(sources: &SecretSources, name: &str) -> ResolvedSecret {
        let mut r = sources.resolve(&names(&[name])).unwrap();
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    #[test]
    fn secret_names() {
        for ok in ["A", "_X", "ANTHROPIC_API_KEY", "a1_b2"] {
            assert!(is_valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A.B", "É"] {
            assert!(!is_valid_secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn value_is_never_printed() {
        let v = SecretValue::new("hunter2-very-secret".into());
        assert_eq!(format!("{v:?}"), "[redacted]");
        assert_eq!(format!("{v}"), "[redacted]");
        let r = ResolvedSecret {
            name: "K".into(),
            value: v.clone(),
            from: SecretOrigin::Env,
        };
        let shown = format!("{r:?} {r:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(v.expose(), "hunter2-very-secret");
    }

    #[test]
    fn origins_display() {
        assert_eq!(SecretOrigin::Env.to_string(), "env");
        assert_eq!(SecretOrigin::EnvVar("X".into()).to_string(), "env:X");
        assert_eq!(SecretOrigin::DotEnv.to_string(), ".env");
        assert_eq!(SecretOrigin::SecretsFile("/f".into()).to_string(), "secrets file");
        assert_eq!(SecretOrigin::Cmd.to_string(), "cmd");
        assert_eq!(SecretOrigin::File("/f".into()).to_string(), "file");
    }

    #[test]
    fn each_source() {
        let dir = tempfile::tempdir().unwrap();
        let value_file = dir.path().join("value");
        fs::write(&value_file, "from-file\n").unwrap();
        let sources = SecretSources {
            configured: map(&[
                ("ALIASED", "env:REAL_VAR"),
                ("FROM_FILE", &format!("file:{}", value_file.display())),
                ("FROM_CMD", "cmd:printf 'from-cmd\\n'"),
            ]),
            caller_env: map(&[("IN_ENV", "from-env"), ("REAL_VAR", "from-alias")]),
            dotenv: vec![("IN_DOTENV".into(), "from-dotenv".into())],
            secrets_file: Some(secrets_file(dir.path(), "IN_FILE=from-secrets-file\n", 0o600)),
        };
        let want = [
            ("ALIASED", "from-alias", SecretOrigin::EnvVar("REAL_VAR".into())),
            ("FROM_FILE", "from-file", SecretOrigin::File(value_file.clone())),
            ("FROM_CMD", "from-cmd", SecretOrigin::Cmd),
            ("IN_ENV", "from-env", SecretOrigin::Env),
            ("IN_DOTENV", "from-dotenv", SecretOrigin::DotEnv),
            (
                "IN_FILE",
                "from-secrets-file",
                SecretOrigin::SecretsFile(dir.path().join("secrets.env")),
            ),
        ];
        let all = sources
            .resolve(&want.iter().map(|w| w.0.to_owned()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(all.len(), want.len());
        for (got, (name, value, from)) in all.iter().zip(&want) {
            assert_eq!(got.name, *name);
            assert_eq!(got.value.expose(), *value, "{name}");
            assert_eq!(&got.from, from, "{name}");
        }
    }

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = secrets_file(dir.path(), "K=file\nL=file\nM=file\nN=file\n", 0o600);
        let sources = SecretSources {
            configured: map(&[("K", "env:OTHER")]),
            caller_env: map(&[("OTHER", "configured"), ("K", "env"), ("L", "env")]),
            dotenv: vec![
                ("K".into(), "dotenv".into()),
                ("L".into(), "dotenv".into()),
                ("M".into(), "dotenv".into()),
            ],
            secrets_file: Some(file),
        };
        let got: Vec<(String, String)> = sources
            .resolve(&names(&["K", "L", "M", "N"]))
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.from.to_string()))
            .collect();
        let want: Vec<(String, String)> = [("K", "env:OTHER"), ("L", "env"), ("M", ".env"), ("N", "secrets file")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(one(&sources, "K").value.expose(), "configured");
    }

    #[test]
    fn empty_values_count_as_unset_and_later_dotenv_pairs_win() {
        let sources = SecretSources {
            caller_env: map(&[("K", "")]),
            dotenv: vec![("K".into(), "first".into()), ("K".into(), "second".into())],
            ..SecretSources::default()
        };
        let k = one(&sources, "K");
        assert_eq!((k.value.expose(), k.from), ("second", SecretOrigin::DotEnv));
    }

    #[test]
    fn missing_names_are_listed_together() {
        let dir = tempfile::tempdir().unwrap();
        let sources = SecretSources {
            configured: map(&[("ALIAS", "env:NOT_THERE")]),
            caller_env: map(&[("PRESENT", "value-1234")]),
            secrets_file: Some(dir.path().join("secrets.env")),
            ..SecretSources::default()
        };
        let err = sources
            .resolve(&names(&["MISSING_A", "PRESENT", "ALIAS", "MISSING_B", "MISSING_A"]))
            .unwrap_err();
        let SecretError::Missing { missing, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            missing.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["MISSING_A", "ALIAS", "MISSING_B"]
        );
        let msg = err.to_string();
        assert!(msg.contains("secrets MISSING_A, MISSING_B are not set"), "{msg}");
        assert!(msg.contains("the environment"), "{msg}");
        assert!(msg.contains(".env"), "{msg}");
        assert!(msg.contains("secrets.env, which does not exist"), "{msg}");
        assert!(
            msg.contains("ALIAS is configured as `env:NOT_THERE`, but NOT_THERE is not set"),
            "{msg}"
        );

        let (found, missing) = sources.resolve_available(&names(&["PRESENT", "MISSING_A"])).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(missing, ["MISSING_A"]);
        assert!(sources.resolve(&[]).unwrap().is_empty());
    }

    #[test]
    fn invalid_requested_name() {
        let err = SecretSources::default().resolve(&names(&["BAD-NAME"])).unwrap_err();
        assert!(matches!(err, SecretError::InvalidName(_)), "{err}");
    }

    #[test]
    fn insecure_secrets_file_is_refused_and_private_one_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = secrets_file(dir.path(), "TOKEN=abcdefgh-secret\n", 0o644);
        let sources = SecretSources {
            secrets_file: Some(path.clone()),
            ..SecretSources::default()
        };
        let err = sources.resolve(&names(&["TOKEN"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SecretError::SecretsFileInsecure { mode: 0o644, .. }),
            "{err:?}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(!msg.contains("abcdefgh"), "{msg}");
        for mode in [0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert!(sources.resolve(&names(&["TOKEN"])).is_err(), "{mode:o}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(one(&sources, "TOKEN").value.expose(), "abcdefgh-secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(one(&sources, "TOKEN").value.expose(), "abcdefgh-secret");
    }

    #[test]
    fn secrets_file_is_not_read_when_not_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = secrets_file(dir.path(), "TOKEN=x\n", 0o644);
        let sources = SecretSources {
            caller_env: map(&[("TOKEN", "from-env")]),
            secrets_file: Some(path),
            ..SecretSources::default()
        };
        assert_eq!(one(&sources, "TOKEN").value.expose(), "from-env");
    }

    #[test]
    fn secrets_file_must_be_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("dir");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let sources = SecretSources {
            secrets_file: Some(sub),
            ..SecretSources::default()
        };
        let err = sources.resolve(&names(&["TOKEN"])).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn secrets_file_parse_errors_do_not_show_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = secrets_file(dir.path(), "OK=1\nsk-pasted-secret-value\n", 0o600);
        let sources = SecretSources {
            secrets_file: Some(path),
            ..SecretSources::default()
        };
        let msg = sources.resolve(&names(&["OK"])).unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("pasted"), "{msg}");
    }

    #[test]
    fn dotenv_syntax() {
        let text = "\u{feff}# comment\n\
            A=plain value  # trailing comment\n\
            export B = 'single $NOT #expanded'\n\
            C=\"dq \\\"esc\\\" \\n \\$HOME\"   # c\n\
            \n   D=abc#not-a-comment\r\n\
            E='multi\nline'\n\
            F=\n\
            G=with$dollar\n\
            A=again\n";
        let pairs = parse_dotenv(text).unwrap();
        let want = [
            ("A", "plain value"),
            ("B", "single $NOT #expanded"),
            ("C", "dq \"esc\" \n $HOME"),
            ("D", "abc#not-a-comment"),
            ("E", "multi\nline"),
            ("F", ""),
            ("G", "with$dollar"),
            ("A", "again"),
        ];
        assert_eq!(
            pairs,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        for (bad, line) in [
            ("A=1\nB='open\n", "line 2"),
            ("A=1\n=value\n", "line 2"),
            ("A=\"x\" y\n", "line 1"),
            ("A=\"\\q\"\n", "line 1"),
            ("A B=1\n", "line 1"),
        ] {
            let e = parse_dotenv(bad).unwrap_err();
            assert!(e.starts_with(line), "{bad:?}: {e}");
        }
    }

    #[test]
    fn file_source_strips_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let sources = SecretSources {
            configured: map(&[("K", &format!("file:{}", path.display()))]),
            ..SecretSources::default()
        };
        for (content, want) in [
            ("value\n", "value"),
            ("value\n\n", "value\n"),
            ("value\r\n", "value"),
            ("value", "value"),
        ] {
            fs::write(&path, content).unwrap();
            assert_eq!(one(&sources, "K").value.expose(), want, "{content:?}");
        }
        fs::write(&path, "\n").unwrap();
        let msg = sources.resolve(&names(&["K"])).unwrap_err().to_string();
        assert!(msg.contains("empty"), "{msg}");
        fs::remove_file(&path).unwrap();
        let msg = sources.resolve(&names(&["K"])).unwrap_err().to_string();
        assert!(msg.starts_with("secret K (from `file:"), "{msg}");
        assert!(msg.contains("cannot open"), "{msg}");
    }

    #[test]
    fn file_source_expands_home_from_the_caller_env() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("key"), "v-from-home\n").unwrap();
        let mut sources = SecretSources {
            configured: map(&[("K", "file:~/key")]),
            caller_env: map(&[("HOME", dir.path().to_str().unwrap())]),
            ..SecretSources::default()
        };
        assert_eq!(one(&sources, "K").value.expose(), "v-from-home");
        sources.caller_env.clear();
        let msg = sources.resolve(&names(&["K"])).unwrap_err().to_string();
        assert!(msg.contains("HOME is not set"), "{msg}");
    }

    #[test]
    fn configured_source_wins_even_when_it_fails() {
        let sources = SecretSources {
            configured: map(&[("K", "cmd:exit 3")]),
            caller_env: map(&[("K", "from-env")]),
            ..SecretSources::default()
        };
        assert!(matches!(
            sources.resolve(&names(&["K"])),
            Err(SecretError::SourceFailed { .. })
        ));
    }

    #[test]
    fn cmd_success_uses_the_caller_env() {
        let sources = SecretSources {
            configured: map(&[("K", "cmd:printf '%s\\n' \"$SEED-suffix\"; echo noise >&2")]),
            caller_env: map(&[("SEED", "seed")]),
            ..SecretSources::default()
        };
        let k = one(&sources, "K");
        assert_eq!((k.value.expose(), k.from), ("seed-suffix", SecretOrigin::Cmd));
    }

    #[test]
    fn cmd_failure_reports_status_and_stderr_never_stdout() {
        let sources = SecretSources {
            configured: map(&[(
                "K",
                "cmd:printf 'leaked-%s\\n' stdout-value; echo 'first' >&2; echo '[ERROR] not signed in' >&2; exit 3",
            )]),
            ..SecretSources::default()
        };
        let msg = sources.resolve(&names(&["K"])).unwrap_err().to_string();
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with(": [ERROR] not signed in"), "{msg}");
        assert!(!msg.contains("leaked-stdout-value"), "{msg}");

        let sources = SecretSources {
            configured: map(&[("K", "cmd:echo nothing here >&2")]),
            ..SecretSources::default()
        };
        let msg = sources.resolve(&names(&["K"])).unwrap_err().to_string();
        assert!(msg.contains("printed nothing (exit status: 0): nothing here"), "{msg}");
    }

    #[test]
    fn cmd_timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let cmd = format!(
            "cmd:(sleep 1; touch {}) & echo 'waiting' >&2; sleep 30",
            marker.display()
        );
        let sources = SecretSources {
            configured: map(&[("K", &cmd)]),
            caller_env: map(&[("PATH", "/usr/bin:/bin")]),
            ..SecretSources::default()
        };
        let start = Instant::now();
        let err = sources
            .resolve_with_timeout(&names(&["K"]), Duration::from_millis(300))
            .unwrap_err();
        let msg = err.to_string();
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(msg.contains("timed out after 0.3s"), "{msg}");
        assert!(msg.ends_with(": waiting"), "{msg}");
        thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "a process of the group outlived the timeout");
    }

    #[test]
    fn parse_config_table() {
        let text = r#"
max_concurrent_runs = 4
[secrets]
OPENAI_API_KEY = "cmd:op read op://vault/openai/key"
ANTHROPIC_API_KEY = "env:MY_ANTHROPIC_KEY"
GEMINI_API_KEY = "file:~/.keys/gemini"
"#;
        let t = parse_config(text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t["ANTHROPIC_API_KEY"], "env:MY_ANTHROPIC_KEY");
        assert!(parse_config("x = 1").unwrap().is_empty());

        let literal = parse_config("[secrets]\nOPENAI_API_KEY = \"sk-literal-value\"\n").unwrap_err();
        let msg = literal.to_string();
        assert!(msg.contains("[secrets] OPENAI_API_KEY: "), "{msg}");
        assert!(msg.contains("literal values are refused"), "{msg}");
        assert!(!msg.contains("sk-literal"), "{msg}");

        for (bad, needle) in [
            ("[secrets]\n\"BAD-NAME\" = \"env:X\"\n", "not a valid secret name"),
            (
                "[secrets]\nK = \"env:not valid\"\n",
                "must name an environment variable",
            ),
            ("[secrets]\nK = \"file:relative/path\"\n", "absolute path"),
            ("[secrets]\nK = \"cmd:  \"\n", "needs a command"),
            ("[secrets]\nK = 12\n", "must be a string"),
            ("secrets = 1\n", "must be a table"),
        ] {
            let msg = parse_config(bad).unwrap_err().to_string();
            assert!(msg.contains(needle), "{bad:?}: {msg}");
        }
        // A TOML error names the line without quoting it.
        let msg = parse_config("[secrets]\nK = sk-unquoted-secret\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("line 2: "), "{msg}");
        assert!(!msg.contains("sk-unquoted"), "{msg}");
    }

    #[test]
    fn load_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(load_config(&path).unwrap().is_empty());
        fs::write(&path, "[secrets]\nK = \"oops\"\n").unwrap();
        let msg = load_config(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}: [secrets] K: ", path.display())), "{msg}");
        fs::write(&path, "[secrets]\nK = \"env:V\"\n").unwrap();
        assert_eq!(load_config(&path).unwrap(), map(&[("K", "env:V")]));
    }

    #[test]
    fn nul_in_value_is_refused() {
        let sources = SecretSources {
            caller_env: map(&[("K", "a\0b")]),
            ..SecretSources::default()
        };
        let err = sources.resolve(&names(&["K"])).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn default_secrets_file_is_named_secrets_env() {
        if let Some(p) = default_secrets_file() {
            assert!(p.ends_with("agentctl/secrets.env") || p.ends_with("secrets.env"));
        }
    }
}
