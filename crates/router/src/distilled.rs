//! A static version of the MiniLM encoder (the `embed` feature): every token of the model's
//! vocabulary is run through the model once, alone (`[CLS] token [SEP]`), and the mean of its
//! outputs kept; a text's embedding is then the mean of its tokens' rows. No forward pass per
//! text — microseconds instead of milliseconds — at some cost in accuracy (word order and
//! context are lost). Distilling takes about a minute or two of CPU once per model; the table
//! (`vocabulary × 384` floats) is saved and loaded like any cache.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::minilm::MiniLm;
use crate::semantic::{Calibration, EncodeError, Encoder};

/// The first bytes of a saved table.
const MAGIC: &[u8; 8] = b"AGCTLST1";
/// Tokens distilled per forward pass.
const BATCH: usize = 512;

/// The distilled table of a [`MiniLm`] and its tokenizer.
pub struct Distilled {
    tokenizer: Tokenizer,
    id: String,
    dim: usize,
    /// `rows × dim` floats, row `i` for token id `i`.
    table: Vec<f32>,
}

impl Distilled {
    /// Runs every token of `model`'s vocabulary through it; `progress(done, total)` is called
    /// after each batch.
    pub fn distill(model: &MiniLm, mut progress: impl FnMut(usize, usize)) -> Result<Self, EncodeError> {
        let failed = |e: &dyn std::fmt::Display| EncodeError(format!("cannot distill the model: {e}"));
        let tokenizer = model.tokenizer().clone();
        let rows = tokenizer.get_vocab_size(true);
        let special = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| EncodeError(format!("the tokenizer has no {t} token")))
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let mut table = Vec::new();
        let mut dim = 0;
        for start in (0..rows).step_by(BATCH) {
            let end = (start + BATCH).min(rows);
            let ids: Vec<u32> = (start as u32..end as u32).flat_map(|t| [cls, t, sep]).collect();
            let ids = Tensor::from_vec(ids, (end - start, 3), &Device::Cpu).map_err(|e| failed(&e))?;
            let types = ids.zeros_like().map_err(|e| failed(&e))?;
            let out = model
                .bert()
                .forward(&ids, &types, None)
                .and_then(|t| t.mean(1))
                .and_then(|t| t.to_vec2::<f32>())
                .map_err(|e| failed(&e))?;
            for row in out {
                dim = row.len();
                table.extend(row);
            }
            progress(end, rows);
        }
        Ok(Distilled {
            tokenizer,
            id: format!("{}+static", model.model_id()),
            dim,
            table,
        })
    }

    /// Writes the table to `path` (through a temporary file, renamed into place).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        {
            let mut out = BufWriter::new(File::create(&tmp)?);
            out.write_all(MAGIC)?;
            out.write_all(&(self.dim as u32).to_le_bytes())?;
            out.write_all(&((self.table.len() / self.dim.max(1)) as u32).to_le_bytes())?;
            for x in &self.table {
                out.write_all(&x.to_le_bytes())?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, path)
    }

    /// Reads a table saved by [`Distilled::save`] for `model`; `None` when there is none, or it
    /// does not fit the model (then distill again).
    pub fn load(model: &MiniLm, path: &Path) -> Option<Self> {
        let mut input = BufReader::new(File::open(path).ok()?);
        let mut head = [0u8; 16];
        input.read_exact(&mut head).ok()?;
        if &head[..8] != MAGIC {
            return None;
        }
        let dim = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
        let rows = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
        if rows != model.tokenizer().get_vocab_size(true) || dim == 0 {
            return None;
        }
        let mut bytes = Vec::with_capacity(rows * dim * 4);
        input.read_to_end(&mut bytes).ok()?;
        if bytes.len() != rows * dim * 4 {
            return None;
        }
        let table = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Distilled {
            tokenizer: model.tokenizer().clone(),
            id: format!("{}+static", model.model_id()),
            dim,
            table,
        })
    }
}

impl Encoder for Distilled {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn calibration(&self) -> Calibration {
        Calibration::STATIC
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EncodeError(format!("cannot encode a text: {e}")))?;
        let mut v = vec![0f32; self.dim];
        let mut n = 0usize;
        for &id in encoding.get_ids() {
            let start = id as usize * self.dim;
            if let Some(row) = self.table.get(start..start + self.dim) {
                for (x, r) in v.iter_mut().zip(row) {
                    *x += r;
                }
                n += 1;
            }
        }
        if n > 0 {
            for x in &mut v {
                *x /= n as f32;
            }
        }
        Ok(v)
    }
}
