//! `tickcast-server`: runs the arena (the demo game) and serves it over QUIC;
//! `tickcast-server replay ...` reads its recordings. Everything is
//! [`tickcast_server::cli::main`], shared by every game's server binary.
//!
//! With the `count-allocs` feature it also installs a counting global allocator (module
//! `counting`) so the status line reports the whole process's heap allocations.

use std::process::ExitCode;

/// The `count-allocs` build's global allocator: `std::alloc::System` plus a relaxed
/// atomic count of every allocation, read by the status line
/// (`tickcast_server::allocations`). Same approach as `sim/tests/zero_alloc.rs`, but
/// process-wide: the benchmark wants every thread's allocations, the network thread's
/// above all.
#[cfg(feature = "count-allocs")]
// A global allocator is an `unsafe impl GlobalAlloc`; the workspace denies unsafe code
// and every library forbids it, so the one impl lives here in the binary, scoped to
// this module. It forwards every call unchanged.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout};

    #[cfg(feature = "mimalloc")]
    use mimalloc::MiMalloc as Inner;
    #[cfg(not(feature = "mimalloc"))]
    use std::alloc::System as Inner;

    use tickcast_net::fanout::in_fan_out;
    use tickcast_server::allocations::{note_allocation, note_fan_out_allocation};

    pub struct CountingAllocator;

    /// Every allocation, and separately the fan-out's own (a const thread-local flag
    /// read: no allocation, no lock).
    #[inline]
    fn count() {
        note_allocation();
        if in_fan_out() {
            note_fan_out_allocation();
        }
    }

    // SAFETY: every call is forwarded unchanged to the inner allocator (the system's, or
    // mimalloc with the `mimalloc` feature); counting is
    // one relaxed atomic add on a static, which neither allocates nor blocks.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { Inner.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { Inner.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { Inner.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { Inner.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;
}

/// The `mimalloc` build's allocator, when it does not count (`count-allocs` wraps it).
#[cfg(all(feature = "mimalloc", not(feature = "count-allocs")))]
#[global_allocator]
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The cargo features this binary was built with that change what it measures, for the
/// start-up log (a benchmark checks it is running the build it asked for).
const BENCHMARK_FEATURES: &[(&str, bool)] = &[
    ("count-allocs", cfg!(feature = "count-allocs")),
    ("per-client-encode", cfg!(feature = "per-client-encode")),
    ("quinn-endpoint", cfg!(feature = "quinn-endpoint")),
    ("mimalloc", cfg!(feature = "mimalloc")),
];

fn main() -> ExitCode {
    #[cfg(feature = "count-allocs")]
    tickcast_server::allocations::mark_counting();
    tickcast_server::cli::main(tickcast_sim::arena::Arena, BENCHMARK_FEATURES)
}
