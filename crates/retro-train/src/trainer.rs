//! The training loop, in one place: samples → forward → masked cross-entropy → backward
//! (accumulated over micro-batches) → clip → AdamW at the scheduled rate → metrics, validation,
//! checkpoints. Everything that decides the numbers is in [`TrainOptions`] and the checkpoint, so a
//! run resumed after `kill -9` reproduces an uninterrupted one step for step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use retro_data::{ChatTemplate, ChunkDb};
use retro_db::neighbors::Neighbors;
use retro_model::retro_weights::{read_tokenizer_files, tensor_part, Part};
use retro_model::weights::named_vars;
use retro_model::{in_compute_pool, RetroWeights};

use crate::adamw::{AdamW, AdamWConfig};
use crate::batch::Batch;
use crate::blend::BlendOrder;
use crate::checkpoint::{
    latest_checkpoint, load_training_state, read_run_record, save_checkpoint, write_run_record,
    Checkpoint, TrainState, METRICS_FILE, RUN_FILE,
};
use crate::clip::clip_by_global_norm;
use crate::eval::perplexity;
use crate::loss::head_nll_sum;
use crate::metrics::{peak_rss_mib, EvalMetrics, MetricsLog, StepMetrics};
use crate::options::{Mode, TrainOptions, TrainOverrides};
use crate::order::{DataOrder, SampleOrder};
use crate::samples::{SampleSet, SampleShape, Split};
use crate::schedule::LrSchedule;
use crate::sft::{SftData, SftFormat};
use crate::source::SampleSource;
use crate::start::starting_weights;
use crate::tokenizer_check::{check_tokenizer, load_tokenizer};

/// What a run is about to do, for the caller's progress display.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub start_step: u64,
    pub total_steps: u64,
    pub seq_len: usize,
    pub train_samples: usize,
    pub valid_samples: usize,
    pub trainable_params: usize,
    pub frozen_params: usize,
    pub retrieval: bool,
}

/// Receives progress from [`train`]; every method has a do-nothing default.
pub trait Observer {
    fn started(&mut self, _info: &RunInfo) {}
    /// The micro-batches of step `step` (1-based), before the forward pass.
    fn batches(&mut self, _step: u64, _micro: &[Batch]) {}
    fn step(&mut self, _m: &StepMetrics) {}
    fn eval(&mut self, _m: &EvalMetrics) {}
    fn checkpoint(&mut self, _dir: &Path) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub step: u64,
    pub last_loss: Option<f64>,
    pub last_eval: Option<EvalMetrics>,
    pub checkpoint: PathBuf,
}

/// Starts a new run in `options.out`, which must not hold one already.
pub fn train(options: TrainOptions, observer: &mut dyn Observer) -> Result<TrainReport> {
    if options.out.join(RUN_FILE).exists() {
        bail!(
            "{} already holds a run; continue it with `retro train --resume {}` or choose another --out",
            options.out.display(),
            options.out.display()
        );
    }
    run(options, Begin::New, observer)
}

/// Continues the run in `run_dir` from its latest checkpoint. `given` may change only the total
/// steps and the evaluation / checkpoint cadence ([`TrainOptions::check_resume_compatible`]).
pub fn resume(
    run_dir: &Path,
    given: TrainOverrides,
    observer: &mut dyn Observer,
) -> Result<TrainReport> {
    let mut options = read_run_record(run_dir)?.options;
    options.out = run_dir.to_path_buf();
    options.check_resume_compatible(&given)?;
    if let Some(steps) = given.steps {
        options.steps = steps;
    }
    options.eval_every = given.eval_every.unwrap_or(options.eval_every);
    options.eval_samples = given.eval_samples.unwrap_or(options.eval_samples);
    options.save_every = given.save_every.unwrap_or(options.save_every);
    options.keep_checkpoints = given.keep_checkpoints.unwrap_or(options.keep_checkpoints);
    let ckpt = latest_checkpoint(run_dir)?;
    run(options, Begin::Resume(ckpt), observer)
}

/// The names of the parameters a run updates, sorted.
pub fn trainable_names(weights: &RetroWeights, options: &TrainOptions) -> Vec<String> {
    let mut names: Vec<String> = weights
        .tensors
        .keys()
        .filter(|n| {
            let decoder = tensor_part(n) == Part::Decoder;
            match options.mode {
                Mode::Gptfit | Mode::Sft => decoder,
                _ => !(options.freeze_decoder && decoder),
            }
        })
        .cloned()
        .collect();
    names.sort();
    names
}

/// How [`run`] begins.
enum Begin {
    /// A new run: writes run.json.
    New,
    /// A resumed run, from its latest checkpoint; None when it had not written one yet (it starts
    /// over, keeping its run.json).
    Resume(Option<PathBuf>),
}

