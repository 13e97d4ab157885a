//! The router's embeddings kept on disk: `<state>/router/embeddings-<model>.jsonl`, one line per
//! text encoded (`{"key": sha256 of the text, "v": base64 of the little-endian f32s}`). The
//! semantic tier embeds every agent's profile and recent successful prompts each time a router
//! is built; with this file each text is encoded once per model, so routing costs one encoding
//! (the task's) after the first time.
//!
//! Lines are appended with one `write` each (`O_APPEND`); a line cut short by a crash, or any
//! line that does not parse, is skipped when the file is read, so the worst a crash costs is one
//! encoding again. The file (and the memory) start afresh past [`MAX_ENTRIES`] lines: the
//! texts in use are then encoded once more.
//! Tasks being routed are neither stored nor looked up (see [`router::Encoder::encode_query`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use router::{EncodeError, Encoder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Past this many stored embeddings (about 2 KB each for a 384-dimension model), the file is
/// started afresh: recent prompts are encoded again as they are needed.
pub const MAX_ENTRIES: usize = 20_000;

/// An [`Encoder`] whose embeddings of profiles and examples are remembered in a file.
pub struct StoredEncoder {
    inner: Arc<dyn Encoder>,
    path: PathBuf,
    known: Mutex<HashMap<String, Vec<f32>>>,
    /// Lines in the file, as far as this process knows.
    lines: Mutex<usize>,
    /// Past this many lines, the file starts afresh.
    limit: usize,
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    v: String,
}

impl StoredEncoder {
    /// Reads what `dir` holds for `inner`'s model (creating `dir` if needed).
    pub fn open(inner: Arc<dyn Encoder>, dir: &Path) -> std::io::Result<Self> {
        Self::open_with_limit(inner, dir, MAX_ENTRIES)
    }

    /// [`StoredEncoder::open`], starting afresh past `limit` lines instead of [`MAX_ENTRIES`].
    fn open_with_limit(inner: Arc<dyn Encoder>, dir: &Path, limit: usize) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let name: String = inner
            .model_id()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("embeddings-{name}.jsonl"));
        let mut known = HashMap::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let Ok(line) = line else { break };
                    lines += 1;
                    if let Some((key, v)) = parse(&line) {
                        known.insert(key, v);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let stored = StoredEncoder {
            inner,
            path,
            known: Mutex::new(known),
            lines: Mutex::new(lines),
            limit,
        };
        if lines > limit {
            stored.start_afresh();
        }
        Ok(stored)
    }

    /// Empties the file (through a file of this process's own, renamed over it) and the memory.
    fn start_afresh(&self) {
        let fresh = self.path.with_extension(format!("jsonl.{}.new", std::process::id()));
        let done = File::create(&fresh).and_then(|_| fs::rename(&fresh, &self.path));
        if let Err(e) = done {
            let _ = fs::remove_file(&fresh);
            tracing::warn!(path = %self.path.display(), error = %e, "cannot start the embeddings afresh");
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.lines.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    }

    /// The file the embeddings are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, key: &str) -> Option<Vec<f32>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Appends one line; a failure to write only means the text is encoded again next time.
    /// Past [`MAX_ENTRIES`] lines the file starts afresh (a long-lived daemon too).
    fn remember(&self, key: String, v: &[f32]) {
        let full = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            *lines += 1;
            *lines > self.limit
        };
        if full {
            self.start_afresh();
            *self.lines.lock().unwrap_or_else(|e| e.into_inner()) = 1;
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let line = Line {
            key: key.clone(),
            v: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot store an embedding");
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, v.to_vec());
    }
}

impl Encoder for StoredEncoder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        let key = digest(text);
        if let Some(v) = self.lookup(&key) {
            return Ok(v);
        }
        let v = self.inner.encode(text)?;
        self.remember(key, &v);
        Ok(v)
    }

    fn encode_query(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        self.inner.encode_query(text)
    }
}

/// A stored line, or `None` for one cut short or otherwise unreadable.
fn parse(line: &str) -> Option<(String, Vec<f32>)> {
    let line: Line = serde_json::from_str(line).ok()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(line.v).ok()?;
    if line.key.len() != 64 || bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let v = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((line.key, v))
}

