//! What the network thread and the simulation thread tell each other. These travel over
//! bounded in-process channels, never over the wire.

use crate::Tick;
use crate::msg::InputDatagram;

/// Network → simulation: something a peer did.
// An input carries its commands inline (up to 4 × 64 bytes, any game's): boxing them
// would allocate once per input datagram on the net thread; the bounded channel's slots
// are allocated once, at start.
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