fn run(
    mut options: TrainOptions,
    begin: Begin,
    observer: &mut dyn Observer,
) -> Result<TrainReport> {
    let device = Device::Cpu;
    let _precision = retro_model::scoped_precision(options.precision);
    let db = match options.mode {
        Mode::Sft => None,
        _ => Some(ChunkDb::open(options.db_path()?)?),
    };
    let retrieval = options.uses_retrieval();
    let neighbors = match (&db, retrieval) {
        (Some(db), true) => Some(Neighbors::open(db).with_context(|| {
            format!(
                "--mode {:?} trains with retrieval and needs the DB's neighbours",
                options.mode
            )
        })?),
        _ => None,
    };
    let chunk_len = db.as_ref().map_or(DEFAULT_CHUNK_LEN, |db| db.chunk_len());

    let checkpoint = match &begin {
        Begin::New => None,
        Begin::Resume(dir) => dir.clone(),
    };
    let (weights, tokenizer_dir, state, optimizer_state) = match &checkpoint {
        Some(dir) => {
            let weights = RetroWeights::load(dir, &device)?;
            let (state, opt) = load_training_state(dir, &device)?;
            (weights, Some(dir.clone()), state, Some(opt))
        }
        None => {
            let start = starting_weights(&options, chunk_len, &device)?;
            (
                start.weights,
                start.tokenizer_dir,
                TrainState::new(options.seed),
                None,
            )
        }
    };
    let tokenizer_dir = match &db {
        Some(db) => {
            check_tokenizer(tokenizer_dir.as_deref(), db, &weights)?;
            tokenizer_dir.unwrap_or_else(|| db.dir.clone())
        }
        None => tokenizer_dir.with_context(|| {
            format!(
                "{}: no tokenizer.json next to the model, which instruction tuning needs",
                options.model.display()
            )
        })?,
    };
    // Read now: a resumed run's tokenizer_dir is the checkpoint it resumed from, which it prunes later.
    let tokenizer_files = read_tokenizer_files(&tokenizer_dir)?;
    let cfg = weights.config.clone();
    let seq_len = options.resolve_seq_len(cfg.chunk_len, cfg.decoder.max_position_embeddings)?;
    options.seq_len = Some(seq_len);
    let shape = SampleShape::for_model(&cfg, seq_len);
    let Data {
        train: train_set,
        valid: valid_set,
        mut order,
    } = match &db {
        Some(db) => db_data(db, neighbors.as_ref(), shape, options.seed)?,
        None => sft_data(&mut options, shape, &tokenizer_dir)?,
    };
    if matches!(begin, Begin::New) {
        write_run_record(&options.out, &options)?;
    }

    let (model, varmap) = weights.build_trainable()?;
    let vars: HashMap<String, Var> = named_vars(&varmap).into_iter().collect();
    let trainable = trainable_names(&weights, &options);
    let trainable_params: usize = trainable
        .iter()
        .map(|n| vars[n].as_tensor().elem_count())
        .sum();
    let frozen_params = weights.param_counts().total - trainable_params;
    let mut optimizer = AdamW::new(
        trainable
            .iter()
            .map(|n| (n.clone(), vars[n].clone()))
            .collect(),
        AdamWConfig {
            weight_decay: options.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    if let Some(saved) = &optimizer_state {
        optimizer.load_state(saved, state.step)?;
    }
    let schedule = LrSchedule {
        lr: options.lr,
        min_lr: options.min_lr,
        warmup: options.warmup,
        decay_steps: options.decay_steps,
    };
    let mut metrics = MetricsLog::open(&options.out.join(METRICS_FILE), state.step)?;
    observer.started(&RunInfo {
        start_step: state.step,
        total_steps: options.steps,
        seq_len,
        train_samples: train_set.len(),
        valid_samples: valid_set.len(),
        trainable_params,
        frozen_params,
        retrieval,
    });

    let mut state = state;
    let session = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut last_loss = None;
    let mut last_eval = None;
    let mut last_checkpoint = checkpoint;
    while state.step < options.steps {
        let step_start = Instant::now();
        let lr = schedule.at(state.step + 1);
        // The step's micro-batches, read up front so the loss can be normalised by the step's
        // token count: A micro-batches then add up to exactly one batch A times larger.
        let micro: Vec<Batch> = (0..options.grad_accum)
            .map(|a| {
                let first = state.position + (a * options.batch) as u64;
                let indices: Vec<usize> = (first..first + options.batch as u64)
                    .map(|p| order.sample_at(p))
                    .collect();
                train_set.batch(&indices, &device)
            })
            .collect::<Result<_>>()?;
        observer.batches(state.step + 1, &micro);
        let step_tokens: usize = micro.iter().map(|b| b.tokens).sum();
        let norm = step_tokens.max(1) as f64;
        // One task of candle's rayon pool on CPU, so that the backward's and the optimizer's
        // parallel sections are joins inside it, as the forward's are (retro_model::compute_pool).
        let (loss_sum, grad_norm) = in_compute_pool(&device, || -> Result<(f64, f64)> {
            let mut grads: HashMap<String, Tensor> = HashMap::new();
            let mut loss_sum = 0f64;
            for b in &micro {
                let hidden = model.forward_hidden(&b.inputs, b.neighbors.as_ref())?;
                let head = model.decoder().lm_head();
                let loss = (head_nll_sum(&hidden, head, &b.targets, &b.loss_mask)? / norm)?;
                loss_sum += loss.to_scalar::<f32>()? as f64;
                optimizer.accumulate(&loss.backward()?, &mut grads)?;
            }
            let grad_norm = clip_by_global_norm(&mut grads, options.clip)?;
            optimizer.step(&grads, lr)?;
            Ok((loss_sum, grad_norm))
        })?;
        state.step += 1;
        state.position += (options.batch * options.grad_accum) as u64;
        state.tokens += step_tokens as u64;
        state.elapsed_s = elapsed_before + session.elapsed().as_secs_f64();
        let record = StepMetrics {
            step: state.step,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens: step_tokens,
            tokens_per_s: step_tokens as f64 / step_start.elapsed().as_secs_f64(),
            elapsed: state.elapsed_s,
            peak_rss_mib: peak_rss_mib(),
        };
        metrics.write(&record)?;
        observer.step(&record);
        last_loss = Some(loss_sum);

        let last = state.step == options.steps;
        if !valid_set.is_empty()
            && ((options.eval_every > 0 && state.step % options.eval_every == 0) || last)
        {
            let current = current_weights(&weights, &vars)?.build()?;
            let p = perplexity(
                &current,
                valid_set.as_ref(),
                options.batch,
                options.eval_samples,
                &device,
                &mut |_, _| {},
            )?;
            let record = EvalMetrics {
                step: state.step,
                val_loss: p.loss,
                val_ppl: p.ppl,
                val_tokens: p.tokens,
            };
            metrics.write(&record)?;
            observer.eval(&record);
            last_eval = Some(record);
        }
        if state.step % options.save_every == 0 || last {
            let ckpt = Checkpoint {
                weights: &current_weights(&weights, &vars)?,
                optimizer: optimizer.state_tensors()?,
                state: &state,
                tokenizer_files: &tokenizer_files,
            };
            let dir = save_checkpoint(&options.out, &ckpt, options.keep_checkpoints)?;
            observer.checkpoint(&dir);
            last_checkpoint = Some(dir);
        }
    }
    let checkpoint = match last_checkpoint {
        Some(dir) => dir,
        None => latest_checkpoint(&options.out)?.context("the run ended without a checkpoint")?,
    };
    Ok(TrainReport {
        step: state.step,
        last_loss,
        last_eval,
        checkpoint,
    })
}

/// Chunk length of the Retro model made when an sft run starts from a plain GPT.
const DEFAULT_CHUNK_LEN: usize = 64;

/// The train and validation samples, and the order training reads the train samples in.
struct Data<'a> {
    train: Box<dyn SampleSource + 'a>,
    valid: Box<dyn SampleSource + 'a>,
    order: Box<dyn DataOrder>,
}

/// Samples cut from a retrieval DB, read in one seeded order.
fn db_data<'a>(
    db: &'a ChunkDb,
    neighbors: Option<&'a Neighbors>,
    shape: SampleShape,
    seed: u64,
) -> Result<Data<'a>> {
    let train = SampleSet::new(db, neighbors, Split::Train, shape)?;
    let valid = SampleSet::new(db, neighbors, Split::Valid, shape)?;
    if train.is_empty() {
        bail!(
            "the DB {} has fewer train chunks than one sample of {} tokens needs",
            db.dir.display(),
            shape.seq_len
        );
    }
    Ok(Data {
        order: Box::new(SampleOrder::new(seed, train.len())),
        train: Box::new(train),
        valid: Box::new(valid),
    })
}

