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
        // Identifies the model for caches: its config and tokenizer, and the weights' size (hashing
        // 90 MB on every start would cost more than loading them).
        let mut hash = Sha256::new();
        hash.update(&config_text);
        hash.update(&tokenizer_text);
        hash.update(size.to_le_bytes());
        let digest = hash.finalize();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Ok(MiniLm {
            model,
            tokenizer,
            id: format!("{name}@{short}"),
            dir: dir.to_owned(),
        })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
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
