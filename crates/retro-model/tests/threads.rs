//! The forwards run as tasks of candle's rayon pool on CPU (`Device::with_context`), whoever calls
//! them: plain threads at once, workers of another rayon pool, or candle's pool itself (nested, so
//! inline). Every caller must get the same hidden states, bit for bit, and none may deadlock; the
//! caller's per-thread precision must reach the pool's worker.

use std::sync::mpsc;
use std::time::Duration;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use retro_model::tiny::{random_ids, random_retro_weights, tiny_retro_config};
use retro_model::{scoped_precision, Precision, RetroModel};

const CALLERS: usize = 4;

/// The three forwards' outputs, flattened: the whole-sequence Retro forward with neighbours, the
/// plain decoder with a KV cache (prompt, then one token), and the cached Retro forward.
fn outputs(model: &RetroModel) -> Vec<f32> {
    let cfg = model.config();
    let (b, n) = (2, 4 * cfg.chunk_len);
    let vocab = cfg.decoder.vocab_size;
    let l = n / cfg.chunk_len;
    let ids = Tensor::from_vec(random_ids(vocab, b * n, 1), (b, n), &Device::Cpu).unwrap();
    let nb_len = b * l * cfg.num_neighbors * cfg.retrieved_len;
    let nb = Tensor::from_vec(
        random_ids(vocab, nb_len, 2),
        (b, l, cfg.num_neighbors, cfg.retrieved_len),
        &Device::Cpu,
    )
    .unwrap();
    let whole = model.forward_hidden(&ids, Some(&nb)).unwrap();

    let decoder = model.decoder();
    let mut kv = decoder.new_cache();
    decoder
        .forward_hidden(&ids.narrow(1, 0, n - 1).unwrap(), Some(&mut kv))
        .unwrap();
    let last = decoder
        .forward_hidden(&ids.narrow(1, n - 1, 1).unwrap(), Some(&mut kv))
        .unwrap();

    let mut cache = model.new_cache();
    let first_chunk = ids.narrow(1, 0, cfg.chunk_len).unwrap();
    let chunk_nb = nb.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    let cached = model
        .forward_cached(&first_chunk, &[Some(chunk_nb)], &mut cache)
        .unwrap();

    [whole, last, cached]
        .iter()
        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

/// Runs `f` on a thread of its own and fails the test if it has not returned within two minutes.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{what}: no result after 120 s ({e}): deadlock?"))
}

fn model() -> RetroModel {
    random_retro_weights(&tiny_retro_config(), 7, &Device::Cpu)
        .unwrap()
        .build()
        .unwrap()
}

/// `callers` runs one caller's work (`outputs` of one model) `CALLERS` times, its own way, on a
/// thread of its own: each must give the states of a plain call, within the deadline.
fn assert_same_states<F>(what: &'static str, callers: F)
where
    F: FnOnce(&(dyn Fn() -> Vec<f32> + Sync)) -> Vec<Vec<f32>> + Send + 'static,
{
    let want = outputs(&model());
    let got = within_deadline(what, move || {
        let model = model();
        callers(&|| outputs(&model))
    });
    assert_eq!(got.len(), CALLERS);
    for (i, g) in got.iter().enumerate() {
        assert!(g == &want, "{what}: caller {i} got other hidden states");
    }
}

#[test]
fn plain_threads_at_once_get_the_same_states() {
    assert_same_states("threads at once", |run| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..CALLERS).map(|_| s.spawn(run)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
}

#[test]
fn workers_of_another_rayon_pool_get_the_same_states() {
    assert_same_states("another pool", |run| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| (0..CALLERS).into_par_iter().map(|_| run()).collect())
    });
}

#[test]
fn calls_from_inside_candles_pool_get_the_same_states() {
    assert_same_states("nested in candle's pool", |run| {
        Device::Cpu.with_context(|| (0..CALLERS).into_par_iter().map(|_| run()).collect())
    });
}

#[test]
fn the_callers_precision_reaches_the_pool() {
    let model = model();
    let f32_states = outputs(&model);
    let bf16_states = {
        let _bf16 = scoped_precision(Precision::Bf16);
        outputs(&model)
    };
    assert!(
        f32_states != bf16_states,
        "bf16 products set on this thread changed nothing: the forward ran without them"
    );
    let bf16_on_a_plain_thread = within_deadline("bf16 on another thread", move || {
        let _bf16 = scoped_precision(Precision::Bf16);
        outputs(&model)
    });
    assert!(bf16_on_a_plain_thread == bf16_states);
    assert!(
        outputs(&self::model()) == f32_states,
        "the setting outlived its scope"
    );
}
