//! The thread counts of the native libraries under Faiss and BERT: OpenBLAS and OpenMP (issue 2).
//!
//! Both read their environment variables once, when they load, before `main`, so `--threads` sets
//! them through their functions ([`set_threads`]). The functions are looked up at run time, so a
//! build against another BLAS or OpenMP links, and then these calls do nothing.
//!
//! [`SingleThreadedBlas`]: OpenBLAS on one thread while Faiss searches. An OPQ index rotates each
//! query batch with one small BLAS product, then scans its inverted lists on Faiss's OpenMP threads.
//! OpenBLAS's own worker thread, woken by the product, then waits by spinning on `sched_yield` and
//! takes a CPU away from the OpenMP threads: on 2 cores, 45 of 100 searches of 1000 queries took
//! twice their time; with OpenBLAS on the calling thread alone, 2 of 100 (docs/benchmarks.md, "does a
//! slow OPQ search follow the index or the process?"). Python's Faiss wheel does not show it because
//! its OpenBLAS runs on the same OpenMP threads. The product is small next to the scan, so one thread
//! costs nothing there; the embedding stage's large products keep all of OpenBLAS's threads: the
//! count is restored when the guard drops.

use std::ffi::{c_int, CStr};
use std::sync::{Mutex, MutexGuard, OnceLock};

type GetThreads = unsafe extern "C" fn() -> c_int;
type SetThreads = unsafe extern "C" fn(c_int);

/// Sets OpenBLAS's and OpenMP's thread counts (Faiss's threads and BERT's matrix products). Returns
/// which of the two libraries were found.
pub fn set_threads(threads: usize) -> (bool, bool) {
    let n = threads.clamp(1, c_int::MAX as usize) as c_int;
    // SAFETY: plain calls into the libraries with their documented C signatures.
    let blas = openblas().map(|blas| unsafe { (blas.set)(n) }).is_some();
    let omp = openmp().map(|omp| unsafe { (omp.set)(n) }).is_some();
    (blas, omp)
}

/// OpenMP's thread count for the next parallel region (`omp_get_max_threads`), `None` without OpenMP.
pub fn openmp_threads() -> Option<usize> {
    // SAFETY: as above.
    openmp().map(|omp| unsafe { (omp.get)() } as usize)
}

/// OpenBLAS's thread count now, `None` when the process has no OpenBLAS.
pub fn openblas_threads() -> Option<usize> {
    // SAFETY: as above.
    openblas().map(|blas| unsafe { (blas.get)() } as usize)
}

/// A library's pair of thread-count functions, found in the running process.
struct ThreadCount {
    get: GetThreads,
    set: SetThreads,
}

impl ThreadCount {
    /// Both functions by name, or `None` when the process lacks either.
    fn lookup(get: &CStr, set: &CStr) -> Option<Self> {
        let (get, set) = (symbol(get)?, symbol(set)?);
        // SAFETY: both libraries declare these names with exactly these C signatures (omp.h, cblas.h).
        unsafe {
            Some(Self {
                get: std::mem::transmute::<*mut libc::c_void, GetThreads>(get),
                set: std::mem::transmute::<*mut libc::c_void, SetThreads>(set),
            })
        }
    }
}

fn openmp() -> Option<&'static ThreadCount> {
    static FUNCTIONS: OnceLock<Option<ThreadCount>> = OnceLock::new();
    FUNCTIONS
        .get_or_init(|| ThreadCount::lookup(c"omp_get_max_threads", c"omp_set_num_threads"))
        .as_ref()
}

fn openblas() -> Option<&'static ThreadCount> {
    static FUNCTIONS: OnceLock<Option<ThreadCount>> = OnceLock::new();
    FUNCTIONS
        .get_or_init(|| {
            ThreadCount::lookup(c"openblas_get_num_threads", c"openblas_set_num_threads")
        })
        .as_ref()
}

fn symbol(name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT only reads the process's loaded symbol tables.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!address.is_null()).then_some(address)
}

/// While it lives, OpenBLAS computes on the calling thread only; dropping it restores the thread
/// count. Searches that overlap in time take turns (OpenBLAS's setting is process-wide).
pub struct SingleThreadedBlas {
    previous: Option<c_int>,
    _turn: MutexGuard<'static, ()>,
}

impl SingleThreadedBlas {
    pub fn new() -> Self {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = openblas().map(|blas| {
            // SAFETY: plain calls into OpenBLAS; the lock above keeps them from interleaving.
            unsafe {
                let previous = (blas.get)();
                if previous != 1 {
                    (blas.set)(1);
                }
                previous
            }
        });
        Self {
            previous,
            _turn: turn,
        }
    }
}

impl Default for SingleThreadedBlas {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SingleThreadedBlas {
    fn drop(&mut self) {
        if let (Some(blas), Some(previous)) = (openblas(), self.previous) {
            if previous != 1 {
                // SAFETY: as above; the lock is still held.
                unsafe { (blas.set)(previous) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::FactoryIndex;

    #[test]
    fn openblas_runs_on_one_thread_inside_the_guard_a_search_gives_its_count_back_and_threads_can_be_set(
    ) {
        // An OPQ search: its rotation is the BLAS product this guard is for, and it links OpenBLAS
        // into this test binary.
        let (n, dim) = (512, 32);
        let mut state = 7u64;
        let mut vectors: Vec<f32> = (0..n * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        // Unit length, as the DB's embeddings: under inner product each vector is then its own best match.
        for row in vectors.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        let mut index = FactoryIndex::new("OPQ8_32,Flat", dim).unwrap();
        index.train(&vectors).unwrap();
        index.add(&vectors).unwrap();

        let blas = openblas().expect("Faiss is linked against OpenBLAS: its symbols must resolve");
        // SAFETY: as in the module.
        unsafe { (blas.set)(2) };
        {
            let _guard = SingleThreadedBlas::new();
            assert_eq!(openblas_threads(), Some(1));
        }
        assert_eq!(openblas_threads(), Some(2));
        let hits = index.search(&vectors[..4 * dim], 1).unwrap();
        assert_eq!(openblas_threads(), Some(2));
        // Each vector finds itself (OPQ rotates queries and database alike; Flat is exact).
        assert_eq!(
            hits.iter().map(|h| h[0].0).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }
}
