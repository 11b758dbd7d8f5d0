//! The process's allocator: mimalloc, with purging of freed memory turned off (issue 6).
//!
//! candle allocates a fresh buffer for every op output and every gradient. With glibc's malloc,
//! buffers above the mmap threshold go back to the kernel on free and come back zero-filled page by
//! page, so training spent about a quarter of its time in page faults (docs/candle-cpu-profile.md
//! in the shared docs; docs/benchmarks.md, issue 6, for this binary). mimalloc keeps freed pages
//! in the process; with its default purge delay (10 ms) it still returns them between steps, so the
//! delay is set to "never" (`MIMALLOC_PURGE_DELAY=-1`) on the first allocation, unless that
//! environment variable is set.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// mimalloc v3's `mi_option_purge_delay` (its `mi_option_t` enum in `mimalloc.h`).
const MI_OPTION_PURGE_DELAY: i32 = 15;

extern "C" {
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

struct Allocator;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

#[inline]
fn configure() {
    if !CONFIGURED.load(Ordering::Relaxed) && !CONFIGURED.swap(true, Ordering::Relaxed) {
        // getenv does not allocate; an explicit MIMALLOC_PURGE_DELAY wins.
        let set = unsafe { libc_getenv(c"MIMALLOC_PURGE_DELAY".as_ptr()) };
        if set.is_null() {
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
        }
    }
}

extern "C" {
    #[link_name = "getenv"]
    fn libc_getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
}

unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        configure();
        MiMalloc.alloc(layout)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        configure();
        MiMalloc.alloc_zeroed(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        MiMalloc.dealloc(ptr, layout)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        MiMalloc.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Allocator = Allocator;
