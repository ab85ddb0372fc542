//! The sim loop's progress counter, which health checks read, and the hold that fault
//! drills use to make a hung loop.

use std::time::Duration;

use crate::common::{start_server, temp_data_dir};

/// Waits (bounded) until `ticks()` passes `above`; returns the count seen.
fn wait_for_ticks_above(server: &tickcast_server::Server, above: u64) -> u64 {
    for _ in 0..400 {
        let ticks = server.progress().ticks();
        if ticks > above {
            return ticks;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the loop did not pass {above} ticks in 4 s");
}

#[test]
fn a_held_loop_stops_ticking_and_resumes_when_released() {
    let server = start_server(&temp_data_dir("progress-hold"));
    let running = wait_for_ticks_above(&server, 3);
    server.progress().hold(true);
    // One tick may be in flight when the hold lands; after that the count stands still.
    std::thread::sleep(Duration::from_millis(100));
    let held = server.progress().ticks();
    assert!(held >= running);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.progress().ticks(), held, "a held loop ran a tick");
    server.progress().hold(false);
    wait_for_ticks_above(&server, held + 3);
    server.stop();
}
