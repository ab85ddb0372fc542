//! Many client connections on one thread, with no task, waker or channel per
//! connection: a [`ClientDriver`] owns a few UDP sockets, one `quinn_proto::Endpoint` in
//! client mode and every `quinn_proto::Connection` it opened, and moves bytes and time
//! between them. For load generators (`tickcast-bots`) that hold thousands of sessions
//! in one process; a game uses [`crate::connect`].
//!
//! One turn of the caller's loop:
//! 1. [`ClientDriver::wait`] sleeps on the sockets until one is readable, the earliest
//!    connection timer is due or the caller's own deadline comes; then it receives in
//!    batches (`recvmmsg`, and GRO where the kernel has it, through `quinn-udp`), hands
//!    each packet to the endpoint and its connection, and fires the due timers.
//! 2. [`ClientDriver::events`] runs the Hello → Welcome handshake of every connection
//!    that heard something and says what the caller must know ([`SessionEvent`]).
//! 3. The caller reads datagrams ([`ClientDriver::read_datagram`]), sends inputs
//!    ([`ClientDriver::send_datagram`]), closes or silences connections.
//! 4. [`ClientDriver::flush`] polls the transmits of every connection touched in this
//!    turn into one reused buffer, sends them, and files their next timer.
//!
//! Timers: one binary heap for all connections, invalidated lazily. A connection has at
//! most one live entry, its earliest; a timer that moves later is not re-filed (the
//! early entry fires, finds nothing due and files the real one), so the heap does not
//! grow with every packet that pushes an idle or ACK timer back. `epoll`'s millisecond
//! wake-up coalesces timers due within the same millisecond into one turn.
//!
//! What it never does: block the thread anywhere but in [`ClientDriver::wait`], trust the
//! server's bytes (a bad answer closes that connection with a close code), or hold more
//! than `datagram_receive_buffer` bytes of unread datagrams per connection (quinn-proto
//! drops the oldest).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::udp::{self, RecvMeta, UdpSockRef, UdpSocketState};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, ConnectionStats, DatagramEvent,
    Dir, Endpoint, EndpointConfig, Event, RandomConnectionIdGenerator, SendDatagramError,
    StreamEvent, StreamId, VarInt,
};
use tickcast_shared::msg::{Hello, ServerMessage, Welcome};
use tickcast_shared::schema::Schema;
use tickcast_shared::token::ConnectToken;
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, close};

use crate::session::{client_config, client_socket};
use crate::{ClientError, EndpointOptions};

/// A connection of a [`ClientDriver`]. The index is reused once a connection is gone, so
/// forget an id after its [`SessionEvent::Failed`] or [`SessionEvent::Lost`], or after
/// closing or silencing it.
pub type ConnectionId = ConnectionHandle;

/// Datagrams received per `recvmmsg` (quinn-udp's batch size on Linux).
const RECV_BATCH: usize = udp::BATCH_SIZE;

/// Receive batches taken from one socket per turn before the driver goes back to timers
/// and the caller: enough to empty a socket buffer at normal load, few enough that a
/// flood cannot starve inputs. A socket with more waiting stays marked readable.
const RECV_ROUNDS_PER_TURN: usize = 8;

/// The received packets' chunk (see `ClientDriver::rx`): 64 KiB, about forty full-size
/// packets.
const RX_CHUNK: usize = 64 * 1024;

/// Bytes per receive buffer: one GRO batch of 1,500-byte packets, or one 64 KiB datagram.
const RECV_SLOT_BYTES: usize = 64 * 1024;

/// What the caller needs to know about a connection.
#[derive(Debug)]
pub enum SessionEvent {
    /// Admitted: the server's Welcome and the game's schema that followed it. The
    /// connection now carries datagrams.
    Welcomed(Box<Welcome>, Arc<Schema>),
    /// The connect failed: refused, rejected, a bad answer, or the connection was lost
    /// before the Welcome. The id is free again.
    Failed(ClientError),
    /// Datagrams wait to be read ([`ClientDriver::read_datagram`]). Said once per turn.
    Datagrams,
    /// An admitted connection was lost (closed by the server, timed out). The id is free
    /// again.
    Lost(ConnectionError),
}

