//! Training on a small real DB (see `common`): the sample and neighbour rules, that a tiny model
//! learns, fair gptfit / retrofit comparison, frozen parameters, gradient accumulation, exact
//! resume, and one-line errors for bad input.

mod common;

use std::collections::{HashMap, HashSet};

use retro_data::ChunkDb;
use retro_db::Neighbors;
use retro_model::candle_core::Device;
use retro_model::retro_weights::{tensor_part, Part};
use retro_model::{Precision, RetroWeights};
use retro_train::metrics::{read_step_metrics, StepMetrics};
use retro_train::options::CcaInitChoice;
use retro_train::{Mode, Quiet, SampleSet, SampleShape, SampleSource, Split, TrainOverrides};

use common::{
    base_gpt, chunks_only_dir, db_dir, final_weights, overrides, tensor_bits, tiny_model_config,
    train, train_err, Recorder, CHUNK_LEN,
};

#[test]
fn samples_never_see_their_own_documents_and_neighbors_are_chunk_plus_continuation() {
    let db = ChunkDb::open(db_dir()).unwrap();
    let neighbors = Neighbors::open(&db).unwrap();
    let shape = SampleShape {
        seq_len: 4 * CHUNK_LEN,
        chunk_len: CHUNK_LEN,
        num_neighbors: 2,
        retrieved_len: 2 * CHUNK_LEN,
    };
    let pad = db.manifest.pad_id;
    let mut checked = 0;
    let mut sample_level_drops = 0;
    for split in [Split::Train, Split::Valid] {
        let set = SampleSet::new(&db, Some(&neighbors), split, shape).unwrap();
        assert!(set.len() > 3, "{split:?}: too few samples to test");
        for i in 0..set.len() {
            let s = set.get(i);
            let docs: HashSet<usize> = s.chunks.iter().map(|&c| db.chunk_info(c).doc).collect();
            // Saved neighbours from another document of the same sample: what the sample-level
            // filter removes beyond the DB's own-document rule (counted so the test cannot pass
            // vacuously).
            for &c in &s.chunks {
                let own = db.chunk_info(c).doc;
                sample_level_drops += neighbors
                    .ids(c)
                    .iter()
                    .filter(|&&n| {
                        n >= 0 && {
                            let d = db.chunk_info(n as usize).doc;
                            d != own && docs.contains(&d)
                        }
                    })
                    .count();
            }
            assert_eq!(s.tokens.len(), shape.seq_len + 1);
            assert_eq!(s.neighbors.len(), 4 * 2 * 2 * CHUNK_LEN);
            for (slot, &id) in s.neighbor_chunks.iter().enumerate() {
                let row = &s.neighbors[slot * 2 * CHUNK_LEN..(slot + 1) * 2 * CHUNK_LEN];
                if id < 0 {
                    assert!(row.iter().all(|&t| t == pad));
                    continue;
                }
                let id = id as usize;
                assert!(
                    !docs.contains(&db.chunk_info(id).doc),
                    "sample {i} sees its own document"
                );
                assert!(!db.is_valid_chunk(id), "a validation chunk was retrieved");
                assert_eq!(&row[..CHUNK_LEN], db.padded_chunk(id).as_slice());
                let next = match db.continuation(id) {
                    Some(n) => db.padded_chunk(n),
                    None => vec![pad; CHUNK_LEN],
                };
                assert_eq!(&row[CHUNK_LEN..], next.as_slice());
                checked += 1;
            }
            // Sample chunks are in the split, consecutive in it, and the loss never crosses a document.
            for &c in &s.chunks {
                assert_eq!(db.is_valid_chunk(c), split == Split::Valid);
            }
            for t in 0..shape.seq_len {
                if s.loss_mask[t] > 0.0 {
                    let (c0, c1) = (
                        s.chunks.get(t / CHUNK_LEN),
                        s.chunks.get((t + 1) / CHUNK_LEN),
                    );
                    if let (Some(&a), Some(&b)) = (c0, c1) {
                        assert_eq!(db.chunk_info(a).doc, db.chunk_info(b).doc);
                        assert!((t + 1) % CHUNK_LEN < db.chunk_info(b).len || b != a);
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} neighbours checked");
    assert!(
        sample_level_drops > 0,
        "no saved neighbour came from another document of its sample: the filter went untested"
    );
}

#[test]
fn loss_falls_on_a_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join("run"));
    o.steps = Some(30);
    o.batch = Some(4);
    o.warmup = Some(3);
    let m = train(o);
    let mean = |s: &[StepMetrics]| s.iter().map(|m| m.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&m[..3]), mean(&m[27..]));
    assert!(last < first - 1.0, "loss went from {first} to {last}");
    // The loop follows the schedule: linear warmup over 3 steps to lr 3e-3, cosine to lr / 10 at
    // the last step.
    assert!((m[0].lr - 1e-3).abs() < 1e-12, "step 1 lr {}", m[0].lr);
    assert!((m[2].lr - 3e-3).abs() < 1e-12, "step 3 lr {}", m[2].lr);
    assert!(
        m[3].lr < m[2].lr && m[3].lr > 2.9e-3,
        "step 4 lr {}",
        m[3].lr
    );
    assert!((m[29].lr - 3e-4).abs() < 1e-12, "last lr {}", m[29].lr);
}

#[test]
fn bf16_products_train_like_f32_without_being_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let run = |name: &str, precision: Precision| {
        let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join(name));
        o.steps = Some(10);
        o.batch = Some(2);
        o.warmup = Some(2);
        o.precision = Some(precision);
        train(o)
    };
    let f32_run = run("f32", Precision::F32);
    let bf16_run = run("bf16", Precision::Bf16);
    let mean = |s: &[StepMetrics]| s.iter().map(|m| m.loss).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&bf16_run[..3]), mean(&bf16_run[7..]));
    assert!(last < first - 0.2, "bf16: loss went from {first} to {last}");
    // The same run up to bf16's rounding: close to the f32 losses, and not equal to them.
    assert_ne!(
        f32_run[0].loss, bf16_run[0].loss,
        "bf16 products changed nothing"
    );
    for (a, b) in f32_run.iter().zip(&bf16_run) {
        assert!(
            (a.loss - b.loss).abs() < 0.02 * a.loss,
            "step {}: f32 {} vs bf16 {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    // The setting is the run's: this thread is back to f32, and resuming with another is refused.
    assert_eq!(retro_model::precision(), Precision::F32);
    let other = TrainOverrides {
        precision: Some(Precision::F32),
        ..TrainOverrides::default()
    };
    let err = retro_train::resume(&tmp.path().join("bf16"), other, &mut Quiet).unwrap_err();
    assert!(
        format!("{err:#}").contains("different --precision"),
        "{err:#}"
    );
}

#[test]
fn gptfit_and_retrofit_read_identical_token_streams_and_freeze_what_they_should() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_gpt(tmp.path());
    let start = RetroWeights::load(&base, &Device::Cpu).unwrap();
    let mut streams = Vec::new();
    let mut ends = Vec::new();
    for (name, mode, freeze) in [
        ("gptfit", Mode::Gptfit, false),
        ("retrofit", Mode::Retrofit, false),
        ("frozen", Mode::Retrofit, true),
    ] {
        let mut o = overrides(mode, &base, &tmp.path().join(name));
        o.freeze_decoder = freeze;
        let mut rec = Recorder::default();
        retro_train::train(o.resolve().unwrap(), &mut rec).unwrap();
        assert_eq!(rec.0.len(), 4);
        assert!(rec.0.iter().all(|b| b.3 == (mode == Mode::Retrofit)));
        streams.push(
            rec.0
                .into_iter()
                .map(|(i, t, m, _)| (i, t, m))
                .collect::<Vec<_>>(),
        );
        ends.push(final_weights(&tmp.path().join(name)));
    }
    assert_eq!(
        streams[0], streams[1],
        "gptfit and retrofit read different tokens"
    );
    assert_eq!(streams[1], streams[2]);

    let changed = |w: &RetroWeights, part: Part| -> (usize, usize) {
        let names: Vec<&String> = w
            .tensors
            .keys()
            .filter(|n| tensor_part(n) == part)
            .collect();
        let moved = names
            .iter()
            .filter(|n| tensor_bits(&w.tensors[**n]) != tensor_bits(&start.tensors[**n]))
            .count();
        (moved, names.len())
    };
    let [gptfit, retrofit, frozen] = [&ends[0], &ends[1], &ends[2]];
    // gptfit: encoder and CCA bit-identical, decoder trained.
    assert_eq!(changed(gptfit, Part::Encoder).0, 0);
    assert_eq!(changed(gptfit, Part::Cca).0, 0);
    assert!(changed(gptfit, Part::Decoder).0 > 0);
    // frozen decoder: decoder bit-identical, encoder and CCA trained.
    assert_eq!(changed(frozen, Part::Decoder).0, 0);
    let (moved, total) = changed(frozen, Part::Encoder);
    assert_eq!(moved, total, "every encoder tensor should train");
    assert!(changed(frozen, Part::Cca).0 > 0);
    // unfrozen retrofit trains everything.
    for part in [Part::Decoder, Part::Encoder, Part::Cca] {
        let (moved, total) = changed(retrofit, part);
        assert_eq!(moved, total, "{part:?}: {moved} of {total} tensors moved");
    }
}

