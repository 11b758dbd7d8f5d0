//! `retro model …`: turn a pretrained GPT into a Retro model, and describe a checkpoint.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use retro_model::retro_config::is_retro_checkpoint;
use retro_model::retro_weights::{
    copy_tokenizer_files, decoder_info, retro_checkpoint_info, source_dir, ModelInfo, CONFIG_FILE,
    WEIGHTS_FILE,
};
use retro_model::{retrofit, CcaInit, RetroInit, RetroOptions, Weights};
use std::path::{Path, PathBuf};

use crate::output::write_stdout;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Build a Retro model from a pretrained GPT: its decoder is the GPT, the encoder, chunked cross-attention and
    /// pre-CCA norms are new. Writes a checkpoint directory (config.json, model.safetensors, tokenizer.json).
    Retrofit(RetrofitArgs),
    /// Architecture, parameter counts (decoder / encoder / CCA) and Retro layers of a checkpoint.
    Info(InfoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CcaInitArg {
    /// Random, as Megatron initialises new modules.
    Random,
    /// CCA output projections zero: the new model starts exactly equal to the GPT.
    Zero,
}

#[derive(Args)]
pub struct RetrofitArgs {
    /// The GPT: an HF directory (config.json + safetensors), a GGUF file, or a directory holding a GGUF (whole or
    /// split into .partNN pieces).
    #[arg(long)]
    from: PathBuf,
    /// Checkpoint directory to create (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// How the CCA output projections start.
    #[arg(long, value_enum, default_value = "random")]
    cca_init: CcaInitArg,
    /// Seed of the new weights.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Standard deviation of the new weights (Megatron's init_method_std; output projections are scaled down by
    /// sqrt(2 * layers)).
    #[arg(long, default_value_t = 0.02)]
    init_std: f64,
    /// Rotary positions in the encoder's self-attention, so that the model can tell which neighbour token follows
    /// which. Not in the reference, whose encoder sees no positions (docs/deviations.md).
    #[arg(long)]
    encoder_rope: bool,
    /// Tokens per chunk (m).
    #[arg(long, default_value_t = 64)]
    chunk_len: usize,
    /// Neighbours per chunk (k).
    #[arg(long, default_value_t = 2)]
    neighbors: usize,
    /// Tokens per neighbour, chunk plus continuation (r).
    #[arg(long, default_value_t = 128)]
    retrieved_len: usize,
    /// Retro layers, 1-based, comma-separated (default: every 3rd layer from 6, from 9 above 15 layers).
    #[arg(long, value_delimiter = ',')]
    retro_layers: Option<Vec<usize>>,
    /// Retrieval encoder layers.
    #[arg(long, default_value_t = 2)]
    encoder_layers: usize,
    /// Fixed scalar on the CCA output (legacy Megatron --retro-attention-gate).
    #[arg(long, default_value_t = 1.0)]
    gate: f64,
}

#[derive(Args)]
pub struct InfoArgs {
    /// A Retro checkpoint directory (or a plain GPT: HF directory or GGUF).
    path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Retrofit(args) => run_retrofit(args),
        ModelCommand::Info(args) => run_info(args),
    }
}

fn run_retrofit(a: RetrofitArgs) -> Result<()> {
    if a.out.exists() {
        let empty = a.out.is_dir()
            && std::fs::read_dir(&a.out)
                .with_context(|| format!("cannot list {}", a.out.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists and is not an empty directory",
                a.out.display()
            );
        }
    }
    let device = retro_model::candle_core::Device::Cpu;
    let gpt = Weights::load(&a.from, &device)
        .with_context(|| format!("cannot load the GPT {}", a.from.display()))?;
    let opts = RetroOptions {
        chunk_len: a.chunk_len,
        num_neighbors: a.neighbors,
        retrieved_len: a.retrieved_len,
        retro_layer_numbers: a.retro_layers,
        encoder_layers: a.encoder_layers,
        gate: a.gate,
    };
    let init = RetroInit {
        seed: a.seed,
        std: a.init_std,
        cca: match a.cca_init {
            CcaInitArg::Random => CcaInit::Random,
            CcaInitArg::Zero => CcaInit::Zero,
        },
    };
    let mut rw = retrofit(&gpt, &opts, &init)
        .with_context(|| format!("cannot retro-fit {}", a.from.display()))?;
    rw.config.set_encoder_rope(a.encoder_rope)?;
    rw.save(&a.out)?;
    let copied = match source_dir(&gpt.source) {
        Some(dir) => copy_tokenizer_files(&dir, &a.out)?,
        None => Vec::new(),
    };
    let c = rw.param_counts();
    write_stdout(&format!(
        "wrote {} ({} and {}): decoder {} + encoder {} + CCA {} parameters, Retro layers {:?}\n",
        a.out.display(),
        CONFIG_FILE,
        WEIGHTS_FILE,
        c.decoder,
        c.encoder,
        c.cca,
        rw.config.retro_layer_numbers
    ))?;
    if copied.is_empty() {
        eprintln!(
            "warning: no tokenizer.json next to {}; copy one into {} to use the model",
            a.from.display(),
            a.out.display()
        );
    } else {
        write_stdout(&format!("copied {}\n", copied.join(", ")))?;
    }
    Ok(())
}