/// Settings of a [`ClientDriver`].
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Per-connection settings, the same as [`crate::client_endpoint_with`]'s.
    pub endpoint: EndpointOptions,
    /// UDP sockets the driver spreads its connections over (round robin). Default 1.
    /// Each socket has its own kernel receive buffer (4 MiB at most here), so thousands
    /// of connections that all receive a burst every tick want several.
    pub sockets: usize,
    /// Shortest time between two turns: [`ClientDriver::wait`] sleeps out the rest
    /// before it looks at the sockets, so packets that arrive close together are taken
    /// in one batch and timers due close together fire in one turn, instead of a
    /// wake-up (a context switch, an epoll call, a pass over the touched connections)
    /// per packet. Costs up to this much receive latency. Default 1 ms.
    pub min_turn: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            endpoint: EndpointOptions::default(),
            sockets: 1,
            min_turn: Duration::from_millis(1),
        }
    }
}

/// Counters of a driver's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Times [`ClientDriver::wait`] returned.
    pub turns: u64,
    /// `recvmmsg` calls that returned packets.
    pub recv_calls: u64,
    /// UDP packets received (GRO segments counted one by one).
    pub packets_in: u64,
    /// `sendmsg` calls (one may carry several packets with GSO).
    pub send_calls: u64,
    /// Packets dropped because a socket's send buffer was full (QUIC resends them).
    pub send_dropped: u64,
    /// Packets of silenced connections thrown away.
    pub silenced_packets: u64,
    /// Timer entries that came up with nothing due (quinn had moved the timer later,
    /// most often a delayed ACK that left with an input): re-filed without a flush.
    pub idle_timer_pops: u64,
}

struct Socket {
    io: mio::net::UdpSocket,
    state: UdpSocketState,
    /// Set by a readiness event, cleared when a receive says it would block: the sockets
    /// are edge-triggered, so one not drained in a turn is read again without an event.
    readable: bool,
}

enum Phase {
    /// QUIC handshake in flight; the Hello goes out once it completes.
    Connecting { token: ConnectToken },
    /// Hello sent; reading the answer on the control stream.
    AwaitingAnswer { stream: StreamId, answer: Vec<u8> },
    /// Welcomed; the control stream stays open for the life of the session.
    Admitted,
    /// Closed or silenced by the caller, or lost: only draining is left.
    Ended,
}

struct Slot {
    conn: Connection,
    socket: usize,
    phase: Phase,
    /// Vanished: everything it would send is thrown away until quinn-proto drains it.
    silent: bool,
    /// The deadline of this connection's live entry in the timer heap.
    queued_timer: Option<Instant>,
    touched: bool,
}

/// Many QUIC client connections to one server, driven from one thread (module docs).
pub struct ClientDriver {
    server: SocketAddr,
    config: ClientConfig,
    endpoint: Endpoint,
    sockets: Vec<Socket>,
    next_socket: usize,
    poll: mio::Poll,
    poll_events: mio::Events,
    slots: Vec<Option<Slot>>,
    /// Connections that heard, timed out or were given work this turn.
    touched: Vec<ConnectionHandle>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    recv_buf: Vec<u8>,
    /// Received packets are copied here back to back and split off, each a `BytesMut`
    /// quinn-proto owns while it reads it; once it has dropped them the chunk is reclaimed
    /// whole, so steady state allocates nothing per packet (as the server's driver).
    rx: BytesMut,
    recv_meta: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    counters: DriverCounters,
    min_turn: Duration,
    last_turn: Instant,
}