#[test]
fn gradient_accumulation_equals_one_larger_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let run = |name: &str, batch: usize, accum: usize| {
        let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join(name));
        o.steps = Some(2);
        o.batch = Some(batch);
        o.grad_accum = Some(accum);
        train(o)
    };
    let big = run("big", 4, 1);
    let acc = run("acc", 2, 2);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    // Step 1 starts from identical weights: same loss and same gradient norm (to f32 round-off).
    assert_eq!(big[0].tokens, acc[0].tokens);
    assert!(
        rel(acc[0].loss, big[0].loss) < 1e-5,
        "{} vs {}",
        acc[0].loss,
        big[0].loss
    );
    assert!(rel(acc[0].grad_norm, big[0].grad_norm) < 1e-4);
    // Step 2 runs on weights updated with those gradients.
    assert!(rel(acc[1].loss, big[1].loss) < 1e-3);
    // A different split of the same samples is not the same as different samples.
    let other = run("other", 2, 1);
    assert!(rel(other[0].loss, big[0].loss) > 1e-5);
}

#[test]
fn resumed_run_equals_uninterrupted_step_for_step() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let mk = |name: &str, steps: u64| {
        let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join(name));
        o.steps = Some(steps);
        o.decay_steps = Some(6);
        o.save_every = Some(2);
        o
    };
    let straight = train(mk("straight", 6));
    train(mk("resumed", 3));
    let given = TrainOverrides {
        steps: Some(6),
        ..TrainOverrides::default()
    };
    struct StartStep(Option<u64>);
    impl retro_train::Observer for StartStep {
        fn started(&mut self, info: &retro_train::RunInfo) {
            self.0 = Some(info.start_step);
        }
    }
    let mut start = StartStep(None);
    retro_train::resume(&tmp.path().join("resumed"), given, &mut start).unwrap();
    assert_eq!(
        start.0,
        Some(3),
        "the resumed run did not start at its checkpoint"
    );
    let resumed = read_step_metrics(&tmp.path().join("resumed/metrics.jsonl")).unwrap();
    let losses = |m: &[StepMetrics]| {
        m.iter()
            .map(|m| (m.step, m.loss.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&straight), losses(&resumed));
    let (a, b) = (
        final_weights(&tmp.path().join("straight")),
        final_weights(&tmp.path().join("resumed")),
    );
    let bits: HashMap<&String, Vec<u32>> =
        a.tensors.iter().map(|(n, t)| (n, tensor_bits(t))).collect();
    for (n, t) in &b.tensors {
        assert_eq!(bits[n], tensor_bits(t), "{n} differs after resume");
    }
    // Resuming with options that would change the run is refused.
    let bad = TrainOverrides {
        lr: Some(1.0),
        ..TrainOverrides::default()
    };
    let err = retro_train::resume(&tmp.path().join("resumed"), bad, &mut Quiet).unwrap_err();
    assert!(format!("{err:#}").contains("different --lr"), "{err:#}");
}

