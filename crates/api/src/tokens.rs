//! Bearer tokens for the API. Every token is stored only as its SHA-256 in
//! `<state>/daemon/tokens.json` (mode 0600); the one exception is the **default token**, made on
//! the daemon's first start, whose value is also kept in `<state>/daemon/token` (0600) so local
//! clients — the CLI talking to its own daemon — can read it. Changes take a file lock and
//! replace the file atomically; the daemon notices them on the next request (it re-reads the
//! file when its modification time or size changes), so `token revoke` takes effect at once.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use model::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The id of the token made on the daemon's first start.
pub const DEFAULT_TOKEN_ID: &str = "default";

/// A token as stored and listed (never with its value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the token's value.
    pub sha256: String,
    pub created_at: jiff::Timestamp,
}

/// What identifies one version of the tokens file: mtime, size, inode.
type Stamp = (std::time::SystemTime, u64, u64);

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// The token files of one state directory.
#[derive(Debug)]
pub struct TokenStore {
    dir: PathBuf,
    /// The file's identity (mtime, size, inode) and entries as last read, for
    /// [`TokenStore::verify`]. Every change replaces the file, so the inode changes too.
    cache: Mutex<Option<(Stamp, Vec<TokenEntry>)>>,
}

impl TokenStore {
    /// The tokens of the daemon whose files live in `daemon_dir` (`<state>/daemon`).
    pub fn new(daemon_dir: &Path) -> Self {
        TokenStore {
            dir: daemon_dir.to_owned(),
            cache: Mutex::new(None),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }

    /// Where the default token's value is kept for local clients.
    pub fn default_token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The default token's value, made (with its entry) when there is none yet.
    pub fn ensure_default(&self) -> Result<String, ApiError> {
        let path = self.default_token_path();
        if let Ok(v) = fs::read_to_string(&path) {
            let v = v.trim().to_owned();
            if !v.is_empty() {
                return Ok(v);
            }
        }
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let value = new_token_value()?;
        file.tokens.retain(|t| t.id != DEFAULT_TOKEN_ID);
        file.tokens.push(TokenEntry {
            id: DEFAULT_TOKEN_ID.to_owned(),
            name: "default (for local clients)".to_owned(),
            sha256: digest(&value),
            created_at: jiff::Timestamp::now(),
        });
        write_private(&path, format!("{value}\n").as_bytes())?;
        self.write(&file)?;
        Ok(value)
    }

    /// Makes a token named `name`; returns its entry and its value (shown once).
    pub fn create(&self, name: &str) -> Result<(TokenEntry, String), ApiError> {
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let value = new_token_value()?;
        let entry = TokenEntry {
            id: hex(&random_bytes::<4>()?),
            name: name.to_owned(),
            sha256: digest(&value),
            created_at: jiff::Timestamp::now(),
        };
        file.tokens.push(entry.clone());
        self.write(&file)?;
        Ok((entry, value))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenEntry>, ApiError> {
        Ok(self.read()?.tokens)
    }

    /// Revokes the token `id` (the default one too: the daemon makes a new one on its next
    /// start). Returns the removed entry.
    pub fn revoke(&self, id: &str) -> Result<TokenEntry, ApiError> {
        let _lock = self.lock()?;
        let mut file = self.read()?;
        let Some(pos) = file.tokens.iter().position(|t| t.id == id) else {
            return Err(
                ApiError::new(ErrorCode::TokenNotFound, format!("no token with id {id}"))
                    .hint("list them with `agentctl token list`"),
            );
        };
        let entry = file.tokens.remove(pos);
        self.write(&file)?;
        if id == DEFAULT_TOKEN_ID {
            let _ = fs::remove_file(self.default_token_path());
        }
        Ok(entry)
    }

    /// Whether `value` is a live token.
    pub fn verify(&self, value: &str) -> bool {
        let want = digest(value);
        use std::os::unix::fs::MetadataExt;
        let stamp = fs::metadata(self.file())
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = matches!((&*cache, stamp), (Some((seen, _)), Some(now)) if *seen == now);
        if !fresh {
            *cache = match (self.read(), stamp) {
                (Ok(f), Some(now)) => Some((now, f.tokens)),
                _ => None,
            };
        }
        cache
            .as_ref()
            .is_some_and(|(_, tokens)| tokens.iter().any(|t| constant_time_eq(&t.sha256, &want)))
    }

    fn read(&self) -> Result<TokenFile, ApiError> {
        match fs::read_to_string(self.file()) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ApiError::new(ErrorCode::Io, format!("{} is unreadable: {e}", self.file().display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(io_err(&self.file(), e)),
        }
    }

    fn write(&self, file: &TokenFile) -> Result<(), ApiError> {
        let text = serde_json::to_vec_pretty(file).expect("tokens serialize");
        write_private(&self.file(), &text)
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, ApiError> {
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let path = self.dir.join("tokens.lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io_err(&path, e.into()))
    }
}

/// Writes `bytes` to `path` atomically, readable and writable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ApiError> {
    let dir = path.parent().expect("files live in the daemon dir");
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::new(ErrorCode::Io, format!("{}: {e}", path.display()))
}

/// A new token value: `agentctl_` and 256 random bits in hex.
fn new_token_value() -> Result<String, ApiError> {
    Ok(format!("agentctl_{}", hex(&random_bytes::<32>()?)))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut buf = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| io_err(Path::new("/dev/urandom"), e))?;
    Ok(buf)
}

fn digest(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    // On every authenticated request: no formatting machinery per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Compares two equal-length strings without stopping at the first difference.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_verify_until_revoked_and_values_are_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let default = store.ensure_default().unwrap();
        assert_eq!(store.ensure_default().unwrap(), default, "made once");
        let (entry, value) = store.create("ci").unwrap();
        assert!(store.verify(&default) && store.verify(&value));
        assert!(!store.verify("agentctl_nope"));
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!text.contains(&value) && !text.contains(&default));
        use std::os::unix::fs::PermissionsExt;
        for f in ["tokens.json", "token"] {
            let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        store.revoke(&entry.id).unwrap();
        assert!(!store.verify(&value), "revoked at once");
        assert!(store.verify(&default));
        assert_eq!(store.revoke("zzz").unwrap_err().code, ErrorCode::TokenNotFound);
    }
}
