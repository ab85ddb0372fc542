//! The driver's UDP socket: batched receives (`recvmmsg`, GRO where the kernel has it)
//! into one reused buffer, and sends with GSO, through `quinn-udp` (no unsafe code of
//! ours). A send the kernel cannot take now is kept (one, copied into a reused buffer)
//! until the socket is writable again; nothing else is queued here.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use quinn_udp::{BATCH_SIZE, EcnCodepoint, RecvMeta, Transmit, UdpSocketState};

/// The largest UDP payload a receive slot must hold: a GRO batch is at most 64 KiB.
const MAX_SLOT: usize = 64 * 1024;

/// What happened to a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// The kernel took it.
    Done,
    /// The socket's buffer is full; the transmit is kept and goes first once it drains.
    Blocked,
}

/// A transmit kept while the socket was full.
#[derive(Debug)]
struct Kept {
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

/// The socket and its reused buffers.
pub(super) struct UdpIo {
    socket: mio::net::UdpSocket,
    state: UdpSocketState,
    recv_buf: Box<[u8]>,
    slot_len: usize,
    metas: [RecvMeta; BATCH_SIZE],
    kept: Option<Kept>,
    kept_bytes: Vec<u8>,
}

impl UdpIo {
    /// Takes over a bound socket (made non-blocking here).
    pub(super) fn new(socket: std::net::UdpSocket, max_udp_payload: usize) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let slot_len = (max_udp_payload * state.gro_segments()).clamp(1, MAX_SLOT);
        Ok(Self {
            socket: mio::net::UdpSocket::from_std(socket),
            state,
            recv_buf: vec![0u8; slot_len * BATCH_SIZE].into_boxed_slice(),
            slot_len,
            metas: [RecvMeta::default(); BATCH_SIZE],
            kept: None,
            kept_bytes: Vec::new(),
        })
    }

    /// The socket, to register with the poller.
    pub(super) fn source(&mut self) -> &mut mio::net::UdpSocket {
        &mut self.socket
    }

    /// Packets one send may carry to one destination (GSO).
    pub(super) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Whether the kernel may fragment what we send (then quinn must not probe the MTU).
    pub(super) fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Receives one batch; returns how many messages (each of one or more datagrams)
    /// arrived. `WouldBlock` when there is nothing.
    pub(super) fn recv(&mut self) -> io::Result<usize> {
        let mut slices = self.recv_buf.chunks_mut(self.slot_len).map(IoSliceMut::new);
        let mut iovs: [IoSliceMut; BATCH_SIZE] = std::array::from_fn(|_| {
            slices
                .next()
                .expect("the receive buffer holds BATCH_SIZE slots")
        });
        self.state
            .recv((&self.socket).into(), &mut iovs, &mut self.metas)
    }

    /// Message `i` of the last batch: its metadata, and its bytes appended to `into`
    /// (the copy quinn-proto needs, as it takes ownership of each packet; `into` is
    /// reused, so this allocates only when packets of an earlier batch are still held).
    pub(super) fn take_message(&self, i: usize, into: &mut BytesMut) -> (RecvMeta, BytesMut) {
        let meta = self.metas[i];
        let start = i * self.slot_len;
        let len = meta.len.min(self.slot_len);
        into.reserve(len);
        into.extend_from_slice(&self.recv_buf[start..start + len]);
        (meta, into.split())
    }

    /// Sends one transmit; keeps it if the socket is full.
    pub(super) fn send(&mut self, transmit: &quinn_proto::Transmit, contents: &[u8]) -> Sent {
        let udp = udp_transmit(transmit, contents);
        match self.state.send((&self.socket).into(), &udp) {
            Ok(()) => Sent::Done,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.kept_bytes.clear();
                self.kept_bytes.extend_from_slice(contents);
                self.kept = Some(Kept {
                    destination: udp.destination,
                    ecn: udp.ecn,
                    segment_size: udp.segment_size,
                    src_ip: udp.src_ip,
                });
                Sent::Blocked
            }
            // quinn-udp reports nothing else (it logs other errors and drops the packet:
            // QUIC recovers from the loss).
            Err(_) => Sent::Done,
        }
    }

    /// Sends a stateless answer (Retry, refusal, version negotiation, reset) if the
    /// socket has room; dropped otherwise, as the peer will try again.
    pub(super) fn respond(&self, transmit: &quinn_proto::Transmit, contents: &[u8]) {
        if self.kept.is_none() {
            let _ = self
                .state
                .send((&self.socket).into(), &udp_transmit(transmit, contents));
        }
    }

    /// Whether a transmit is waiting for the socket to drain.
    pub(super) fn is_blocked(&self) -> bool {
        self.kept.is_some()
    }

    /// Tries the kept transmit again; `true` when nothing is kept any more.
    pub(super) fn retry_kept(&mut self) -> bool {
        let Some(kept) = &self.kept else {
            return true;
        };
        let udp = Transmit {
            destination: kept.destination,
            ecn: kept.ecn,
            contents: &self.kept_bytes,
            segment_size: kept.segment_size,
            src_ip: kept.src_ip,
        };
        match self.state.send((&self.socket).into(), &udp) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            _ => {
                self.kept = None;
                true
            }
        }
    }
}

fn udp_transmit<'a>(t: &quinn_proto::Transmit, contents: &'a [u8]) -> Transmit<'a> {
    Transmit {
        destination: t.destination,
        ecn: t.ecn.and_then(|ecn| EcnCodepoint::from_bits(ecn as u8)),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

/// quinn-udp's ECN bits as quinn-proto's.
pub(super) fn proto_ecn(ecn: EcnCodepoint) -> Option<quinn_proto::EcnCodepoint> {
    quinn_proto::EcnCodepoint::from_bits(ecn as u8)
}