fn run_info(a: InfoArgs) -> Result<()> {
    let info = describe(&a.path)?;
    if a.json {
        return write_stdout(&(serde_json::to_string_pretty(&info)? + "\n"));
    }
    let p = &info.parameters;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("architecture      {}", info.architecture));
    line(format!(
        "decoder           {} layers, hidden {}, {} heads ({} key/value), vocab {}, {} head",
        info.decoder_layers,
        info.hidden_size,
        info.num_attention_heads,
        info.num_key_value_heads,
        info.vocab_size,
        if info.tie_word_embeddings {
            "tied"
        } else {
            "untied"
        }
    ));
    if info.retro_layer_numbers.is_empty() {
        line("retro layers      none (plain decoder)".to_string());
    } else {
        let layers: Vec<String> = info
            .retro_layer_numbers
            .iter()
            .map(|l| l.to_string())
            .collect();
        line(format!("retro layers      {} (1-based)", layers.join(", ")));
        line(format!(
            "retrieval         chunk {} tokens, {} neighbours of {} tokens, {} encoder layers, gate {}",
            info.chunk_len.unwrap_or(0),
            info.num_neighbors.unwrap_or(0),
            info.retrieved_len.unwrap_or(0),
            info.encoder_layers,
            info.gate.unwrap_or(0.0)
        ));
    }
    line(format!(
        "parameters        decoder {} / encoder {} / CCA {} / total {}",
        group(p.decoder),
        group(p.encoder),
        group(p.cca),
        group(p.total)
    ));
    line(format!("stored as         {}", info.dtypes.join(", ")));
    write_stdout(&out)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn describe(path: &Path) -> Result<ModelInfo> {
    if path.is_dir() && is_retro_checkpoint(path) {
        return retro_checkpoint_info(path);
    }
    let w = Weights::load(path, &retro_model::candle_core::Device::Cpu)?;
    Ok(decoder_info(&w))
}

/// 134515008 → "134,515,008".
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use retro_model::candle_core::Device;

    fn args(from: &Path, out: &Path, cca_init: CcaInitArg) -> RetrofitArgs {
        RetrofitArgs {
            from: from.to_path_buf(),
            out: out.to_path_buf(),
            cca_init,
            seed: 5,
            init_std: 0.02,
            encoder_rope: false,
            chunk_len: 4,
            neighbors: 2,
            retrieved_len: 8,
            retro_layers: Some(vec![2, 3]),
            encoder_layers: 2,
            gate: 1.0,
        }
    }

    /// `retrofit` from a tiny HF directory writes a checkpoint that `info` describes and that loads
    /// back; a second run into the same directory, or bad layers, are one-line errors.
    #[test]
    fn retrofit_then_info() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = retro_model::tiny::tiny_config();
        cfg.num_hidden_layers = 3;
        let w = retro_model::tiny::random_weights(&cfg, 1, &Device::Cpu).unwrap();
        let src = tmp.path().join("gpt");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("config.json"),
            serde_json::to_string(&w.config).unwrap(),
        )
        .unwrap();
        retro_model::candle_core::safetensors::save(&w.tensors, src.join("model.safetensors"))
            .unwrap();
        std::fs::write(src.join("tokenizer.json"), "{}").unwrap();

        let out = tmp.path().join("retro");
        run_retrofit(args(&src, &out, CcaInitArg::Zero)).unwrap();
        assert!(out.join("tokenizer.json").is_file());
        let info = describe(&out).unwrap();
        assert_eq!(info.architecture, "RetroLlamaForCausalLM");
        assert_eq!(info.retro_layer_numbers, vec![2, 3]);
        assert_eq!(
            info.parameters.decoder,
            w.tensors.values().map(|t| t.elem_count()).sum::<usize>()
        );
        assert_eq!(info.parameters.cca, 2 * 12352);
        assert!(info.parameters.encoder > 0);
        let back = retro_model::RetroWeights::load(&out, &Device::Cpu).unwrap();
        let o = &back.tensors["model.layers.1.cross_attn.o_proj.weight"];
        assert_eq!(
            o.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );

        let plain = describe(&src).unwrap();
        assert!(plain.retro_layer_numbers.is_empty());
        assert_eq!(plain.parameters.total, info.parameters.decoder);
        assert_eq!(plain.dtypes, vec!["F32".to_string()]);
        assert_eq!(info.dtypes, vec!["F32".to_string()]);

        let e = format!(
            "{:#}",
            run_retrofit(args(&src, &out, CcaInitArg::Random)).unwrap_err()
        );
        assert!(e.contains("already exists"), "{e}");
        let mut bad = args(&src, &tmp.path().join("bad"), CcaInitArg::Random);
        bad.retro_layers = Some(vec![4]);
        let e = format!("{:#}", run_retrofit(bad).unwrap_err());
        assert!(
            e.contains("Retro layer 4 is outside 1..=3") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(134515008), "134,515,008");
    }
}
