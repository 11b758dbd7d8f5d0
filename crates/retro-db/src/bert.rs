//! A BERT encoder for inference, written for throughput on CPU.
//!
//! Why not `candle_transformers::models::bert`: its linear layers multiply `[batch, seq, hidden]` by a weight
//! broadcast over the batch, which candle runs as `batch` small matrix products, each too small for the gemm crate to
//! spread over threads; candle's gemm has no AVX-512 kernel on stable Rust; and its GELU calls scalar libm `erf` per
//! element. Here every linear layer is one `[batch·seq, in] × [out, in]ᵀ` product through the BLAS that Faiss already
//! links (OpenBLAS, whose kernels use AVX-512 where the CPU has it), attention runs per (sequence, head) in parallel
//! over real tokens only, and GELU uses a cheap erf. Weights and numerics are those of HF `BertModel`
//! (post-LayerNorm, erf GELU); the test against `reference_embeddings.json` holds it to cosine >= 0.9999.

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use retro_kernels::{gemm, Operand, Write};

/// The hyper-parameters of an HF `config.json` that inference needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".into()
}

mod blas {
    // CBLAS from the BLAS library that faiss-sys links (`-lblas`, OpenBLAS on Debian).
    extern "C" {
        pub fn cblas_sgemm(
            layout: i32,
            trans_a: i32,
            trans_b: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
    }
    pub const ROW_MAJOR: i32 = 101;
    pub const NO_TRANS: i32 = 111;
    pub const TRANS: i32 = 112;
}

fn tensor_values(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>> {
    Ok(vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()?)
}

/// `x · Wᵀ + b` with `W` as stored by PyTorch, `[out, in]`.
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl Dense {
    fn load(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            weight: tensor_values(&vb, &[d_out, d_in], "weight")?,
            bias: tensor_values(&vb, &[d_out], "bias")?,
            d_in,
            d_out,
        })
    }

    /// `x`: `[n, in]` → `[n, out]`, one BLAS call (OpenBLAS spreads it over its threads).
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.d_in;
        let mut out = vec![0f32; n * self.d_out];
        for row in out.chunks_exact_mut(self.d_out) {
            row.copy_from_slice(&self.bias);
        }
        sgemm_rows(x, &self.weight, &mut out, self.d_in, self.d_out);
        out
    }
}

/// `out += x · wᵀ` for row-major `x` `[n, d_in]`, `w` `[d_out, d_in]`, `out` `[n, d_out]`.
///
/// One call for the whole batch measured faster than one single-threaded call per rayon task
/// (docs/benchmarks.md: 1.37x vs 0.89-1.02x sentence-transformers).
fn sgemm_rows(x: &[f32], w: &[f32], out: &mut [f32], d_in: usize, d_out: usize) {
    let n = x.len() / d_in;
    assert_eq!(out.len(), n * d_out);
    assert_eq!(w.len(), d_out * d_in);
    // Safety: the asserts above give the lengths the dimensions promise.
    unsafe {
        blas::cblas_sgemm(
            blas::ROW_MAJOR,
            blas::NO_TRANS,
            blas::TRANS,
            n as i32,
            d_out as i32,
            d_in as i32,
            1.0,
            x.as_ptr(),
            d_in as i32,
            w.as_ptr(),
            d_in as i32,
            1.0,
            out.as_mut_ptr(),
            d_out as i32,
        );
    }
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        // Old TF-converted checkpoints call the parameters gamma / beta.
        let weight =
            tensor_values(&vb, &[d], "weight").or_else(|_| tensor_values(&vb, &[d], "gamma"))?;
        let bias =
            tensor_values(&vb, &[d], "bias").or_else(|_| tensor_values(&vb, &[d], "beta"))?;
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
        })
    }

    /// Normalises `x + residual` row by row, in place in `x`.
    fn forward_residual(&self, x: &mut [f32], residual: &[f32]) {
        let d = self.weight.len();
        x.par_chunks_mut(d * 16)
            .zip(residual.par_chunks(d * 16))
            .for_each(|(rows, res)| {
                for (row, r) in rows.chunks_exact_mut(d).zip(res.chunks_exact(d)) {
                    row.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                    let mean = row.iter().sum::<f32>() / d as f32;
                    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                    let inv = 1.0 / (var + self.eps).sqrt();
                    for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                        *v = (*v - mean) * inv * w + b;
                    }
                }
            });
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

