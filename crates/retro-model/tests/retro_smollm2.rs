//! Retro-fitting the real SmolLM2-135M-Instruct GGUF (shared/data, see `smollm2_reference.rs`):
//! the default Retro layers of a 30-layer decoder, `--cca-init zero` giving exactly the GPT's
//! logits with neighbours, and random init moving them.

mod common;

use std::path::PathBuf;

use candle_core::{Device, IndexOp, Tensor};
use common::max_abs_diff;
use retro_model::tiny::random_ids;
use retro_model::{retrofit, CcaInit, RetroInit, RetroOptions, Weights};

#[test]
fn retrofit_smollm2() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/models/smollm2-135m-instruct");
    assert!(
        dir.is_dir(),
        "{} is missing (see shared/data MANIFEST.md §2)",
        dir.display()
    );
    let gpt = Weights::load(&dir, &Device::Cpu).unwrap();
    let zero = RetroInit {
        cca: CcaInit::Zero,
        ..RetroInit::default()
    };
    let rw = retrofit(&gpt, &RetroOptions::default(), &zero).unwrap();
    let cfg = &rw.config;
    assert_eq!(cfg.retro_layer_numbers, vec![9, 12, 15, 18, 21, 24, 27, 30]);
    assert_eq!(
        (
            cfg.chunk_len,
            cfg.num_neighbors,
            cfg.retrieved_len,
            cfg.encoder_layers
        ),
        (64, 2, 128, 2)
    );
    let counts = rw.param_counts();
    // SmolLM2-135M: 134,515,008 parameters (tied head).
    assert_eq!(counts.decoder, 134_515_008);
    // Per Retro layer: norm 576 + q,o 576·576 each + k,v 192·576 each.
    assert_eq!(counts.cca, 8 * (576 + 2 * 576 * 576 + 2 * 192 * 576));

    // 70 tokens: two chunks of 64 in the right-aligned grid (6 + 64).
    let ids = Tensor::from_vec(random_ids(49152, 70, 1), (1, 70), &Device::Cpu).unwrap();
    let nb = Tensor::from_vec(
        random_ids(49152, 2 * 2 * 128, 2),
        (1, 2, 2, 128),
        &Device::Cpu,
    )
    .unwrap();
    let model = rw.build().unwrap();
    let plain = model.decoder().forward(&ids, None).unwrap();
    let retro = model.forward(&ids, Some(&nb)).unwrap();
    assert_eq!(
        max_abs_diff(&retro, &plain),
        0.0,
        "zero-init CCA changed the logits"
    );
    // The decoder in HF layout computes what the GGUF (interleaved) model computes.
    let gguf = gpt.build().unwrap().forward(&ids, None).unwrap();
    let d = max_abs_diff(&plain, &gguf);
    assert!(
        d < 1e-3,
        "HF-layout decoder differs from the GGUF one by {d}"
    );

    let random = retrofit(&gpt, &RetroOptions::default(), &RetroInit::default()).unwrap();
    let moved = random.build().unwrap().forward(&ids, Some(&nb)).unwrap();
    // Positions 0..5 precede the first chunk's last token: untouched. Later ones move.
    assert_eq!(
        max_abs_diff(&moved.i((.., ..5)).unwrap(), &plain.i((.., ..5)).unwrap()),
        0.0
    );
    let d = max_abs_diff(&moved.i((.., 5..)).unwrap(), &plain.i((.., 5..)).unwrap());
    assert!(d > 1e-4, "random CCA did not change the logits ({d})");
}
