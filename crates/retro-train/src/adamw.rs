//! AdamW (Loshchilov & Hutter) with the reference's settings (§2: betas 0.9 / 0.95, eps 1e-8) and
//! decoupled weight decay on matrices only (Megatron exempts biases and norm gains), with moments
//! that a checkpoint saves and restores exactly.
//!
//! Written out rather than taken from `candle_nn::AdamW` because that one applies decay to every
//! parameter and keeps its moments private, so they could not be checkpointed.
//!
//! On the CPU (f32, contiguous) a step updates each parameter and its moments in place, in one
//! pass, with `retro_kernels::adamw_update` (no allocation; issue 6); the moments are then plain
//! vectors. Elsewhere, or with `RETRO_FUSED=0`, it is the same formula in candle tensor ops.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{backprop::GradStore, DType, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// A parameter's two moments: plain vectors that the one-pass CPU kernel updates in place, or
/// tensors for candle's composed formula (other devices and dtypes, or `RETRO_FUSED=0` when the
/// optimizer was made).
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Tensors { m: Tensor, v: Tensor },
}

impl Moments {
    /// Both moments as tensors shaped like the parameter `like` (copies of the host vectors; the
    /// tensors themselves, which no step writes into, otherwise).
    fn tensors(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(match self {
            Moments::Host { m, v } => (
                Tensor::from_slice(m, like.shape(), like.device())?,
                Tensor::from_slice(v, like.shape(), like.device())?,
            ),
            Moments::Tensors { m, v } => (m.clone(), v.clone()),
        })
    }

    /// Replaces both moments, keeping the kind (host vectors or tensors).
    fn set(&mut self, m: Tensor, v: Tensor) -> Result<()> {
        *self = match self {
            Moments::Host { .. } => Moments::Host {
                m: m.flatten_all()?.to_vec1()?,
                v: v.flatten_all()?.to_vec1()?,
            },
            Moments::Tensors { .. } => Moments::Tensors { m, v },
        };
        Ok(())
    }
}

/// One trained parameter and its moments.
struct Slot {
    name: String,
    var: Var,
    moments: Moments,
    decay: bool,
}

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Updates applied so far (bias correction uses it).
    pub steps: u64,
}

impl AdamW {
    /// An optimizer over `params` (name, variable), in the given order, moments zero.
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let p = var.as_tensor();
                let moments = if retro_kernels::enabled(&[p]) {
                    Moments::Host {
                        m: vec![0.0; p.elem_count()],
                        v: vec![0.0; p.elem_count()],
                    }
                } else {
                    Moments::Tensors {
                        m: p.zeros_like()?,
                        v: p.zeros_like()?,
                    }
                };
                Ok(Slot {
                    decay: p.rank() >= 2,
                    name,
                    moments,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg,
            slots,
            steps: 0,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|s| &s.var)
    }

    /// One update with learning rate `lr` from `grads` (by parameter name; a missing gradient
    /// counts as zero, so a parameter that the loss did not reach still decays and moves by
    /// its momentum, as in PyTorch when its `.grad` is zero).
    pub fn step(&mut self, grads: &HashMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step_with(grads, lr, true)
    }

    /// Adds the gradients of this optimizer's parameters from one backward pass to `sums` (by
    /// name): the training loop calls it once per micro-batch, then [`AdamW::step`] once.
    pub fn accumulate(&self, store: &GradStore, sums: &mut HashMap<String, Tensor>) -> Result<()> {
        for slot in &self.slots {
            let Some(g) = store.get(slot.var.as_tensor()) else {
                continue;
            };
            let sum = match sums.remove(&slot.name) {
                Some(acc) => (acc + g)?,
                None => g.clone(),
            };
            sums.insert(slot.name.clone(), sum);
        }
        Ok(())
    }

