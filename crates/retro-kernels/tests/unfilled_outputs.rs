//! The kernels that skip zero-filling their outputs (attention, SwiGLU, RMSNorm, softmax, RoPE, the
//! cross-entropy gradient and the fused head's logit tile and gradients) still write every
//! element: run right after the heap held NaN-filled blocks of the outputs' sizes, so that a skipped
//! element would surface as NaN, their forward and gradients are all finite and equal a run on
//! zeroed memory. The equality with candle's composed ops is in each op's own test file.

mod common;

use candle_core::{Result, Tensor, Var};
use common::var;

/// Allocates and frees NaN-filled vectors of these sizes, so that the allocator hands the same
/// (dirty) memory to the next allocations of those sizes on this thread.
fn dirty_heap(sizes: &[usize]) {
    let blocks: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![f32::NAN; n]).collect();
    std::hint::black_box(&blocks);
}

/// Forward output and the gradients of `inputs`, as flat vectors.
fn outputs(y: &Tensor, inputs: &[&Var]) -> Result<Vec<Vec<f32>>> {
    // Squared, so that each output element gets its own gradient (not all ones).
    let grads = (y * y)?.sum_all()?.backward()?;
    let mut out = vec![y.flatten_all()?.to_vec1::<f32>()?];
    for v in inputs {
        out.push(grads.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

fn check(name: &str, sizes: &[usize], run: impl Fn() -> Result<Vec<Vec<f32>>>) -> Result<()> {
    let clean = run()?;
    for round in 0..3 {
        dirty_heap(sizes);
        let dirty = run()?;
        for (i, (a, b)) in dirty.iter().zip(&clean).enumerate() {
            assert!(
                a.iter().all(|x| x.is_finite()),
                "{name}: output {i} has a non-finite element after a dirty heap (round {round})"
            );
            let first_diff = a.iter().zip(b).position(|(x, y)| x != y);
            assert_eq!(
                first_diff, None,
                "{name}: output {i} differs after a dirty heap (round {round})"
            );
        }
    }
    Ok(())
}

#[test]
fn every_unzeroed_output_is_written() -> Result<()> {
    // Attention: causal with a prefix (s > t) and GQA, so rows see different numbers of keys and
    // some key blocks are seen by no query row.
    let (b, h, kv, t, s, d) = (1, 4, 2, 70, 140, 8);
    let q = var(1, &[b, h, t, d], -2.0, 2.0)?;
    let k = var(2, &[b, kv, s, d], -2.0, 2.0)?;
    let v = var(3, &[b, kv, s, d], -2.0, 2.0)?;
    check("attention", &[h * t * s, h * t * d, kv * s * d], || {
        let y = retro_kernels::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), true)?;
        outputs(&y, &[&q, &k, &v])
    })?;

    let a = var(4, &[37, 300], -4.0, 4.0)?;
    let g = var(5, &[37, 300], -4.0, 4.0)?;
    check("swiglu", &[37 * 300, 2 * 37 * 300], || {
        let y = retro_kernels::swiglu(a.as_tensor(), g.as_tensor())?;
        outputs(&y, &[&a, &g])
    })?;

    let x = var(6, &[37, 300], -4.0, 4.0)?;
    let w = var(7, &[300], 0.5, 1.5)?;
    check("rms_norm", &[37 * 300, 37 * 300 + 300], || {
        let y = retro_kernels::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5)?;
        outputs(&y, &[&x, &w])
    })?;

    check("softmax", &[37 * 300], || {
        let y = retro_kernels::softmax_last_dim(x.as_tensor())?;
        outputs(&y, &[&x])
    })?;

    let (heads, t, d) = (3, 11, 16);
    let r = var(8, &[1, heads, t, d], -2.0, 2.0)?;
    let angles = common::rand(9, &[t, d / 2], -3.0, 3.0)?;
    check("rope", &[heads * t * d], || {
        let y = retro_kernels::rope(r.as_tensor(), &angles.cos()?, &angles.sin()?, false)?;
        outputs(&y, &[&r])
    })?;

    // Cross-entropy: its gradient rows are written whole, or zeroed where the mask is 0.
    let (rows, vocab) = (6, 500);
    let logits = var(10, &[rows, vocab], -3.0, 3.0)?;
    let targets = Tensor::new(&[3u32, 499, 0, 7, 250, 1], logits.device())?;
    let mask = Tensor::new(&[1f32, 0.0, 1.0, 0.0, 1.0, 1.0], logits.device())?;
    check("cross_entropy", &[rows * vocab], || {
        let loss = retro_kernels::masked_nll_sum(logits.as_tensor(), &targets, &mask)?;
        let grads = loss.backward()?;
        let dl = grads.get(&logits).unwrap();
        Ok(vec![dl.flatten_all()?.to_vec1::<f32>()?])
    })?;

    // The fused head: blocks of 4 of the 5 unmasked rows, so the tile's second block is partial
    // and `dW` is overwritten by the first block and accumulated by the second.
    let (dim, rows) = (8, 7);
    let hidden = var(11, &[rows, dim], -1.0, 1.0)?;
    let weight = var(12, &[vocab, dim], -1.0, 1.0)?;
    let targets = Tensor::new(&[3u32, 499, 0, 7, 250, 1, 42], hidden.device())?;
    let mask = Tensor::new(&[1f32, 0.0, 1.0, 0.0, 1.0, 1.0, 0.5], hidden.device())?;
    check(
        "head_cross_entropy",
        &[4 * vocab, vocab * dim, 5 * dim],
        || {
            let loss = retro_kernels::linear_masked_nll_sum_blocked(
                hidden.as_tensor(),
                weight.as_tensor(),
                &targets,
                &mask,
                4,
            )?;
            let grads = loss.backward()?;
            let mut out = vec![vec![loss.to_scalar::<f32>()?]];
            for v in [&hidden, &weight] {
                out.push(grads.get(v).unwrap().flatten_all()?.to_vec1::<f32>()?);
            }
            Ok(out)
        },
    )?;
    Ok(())
}