impl ClientDriver {
    /// A driver for connections to `server` that trust only the certificate with
    /// `fingerprint`, on `options.sockets` sockets of ephemeral ports.
    pub fn new(
        server: SocketAddr,
        fingerprint: [u8; 32],
        options: &DriverOptions,
    ) -> Result<Self, ClientError> {
        let setup = |what: &str, e: io::Error| ClientError::Setup(format!("{what}: {e}"));
        let cid_len = options.endpoint.connection_id_len;
        if cid_len > 20 {
            return Err(ClientError::Setup(format!(
                "connection IDs are at most 20 bytes, not {cid_len}"
            )));
        }
        let config = client_config(fingerprint, &options.endpoint)?;
        let poll = mio::Poll::new().map_err(|e| setup("creating a poller", e))?;
        let mut sockets = Vec::with_capacity(options.sockets.max(1));
        for index in 0..options.sockets.max(1) {
            let std_socket = client_socket(server)?;
            std_socket
                .set_nonblocking(true)
                .map_err(|e| setup("making the socket non-blocking", e))?;
            let state = UdpSocketState::new(UdpSockRef::from(&std_socket))
                .map_err(|e| setup("configuring the socket", e))?;
            let mut io = mio::net::UdpSocket::from_std(std_socket);
            poll.registry()
                .register(&mut io, mio::Token(index), mio::Interest::READABLE)
                .map_err(|e| setup("registering the socket", e))?;
            sockets.push(Socket {
                io,
                state,
                readable: true,
            });
        }
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config.cid_generator(move || Box::new(RandomConnectionIdGenerator::new(cid_len)));
        // Path MTU discovery only where the socket cannot fragment, as quinn decides.
        let allow_mtud = sockets.iter().all(|s| !s.state.may_fragment());
        let endpoint = Endpoint::new(Arc::new(endpoint_config), None, allow_mtud, None);
        let gro = sockets
            .iter()
            .map(|s| s.state.gro_segments())
            .max()
            .unwrap_or(1);
        let slot_bytes = RECV_SLOT_BYTES.max(1500 * gro);
        Ok(Self {
            server,
            config,
            endpoint,
            sockets,
            next_socket: 0,
            poll,
            poll_events: mio::Events::with_capacity(64),
            slots: Vec::new(),
            touched: Vec::new(),
            timers: BinaryHeap::new(),
            recv_buf: vec![0; RECV_BATCH * slot_bytes],
            rx: BytesMut::with_capacity(RX_CHUNK),
            recv_meta: vec![RecvMeta::default(); RECV_BATCH],
            send_buf: Vec::with_capacity(64 * 1024),
            counters: DriverCounters::default(),
            min_turn: options.min_turn,
            last_turn: Instant::now(),
        })
    }

    /// Starts a connection; once QUIC is up it sends the Hello with `token`, and
    /// [`Self::events`] says how it ended ([`SessionEvent::Welcomed`] or
    /// [`SessionEvent::Failed`]). The caller keeps its own connect deadline and closes
    /// the connection when it passes.
    pub fn connect(
        &mut self,
        token: ConnectToken,
        now: Instant,
    ) -> Result<ConnectionId, ClientError> {
        let (handle, conn) = self
            .endpoint
            .connect(now, self.config.clone(), self.server, "localhost")
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let socket = self.next_socket;
        self.next_socket = (self.next_socket + 1) % self.sockets.len();
        if self.slots.len() <= handle.0 {
            self.slots.resize_with(handle.0 + 1, || None);
        }
        self.slots[handle.0] = Some(Slot {
            conn,
            socket,
            phase: Phase::Connecting { token },
            silent: false,
            queued_timer: None,
            touched: false,
        });
        self.touch(handle);
        Ok(handle)
    }

    /// Connections not yet drained (closing ones included).
    pub fn open_connections(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Silenced connections not yet drained: they wait for their own idle timeout.
    pub fn silent_connections(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| slot.silent)
            .count()
    }

    /// Counters since the driver was made.
    pub fn counters(&self) -> DriverCounters {
        self.counters
    }

    /// The connection's QUIC counters (UDP bytes and datagrams each way, losses).
    pub fn stats(&self, id: ConnectionId) -> Option<ConnectionStats> {
        self.slot(id).map(|slot| slot.conn.stats())
    }

    /// The connection's current round-trip time estimate.
    pub fn rtt(&self, id: ConnectionId) -> Option<Duration> {
        self.slot(id).map(|slot| slot.conn.rtt())
    }

