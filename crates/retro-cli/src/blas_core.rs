//! Picks OpenBLAS's kernel family before OpenBLAS starts, and how native thread pools wait.
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
//! rayon threads between BERT's products (embedding 5.5% faster, three pairs out of three) and from Faiss's OpenMP
//! threads in the first searches of a process (docs/benchmarks.md, issue 2).
//!
//! Likewise `CANDLE_BARRIER_POOL_SPIN_LIMIT=1000` unless it is set: candle's element-wise ops run on its own pool of
//! workers, which after each op spin 25,000 times before they sleep. In training every such op is followed by gemm
//! on rayon's threads, and on 2 cores the spinning worker takes one of them (`perf`: 4% of a train step's samples in
//! the spin loop). A shorter spin made the retro-fitting experiment's train step 1–8% faster (four rounds) and left
//! decoding and embedding within their run-to-run noise (docs/benchmarks.md, issue 6).

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
    for (name, value) in wait_defaults(|name| std::env::var_os(name).is_some()) {
        command.env(name, value);
        changed = true;
    }
    // OpenMP (Faiss) and OpenBLAS (BERT) read their thread counts when they load, and OpenMP's
    // `omp_set_num_threads` reaches only the thread that calls it, so `--threads N` goes into their
    // variables here, where it holds for every thread (main also sets them, for when there is no re-execution).
    if let Some(n) = threads_arg() {
        for name in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
            if std::env::var(name).ok().as_deref() != Some(n.as_str()) {
                command.env(name, &n);
                changed = true;
            }
        }
    }
    if !changed {
        return;
    }
    let err = command.exec();
    // exec only returns on failure: go on with OpenBLAS's own settings.
    tracing::debug!("could not re-execute with OpenBLAS settings: {err}");
}

/// How idle threads of OpenMP, OpenBLAS and candle's pool should wait (see the module's doc): the
/// settings whose variable `is_set` says the user has not set.
fn wait_defaults(is_set: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    [
        ("OMP_WAIT_POLICY", "PASSIVE"),
        ("OPENBLAS_THREAD_TIMEOUT", "4"),
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000"),
    ]
    .into_iter()
    .filter(|(name, _)| !is_set(name))
    .collect()
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

/// The value of `--threads N` or `--threads=N` when it is a positive integer (clap parses the
/// arguments properly later; this runs before it).
fn threads_arg() -> Option<String> {
    // args_os: an argument that is not UTF-8 (a file name) must not stop the program here.
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let Some(arg) = arg.to_str() else { continue };
        let value = match arg {
            "--" => return None,
            "--threads" => args.next()?.into_string().ok()?,
            _ => match arg.strip_prefix("--threads=") {
                Some(value) => value.to_string(),
                None => continue,
            },
        };
        return value
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::wait_defaults;

    #[test]
    fn wait_defaults_fill_only_unset_variables() {
        let all = wait_defaults(|_| false);
        assert!(all.contains(&("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000")));
        assert!(all.contains(&("OPENBLAS_THREAD_TIMEOUT", "4")));
        assert!(all.contains(&("OMP_WAIT_POLICY", "PASSIVE")));
        let kept = wait_defaults(|name| name == "CANDLE_BARRIER_POOL_SPIN_LIMIT");
        assert_eq!(kept.len(), all.len() - 1);
        assert!(kept
            .iter()
            .all(|(n, _)| *n != "CANDLE_BARRIER_POOL_SPIN_LIMIT"));
    }
}
