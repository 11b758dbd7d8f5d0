//! `enabled`: on for f32 CPU tensors, off for other dtypes and when RETRO_FUSED=0.
//! (Its own test binary, because it sets an environment variable.)

use candle_core::{DType, Device, Result, Tensor};

#[test]
fn follows_dtype_and_the_environment() -> Result<()> {
    let f = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
    let h = Tensor::zeros(3, DType::F16, &Device::Cpu)?;
    std::env::remove_var("RETRO_FUSED");
    assert!(retro_kernels::enabled(&[&f]));
    assert!(!retro_kernels::enabled(&[&f, &h]));
    std::env::set_var("RETRO_FUSED", "0");
    assert!(!retro_kernels::enabled(&[&f]));
    std::env::set_var("RETRO_FUSED", "1");
    assert!(retro_kernels::enabled(&[&f]));
    Ok(())
}