    /// The next unread datagram of an admitted connection.
    pub fn read_datagram(&mut self, id: ConnectionId) -> Option<Bytes> {
        let slot = self.slot_mut(id)?;
        if !matches!(slot.phase, Phase::Admitted) {
            return None;
        }
        let datagram = slot.conn.datagrams().recv();
        if datagram.is_some() {
            // Reading may open the flow-control window or owe an ACK.
            self.touch(id);
        }
        datagram
    }

    /// Queues a datagram on an admitted connection; it leaves with [`Self::flush`].
    /// When the connection's send buffer is full the oldest queued datagram is dropped.
    pub fn send_datagram(
        &mut self,
        id: ConnectionId,
        data: Bytes,
    ) -> Result<(), SendDatagramError> {
        let Some(slot) = self.slot_mut(id) else {
            return Err(SendDatagramError::Disabled);
        };
        slot.conn.datagrams().send(data, true)?;
        self.touch(id);
        Ok(())
    }

    /// Closes with `code` (a [`close`] code); the close leaves with the next
    /// [`Self::flush`] and the connection drains on its own. Forget the id.
    pub fn close(&mut self, id: ConnectionId, code: u32, reason: &'static [u8], now: Instant) {
        if let Some(slot) = self.slot_mut(id) {
            slot.conn
                .close(now, VarInt::from_u32(code), Bytes::from_static(reason));
            slot.phase = Phase::Ended;
            self.touch(id);
        }
    }

    /// Vanishes: from now on nothing of this connection is sent — no ACK, no input, no
    /// close — so the server has to time it out, as for a device that died. It stays in
    /// the driver (receiving, sending nothing) until its own idle timeout drains it.
    /// Forget the id.
    pub fn silence(&mut self, id: ConnectionId) {
        if let Some(slot) = self.slot_mut(id) {
            slot.silent = true;
            slot.phase = Phase::Ended;
        }
    }

    /// Sleeps until a socket is readable, the earliest connection timer is due or
    /// `until`, whichever is first; then receives what waits (a bounded amount per
    /// socket) and fires the due timers. Errors are the poller's own.
    pub fn wait(&mut self, until: Instant) -> io::Result<()> {
        let mut now = Instant::now();
        let wake = match self.timers.peek() {
            Some(Reverse((at, _))) => until.min(*at),
            None => until,
        };
        let earliest = self.last_turn + self.min_turn;
        if now < earliest {
            // Timers due meanwhile fire up to `min_turn` late: that is the coalescing.
            std::thread::sleep(earliest - now);
            now = Instant::now();
        }
        let timeout = if self.sockets.iter().any(|s| s.readable) {
            Duration::ZERO
        } else {
            wake.saturating_duration_since(now)
        };
        match self.poll.poll(&mut self.poll_events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for event in &self.poll_events {
            if let Some(socket) = self.sockets.get_mut(event.token().0) {
                socket.readable = true;
            }
        }
        let now = Instant::now();
        for index in 0..self.sockets.len() {
            if self.sockets[index].readable {
                self.receive(index, now);
            }
        }
        self.fire_timers(Instant::now());
        self.counters.turns += 1;
        self.last_turn = now;
        Ok(())
    }

    /// Runs the handshake of every connection touched this turn and appends what the
    /// caller must know to `out`.
    pub fn events(&mut self, now: Instant, out: &mut Vec<(ConnectionId, SessionEvent)>) {
        // Handshake steps may touch more connections; only the ones touched so far run.
        let count = self.touched.len();
        for i in 0..count {
            let handle = self.touched[i];
            let Some(slot) = self.slots.get_mut(handle.0).and_then(Option::as_mut) else {
                continue;
            };
            slot.events(handle, now, out);
        }
    }

    /// Sends what every connection touched this turn has to send, files their timers
    /// and forgets the drained ones.
    pub fn flush(&mut self, now: Instant) {
        let mut touched = std::mem::take(&mut self.touched);
        let mut carried = Vec::new();
        for handle in touched.drain(..) {
            let Some(slot) = self.slots.get_mut(handle.0).and_then(Option::as_mut) else {
                continue;
            };
            slot.touched = false;
            let mut drained = false;
            while let Some(event) = slot.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(reply) = self.endpoint.handle_event(handle, event) {
                    slot.conn.handle_event(reply);
                    carried.push(handle);
                }
            }
            let socket = &self.sockets[slot.socket];
            let segments = socket.state.max_gso_segments();
            loop {
                self.send_buf.clear();
                let Some(transmit) = slot.conn.poll_transmit(now, segments, &mut self.send_buf)
                else {
                    break;
                };
                if slot.silent {
                    self.counters.silenced_packets += 1;
                    continue;
                }
                let udp_transmit = udp::Transmit {
                    destination: transmit.destination,
                    ecn: transmit
                        .ecn
                        .and_then(|e| udp::EcnCodepoint::from_bits(e as u8)),
                    contents: &self.send_buf[..transmit.size],
                    segment_size: transmit.segment_size,
                    src_ip: transmit.src_ip,
                };
                self.counters.send_calls += 1;
                if let Err(e) = socket
                    .state
                    .send(UdpSockRef::from(&socket.io), &udp_transmit)
                {
                    // Only "would block" comes back (quinn-udp logs the rest): the
                    // socket's buffer is full; QUIC's loss recovery resends.
                    tracing::trace!("send dropped: {e}");
                    self.counters.send_dropped += 1;
                }
            }
            if drained || slot.conn.is_drained() {
                self.slots[handle.0] = None;
                continue;
            }
            if let Some(at) = slot.conn.poll_timeout()
                && slot.queued_timer.is_none_or(|queued| at < queued)
            {
                slot.queued_timer = Some(at);
                self.timers.push(Reverse((at, handle.0)));
            }
        }
        self.touched = touched;
        for handle in carried {
            self.touch(handle);
        }
    }