#[test]
fn resuming_something_that_is_not_a_sound_run_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let resume_err = |dir: &std::path::Path| {
        let more = TrainOverrides {
            steps: Some(6),
            ..TrainOverrides::default()
        };
        let msg = format!(
            "{:#}",
            retro_train::resume(dir, more, &mut Quiet).expect_err("resume should fail")
        );
        assert!(!msg.contains('\n'), "error spans lines: {msg}");
        msg
    };
    let not_a_run = tmp.path().join("empty");
    std::fs::create_dir_all(&not_a_run).unwrap();
    assert!(resume_err(&not_a_run).contains("run.json"));

    let run = tmp.path().join("run");
    train(overrides(Mode::Pretrain, &cfg, &run));
    let last = std::fs::read_to_string(run.join("latest")).unwrap();
    let ckpt = run.join("checkpoints").join(last.trim());
    let state = ckpt.join("training/state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{\"step\": ").unwrap();
    assert!(resume_err(&run).contains("state.json"));
    std::fs::write(&state, good).unwrap();
    let optimizer = ckpt.join("training/optimizer.safetensors");
    let bytes = std::fs::read(&optimizer).unwrap();
    std::fs::write(&optimizer, &bytes[..bytes.len() / 2]).unwrap();
    assert!(resume_err(&run).contains("optimizer"));
}