pub struct Bert {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embedding: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    pub config: BertConfig,
}

impl Bert {
    /// Loads `vb` laid out as HF `BertModel` (with or without a `bert.` prefix).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        if !matches!(config.hidden_act.as_str(), "gelu" | "gelu_python") {
            bail!(
                "hidden_act {:?} is not supported (BERT uses erf GELU, \"gelu\")",
                config.hidden_act
            );
        }
        if config.hidden_size % config.num_attention_heads != 0 {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let emb = vb.pp("embeddings");
        let word_embeddings =
            tensor_values(&emb, &[config.vocab_size, h], "word_embeddings.weight")?;
        let position_embeddings = tensor_values(
            &emb,
            &[config.max_position_embeddings, h],
            "position_embeddings.weight",
        )?;
        let token_type_embedding = tensor_values(
            &emb,
            &[config.type_vocab_size, h],
            "token_type_embeddings.weight",
        )?[..h]
            .to_vec();
        let embedding_norm = LayerNorm::load(emb.pp("LayerNorm"), h, config.layer_norm_eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let attn = vb.pp("attention");
                // q, k and v stacked into one [3h, h] product.
                let mut weight = Vec::with_capacity(3 * h * h);
                let mut bias = Vec::with_capacity(3 * h);
                for name in ["self.query", "self.key", "self.value"] {
                    weight.extend(tensor_values(&attn.pp(name), &[h, h], "weight")?);
                    bias.extend(tensor_values(&attn.pp(name), &[h], "bias")?);
                }
                Ok(Layer {
                    qkv: Dense {
                        weight,
                        bias,
                        d_in: h,
                        d_out: 3 * h,
                    },
                    attention_out: Dense::load(attn.pp("output.dense"), h, h)?,
                    attention_norm: LayerNorm::load(
                        attn.pp("output.LayerNorm"),
                        h,
                        config.layer_norm_eps,
                    )?,
                    intermediate: Dense::load(
                        vb.pp("intermediate.dense"),
                        h,
                        config.intermediate_size,
                    )?,
                    output: Dense::load(vb.pp("output.dense"), config.intermediate_size, h)?,
                    output_norm: LayerNorm::load(
                        vb.pp("output.LayerNorm"),
                        h,
                        config.layer_norm_eps,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embedding,
            embedding_norm,
            layers,
            config: config.clone(),
        })
    }

    /// Last hidden states of a batch: `token_ids[b]` are the ids of sequence b (at most max_position_embeddings).
    /// Returns `[batch, seq, hidden]` flattened, with `seq` = the longest sequence; rows past a sequence's length are
    /// padding and must be ignored.
    pub fn forward(&self, token_ids: &[Vec<u32>]) -> Result<(Vec<f32>, usize)> {
        let batch = token_ids.len();
        let seq = token_ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if seq > self.config.max_position_embeddings {
            bail!(
                "sequence of {seq} tokens is longer than max_position_embeddings {}",
                self.config.max_position_embeddings
            );
        }
        let h = self.config.hidden_size;
        let mut x = vec![0f32; batch * seq * h];
        let mut embedded = vec![0f32; batch * seq * h];
        for (b, ids) in token_ids.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.config.vocab_size {
                    bail!(
                        "token id {id} is outside the BERT vocabulary ({})",
                        self.config.vocab_size
                    );
                }
                let row = &mut embedded[(b * seq + p) * h..(b * seq + p + 1) * h];
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let position = &self.position_embeddings[p * h..(p + 1) * h];
                for j in 0..h {
                    row[j] = word[j] + position[j];
                }
                x[(b * seq + p) * h..(b * seq + p + 1) * h]
                    .copy_from_slice(&self.token_type_embedding);
            }
        }
        self.embedding_norm.forward_residual(&mut x, &embedded);
        let lengths: Vec<usize> = token_ids.iter().map(Vec::len).collect();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x);
            let context = attention(&qkv, &lengths, seq, h, self.config.num_attention_heads);
            let mut attended = layer.attention_out.forward(&context);
            layer.attention_norm.forward_residual(&mut attended, &x);
            let mut inner = layer.intermediate.forward(&attended);
            gelu_erf(&mut inner);
            x = layer.output.forward(&inner);
            layer.output_norm.forward_residual(&mut x, &attended);
        }
        Ok((x, seq))
    }
}

