//! The backpressure decision, as a pure function: does a peer get this tick?

/// What to do with one tick for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendDecision {
    /// Send every chunk of the tick.
    Send,
    /// The peer's send buffer cannot take the whole tick: skip it. Sending part of it
    /// would make quinn evict older queued datagrams, and half a tick is worth less than
    /// the next whole one.
    Skip,
}

/// Per-peer bookkeeping for the fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSendState {
    /// Ticks sent in full.
    pub ticks_sent: u64,
    /// Ticks skipped for lack of room.
    pub ticks_skipped: u64,
    /// Ticks skipped in a row, reset by a send.
    pub consecutive_skips: u32,
}

/// Decides whether a peer with `buffer_space` free bytes gets a tick of `tick_bytes`, and
/// updates its state.
pub fn decide_tick_for_peer(
    state: &mut PeerSendState,
    buffer_space: usize,
    tick_bytes: usize,
) -> SendDecision {
    if buffer_space >= tick_bytes {
        state.ticks_sent += 1;
        state.consecutive_skips = 0;
        SendDecision::Send
    } else {
        state.ticks_skipped += 1;
        state.consecutive_skips = state.consecutive_skips.saturating_add(1);
        SendDecision::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_without_room_for_the_whole_tick_skips_it() {
        let mut state = PeerSendState::default();
        assert_eq!(
            decide_tick_for_peer(&mut state, 1000, 1000),
            SendDecision::Send
        );
        assert_eq!(
            decide_tick_for_peer(&mut state, 999, 1000),
            SendDecision::Skip
        );
        assert_eq!(
            decide_tick_for_peer(&mut state, 0, 1000),
            SendDecision::Skip
        );
        assert_eq!(state.consecutive_skips, 2);
        assert_eq!(
            decide_tick_for_peer(&mut state, 5000, 1000),
            SendDecision::Send
        );
        assert_eq!(
            state,
            PeerSendState {
                ticks_sent: 2,
                ticks_skipped: 2,
                consecutive_skips: 0
            }
        );
    }
}
