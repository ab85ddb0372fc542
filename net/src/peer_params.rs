//! What the peer advertised: its `max_datagram_frame_size` transport parameter (RFC 9221,
//! id 0x20), for admission.
//!
//! quinn's `Connection::max_datagram_size()` is the *momentary* room for a datagram:
//! the smaller of the peer's advertised limit (less 9 bytes of frame overhead) and what
//! fits one packet on the current path (the path MTU, less the short header — whose
//! length grows with the peer's connection ID — the AEAD tag and the frame overhead).
//! Right after the handshake the path is at QUIC's minimum of 1,200 bytes, so a client
//! with 20-byte connection IDs advertising 65,535 shows a room of 1,150; path MTU
//! discovery raises it moments later. Admitting on that figure refused such clients for
//! the path's state, not for anything they said. quinn does not expose the peer's
//! transport parameters, so [`AdvertisedLimits`] wraps the server's crypto config and
//! reads them from the TLS session (where QUIC carries them) when the connection's
//! handshake data is asked for; [`advertised_max_datagram_frame_size`] gets the value.

use std::any::Any;
use std::sync::Arc;

use quinn::Connection;
use quinn_proto::crypto::{
    self, ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey, UnsupportedVersion,
};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError};

/// The `max_datagram_frame_size` transport parameter's id (RFC 9221 §3).
pub const MAX_DATAGRAM_FRAME_SIZE_ID: u64 = 0x20;

/// What the peer advertised, as the server's handshake data: the wrapped session's own
/// handshake data (rustls' `HandshakeData`) and the peer's datagram limit.
#[derive(Debug)]
pub struct PeerHandshake {
    /// The wrapped session's handshake data.
    pub inner: Box<dyn Any>,
    /// The peer's `max_datagram_frame_size`; `None`: not advertised (no datagrams).
    pub max_datagram_frame_size: Option<u64>,
}

/// The peer's advertised `max_datagram_frame_size`, once the handshake data is known;
/// `None` if the peer did not advertise one (or the server was not built with
/// [`AdvertisedLimits`]).
pub fn advertised_max_datagram_frame_size(conn: &Connection) -> Option<u64> {
    conn.handshake_data()?
        .downcast::<PeerHandshake>()
        .ok()?
        .max_datagram_frame_size
}

/// The same for a quinn-proto connection's crypto session (the default driver owns
/// `quinn_proto::Connection`s, whose `crypto_session()` this takes).
pub fn session_max_datagram_frame_size(session: &dyn crypto::Session) -> Option<u64> {
    session
        .handshake_data()?
        .downcast::<PeerHandshake>()
        .ok()?
        .max_datagram_frame_size
}

/// Reads `max_datagram_frame_size` from encoded transport parameters (RFC 9000 §18: each
/// parameter is a varint id, a varint length and that many bytes). `None` when absent
/// or malformed.
pub fn max_datagram_frame_size(mut encoded: &[u8]) -> Option<u64> {
    while !encoded.is_empty() {
        let id = read_varint(&mut encoded)?;
        let len = usize::try_from(read_varint(&mut encoded)?).ok()?;
        if len > encoded.len() {
            return None;
        }
        let (mut value, rest) = encoded.split_at(len);
        if id == MAX_DATAGRAM_FRAME_SIZE_ID {
            let size = read_varint(&mut value)?;
            return value.is_empty().then_some(size);
        }
        encoded = rest;
    }
    None
}

/// Reads one QUIC variable-length integer (RFC 9000 §16).
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    if bytes.len() < len {
        return None;
    }
    let mut value = u64::from(first & 0x3f);
    for byte in &bytes[1..len] {
        value = value << 8 | u64::from(*byte);
    }
    *bytes = &bytes[len..];
    Some(value)
}

/// The server's crypto config, wrapped so that each session reports what the peer
/// advertised in its handshake data ([`PeerHandshake`]). Everything else is delegated.
pub struct AdvertisedLimits<C>(Arc<C>);

impl<C> AdvertisedLimits<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self(Arc::new(inner))
    }
}

impl<C: crypto::ServerConfig + 'static> crypto::ServerConfig for AdvertisedLimits<C> {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.0.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.0.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(ReportingSession(
            self.0.clone().start_session(version, params),
        ))
    }
}

struct ReportingSession(Box<dyn crypto::Session>);

impl crypto::Session for ReportingSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.0.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let inner = self.0.handshake_data()?;
        let max_datagram_frame_size = match self.0.transport_parameters() {
            Ok(Some(params)) => {
                let mut encoded = Vec::new();
                params.write(&mut encoded);
                max_datagram_frame_size(&encoded)
            }
            _ => None,
        };
        Some(Box::new(PeerHandshake {
            inner,
            max_datagram_frame_size,
        }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.0.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        self.0.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.0.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        self.0.read_handshake(buf)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.0.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.0.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.0.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.0.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.0.export_keying_material(output, label, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datagram_limit_is_found_among_other_parameters() {
        let encoded = [
            0x01, 0x02, 0x67, 0x10, // max_idle_timeout (1): 2-byte varint 10,000
            0x0f, 0x00, // initial_source_connection_id (15): empty
            0x20, 0x04, 0x80, 0x00, 0xff, 0xff, // max_datagram_frame_size: 65,535
            0x03, 0x02, 0x45, 0xc0, // max_udp_payload_size (3): 1,472
        ];
        assert_eq!(max_datagram_frame_size(&encoded), Some(65_535));
        // A one-byte varint, first in line.
        assert_eq!(max_datagram_frame_size(&[0x20, 0x01, 0x3f]), Some(63));
        // Two-byte ids are read as ids too (a GREASE id, 27 × 31 + 27 = 864).
        assert_eq!(
            max_datagram_frame_size(&[0x43, 0x60, 0x00, 0x20, 0x02, 0x44, 0x87]),
            Some(1159)
        );
    }

    #[test]
    fn an_absent_or_malformed_limit_reads_as_none() {
        assert_eq!(max_datagram_frame_size(&[]), None);
        assert_eq!(max_datagram_frame_size(&[0x01, 0x01, 0x05]), None);
        // Length beyond the end, value shorter than its varint, trailing bytes.
        assert_eq!(max_datagram_frame_size(&[0x20, 0x04, 0x80]), None);
        assert_eq!(max_datagram_frame_size(&[0x20, 0x01, 0x44]), None);
        assert_eq!(max_datagram_frame_size(&[0x20, 0x02, 0x05, 0x00]), None);
    }
}