    fn slot(&self, id: ConnectionId) -> Option<&Slot> {
        self.slots.get(id.0).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, id: ConnectionId) -> Option<&mut Slot> {
        self.slots.get_mut(id.0).and_then(Option::as_mut)
    }

    fn touch(&mut self, handle: ConnectionHandle) {
        if let Some(slot) = self.slots.get_mut(handle.0).and_then(Option::as_mut)
            && !slot.touched
        {
            slot.touched = true;
            self.touched.push(handle);
        }
    }

    /// Receives up to [`RECV_ROUNDS_PER_TURN`] batches from socket `index`.
    fn receive(&mut self, index: usize, now: Instant) {
        let slot_bytes = self.recv_buf.len() / RECV_BATCH;
        for _ in 0..RECV_ROUNDS_PER_TURN {
            let socket = &self.sockets[index];
            let mut chunks = self.recv_buf.chunks_mut(slot_bytes);
            let mut iovs: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let received =
                socket
                    .state
                    .recv(UdpSockRef::from(&socket.io), &mut iovs, &mut self.recv_meta);
            let count = match received {
                Ok(count) => count,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        // E.g. ECONNREFUSED after an ICMP error: nothing to read now.
                        tracing::debug!("receive failed: {e}");
                    }
                    self.sockets[index].readable = false;
                    return;
                }
            };
            self.counters.recv_calls += 1;
            for i in 0..count {
                let meta = self.recv_meta[i];
                let start = i * slot_bytes;
                let stride = meta.stride.max(1);
                let mut offset = 0;
                while offset < meta.len {
                    let end = (offset + stride).min(meta.len);
                    let bytes = &self.recv_buf[start + offset..start + end];
                    // Reclaims the chunk when quinn-proto holds none of it, else starts
                    // a new one.
                    self.rx.reserve(bytes.len());
                    self.rx.extend_from_slice(bytes);
                    let data = self.rx.split();
                    offset = end;
                    self.counters.packets_in += 1;
                    self.handle_packet(index, now, &meta, data);
                }
            }
        }
    }

    fn handle_packet(&mut self, socket: usize, now: Instant, meta: &RecvMeta, data: BytesMut) {
        let ecn = meta
            .ecn
            .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
        self.send_buf.clear();
        match self
            .endpoint
            .handle(now, meta.addr, meta.dst_ip, ecn, data, &mut self.send_buf)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(slot) = self.slots.get_mut(handle.0).and_then(Option::as_mut) {
                    slot.conn.handle_event(event);
                    self.touch(handle);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                // A stateless reset or version negotiation for a packet of no
                // connection of ours.
                let socket = &self.sockets[socket];
                let udp_transmit = udp::Transmit {
                    destination: transmit.destination,
                    ecn: None,
                    contents: &self.send_buf[..transmit.size],
                    segment_size: transmit.segment_size,
                    src_ip: transmit.src_ip,
                };
                let _ = socket
                    .state
                    .send(UdpSockRef::from(&socket.io), &udp_transmit);
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                // A client accepts no connections (no server config); quinn-proto
                // would refuse it anyway.
                self.endpoint.ignore(incoming);
            }
            None => {}
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, index))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if slot.queued_timer != Some(at) {
                continue; // stale: a later entry replaced it, or the slot was reused
            }
            slot.queued_timer = None;
            if slot.conn.poll_timeout().is_some_and(|due| due <= now) {
                slot.conn.handle_timeout(now);
                self.touch(ConnectionHandle(index));
            } else if let Some(at) = slot.conn.poll_timeout() {
                // Nothing due: the timer moved later since it was filed. A flush would
                // find nothing to send; the real deadline is filed instead.
                self.counters.idle_timer_pops += 1;
                slot.queued_timer = Some(at);
                self.timers.push(Reverse((at, index)));
            } else {
                self.counters.idle_timer_pops += 1;
            }
        }
    }
}

