//! QUIC application close codes. A connection closed by either side carries one of these;
//! `docs/PROTOCOL.md` lists them with their meaning.

use crate::msg::RejectReason;

/// The client or server ended the session normally (client leaving).
pub const NORMAL: u32 = 0x00;
/// The server is shutting down.
pub const SERVER_SHUTDOWN: u32 = 0x01;
/// The peer sent bytes that do not decode as the protocol says.
pub const PROTOCOL_ERROR: u32 = 0x02;
/// No valid Hello arrived within the handshake deadline.
pub const HELLO_TIMEOUT: u32 = 0x03;
/// A newer connection with the same client id replaced this one.
pub const REPLACED: u32 = 0x04;
/// The server drained: it stopped admitting (SIGTERM, or its orchestrator shut it down),
/// gave its players the drain grace to finish, and is now going away. Unlike
/// [`SERVER_SHUTDOWN`] this was announced: the client should find another server through
/// its matchmaker rather than retry this one.
pub const DRAINED: u32 = 0x05;

/// The close code that goes with a Reject: `0x10 + reason`.
pub fn for_reject(reason: RejectReason) -> u32 {
    0x10 + u32::from(reason.code())
}

/// A short name for a close code, for logs and reports.
pub fn name(code: u64) -> &'static str {
    match code {
        0x00 => "normal",
        0x01 => "server_shutdown",
        0x02 => "protocol_error",
        0x03 => "hello_timeout",
        0x04 => "replaced",
        0x05 => "drained",
        c if c >= 0x10 && c <= 0x10 + u64::from(u16::MAX) => {
            match u16::try_from(c - 0x10)
                .ok()
                .and_then(RejectReason::from_code)
            {
                Some(reason) => reason.name(),
                None => "unknown_reject",
            }
        }
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_documented_name() {
        for (code, name) in [
            (NORMAL, "normal"),
            (SERVER_SHUTDOWN, "server_shutdown"),
            (PROTOCOL_ERROR, "protocol_error"),
            (HELLO_TIMEOUT, "hello_timeout"),
            (REPLACED, "replaced"),
            (DRAINED, "drained"),
        ] {
            assert_eq!(super::name(u64::from(code)), name);
        }
        assert_eq!(
            super::name(u64::from(for_reject(RejectReason::Draining))),
            "draining"
        );
        assert_eq!(for_reject(RejectReason::Draining), 0x18);
        assert_eq!(super::name(0x06), "unknown");
    }
}
