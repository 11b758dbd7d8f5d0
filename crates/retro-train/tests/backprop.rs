//! Gradients through the vendored candle-core (vendor/candle-core/RETRO-PATCH.md), whose backward
//! stores a node's first gradient instead of adding it into zeros. A graph with fan-in (a tensor
//! used twice in one op, and by several ops), subtraction, negation, narrowing and broadcasting is
//! differentiated by candle and by hand in f64; both must agree.

use candle_core::{Device, Var};

fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn fan_in_sub_neg_narrow_and_broadcast_gradients_match_hand_derivation() -> candle_core::Result<()>
{
    let (rows, cols) = (3, 4);
    let xs = seeded(rows * cols, 1);
    let ys = seeded(rows * cols, 2);
    let x = Var::from_vec(xs.clone(), (rows, cols), &Device::Cpu)?;
    let y = Var::from_vec(ys.clone(), (rows, cols), &Device::Cpu)?;

    // L = Σ w², w = (x + x − y)·y   +   Σ (−x)·y[0] (row 0 of y broadcast over rows)
    let v = ((x.as_tensor() + x.as_tensor())? - y.as_tensor())?;
    let w = (v * y.as_tensor())?;
    let y0 = y.narrow(0, 0, 1)?.broadcast_as((rows, cols))?;
    let l2 = (x.neg()? * y0)?.sum_all()?;
    let loss = (w.sqr()?.sum_all()? + l2)?;
    let grads = loss.backward()?;
    let gx: Vec<f32> = grads.get(&x).unwrap().flatten_all()?.to_vec1()?;
    let gy: Vec<f32> = grads.get(&y).unwrap().flatten_all()?.to_vec1()?;

    // dL/dx = 4·w·y − y[0];  dL/dy = 2·w·(2x − 2y) − [row 0] Σ_rows x
    let mut want_x = vec![0f64; rows * cols];
    let mut want_y = vec![0f64; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            let (xv, yv) = (xs[i] as f64, ys[i] as f64);
            let w = (2.0 * xv - yv) * yv;
            want_x[i] = 4.0 * w * yv - ys[c] as f64;
            want_y[i] = 2.0 * w * (2.0 * xv - 2.0 * yv);
            want_y[c] -= xv;
        }
    }
    for (name, got, want) in [("x", &gx, &want_x), ("y", &gy, &want_y)] {
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            let err = (*g as f64 - w).abs() / w.abs().max(1.0);
            assert!(
                err < 1e-5,
                "d loss / d {name}[{i}]: candle {g}, by hand {w}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_tensor_used_by_two_ops_sums_both_gradients() -> candle_core::Result<()> {
    // y = 3x feeds two consumers: its first gradient is stored as is, the second is added to it.
    let x = Var::from_vec(vec![1f32, 2.0, 3.0], 3, &Device::Cpu)?;
    let y = (x.as_tensor() * 3.0)?;
    let loss = ((&y * 2.0)?.sum_all()? + (&y * 5.0)?.sum_all()?)?;
    let grads = loss.backward()?;
    assert_eq!(grads.get(&x).unwrap().to_vec1::<f32>()?, vec![21.0; 3]);
    Ok(())
}

#[test]
fn the_vendored_candle_core_is_the_one_in_use() {
    // The patch is only in effect when Cargo resolves candle-core to vendor/candle-core; a lost
    // `[patch.crates-io]` entry would silently bring back the zero-fill-then-add backward.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .expect("the workspace Cargo.lock");
    let entry = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .expect("candle-core in Cargo.lock");
    assert!(
        !entry.contains("source ="),
        "candle-core comes from a registry, not from vendor/candle-core:\n{entry}"
    );
}