#[test]
fn bad_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join("a"));
    o.seq_len = Some(CHUNK_LEN + 3);
    assert!(train_err(o).contains("multiple of the chunk length"));

    let mut o = overrides(Mode::Pretrain, &cfg, &tmp.path().join("b"));
    o.db = Some(chunks_only_dir().to_path_buf());
    assert!(train_err(o).contains("neighbours"));

    // A model whose tokenizer is not the DB's.
    let base = base_gpt(tmp.path());
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(base.join(f), foreign.join(f)).unwrap();
    }
    std::fs::copy(
        common::shared_data().join("models/minilm-l6-v2/tokenizer.json"),
        foreign.join("tokenizer.json"),
    )
    .unwrap();
    let o = overrides(Mode::Retrofit, &foreign, &tmp.path().join("c"));
    assert!(train_err(o).contains("another tokenizer"));

    // A corrupt checkpoint.
    std::fs::write(foreign.join("model.safetensors"), b"not a safetensors file").unwrap();
    let o = overrides(Mode::Gptfit, &foreign, &tmp.path().join("d"));
    assert!(train_err(o).contains("model.safetensors"));

    // --cca-init outside retrofit.
    let mut o = overrides(Mode::Gptfit, &base, &tmp.path().join("e"));
    o.cca_init = Some(CcaInitChoice::Zero);
    assert!(train_err(o).contains("--cca-init"));

    // An existing run is not overwritten.
    let run = tmp.path().join("gpt");
    let o = overrides(Mode::Gptfit, &base, &run);
    assert!(train_err(o).contains("already holds a run"));
}

/// `--encoder-rope` reaches the model's config (pretraining, and retro-fitting with a fresh encoder),
/// and is refused where it cannot apply: GPT-fitting, and a trained encoder without `--cca-init`.
#[test]
fn encoder_rope_reaches_the_config_and_is_refused_where_it_cannot_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_model_config(tmp.path());
    let pretrained = tmp.path().join("pretrained");
    let mut o = overrides(Mode::Pretrain, &cfg, &pretrained);
    o.steps = Some(1);
    o.encoder_rope = true;
    train(o);
    assert!(final_weights(&pretrained).config.encoder_rope);

    let plain = tmp.path().join("plain");
    let mut o = overrides(Mode::Pretrain, &cfg, &plain);
    o.steps = Some(1);
    train(o);
    assert!(!final_weights(&plain).config.encoder_rope);

    let mut o = overrides(Mode::Retrofit, &plain, &tmp.path().join("kept"));
    o.encoder_rope = true;
    assert!(train_err(o).contains("--cca-init"));
    let refit = tmp.path().join("refit");
    let mut o = overrides(Mode::Retrofit, &plain, &refit);
    o.encoder_rope = true;
    o.cca_init = Some(CcaInitChoice::Random);
    o.steps = Some(1);
    train(o);
    assert!(final_weights(&refit).config.encoder_rope);

    let mut o = overrides(Mode::Gptfit, &plain, &tmp.path().join("gptfit"));
    o.encoder_rope = true;
    assert!(train_err(o).contains("--encoder-rope"));
}