    /// Backpropagates `loss` and takes one [`AdamW::step`] with the gradients of this optimizer's
    /// parameters: one micro-batch per update.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let mut grads = HashMap::new();
        self.accumulate(&loss.backward()?, &mut grads)?;
        self.step(&grads, lr)
    }

    /// [`AdamW::step`], with the in-place kernel allowed or not (tests compare the two).
    fn step_with(
        &mut self,
        grads: &HashMap<String, Tensor>,
        lr: f64,
        allow_fused: bool,
    ) -> Result<()> {
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
        for slot in &mut self.slots {
            let p = slot.var.as_tensor();
            let g = match grads.get(&slot.name) {
                Some(g) => g.clone(),
                None => p.zeros_like()?,
            };
            let decay_factor = if slot.decay {
                1.0 - lr * weight_decay
            } else {
                1.0
            };
            let fused = allow_fused && p.is_contiguous() && retro_kernels::enabled(&[p, &g]);
            if let (true, Moments::Host { m, v }) = (fused, &mut slot.moments) {
                let h = retro_kernels::AdamWHyper {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                    decay_factor,
                };
                retro_kernels::adamw_update(p, &g, m, v, h)?;
                continue;
            }
            let (m, v) = slot.moments.tensors(p)?;
            let m = ((m * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + eps)?)?;
            let decayed = (p * decay_factor)?;
            slot.var.set(&(decayed - (update * lr)?)?)?;
            slot.moments.set(m, v)?;
        }
        Ok(())
    }

    /// The moments as tensors `NAME.exp_avg` / `NAME.exp_avg_sq` (PyTorch's names), for a
    /// checkpoint; later steps do not change them (host moments are copied, and the composed
    /// formula replaces its tensors rather than writing into them).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for s in &self.slots {
            let (m, v) = s.moments.tensors(s.var.as_tensor())?;
            out.insert(format!("{}.exp_avg", s.name), m);
            out.insert(format!("{}.exp_avg_sq", s.name), v);
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count. The moments are
    /// copied, so a later step never writes into the caller's tensors.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for s in &mut self.slots {
            let p = s.var.as_tensor();
            let get = |suffix: &str| -> Result<Tensor> {
                let key = format!("{}.{suffix}", s.name);
                let t = tensors
                    .get(&key)
                    .with_context(|| format!("optimizer state has no tensor {key}"))?;
                if t.dims() != p.dims() || t.dtype() != DType::F32 {
                    anyhow::bail!(
                        "optimizer state {key}: shape {:?} {:?}, the parameter is {:?} F32",
                        t.dims(),
                        t.dtype(),
                        p.dims()
                    );
                }
                Ok(t.to_device(p.device())?)
            };
            s.moments
                .set(get("exp_avg")?.copy()?, get("exp_avg_sq")?.copy()?)?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on known numbers, against the formula worked out in f64.
    #[test]
    fn matches_the_formula_with_decay_on_matrices_only() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0]], &dev)?)?;
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &dev)?)?;
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg)?;
        let gw = [[0.3f64, -0.1]];
        let gb = [0.2f64];
        let lr = 0.01;
        let mut grads = HashMap::new();
        grads.insert("w".to_string(), Tensor::new(&[[0.3f32, -0.1]], &dev)?);
        grads.insert("b".to_string(), Tensor::new(&[0.2f32], &dev)?);
        opt.step(&grads, lr)?;
        opt.step(&grads, lr)?;
        // Reference in f64: constant gradient g, so m_t/bc1 = g and v_t/bc2 = g² exactly.
        let expect = |p0: f64, g: f64, decay: bool| {
            let mut p = p0;
            for _ in 0..2 {
                let d = if decay { p * (1.0 - lr * 0.1) } else { p };
                p = d - lr * g / (g.abs() + 1e-8);
            }
            p
        };
        let got_w = w.as_tensor().to_vec2::<f32>()?;
        let got_b = b.as_tensor().to_vec1::<f32>()?;
        assert!((got_w[0][0] as f64 - expect(1.0, gw[0][0], true)).abs() < 1e-6);
        assert!((got_w[0][1] as f64 - expect(-2.0, gw[0][1], true)).abs() < 1e-6);
        assert!((got_b[0] as f64 - expect(0.5, gb[0], false)).abs() < 1e-6);
        // Without decay the matrix would have ended elsewhere: decay is really applied.
        assert!((got_w[0][0] as f64 - expect(1.0, gw[0][0], false)).abs() > 1e-5);
        Ok(())
    }

    /// With gradients that change, the moments depend on the betas: three steps against an f64
    /// AdamW with the reference's betas (0.9, 0.95) and eps 1e-8.
    #[test]
    fn default_betas_are_megatrons() -> Result<()> {
        let dev = Device::Cpu;
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &dev)?)?;
        let mut opt = AdamW::new(vec![("b".into(), b.clone())], AdamWConfig::default())?;
        let (lr, gs) = (0.01, [0.3f64, -0.5, 0.1]);
        let (mut p, mut m, mut v) = (0.5f64, 0.0, 0.0);
        for (t, g) in gs.iter().enumerate() {
            let mut grads = HashMap::new();
            grads.insert("b".to_string(), Tensor::new(&[*g as f32], &dev)?);
            opt.step(&grads, lr)?;
            let t = t as i32 + 1;
            m = 0.9 * m + 0.1 * g;
            v = 0.95 * v + 0.05 * g * g;
            p -= lr * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.95f64.powi(t))).sqrt() + 1e-8);
        }
        let got = b.as_tensor().to_vec1::<f32>()?[0] as f64;
        assert!((got - p).abs() < 1e-6, "{got} vs {p}");
        Ok(())
    }

    /// The in-place kernel and the composed formula agree over three steps (with a parameter
    /// that gets no gradient), and loading state copies it rather than writing into it later.
    #[test]
    fn in_place_equals_composed_and_load_state_copies() -> Result<()> {
        let dev = Device::Cpu;
        let vals = |seed: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32 + 1) * 2654435761u32 ^ seed) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let make = || -> Result<Vec<(String, Var)>> {
            Ok(vec![
                (
                    "w".into(),
                    Var::from_tensor(&Tensor::from_vec(vals(1, 35), (5, 7), &dev)?)?,
                ),
                (
                    "b".into(),
                    Var::from_tensor(&Tensor::from_vec(vals(2, 7), 7, &dev)?)?,
                ),
                (
                    "unused".into(),
                    Var::from_tensor(&Tensor::from_vec(vals(3, 4), (2, 2), &dev)?)?,
                ),
            ])
        };
        let (pa, pb) = (make()?, make()?);
        let mut a = AdamW::new(pa.clone(), AdamWConfig::default())?;
        let mut b = AdamW::new(pb.clone(), AdamWConfig::default())?;
        for t in 0..3u32 {
            let mut grads = HashMap::new();
            grads.insert(
                "w".to_string(),
                Tensor::from_vec(vals(10 + t, 35), (5, 7), &dev)?,
            );
            grads.insert("b".to_string(), Tensor::from_vec(vals(20 + t, 7), 7, &dev)?);
            a.step_with(&grads, 1e-2, true)?;
            b.step_with(&grads, 1e-2, false)?;
        }
        for ((name, va), (_, vb)) in pa.iter().zip(&pb) {
            let d = (va.as_tensor() - vb.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(d < 1e-6, "{name}: fused and composed differ by {d}");
        }
        let (sa, sb) = (a.state_tensors()?, b.state_tensors()?);
        for (k, ta) in &sa {
            let d = (ta - &sb[k])?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{k}: moments differ by {d}");
        }
        let saved: HashMap<String, Tensor> = sb
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.copy()?)))
            .collect::<Result<_>>()?;
        let before = saved["w.exp_avg"].to_vec2::<f32>()?;
        a.load_state(&saved, 3)?;
        let mut grads = HashMap::new();
        grads.insert(
            "w".to_string(),
            Tensor::from_vec(vals(99, 35), (5, 7), &dev)?,
        );
        a.step(&grads, 1e-2)?;
        assert_eq!(
            saved["w.exp_avg"].to_vec2::<f32>()?,
            before,
            "a step wrote into the loaded state"
        );
        Ok(())
    }
}
