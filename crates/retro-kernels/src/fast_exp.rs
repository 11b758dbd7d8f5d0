//! `exp` for f32 without a libm call, so that loops over it vectorise: `2^n · p(r)` with
//! `x = n·ln2 + r`, `|r| ≤ ln2/2`, and Cephes' degree-5 polynomial for `p` (about 2 ulp).
//! Rounding to `n` uses the 1.5·2²³ trick instead of `round()`, which is a library call on
//! baseline x86-64. Below -87.3 (where f32 would go denormal) the result is 0.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // t's low mantissa bits hold n (two's complement); 2^n = (n + 127) << 23.
    let bits = (t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23;
    let y = e * f32::from_bits(bits as u32);
    if x < -87.3 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_std_exp_to_2e7_relative() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = super::exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.001_3;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(-100.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
    }
}
