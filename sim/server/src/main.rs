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
    use std::alloc::{GlobalAlloc, Layout, System};

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

    // SAFETY: every call is forwarded unchanged to the system allocator; counting is
    // one relaxed atomic add on a static, which neither allocates nor blocks.
    unsafe impl GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;
}

/// The cargo features this binary was built with that change what it measures, for the
/// start-up log (a benchmark checks it is running the build it asked for).
const BENCHMARK_FEATURES: &[(&str, bool)] = &[
    ("count-allocs", cfg!(feature = "count-allocs")),
    ("per-client-encode", cfg!(feature = "per-client-encode")),
    ("quinn-endpoint", cfg!(feature = "quinn-endpoint")),
];

fn main() -> ExitCode {
    #[cfg(feature = "count-allocs")]
    tickcast_server::allocations::mark_counting();
    tickcast_server::cli::main(tickcast_sim::arena::Arena, BENCHMARK_FEATURES)
}
