//! Picks OpenBLAS's kernel family before OpenBLAS starts.
//!
//! Faiss and our BERT (`retro_db::bert`) multiply matrices through the system BLAS, OpenBLAS on Debian. OpenBLAS
//! 0.3.21 (Debian 12) does not recognise recent CPUs such as Sapphire Rapids and falls back to its generic
//! "Prescott" kernels, which made BERT embedding 2.7x slower on our machines (docs/benchmarks.md). OpenBLAS reads
//! `OPENBLAS_CORETYPE` in a library constructor, before `main`, so when it is unset we set it from the CPU's features
//! and re-execute ourselves once. A value the user set is always kept.

use std::os::unix::process::CommandExt;

const MARKER: &str = "RETRO_BLAS_CORE_CHOSEN";

pub fn ensure_openblas_core() {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() || std::env::var_os(MARKER).is_some() {
        return;
    }
    let Some(core) = detect_core() else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OPENBLAS_CORETYPE", core)
        .env(MARKER, "1")
        .exec();
    // exec only returns on failure: go on with OpenBLAS's own choice.
    tracing::debug!("could not re-execute with OPENBLAS_CORETYPE={core}: {err}");
}

fn detect_core() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
        {
            return Some("SkylakeX");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some("Haswell");
        }
    }
    None
}