impl Slot {
    /// Drains quinn-proto's events of this connection, runs the handshake, and says what
    /// the caller must know.
    fn events(
        &mut self,
        handle: ConnectionHandle,
        now: Instant,
        out: &mut Vec<(ConnectionId, SessionEvent)>,
    ) {
        let mut datagrams = false;
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected | Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                    if let Phase::Connecting { token } = self.phase
                        && let Err(e) = self.send_hello(token)
                    {
                        self.fail(handle, now, close::PROTOCOL_ERROR, e, out);
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    self.read_control(handle, id, now, out)
                }
                Event::DatagramReceived => datagrams = true,
                Event::ConnectionLost { reason } => {
                    let event = match self.phase {
                        Phase::Connecting { .. } | Phase::AwaitingAnswer { .. } => {
                            SessionEvent::Failed(ClientError::Connection(reason))
                        }
                        Phase::Admitted => SessionEvent::Lost(reason),
                        Phase::Ended => continue,
                    };
                    self.phase = Phase::Ended;
                    out.push((handle, event));
                }
                _ => {}
            }
        }
        match self.phase {
            Phase::Admitted if datagrams => out.push((handle, SessionEvent::Datagrams)),
            // Nobody reads an ended connection's datagrams: free them now.
            Phase::Ended => while self.conn.datagrams().recv().is_some() {},
            _ => {}
        }
    }

    /// Opens the control stream and writes the Hello, if the server lets us open one
    /// yet (else `StreamEvent::Available` brings us back).
    fn send_hello(&mut self, token: ConnectToken) -> Result<(), ClientError> {
        let Some(stream) = self.conn.streams().open(Dir::Bi) else {
            return Ok(());
        };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            token,
        };
        let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
        let len = wire::encode_frame(&hello, &mut frame)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match self.conn.send_stream(stream).write(&frame[..len]) {
            Ok(written) if written == len => {}
            Ok(_) => {
                return Err(ClientError::Protocol(
                    "the Hello did not fit the server's stream window".into(),
                ));
            }
            Err(e) => return Err(ClientError::Protocol(format!("sending the Hello: {e}"))),
        }
        self.phase = Phase::AwaitingAnswer {
            stream,
            answer: Vec::with_capacity(ANSWER_LIMIT),
        };
        Ok(())
    }

    /// Reads what arrived on the control stream: the answer to the Hello, or after the
    /// Welcome anything more, which is read and ignored so it cannot pile up.
    fn read_control(
        &mut self,
        handle: ConnectionHandle,
        id: StreamId,
        now: Instant,
        out: &mut Vec<(ConnectionId, SessionEvent)>,
    ) {
        // Any other stream's bytes (or the control stream's after the Welcome) are read
        // and dropped.
        let waiting = matches!(&self.phase, Phase::AwaitingAnswer { stream, .. } if *stream == id);
        let limit = ANSWER_LIMIT;
        let mut read = Vec::new();
        let (mut finished, mut failed) = (false, None);
        match self.conn.recv_stream(id).read(true) {
            Ok(mut chunks) => {
                loop {
                    match chunks.next(limit) {
                        // Bounded: past `limit` the answer is refused below.
                        Ok(Some(chunk)) if waiting && read.len() <= limit => {
                            read.extend_from_slice(&chunk.bytes);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            finished = true;
                            break;
                        }
                        Err(quinn_proto::ReadError::Blocked) => break,
                        Err(e) => {
                            failed = Some(format!("reading the server's answer: {e}"));
                            break;
                        }
                    }
                }
                let _ = chunks.finalize();
            }
            Err(e) => failed = Some(format!("reading the server's answer: {e}")),
        }
        let Phase::AwaitingAnswer { answer, .. } = &mut self.phase else {
            return;
        };
        if !waiting {
            return;
        }
        if answer.len() + read.len() > limit {
            return self.fail(
                handle,
                now,
                close::PROTOCOL_ERROR,
                ClientError::Protocol("the server's answer is longer than any message".into()),
                out,
            );
        }
        answer.extend_from_slice(&read);
        match decode_answer(answer) {
            Answer::Incomplete => {
                if finished || failed.is_some() {
                    let why =
                        failed.unwrap_or_else(|| "the server ended the control stream".into());
                    self.fail(
                        handle,
                        now,
                        close::PROTOCOL_ERROR,
                        ClientError::Protocol(why),
                        out,
                    );
                }
            }
            Answer::Welcome(welcome, schema) => {
                self.phase = Phase::Admitted;
                out.push((handle, SessionEvent::Welcomed(welcome, Arc::new(*schema))));
            }
            Answer::Rejected(error) => self.fail(handle, now, close::NORMAL, error, out),
            Answer::Bad(error) => self.fail(handle, now, close::PROTOCOL_ERROR, error, out),
        }
    }

    fn fail(
        &mut self,
        handle: ConnectionHandle,
        now: Instant,
        code: u32,
        error: ClientError,
        out: &mut Vec<(ConnectionId, SessionEvent)>,
    ) {
        let reason: &'static [u8] = if code == close::NORMAL {
            b"rejected"
        } else {
            b"bad server message"
        };
        self.conn
            .close(now, VarInt::from_u32(code), Bytes::from_static(reason));
        self.phase = Phase::Ended;
        out.push((handle, SessionEvent::Failed(error)));
    }
}