/// Conversations of the `--data` blend, formatted with the run's template (chosen from the
/// tokenizer when not given, and recorded in `options`).
fn sft_data(
    options: &mut TrainOptions,
    shape: SampleShape,
    tokenizer_dir: &Path,
) -> Result<Data<'static>> {
    let tokenizer = load_tokenizer(&tokenizer_dir.join("tokenizer.json"))?;
    let template = options
        .template
        .unwrap_or_else(|| ChatTemplate::default_for(tokenizer.inner()));
    template.check_tokenizer(tokenizer.inner())?;
    options.template = Some(template);
    // The answer ends with the template's end of turn: ChatML's <|im_end|>, else the EOS the
    // reference appends (its EOD).
    let eos = match template {
        ChatTemplate::Chatml => tokenizer.inner().token_to_id("<|im_end|>"),
        ChatTemplate::Megatron => None,
    }
    .unwrap_or(tokenizer.pad_id);
    let format = SftFormat {
        tokenizer: &tokenizer,
        template,
        seq_len: shape.seq_len,
        eos,
    };
    let data = SftData::load(
        &options.data,
        &options.exclude_task,
        &format,
        shape,
        options.seed,
        &mut |_, _| {},
    )?;
    let weights: Vec<f64> = options.data.iter().map(|d| d.weight).collect();
    Ok(Data {
        order: Box::new(BlendOrder::new(options.seed, data.train.files(), &weights)),
        train: Box::new(data.train),
        valid: Box::new(data.valid),
    })
}

/// The model's current tensors (detached from the autograd graph) as checkpointable weights.
fn current_weights(start: &RetroWeights, vars: &HashMap<String, Var>) -> Result<RetroWeights> {
    Ok(RetroWeights {
        config: start.config.clone(),
        tensors: vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect(),
    })
}
