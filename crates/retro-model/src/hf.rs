//! HF model directory: `config.json` plus `*.safetensors` (one file or several shards), tensors
//! converted to f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;

/// Reads `dir/config.json` and every `dir/*.safetensors` (in name order; shards hold disjoint
/// tensors). Tensors of other dtypes (bf16, f16) are converted to f32 so that the model can be
/// trained in f32.
pub fn load_dir(dir: &Path, device: &Device) -> Result<(LlamaConfig, HashMap<String, Tensor>)> {
    let config = LlamaConfig::from_json_file(&dir.join("config.json"))?;
    Ok((config, load_tensors(dir, device)?))
}

/// The `dir/*.safetensors` files in name order; an error naming `dir` as a `kind` directory
/// ("model", "checkpoint") if it cannot be listed, or if it holds none.
pub(crate) fn safetensors_files(dir: &Path, kind: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {kind} directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.safetensors file", dir.display());
    }
    Ok(files)
}

/// Every tensor of every `dir/*.safetensors` (in name order), converted to f32.
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let files = safetensors_files(dir, "model")?;
    let mut tensors = HashMap::new();
    for f in &files {
        let part = candle_core::safetensors::load(f, device)
            .with_context(|| format!("cannot read safetensors file {}", f.display()))?;
        for (name, t) in part {
            let t = if t.dtype() == DType::F32 {
                t
            } else {
                t.to_dtype(DType::F32)
                    .with_context(|| format!("{}: cannot convert {name} to f32", f.display()))?
            };
            if tensors.insert(name.clone(), t).is_some() {
                bail!(
                    "tensor {name} appears in more than one safetensors file in {}",
                    dir.display()
                );
            }
        }
    }
    Ok(tensors)
}
