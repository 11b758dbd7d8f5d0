//! Fused attention: forward and the gradients of q, k and v equal candle's composed attention
//! (per head: `softmax(q·kᵀ/√d + mask)·v`) on awkward shapes; finite differences; bad shapes.

mod common;

use candle_core::{Device, Result, Tensor, Var, D};
use common::{assert_close, assert_fd, finite_diff, rand, var};

/// The reference: each query head `h` against kv head `h / (heads / kv_heads)`, an additive
/// causal mask for query `i` at position `i + s − t` when `causal`.
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let (_, kv_heads, s, _) = k.dims4()?;
    let mask: Vec<f32> = (0..t * s)
        .map(|x| {
            let (i, j) = (x / s, x % s);
            if causal && j > i + s - t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu)?;
    let mut outs = Vec::new();
    for bi in 0..b {
        let mut per_head = Vec::new();
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let qh = q.narrow(0, bi, 1)?.narrow(1, h, 1)?.reshape((t, d))?;
            let kh = k.narrow(0, bi, 1)?.narrow(1, g, 1)?.reshape((s, d))?;
            let vh = v.narrow(0, bi, 1)?.narrow(1, g, 1)?.reshape((s, d))?;
            let scores = ((qh.matmul(&kh.t()?)? / (d as f64).sqrt())? + &mask)?;
            let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
            per_head.push(p.matmul(&vh)?.unsqueeze(0)?);
        }
        outs.push(Tensor::cat(&per_head, 0)?.unsqueeze(0)?);
    }
    Tensor::cat(&outs, 0)
}

#[test]
fn equals_composed_on_awkward_shapes() -> Result<()> {
    // (batch, heads, kv_heads, t, s, head_dim, causal): one query, one head, grouped-query heads,
    // sequences that are no multiple of the 64-row block, a KV-cache prefix (s > t), and
    // unmasked cross-attention with s != t.
    let cases = [
        (1usize, 1usize, 1usize, 1usize, 1usize, 4usize, true),
        (1, 2, 1, 1, 9, 8, true),
        (2, 3, 3, 5, 5, 8, true),
        (1, 6, 2, 70, 70, 16, true),
        (1, 4, 2, 65, 130, 8, true),
        (2, 3, 1, 129, 129, 32, true),
        (1, 9, 3, 128, 128, 64, true),
        (2, 4, 4, 7, 131, 16, false),
        (1, 6, 3, 200, 64, 8, false),
    ];
    for (i, &(b, heads, kv, t, s, d, causal)) in cases.iter().enumerate() {
        let seed = 100 * i as u64;
        let q = var(seed, &[b, heads, t, d], -2.0, 2.0)?;
        let k = var(seed + 1, &[b, kv, s, d], -2.0, 2.0)?;
        let v = var(seed + 2, &[b, kv, s, d], -1.0, 1.0)?;
        let r = rand(seed + 3, &[b, heads, t, d], -1.0, 1.0)?;
        let what = format!("case {i} {:?}", cases[i]);
        let fused = retro_kernels::attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), causal)?;
        let slow = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), causal)?;
        assert_close(&format!("{what} forward"), &fused, &slow, 1e-5)?;
        let gf = (fused * &r)?.sum_all()?.backward()?;
        let gs = (slow * &r)?.sum_all()?.backward()?;
        for (name, x) in [("dq", &q), ("dk", &k), ("dv", &v)] {
            let (a, b) = (gf.get(x).unwrap(), gs.get(x).unwrap());
            assert_close(&format!("{what} {name}"), a, b, 1e-5)?;
        }
    }
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Result<()> {
    let q = rand(1, &[1, 2, 5, 4], -1.0, 1.0)?;
    let k = rand(2, &[1, 1, 6, 4], -1.0, 1.0)?;
    let v = rand(3, &[1, 1, 6, 4], -1.0, 1.0)?;
    let r = rand(4, &[1, 2, 5, 4], -1.0, 1.0)?;
    let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f32> {
        (retro_kernels::attention(q, k, v, true)? * &r)?
            .sum_all()?
            .to_scalar::<f32>()
    };
    let (qv, kv, vv) = (
        Var::from_tensor(&q)?,
        Var::from_tensor(&k)?,
        Var::from_tensor(&v)?,
    );
    let g = (retro_kernels::attention(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), true)? * &r)?
        .sum_all()?
        .backward()?;
    assert_fd(
        "dq",
        g.get(&qv).unwrap(),
        &finite_diff(&q, 1e-2, |q| loss(q, &k, &v))?,
        2e-3,
    )?;
    assert_fd(
        "dk",
        g.get(&kv).unwrap(),
        &finite_diff(&k, 1e-2, |k| loss(&q, k, &v))?,
        2e-3,
    )?;
    assert_fd(
        "dv",
        g.get(&vv).unwrap(),
        &finite_diff(&v, 1e-2, |v| loss(&q, &k, v))?,
        2e-3,
    )?;
    Ok(())
}

#[test]
fn causal_rows_ignore_later_keys() -> Result<()> {
    // Changing the last key and value changes only the last query's output.
    let q = rand(1, &[1, 2, 6, 8], -1.0, 1.0)?;
    let k = rand(2, &[1, 2, 6, 8], -1.0, 1.0)?;
    let v = rand(3, &[1, 2, 6, 8], -1.0, 1.0)?;
    let k2 = Tensor::cat(&[k.narrow(2, 0, 5)?, rand(4, &[1, 2, 1, 8], -1.0, 1.0)?], 2)?;
    let v2 = Tensor::cat(&[v.narrow(2, 0, 5)?, rand(5, &[1, 2, 1, 8], -1.0, 1.0)?], 2)?;
    let a = retro_kernels::attention(&q, &k, &v, true)?;
    let b = retro_kernels::attention(&q, &k2, &v2, true)?;
    let same = (a.narrow(2, 0, 5)? - b.narrow(2, 0, 5)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let last = (a.narrow(2, 5, 1)? - b.narrow(2, 5, 1)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(same, 0.0);
    assert!(last > 1e-3, "the last query sees the changed key ({last})");
    Ok(())
}

#[test]
fn rejects_bad_shapes() -> Result<()> {
    let q = rand(1, &[1, 3, 4, 8], -1.0, 1.0)?;
    let k = rand(2, &[1, 2, 4, 8], -1.0, 1.0)?;
    let err = retro_kernels::attention(&q, &k, &k, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of kv heads"), "{err}");
    let k = rand(2, &[1, 1, 3, 8], -1.0, 1.0)?;
    let err = retro_kernels::attention(&q, &k, &k, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least as many keys"), "{err}");
    Ok(())
}
