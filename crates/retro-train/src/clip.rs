//! Gradient clipping by the global norm (reference §2: Megatron's `clip_grad_norm`).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::Tensor;

/// The global L2 norm of `grads`, summed in name order so that it is the same on every run.
pub fn global_norm(grads: &HashMap<String, Tensor>) -> Result<f64> {
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    let mut sum = 0f64;
    for n in names {
        sum += grads[n].sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(sum.sqrt())
}

/// Scales `grads` so that their global norm is at most `max_norm` (no-op for `max_norm <= 0` or a
/// smaller norm) and returns the norm before clipping. Megatron scales by `max_norm / (norm + 1e-6)`.
pub fn clip_by_global_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads(values: &[(&str, Vec<f32>)]) -> HashMap<String, Tensor> {
        values
            .iter()
            .map(|(n, v)| {
                let t = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
                (n.to_string(), t)
            })
            .collect()
    }

    fn values(g: &HashMap<String, Tensor>, n: &str) -> Vec<f32> {
        g[n].to_vec1().unwrap()
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_leaves_small_gradients_alone() {
        // Norm 13 = sqrt(3² + 4² + 12²).
        let mut g = grads(&[("a", vec![3.0, 4.0]), ("b", vec![12.0])]);
        let norm = clip_by_global_norm(&mut g, 1.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-9);
        let s = 1.0 / (13.0 + 1e-6);
        for (got, want) in values(&g, "a").iter().zip([3.0 * s, 4.0 * s]) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);

        let mut small = grads(&[("a", vec![0.3, 0.4])]);
        assert!((clip_by_global_norm(&mut small, 1.0).unwrap() - 0.5).abs() < 1e-7);
        assert_eq!(values(&small, "a"), vec![0.3, 0.4]);

        let mut off = grads(&[("a", vec![30.0, 40.0])]);
        clip_by_global_norm(&mut off, 0.0).unwrap();
        assert_eq!(values(&off, "a"), vec![30.0, 40.0]);
    }
}
