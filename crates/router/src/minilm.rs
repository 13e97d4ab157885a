//! The sentence-embedding model of the semantic tier (the `embed` feature): a BERT encoder in
//! the shape of `sentence-transformers/all-MiniLM-L6-v2`, run on the CPU with candle, mean
//! pooling over the tokens. The weights are never fetched here: [`MiniLm::load`] takes the
//! directory a user (or `scripts/fetch-minilm`) put them in.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::semantic::{EncodeError, Encoder};

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The longest input in tokens: the rest of a text is cut (the model was trained on 128).
const MAX_TOKENS: usize = 128;

/// A loaded model (the weights are memory-mapped).
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    id: String,
    dir: PathBuf,
}

impl MiniLm {
    /// Loads the model in `dir`: `config.json` (a BERT config), `tokenizer.json` (a Hugging
    /// Face tokenizer) and `model.safetensors` (the weights, without a `bert.` prefix).
    pub fn load(dir: &Path) -> Result<Self, EncodeError> {
        let err = |what: &str, e: &dyn std::fmt::Display| EncodeError(format!("{what} in {}: {e}", dir.display()));
        for file in MODEL_FILES {
            if !dir.join(file).is_file() {
                return Err(EncodeError(format!(
                    "{} has no {file} (a model directory holds {}; scripts/fetch-minilm makes one)",
                    dir.display(),
                    MODEL_FILES.join(", ")
                )));
            }
        }
        let config_text = fs::read(dir.join("config.json")).map_err(|e| err("cannot read config.json", &e))?;
        let config: Config = serde_json::from_slice(&config_text).map_err(|e| err("invalid config.json", &e))?;
        let tokenizer_text = fs::read(dir.join("tokenizer.json")).map_err(|e| err("cannot read tokenizer.json", &e))?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_text).map_err(|e| err("invalid tokenizer.json", &e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| err("invalid tokenizer.json", &e))?;
        let weights = dir.join("model.safetensors");
        let size = fs::metadata(&weights)
            .map_err(|e| err("cannot read model.safetensors", &e))?
            .len();
        // SAFETY: the file is mapped read-only; like every memory-mapped file, it must not be
        // truncated while the model is in use (a model directory is not written to).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .map_err(|e| err("invalid model.safetensors", &e))?;
        let model = BertModel::load(vb, &config).map_err(|e| err("model.safetensors does not fit config.json", &e))?;
        let digest = fingerprint(&config_text, &tokenizer_text, &weights, size)
            .map_err(|e| err("cannot read model.safetensors", &e))?;
        let shape: serde_json::Value = serde_json::from_slice(&config_text).unwrap_or_default();
        let dims = |key: &str| shape[key].as_u64().unwrap_or(0);
        let id = format!("bert-{}x{}@{digest}", dims("hidden_size"), dims("num_hidden_layers"));
        Ok(MiniLm {
            model,
            tokenizer,
            id,
            dir: dir.to_owned(),
        })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Identifies a model for caches of its embeddings: its config, its tokenizer, the weights' size
/// and 64 KiB from each of 16 places spread over the weights (hashing all 90 MB on every start
/// would cost more than loading them; a retrained model differs everywhere). 12 hex digits.
fn fingerprint(config: &[u8], tokenizer: &[u8], weights: &Path, size: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const SAMPLES: u64 = 16;
    const SAMPLE: usize = 64 << 10;
    let mut hash = Sha256::new();
    hash.update(config);
    hash.update(tokenizer);
    hash.update(size.to_le_bytes());
    let mut file = fs::File::open(weights)?;
    let mut buf = vec![0u8; SAMPLE];
    for i in 0..SAMPLES {
        file.seek(SeekFrom::Start(size.saturating_sub(SAMPLE as u64) * i / (SAMPLES - 1)))?;
        let n = file.read(&mut buf)?;
        hash.update(&buf[..n]);
    }
    Ok(hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect())
}

impl Encoder for MiniLm {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn encode(&self, text: &str) -> Result<Vec<f32>, EncodeError> {
        let failed = |e: &dyn std::fmt::Display| EncodeError(format!("cannot encode a text: {e}"));
        let encoding = self.tokenizer.encode(text, true).map_err(|e| failed(&e))?;
        let ids = Tensor::new(encoding.get_ids(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(|e| failed(&e))?;
        let types = ids.zeros_like().map_err(|e| failed(&e))?;
        // One text, no padding: every token counts, and the mean is over all of them.
        let out = self
            .model
            .forward(&ids, &types, None)
            .and_then(|t| t.mean(1))
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| failed(&e))?;
        Ok(out)
    }
}