/// The most bytes the answer to a Hello takes: a Welcome frame and the schema frame
/// after it, each at most a frame's limit.
const ANSWER_LIMIT: usize = 2 * (FRAME_PREFIX_LEN + MAX_MESSAGE_LEN);

/// What the bytes read so far on the control stream say.
#[derive(Debug)]
enum Answer {
    /// Not whole frames yet.
    Incomplete,
    Welcome(Box<Welcome>, Box<Schema>),
    Rejected(ClientError),
    Bad(ClientError),
}

/// The body of the frame at the start of `bytes`: `Ok(None)` while it is incomplete.
fn frame_body(bytes: &[u8]) -> Result<Option<&[u8]>, ClientError> {
    let Some(prefix) = bytes.first_chunk::<FRAME_PREFIX_LEN>() else {
        return Ok(None);
    };
    let body_len = wire::frame_len(*prefix).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(bytes.get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + body_len))
}

/// Decodes the server's answer to the Hello from the control stream's first bytes: a
/// Reject, or a Welcome followed by the game's schema (`docs/PROTOCOL.md` §3).
fn decode_answer(bytes: &[u8]) -> Answer {
    let body = match frame_body(bytes) {
        Ok(Some(body)) => body,
        Ok(None) => return Answer::Incomplete,
        Err(e) => return Answer::Bad(e),
    };
    let welcome = match wire::decode_exact::<ServerMessage>(body) {
        Ok(ServerMessage::Welcome(welcome)) => welcome,
        Ok(ServerMessage::Reject(reject)) => {
            return Answer::Rejected(ClientError::Rejected {
                reason: reject.reason(),
                detail: reject.detail,
            });
        }
        Err(e) => return Answer::Bad(ClientError::Protocol(e.to_string())),
    };
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Answer::Bad(ClientError::Protocol(format!(
            "the server speaks protocol {}, this client {PROTOCOL_VERSION}",
            welcome.protocol_version
        )));
    }
    let rest = &bytes[FRAME_PREFIX_LEN + body.len()..];
    match frame_body(rest) {
        Ok(Some(schema)) => match Schema::decode(schema) {
            Ok(schema) => Answer::Welcome(Box::new(welcome), Box::new(schema)),
            Err(e) => Answer::Bad(ClientError::Protocol(format!(
                "the game's schema after the Welcome: {e}"
            ))),
        },
        Ok(None) => Answer::Incomplete,
        Err(e) => Answer::Bad(ClientError::Protocol(format!(
            "the game's schema after the Welcome: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast_shared::msg::{Reject, RejectReason};

    fn frame(message: &ServerMessage) -> Vec<u8> {
        let mut out = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
        let len = wire::encode_frame(message, &mut out).expect("encodes");
        out[..len].to_vec()
    }

    #[test]
    fn an_answer_is_read_whole_before_it_is_judged() {
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            client_id: 7,
            entity: 3,
            tick_rate: 30,
            chunk_payload: 1150,
            arena_width: 1000,
            arena_height: 1000,
            cell_size: 50,
            view_cells: 2,
            server_tick: tickcast_shared::Tick::new(99),
        };
        let schema = test_schema();
        let mut bytes = frame(&ServerMessage::Welcome(welcome.clone()));
        bytes.extend_from_slice(&tickcast_shared::msg::schema_frame(&schema));
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode_answer(&bytes[..cut]), Answer::Incomplete),
                "{cut} bytes"
            );
        }
        match decode_answer(&bytes) {
            Answer::Welcome(got, got_schema) => {
                assert_eq!((*got, *got_schema), (welcome.clone(), schema));
            }
            other => panic!("{other:?}"),
        }
        // A Welcome followed by something that is not a schema is a protocol error.
        let mut bad = frame(&ServerMessage::Welcome(welcome));
        bad.extend_from_slice(&[3, 0, b'T', b'C', b'X']);
        match decode_answer(&bad) {
            Answer::Bad(error) => assert!(error.to_string().contains("schema"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    fn test_schema() -> Schema {
        use tickcast_shared::schema::{EntityKind, Field, FieldRole, FieldType, InputField};
        Schema::new(
            "test-game",
            1,
            vec![EntityKind {
                kind: 4,
                name: "thing".into(),
                glyph: b'#',
                fields: vec![
                    Field::new("x", FieldType::U16).role(FieldRole::PositionX),
                    Field::new("y", FieldType::U16).role(FieldRole::PositionY),
                ],
            }],
            vec![InputField::new("go", FieldType::U8, 0, 1)],
        )
        .expect("valid")
    }

    #[test]
    fn a_reject_names_its_reason_and_garbage_is_a_protocol_error() {
        let reject = Reject::new(RejectReason::ServerFull, "full");
        match decode_answer(&frame(&ServerMessage::Reject(reject))) {
            Answer::Rejected(error) => assert_eq!(error.key(), "rejected:server_full"),
            other => panic!("{other:?}"),
        }
        let garbage = [0x03, 0x00, 0xff, 0xff, 0xff];
        assert!(matches!(decode_answer(&garbage), Answer::Bad(_)));
        // A length prefix beyond any message is refused before the body arrives.
        assert!(matches!(decode_answer(&[0xff, 0xff]), Answer::Bad(_)));
    }
}
