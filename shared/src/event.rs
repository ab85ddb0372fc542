//! What the network thread and the simulation thread tell each other. These travel over
//! bounded in-process channels, never over the wire.

use crate::Tick;
use crate::msg::InputDatagram;

/// Network → simulation: something a peer did.
// An input carries its commands inline (up to 4 × 32 bytes, any game's): boxing them
// would allocate once per input datagram on the net thread; the bounded channel's slots
// are allocated once, at start. Joins and leaves travel on a channel of their own as a
// [`Membership`] (16 bytes a slot instead of this enum's size).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// An authenticated client joined; the sim spawns its entity and answers with a
    /// [`JoinAck`].
    Joined {
        /// The client id from its token.
        client_id: u64,
    },
    /// A client left or vanished; the sim despawns its entity.
    Left {
        /// The client id.
        client_id: u64,
    },
    /// A client's input datagram, already decoded and validated for shape.
    Input {
        /// The client id.
        client_id: u64,
        /// The datagram.
        datagram: InputDatagram,
    },
}

/// Network → simulation: a join or a leave, on the membership channel (sized by the
/// client limit; its slots are allocated at start, so they carry no input's room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// See [`PeerEvent::Joined`].
    Joined {
        /// The client id from its token.
        client_id: u64,
    },
    /// See [`PeerEvent::Left`].
    Left {
        /// The client id.
        client_id: u64,
    },
}

impl From<Membership> for PeerEvent {
    fn from(membership: Membership) -> Self {
        match membership {
            Membership::Joined { client_id } => PeerEvent::Joined { client_id },
            Membership::Left { client_id } => PeerEvent::Left { client_id },
        }
    }
}

/// Simulation → network: the entity a joined client controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinAck {
    /// The client id of the [`PeerEvent::Joined`] this answers.
    pub client_id: u64,
    /// The `net_id` of the client's entity.
    pub entity: u32,
    /// The tick the entity was spawned before.
    pub tick: Tick,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The net → sim channels allocate every slot at start (16,384 input slots, four per
    /// allowed client for membership): what a slot weighs is paid in full, idle or not.
    #[test]
    fn channel_slots_stay_small() {
        assert_eq!(std::mem::size_of::<Membership>(), 16);
        // client id, ack tick, count, length, 4 × 32 command bytes, and the tag.
        let input = std::mem::size_of::<PeerEvent>();
        assert!(input <= 8 + 8 + 4 + 2 + 4 * 32 + 8, "{input} bytes");
    }
}