/// The key of a text: its SHA-256, in hex.
fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Embeds a text as its length and its first byte, counting calls.
    struct Counting {
        id: &'static str,
        calls: AtomicUsize,
    }

    impl Encoder for Counting {
        fn model_id(&self) -> &str {
            self.id
        }
        fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(vec![text.len() as f32, f32::from(text.bytes().next().unwrap_or(0))])
        }
    }

    fn counting(id: &'static str) -> Arc<Counting> {
        Arc::new(Counting {
            id,
            calls: AtomicUsize::new(0),
        })
    }

    #[test]
    fn each_text_is_encoded_once_across_opens_and_tasks_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let model = counting("mini/lm@1");
        let stored = StoredEncoder::open(model.clone(), dir.path()).unwrap();
        assert_eq!(stored.path(), dir.path().join("embeddings-mini_lm@1.jsonl"));
        assert_eq!(stored.encode("an example").unwrap(), [10.0, 97.0]);
        assert_eq!(stored.encode("an example").unwrap(), [10.0, 97.0]);
        assert_eq!(stored.encode_query("a task").unwrap(), [6.0, 97.0]);
        assert_eq!(model.calls.load(Ordering::SeqCst), 2);

        let again = StoredEncoder::open(model.clone(), dir.path()).unwrap();
        assert_eq!(again.encode("an example").unwrap(), [10.0, 97.0]);
        assert_eq!(model.calls.load(Ordering::SeqCst), 2, "read back from the file");
        again.encode_query("a task").unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), 3, "the task was not kept");
        // A task is always encoded afresh, even one known as an example.
        assert_eq!(again.encode_query("an example").unwrap(), [10.0, 97.0]);
        assert_eq!(model.calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_line_cut_short_or_garbled_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let model = counting("m");
        let stored = StoredEncoder::open(model.clone(), dir.path()).unwrap();
        stored.encode("kept").unwrap();
        stored.encode("cut").unwrap();
        let path = stored.path().to_owned();
        let text = fs::read_to_string(&path).unwrap();
        // A crash in the middle of the second line, then garbage a careless editor left.
        let cut = text.len() - 20;
        fs::write(&path, format!("{}\n{{\"key\": 1}}\nnot json\n", &text[..cut])).unwrap();
        let again = StoredEncoder::open(model.clone(), dir.path()).unwrap();
        let before = model.calls.load(Ordering::SeqCst);
        again.encode("kept").unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), before);
        assert_eq!(again.encode("cut").unwrap(), [3.0, 99.0]);
        assert_eq!(model.calls.load(Ordering::SeqCst), before + 1, "encoded again");
    }

    #[test]
    fn past_its_limit_the_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let model = counting("m");
        let stored = StoredEncoder::open_with_limit(model.clone(), dir.path(), 2).unwrap();
        stored.encode("a").unwrap();
        stored.encode("b").unwrap();
        stored.encode("c").unwrap();
        let lines = fs::read_to_string(stored.path()).unwrap().lines().count();
        assert_eq!(lines, 1, "only the line written after the reset");
        stored.encode("a").unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), 4, "a was forgotten");
        stored.encode("c").unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), 4, "c was kept");
        // A file found over the limit (another process wrote it) starts afresh on open.
        let big = StoredEncoder::open_with_limit(model.clone(), dir.path(), 2).unwrap();
        assert_eq!(fs::read_to_string(big.path()).unwrap().lines().count(), 2);
        let small = StoredEncoder::open_with_limit(model.clone(), dir.path(), 1).unwrap();
        assert_eq!(fs::read_to_string(small.path()).unwrap(), "");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }

    #[test]
    fn models_keep_separate_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (counting("a"), counting("b"));
        StoredEncoder::open(a.clone(), dir.path()).unwrap().encode("x").unwrap();
        StoredEncoder::open(b.clone(), dir.path()).unwrap().encode("x").unwrap();
        assert_eq!(a.calls.load(Ordering::SeqCst), 1);
        assert_eq!(b.calls.load(Ordering::SeqCst), 1, "b does not use a's vectors");
    }
}