/// Scaled dot-product attention per (sequence, head), over the real tokens of each sequence only (the same result as
/// HF's additive mask of `f32::MIN` on padding). `qkv` is `[batch·seq, 3·hidden]` (q | k | v); returns the context
/// `[batch·seq, hidden]`, zero on padding rows.
///
/// Per (sequence, head) two single-threaded gemms read q, k and v in place through their strides: scores = q·kᵀ
/// `[len, len]`, a row softmax, context = scores·v. (Row-by-row dot products were 15–20% of embedding time at
/// head_dim 32; the gemm micro-kernel keeps the products in registers.)
fn attention(qkv: &[f32], lengths: &[usize], seq: usize, hidden: usize, heads: usize) -> Vec<f32> {
    let head_dim = hidden / heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let row = 3 * hidden;
    let mut context = vec![0f32; lengths.len() * seq * hidden];
    // One task per sequence; its heads write disjoint columns of its own rows.
    context
        .par_chunks_mut(seq * hidden)
        .zip(lengths.par_iter())
        .enumerate()
        .for_each(|(b, (out, &len))| {
            if len == 0 {
                return;
            }
            let rows = &qkv[b * seq * row..(b * seq + len) * row];
            let mut scores = vec![0f32; len * len];
            for head in 0..heads {
                let q = Operand::rows(&rows[head * head_dim..], row);
                // kᵀ: element (p, j) is k[j][p], at j·row + p.
                let k_t = Operand::transposed(&rows[hidden + head * head_dim..], row);
                gemm(
                    (len, len, head_dim),
                    &mut scores,
                    len,
                    Write::Overwrite,
                    q,
                    k_t,
                    scale,
                    1,
                );
                for r in scores.chunks_exact_mut(len) {
                    let max = r.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                    // retro_kernels::exp is a polynomial that vectorises; libm's expf does not.
                    let mut total = 0f32;
                    for s in r.iter_mut() {
                        *s = retro_kernels::exp(*s - max);
                        total += *s;
                    }
                    let inv_total = 1.0 / total;
                    r.iter_mut().for_each(|s| *s *= inv_total);
                }
                let v = Operand::rows(&rows[2 * hidden + head * head_dim..], row);
                gemm(
                    (len, head_dim, len),
                    &mut out[head * head_dim..],
                    hidden,
                    Write::Overwrite,
                    Operand::rows(&scores, len),
                    v,
                    1.0,
                    1,
                );
            }
        });
    context
}

/// GELU with the exact erf form, `x · (1 + erf(x / √2)) / 2`, in place, in parallel.
fn gelu_erf(values: &mut [f32]) {
    values.par_chunks_mut(4096).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// erf with absolute error below 5e-7 in f32 (Numerical Recipes' `erfc` Chebyshev fit), branch-free but for the sign.
#[inline(always)] // so that the loop in `gelu_erf` vectorises
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * retro_kernels::exp(poly);
    let r = 1.0 - erfc;
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

/// Loads HF safetensors in f16 or f32 as f32.
pub fn load_weights(files: &[std::path::PathBuf]) -> Result<VarBuilder<'static>> {
    // Safety: the weight files are memory-mapped read-only.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, &Device::Cpu) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm() {
        for i in -3500..=3500 {
            let x = i as f32 / 1000.0;
            let exact = libm_erf(x as f64);
            assert!(
                (erf(x) as f64 - exact).abs() < 5e-7,
                "erf({x}) = {} vs {exact}",
                erf(x)
            );
        }
    }

    /// erf by its Taylor series (exact to about 1e-11 for |x| <= 3.5 in f64).
    fn libm_erf(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0;
        while n < 200 {
            sum += term / (2 * n + 1) as f64;
            n += 1;
            term *= -x * x / n as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
