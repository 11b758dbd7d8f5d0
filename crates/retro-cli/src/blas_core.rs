//! Picks OpenBLAS's kernel family before OpenBLAS starts.
//!
//! Faiss and our BERT (`retro_db::bert`) multiply matrices through the system BLAS, OpenBLAS on Debian. OpenBLAS
//! 0.3.21 (Debian 12) does not recognise recent CPUs such as Sapphire Rapids and falls back to its generic
//! "Prescott" kernels, which made BERT embedding 2.7x slower on our machines (docs/benchmarks.md). OpenBLAS reads
//! `OPENBLAS_CORETYPE` in a library constructor, before `main`, so when it is unset we set it from the CPU's features
//! and re-execute ourselves once. A value the user set is always kept.
//!
//! The same re-execution sets `OMP_WAIT_POLICY=PASSIVE` unless it is set: Faiss's OPQ training spent most of its time
//! in OpenMP threads spin-waiting against OpenBLAS's; passive waiting cut it 3.7x (433 s to 117 s on 12k vectors,
//! 2 cores; docs/benchmarks.md). And `OPENBLAS_THREAD_TIMEOUT=4` unless it is set: OpenBLAS's workers then sleep as
//! soon as a product is done instead of spinning on `sched_yield` for about 2^28 cycles, which took a CPU from our
//! rayon threads between BERT's products (embedding 4% faster, three pairs out of three) and from Faiss's OpenMP
//! threads in the first searches of a process (docs/benchmarks.md, issue 2).

use std::os::unix::process::CommandExt;

const MARKER: &str = "RETRO_BLAS_CORE_CHOSEN";

pub fn ensure_openblas_core() {
    if std::env::var_os(MARKER).is_some() {
        return;
    }
    let mut command = std::process::Command::new(match std::env::current_exe() {
        Ok(exe) => exe,
        Err(_) => return,
    });
    command.args(std::env::args_os().skip(1)).env(MARKER, "1");
    let mut changed = false;
    if std::env::var_os("OPENBLAS_CORETYPE").is_none() {
        if let Some(core) = detect_core() {
            command.env("OPENBLAS_CORETYPE", core);
            changed = true;
        }
    }
    for (name, value) in [
        ("OMP_WAIT_POLICY", "PASSIVE"),
        ("OPENBLAS_THREAD_TIMEOUT", "4"),
    ] {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
            changed = true;
        }
    }
    if !changed {
        return;
    }
    let err = command.exec();
    // exec only returns on failure: go on with OpenBLAS's own settings.
    tracing::debug!("could not re-execute with OpenBLAS settings: {err}");
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
