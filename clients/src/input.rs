//! [`InputHistory`]: what a client sends each tick — its newest input and the few before
//! it, so one lost datagram costs nothing when the next arrives.

use tickcast_shared::Tick;
use tickcast_shared::msg::{InputCmd, InputDatagram, MAX_INPUTS_PER_DATAGRAM};

/// The last few inputs, so each datagram carries them all and one lost datagram costs
/// nothing when the next arrives.
#[derive(Debug, Clone, Default)]
pub struct InputHistory {
    recent: [InputCmd; MAX_INPUTS_PER_DATAGRAM],
    len: usize,
    next_seq: u32,
}

impl InputHistory {
    /// Records a new input (its sequence number is assigned here) and returns the
    /// datagram to send, acknowledging `ack_tick`.
    pub fn push(&mut self, mut cmd: InputCmd, ack_tick: Tick) -> InputDatagram {
        cmd.seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.recent.rotate_right(1);
        self.recent[0] = cmd;
        self.len = (self.len + 1).min(MAX_INPUTS_PER_DATAGRAM);
        let mut cmds = [InputCmd::default(); MAX_INPUTS_PER_DATAGRAM];
        cmds[..self.len].copy_from_slice(&self.recent[..self.len]);
        InputDatagram {
            ack_tick,
            count: self.len as u8,
            cmds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_history_sends_the_newest_first_with_redundancy() {
        let mut history = InputHistory::default();
        let cmd = |move_x| InputCmd {
            move_x,
            ..Default::default()
        };
        let first = history.push(cmd(1), Tick::ZERO);
        assert_eq!(first.inputs().len(), 1);
        for x in 2..=6 {
            history.push(cmd(x), Tick::ZERO);
        }
        let last = history.push(cmd(7), Tick::new(42));
        let seqs: Vec<u32> = last.inputs().iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![6, 5, 4, 3]);
        assert_eq!(last.inputs()[0].move_x, 7);
        assert_eq!(last.ack_tick, Tick::new(42));
    }
}
