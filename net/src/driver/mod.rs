//! The network driver: one thread owns the UDP socket, the `quinn_proto::Endpoint` and
//! every `quinn_proto::Connection`, and moves bytes and time into them. No task, waker or
//! channel per connection; one timer heap for all of them; batched receives and GSO
//! sends through `quinn-udp`.
//!
//! What wakes the loop: the socket becoming readable (or writable again after it was
//! full), the sim (a published tick, a join answer, the shutdown — a `mio::Waker`), or the
//! earliest timer. Each turn: receive up to [`RECV_BATCHES_PER_TURN`] batches and feed
//! them to the endpoint (new connections are admitted or refused before any TLS work);
//! hand join answers to their connections; fire due timers; fan the newest tick out,
//! writing each peer's datagrams straight into its connection; then drive every
//! connection touched this turn — its endpoint events, its application events (the
//! Hello, inputs, losses) and its transmits, flushed to the socket at once.
//!
//! The decisions are the plain code of [`crate::admission`] and [`crate::fanout`],
//! exactly as the `quinn-endpoint` baseline (`server.rs`) calls them.

mod conn;
mod socket;
mod tally;
mod timers;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Event, Incoming, ReadError, StreamEvent,
    VarInt,
};
use tickcast_shared::chunk::TICK_FRAME_PREFIX_LEN;
use tickcast_shared::event::{JoinAck, Membership, PeerEvent};
use tickcast_shared::msg::{
    self, Hello, InputDatagram, Reject, RejectReason, ServerMessage, Welcome,
};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, Tick, close};

use crate::admission::{
    Gate, HelloDeadline, InputAllowance, Limits, Occupancy, PeerTable, Refusal, admit_connection,
    needs_address_validation,
};
use crate::budget::{self, RssSample};
use crate::congestion::{PathHints, take_last_built_room_for};
use crate::fanout::{
    DatagramShape, FanOutScope, PeerOutbox, PeerSendState, offer_tick, select_view,
};
use crate::peer_params::session_max_datagram_frame_size;
use crate::transport::{
    DATAGRAM_QUEUE_ENTRY_BYTES, JOIN_ACK_TIMEOUT, NONCE_SWEEP_INTERVAL, REJECT_LINGER,
    SHUTDOWN_GRACE, UDP_STATS_INTERVAL, UdpTally, unix_now_s,
};
use crate::{DisconnectReason, NetConfig, NetCounters, NetError, NetParts, PublishedTick};
use conn::{Conn, Phase};
use socket::{Sent, UdpIo, proto_ecn};
use tally::{FrameTally, LoopTally};
use timers::Timers;

/// Receive batches (each up to `quinn_udp::BATCH_SIZE` messages) per turn before the loop
/// moves on to timers, the tick and transmits, so a flood cannot starve the fan-out. The
/// socket is drained on the following turns without sleeping.
pub const RECV_BATCHES_PER_TURN: usize = 16;

/// The received packets' buffer: packets are copied into it back to back and split
/// off, each a `BytesMut` quinn-proto owns while it reads it. Once quinn has dropped them
/// (it keeps none past its turn but a peer's few unread datagrams) the buffer is reclaimed
/// whole, so steady state allocates nothing; a packet still held pins at most this much.
/// 64 KiB: one GRO batch, about forty full-size packets.
const RX_CHUNK: usize = 64 * 1024;

/// Packets one transmit may carry to one peer (GSO), at most: as quinn's own driver, so
/// the reused transmit buffer stays within 64 KiB.
const MAX_TRANSMIT_SEGMENTS: usize = 10;

/// The poller's token for the socket.
const SOCKET: mio::Token = mio::Token(0);
/// The poller's token for the sim's wake-ups.
const WAKER: mio::Token = mio::Token(1);

/// The per-peer state of the fan-out, kept in the [`PeerTable`].
struct Peer {
    handle: ConnectionHandle,
    /// The entity the peer controls; its cell is the center of the peer's view.
    entity: u32,
    send_state: PeerSendState,
}

/// What the sim and the handle hand the driver, with the waker that tells it.
struct Inbox {
    /// The latest-wins slot: a tick the driver has not taken yet is replaced.
    tick: Mutex<Option<PublishedTick>>,
    shutdown: AtomicBool,
    waker: mio::Waker,
}

impl Inbox {
    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!("waking the net thread: {e}");
        }
    }
}

/// The sim's end of the latest-wins handoff.
#[derive(Clone)]
pub(crate) struct TickSlot(Arc<Inbox>);

impl std::fmt::Debug for TickSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TickSlot(..)")
    }
}

impl TickSlot {
    /// Replaces any tick the driver has not taken yet, and wakes it.
    pub(crate) fn publish(&self, tick: PublishedTick) {
        // The replaced tick (never taken) is dropped here; the driver counts the gap as
        // coalesced.
        let replaced = self
            .0
            .tick
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(tick);
        drop(replaced);
        self.0.wake();
    }
}

/// The handle's way into the driver: join answers and the shutdown.
pub(crate) struct Controls {
    inbox: Arc<Inbox>,
    join_acks: Sender<JoinAck>,
}

impl Controls {
    /// Hands a join answer over; `false` when the channel is full.
    pub(crate) fn acknowledge_join(&self, ack: JoinAck) -> bool {
        let sent = self.join_acks.try_send(ack).is_ok();
        self.inbox.wake();
        sent
    }

    /// Asks the driver to close every connection and stop.
    pub(crate) fn shutdown(&self) {
        self.inbox.shutdown.store(true, Ordering::Relaxed);
        self.inbox.wake();
    }
}

/// The endpoint and its socket, created but not yet running: `spawn` measures the memory
/// baseline between the two steps.
pub(crate) struct Endpoint {
    poll: mio::Poll,
    io: UdpIo,
    endpoint: quinn_proto::Endpoint,
}

impl Endpoint {
    /// Creates the endpoint on `socket`.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        server_config: quinn_proto::ServerConfig,
    ) -> Result<Self, NetError> {
        let io_error = |what: &str| {
            let what = what.to_string();
            move |source| NetError::Io { what, source }
        };
        let endpoint_config = quinn_proto::EndpointConfig::default();
        let mut io = UdpIo::new(socket, endpoint_config.get_max_udp_payload_size() as usize)
            .map_err(io_error("preparing the UDP socket"))?;
        let poll = mio::Poll::new().map_err(io_error("creating the poller"))?;
        poll.registry()
            .register(io.source(), SOCKET, mio::Interest::READABLE)
            .map_err(io_error("registering the UDP socket"))?;
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server_config)),
            !io.may_fragment(),
            None,
        );
        Ok(Self { poll, io, endpoint })
    }

    /// Starts the net thread.
    pub(crate) fn start(
        self,
        parts: NetParts,
        join_ack_capacity: usize,
    ) -> Result<(std::thread::JoinHandle<()>, TickSlot, Controls), NetError> {
        let waker =
            mio::Waker::new(self.poll.registry(), WAKER).map_err(|source| NetError::Io {
                what: "creating the net thread's waker".into(),
                source,
            })?;
        let inbox = Arc::new(Inbox {
            tick: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            waker,
        });
        let (acks_tx, acks_rx) = crossbeam_channel::bounded(join_ack_capacity);
        let driver = Driver::new(self, parts, inbox.clone(), acks_rx);
        let thread = std::thread::Builder::new()
            .name("tickcast-net".into())
            .spawn(move || driver.run())
            .map_err(|source| NetError::Io {
                what: "spawning the net thread".into(),
                source,
            })?;
        Ok((
            thread,
            TickSlot(inbox.clone()),
            Controls {
                inbox,
                join_acks: acks_tx,
            },
        ))
    }
}

/// Everything the net thread owns.
struct Driver {
    config: NetConfig,
    counters: Arc<NetCounters>,
    membership: Sender<Membership>,
    inputs: Sender<PeerEvent>,
    draining: Arc<AtomicBool>,
    gate: Gate,
    rss: RssSample,
    peers: PeerTable<Peer>,
    /// Which connection waits for each client's join answer.
    pending_joins: HashMap<u64, ConnectionHandle>,
    poll: mio::Poll,
    io: UdpIo,
    endpoint: quinn_proto::Endpoint,
    /// Every connection, at its handle's index (quinn-proto's handles are slab keys).
    /// Boxed: a connection is taken out of the slab while it is driven, and
    /// `quinn_proto::Connection` is a large struct. Moved by value, `memmove` was the
    /// top symbol of the server's profile at 1,000 clients (15.7 % of `perf` samples);
    /// boxed, every malloc/memcpy symbol together was 1.2 %.
    conns: Vec<Option<Box<Conn>>>,
    /// The least round trip of each client address's connections, which a connection's
    /// congestion controller reads until its first slowdown (`congestion::PathHint`).
    path_hints: PathHints,
    timers: Timers,
    inbox: Arc<Inbox>,
    join_acks: Receiver<JoinAck>,
    /// Connections to drive before the turn ends.
    touched: Vec<ConnectionHandle>,
    /// Connections with transmits left while the socket was full.
    waiting_to_send: Vec<ConnectionHandle>,
    /// New connections of the batch being received.
    incoming: Vec<Incoming>,
    /// The newest tick fanned out: the Welcome's `server_tick`, and the tick the peers'
    /// input allowances count against.
    current_tick: Tick,
    last_tick: Option<Tick>,
    /// UDP traffic of the connections that have ended.
    udp_of_ended: UdpTally,
    /// quinn's counts of the connections that have ended, and the loop's own.
    frames_of_ended: FrameTally,
    tally: LoopTally,
    /// Reused buffers: received packets, transmits, stateless answers, a peer's plan.
    rx: BytesMut,
    transmit: Vec<u8>,
    response: Vec<u8>,
    plan: Vec<Range<usize>>,
    next_housekeeping: Instant,
    /// Set once the shutdown began: when the loop stops at the latest.
    closing_until: Option<Instant>,
}

impl Driver {
    fn new(
        endpoint: Endpoint,
        parts: NetParts,
        inbox: Arc<Inbox>,
        join_acks: Receiver<JoinAck>,
    ) -> Self {
        let NetParts {
            config,
            memory_plan,
            token_key,
            counters,
            membership,
            inputs,
            draining,
        } = parts;
        let limits = Limits::new(
            config.max_clients,
            memory_plan.clients,
            memory_plan.connection_limit(),
            config.chunk_payload,
        )
        .with_measured_budget(memory_plan.measured());
        let gate = Gate::new(limits, token_key, config.nonce_capacity);
        let Endpoint { poll, io, endpoint } = endpoint;
        Self {
            config,
            counters,
            membership,
            inputs,
            draining,
            gate,
            rss: RssSample::default(),
            peers: PeerTable::default(),
            pending_joins: HashMap::new(),
            poll,
            io,
            endpoint,
            conns: Vec::new(),
            path_hints: PathHints::default(),
            timers: Timers::default(),
            inbox,
            join_acks,
            touched: Vec::new(),
            waiting_to_send: Vec::new(),
            incoming: Vec::new(),
            current_tick: Tick::new(0),
            last_tick: None,
            udp_of_ended: UdpTally::default(),
            frames_of_ended: FrameTally::default(),
            tally: LoopTally::default(),
            rx: BytesMut::with_capacity(RX_CHUNK),
            transmit: Vec::new(),
            response: Vec::new(),
            plan: Vec::new(),
            next_housekeeping: Instant::now(),
            closing_until: None,
        }
    }

    fn count(&self, counter: impl Fn(&NetCounters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    fn send_membership(&self, event: Membership) {
        if self.membership.try_send(event).is_err() {
            self.count(|c| &c.membership_events_lost);
        }
    }

    /// The loop. Returns once every connection is closed after a shutdown.
    fn run(mut self) {
        let mut events = mio::Events::with_capacity(8);
        let mut more_to_read = true;
        loop {
            self.tally.turns += 1;
            let now = Instant::now();
            let timeout = if more_to_read {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!("the net thread's poll failed: {e}");
                return;
            }
            let mut writable = false;
            for event in events.iter() {
                if event.token() == SOCKET {
                    more_to_read |= event.is_readable();
                    writable |= event.is_writable();
                }
            }
            let now = Instant::now();
            if writable {
                self.socket_writable();
            }
            if more_to_read {
                more_to_read = self.receive(now);
            }
            self.take_join_acks(now);
            self.fire_timers(now);
            let tick = self
                .inbox
                .tick
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(tick) = tick
                && self.closing_until.is_none()
            {
                self.fan_out(tick);
            }
            if now >= self.next_housekeeping {
                self.housekeeping(now);
            }
            if self.closing_until.is_none() && self.inbox.shutdown.load(Ordering::Relaxed) {
                self.begin_shutdown(now);
            }
            self.drive_touched(now);
            if let Some(until) = self.closing_until
                && (self.conns.iter().all(Option::is_none) || now >= until)
            {
                self.publish_udp_stats();
                let mut frames = self.frames_of_ended;
                for conn in self.conns.iter().flatten() {
                    frames.add(&conn.quic.stats());
                }
                frames.log(&self.tally);
                return;
            }
        }
    }

    /// When the loop must wake at the latest.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.timers.next(),
            Some(self.next_housekeeping),
            self.closing_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- the socket ----

    /// Receives up to [`RECV_BATCHES_PER_TURN`] batches; `true` if there may be more.
    fn receive(&mut self, now: Instant) -> bool {
        for _ in 0..RECV_BATCHES_PER_TURN {
            let messages = match self.io.recv() {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                // An ICMP error reported on the socket, or an interrupted call: the next
                // receive goes on.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!("receiving on the UDP socket: {e}");
                    return false;
                }
            };
            for i in 0..messages {
                let (meta, mut data) = self.io.take_message(i, &mut self.rx);
                let stride = meta.stride.max(1);
                while !data.is_empty() {
                    let packet = data.split_to(stride.min(data.len()));
                    self.response.clear();
                    match self.endpoint.handle(
                        now,
                        meta.addr,
                        meta.dst_ip,
                        meta.ecn.and_then(proto_ecn),
                        packet,
                        &mut self.response,
                    ) {
                        Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                            if let Some(conn) = self.conn_mut(handle) {
                                conn.quic.handle_event(event);
                                self.touch(handle);
                            }
                        }
                        Some(DatagramEvent::NewConnection(incoming)) => {
                            self.incoming.push(incoming);
                        }
                        Some(DatagramEvent::Response(transmit)) => {
                            self.io.respond(&transmit, &self.response[..transmit.size]);
                        }
                        None => {}
                    }
                }
            }
            let mut incoming = std::mem::take(&mut self.incoming);
            for connection in incoming.drain(..) {
                self.admit(connection, now);
            }
            self.incoming = incoming;
        }
        true
    }

    /// The socket drained after it was full: the kept transmit first, then every
    /// connection that had more.
    fn socket_writable(&mut self) {
        if !self.io.retry_kept() {
            return;
        }
        if let Err(e) =
            self.poll
                .registry()
                .reregister(self.io.source(), SOCKET, mio::Interest::READABLE)
        {
            tracing::warn!("re-registering the UDP socket: {e}");
        }
        for handle in std::mem::take(&mut self.waiting_to_send) {
            self.touch(handle);
        }
    }

    fn socket_blocked(&mut self, handle: ConnectionHandle) {
        if self.waiting_to_send.is_empty()
            && let Err(e) = self.poll.registry().reregister(
                self.io.source(),
                SOCKET,
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
        {
            tracing::warn!("re-registering the UDP socket: {e}");
        }
        if !self.waiting_to_send.contains(&handle) {
            self.waiting_to_send.push(handle);
        }
    }

    // ---- admission before TLS ----

    /// Refuses before any TLS work when the server is full, or when the handshakes beyond
    /// the memory budget's clients are already at their allowance; answers with a
    /// stateless Retry when many handshakes are in flight and the address is not
    /// validated yet; otherwise accepts the connection.
    fn admit(&mut self, incoming: Incoming, now: Instant) {
        self.response.clear();
        if self.closing_until.is_some() {
            let transmit = self.endpoint.refuse(incoming, &mut self.response);
            self.io.respond(&transmit, &self.response[..transmit.size]);
            return;
        }
        let peers = NetCounters::get(&self.counters.peers) as usize;
        let handshaking = NetCounters::get(&self.counters.handshaking) as usize;
        if let Err(reason) = admit_connection(self.gate.limits(), peers, handshaking) {
            self.count(|c| &c.refused_before_handshake);
            self.count(|c| &c.rejects[usize::from(reason.code())]);
            let transmit = self.endpoint.refuse(incoming, &mut self.response);
            self.io.respond(&transmit, &self.response[..transmit.size]);
            return;
        }
        let validated = incoming.remote_address_validated();
        if needs_address_validation(handshaking, self.config.retry_from_handshakes, validated) {
            // Stateless: the token carries everything; nothing is kept for this address.
            match self.endpoint.retry(incoming, &mut self.response) {
                Ok(transmit) => {
                    self.count(|c| &c.handshakes_retried);
                    self.io.respond(&transmit, &self.response[..transmit.size]);
                }
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            }
            return;
        }
        match self
            .endpoint
            .accept(incoming, now, &mut self.response, None)
        {
            Ok((handle, quic)) => {
                let now_handshaking = self.counters.handshaking.fetch_add(1, Ordering::Relaxed) + 1;
                self.counters
                    .handshaking_peak
                    .fetch_max(now_handshaking, Ordering::Relaxed);
                let remote = quic.remote_address();
                tracing::debug!(%remote, "accepted");
                let slot = handle.0;
                if self.conns.len() <= slot {
                    self.conns.resize_with(slot + 1, || None);
                }
                let bounds = HelloDeadline::new(
                    now,
                    self.config.handshake_timeout,
                    self.config.hello_timeout,
                );
                let mut conn = Box::new(Conn::new(quic, bounds));
                // quinn built its congestion controller inside `accept`, on this thread.
                conn.outbox =
                    PeerOutbox::new(take_last_built_room_for(&mut self.path_hints, remote.ip()));
                self.conns[slot] = Some(conn);
                self.touch(handle);
            }
            Err(e) => {
                tracing::debug!("handshake failed: {}", e.cause);
                if let Some(transmit) = e.response {
                    self.io.respond(&transmit, &self.response[..transmit.size]);
                }
            }
        }
    }

    // ---- connections ----

    fn conn_mut(&mut self, handle: ConnectionHandle) -> Option<&mut Conn> {
        self.conns.get_mut(handle.0).and_then(Option::as_deref_mut)
    }

    /// Puts the connection on this turn's list to drive.
    fn touch(&mut self, handle: ConnectionHandle) {
        if let Some(conn) = self.conn_mut(handle) {
            if conn.touched {
                return;
            }
            conn.touched = true;
        }
        self.touched.push(handle);
    }

    fn take(&mut self, handle: ConnectionHandle) -> Option<Box<Conn>> {
        self.conns.get_mut(handle.0).and_then(Option::take)
    }

    fn put(&mut self, handle: ConnectionHandle, conn: Box<Conn>) {
        self.conns[handle.0] = Some(conn);
    }

    fn drive_touched(&mut self, now: Instant) {
        while let Some(handle) = self.touched.pop() {
            self.drive(handle, now);
        }
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers.compact(|at, slot| {
                conns
                    .get(slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|conn| conn.timer == Some(at))
            });
        }
    }

    /// Everything a connection has to do now: its endpoint events, its application
    /// events, its transmits; then its next deadline, or its removal once drained.
    fn drive(&mut self, handle: ConnectionHandle, now: Instant) {
        let Some(mut conn) = self.take(handle) else {
            return;
        };
        conn.touched = false;
        self.tally.drives += 1;
        loop {
            let mut progressed = false;
            while let Some(event) = conn.quic.poll_endpoint_events() {
                progressed = true;
                if let Some(reply) = self.endpoint.handle_event(handle, event) {
                    conn.quic.handle_event(reply);
                }
            }
            while let Some(event) = conn.quic.poll() {
                progressed = true;
                self.on_event(handle, &mut conn, event, now);
            }
            if !progressed {
                break;
            }
        }
        // A tick held for the peer goes to quinn once its window has room.
        if conn.outbox.is_held() {
            self.release_held(&mut conn);
        }
        if self.io.is_blocked() {
            self.socket_blocked(handle);
        } else {
            let segments = self.io.max_gso_segments().min(MAX_TRANSMIT_SEGMENTS);
            loop {
                self.transmit.clear();
                let Some(transmit) = conn.quic.poll_transmit(now, segments, &mut self.transmit)
                else {
                    break;
                };
                self.tally.sends += 1;
                if self.io.send(&transmit, &self.transmit[..transmit.size]) == Sent::Blocked {
                    self.socket_blocked(handle);
                    break;
                }
            }
        }
        while let Some(event) = conn.quic.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(handle, event) {
                conn.quic.handle_event(reply);
                conn.touched = true;
                self.touched.push(handle);
            }
        }
        if conn.quic.is_drained() {
            self.release(handle, &mut conn, None);
            let stats = conn.quic.stats();
            self.udp_of_ended.add(&stats);
            self.frames_of_ended.add(&stats);
            return;
        }
        self.requeue(handle, &mut conn);
        self.put(handle, conn);
    }

    /// Queues the connection's next deadline if it is earlier than the one it has queued.
    fn requeue(&mut self, handle: ConnectionHandle, conn: &mut Conn) {
        let next = [conn.quic.poll_timeout(), conn.phase.deadline()]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next
            && conn.timer.is_none_or(|queued| at < queued)
        {
            self.timers.push(at, handle.0);
            conn.timer = Some(at);
        }
    }

    /// Hands a connection's held tick to quinn if its queue is empty and its window has
    /// room (`fanout::release_held`), and counts it.
    fn release_held(&mut self, conn: &mut Conn) {
        let offered = crate::fanout::release_held(
            &mut conn.quic,
            self.config.datagram_send_buffer,
            &mut conn.outbox,
        );
        let counters = &self.counters;
        if offered.sent_whole {
            counters.peer_ticks_sent.fetch_add(1, Ordering::Relaxed);
        }
        if offered.cut {
            counters
                .peer_ticks_send_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        counters
            .datagrams_sent
            .fetch_add(offered.datagrams, Ordering::Relaxed);
        counters
            .bytes_out
            .fetch_add(offered.bytes, Ordering::Relaxed);
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, slot)) = self.timers.pop_due(now) {
            let handle = ConnectionHandle(slot);
            let Some(mut conn) = self.take(handle) else {
                continue;
            };
            if conn.timer == Some(at) {
                conn.timer = None;
                self.tally.timer_pops += 1;
                let quic_due = conn.quic.poll_timeout().is_some_and(|due| due <= now);
                let phase_due = conn.phase.deadline().is_some_and(|due| due <= now);
                if quic_due {
                    conn.quic.handle_timeout(now);
                }
                if phase_due {
                    self.phase_deadline(handle, &mut conn, now);
                }
                if quic_due || phase_due {
                    if !conn.touched {
                        conn.touched = true;
                        self.touched.push(handle);
                    }
                } else {
                    // Nothing is due: quinn moved this timer later since it was queued
                    // (most often the delayed ACK, which left in the tick's packet).
                    // Driving the connection would find nothing to do; its real deadline
                    // is queued instead.
                    self.tally.timer_pops_idle += 1;
                    self.requeue(handle, &mut conn);
                }
            }
            self.put(handle, conn);
        }
    }

    fn on_event(&mut self, handle: ConnectionHandle, conn: &mut Conn, event: Event, now: Instant) {
        match event {
            Event::ConnectionLost { reason } => {
                tracing::debug!("connection lost: {reason}");
                self.release(handle, conn, Some(&reason));
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi })
            | Event::Stream(StreamEvent::Readable { .. }) => {
                if conn.control.is_none() {
                    conn.control = conn.quic.streams().accept(Dir::Bi);
                }
                self.read_control(handle, conn, now);
            }
            Event::Stream(StreamEvent::Finished { .. } | StreamEvent::Stopped { .. }) => {
                // The client has the Reject (or will never read it): close now.
                if let Phase::Rejecting { reason, .. } = conn.phase {
                    self.close_rejected(handle, conn, reason, now);
                }
            }
            Event::DatagramReceived => {
                if matches!(conn.phase, Phase::Joined { .. }) {
                    self.read_inputs(handle, conn, now);
                }
            }
            Event::Connected => {
                // The Hello's own bound starts now (a handshake slowed by loss does not
                // eat the Hello's time).
                if let Phase::AwaitingHello { deadline, bounds } = &mut conn.phase {
                    *deadline = bounds.hello_by(now);
                }
            }
            Event::HandshakeDataReady | Event::DatagramsUnblocked | Event::Stream(_) => {}
        }
    }

    /// A phase's own deadline passed.
    fn phase_deadline(&mut self, handle: ConnectionHandle, conn: &mut Conn, now: Instant) {
        match conn.phase {
            Phase::AwaitingHello { .. } => {
                self.count(|c| &c.hello_timeouts);
                self.close(
                    handle,
                    conn,
                    close::HELLO_TIMEOUT,
                    Bytes::from_static(b"no Hello in time"),
                    now,
                );
            }
            Phase::AwaitingJoin { client_id, .. } => {
                // The sim may still spawn the entity later; the Left makes it despawn.
                self.send_membership(Membership::Left { client_id });
                self.reject(
                    handle,
                    conn,
                    RejectReason::Unavailable,
                    "the simulation did not answer",
                    now,
                );
            }
            Phase::Rejecting { reason, .. } => self.close_rejected(handle, conn, reason, now),
            Phase::Joined { .. } | Phase::Closed => {}
        }
    }

    /// Closes with `code` and gives back what the connection's phase held. The close
    /// is counted by the caller, with its reason.
    fn close(
        &mut self,
        handle: ConnectionHandle,
        conn: &mut Conn,
        code: u32,
        reason: Bytes,
        now: Instant,
    ) {
        conn.quic.close(now, VarInt::from_u32(code), reason);
        self.release(handle, conn, None);
    }

    /// Closes a connection that broke the protocol with `protocol_error`, counted as
    /// such; `reason` is the close's text.
    fn close_protocol_error(
        &mut self,
        handle: ConnectionHandle,
        conn: &mut Conn,
        reason: &'static [u8],
        now: Instant,
    ) {
        self.count(|c| &c.protocol_errors);
        self.counters
            .count_disconnects(DisconnectReason::ProtocolError, 1);
        self.close(
            handle,
            conn,
            close::PROTOCOL_ERROR,
            Bytes::from_static(reason),
            now,
        );
    }

    fn close_rejected(
        &mut self,
        handle: ConnectionHandle,
        conn: &mut Conn,
        reason: RejectReason,
        now: Instant,
    ) {
        self.close(
            handle,
            conn,
            close::for_reject(reason),
            Bytes::from_static(reason.name().as_bytes()),
            now,
        );
    }

    /// The connection ended (`lost` says why when the peer or the path ended it): gives
    /// back what its phase held, and tells the sim if it was a player.
    fn release(
        &mut self,
        handle: ConnectionHandle,
        conn: &mut Conn,
        lost: Option<&ConnectionError>,
    ) {
        match std::mem::replace(&mut conn.phase, Phase::Closed) {
            Phase::AwaitingHello { .. } | Phase::Rejecting { .. } => {
                self.counters.handshaking.fetch_sub(1, Ordering::Relaxed);
            }
            Phase::AwaitingJoin { client_id, .. } => {
                self.counters.handshaking.fetch_sub(1, Ordering::Relaxed);
                self.abandon_join(handle, client_id);
                self.send_membership(Membership::Left { client_id });
            }
            Phase::Joined {
                client_id,
                generation,
                ..
            } => {
                if let Some(reason) = lost.and_then(DisconnectReason::from_connection_error) {
                    self.counters.count_disconnects(reason, 1);
                }
                if self.peers.disconnect(client_id, generation) {
                    self.counters.peers.fetch_sub(1, Ordering::Relaxed);
                    self.send_membership(Membership::Left { client_id });
                    tracing::debug!(client_id, "left");
                }
            }
            Phase::Closed => {}
        }
    }

    /// Gives back the place and the pending join a passed Hello held.
    fn abandon_join(&mut self, handle: ConnectionHandle, client_id: u64) {
        self.peers.abandon();
        if self.pending_joins.get(&client_id) == Some(&handle) {
            self.pending_joins.remove(&client_id);
        }
    }

    // ---- the control stream ----

    fn read_control(&mut self, handle: ConnectionHandle, conn: &mut Conn, now: Instant) {
        let Some(id) = conn.control else {
            return;
        };
        match conn.phase {
            Phase::AwaitingHello { .. } => {}
            Phase::Joined { .. } => {
                // Nothing may follow the Hello in protocol version 2; a finished stream
                // is fine.
                let mut recv = conn.quic.recv_stream(id);
                let Ok(mut chunks) = recv.read(true) else {
                    return;
                };
                let unexpected = matches!(chunks.next(64), Ok(Some(_)));
                let _ = chunks.finalize();
                if unexpected {
                    self.close_protocol_error(
                        handle,
                        conn,
                        b"unexpected bytes on the control stream",
                        now,
                    );
                }
                return;
            }
            // Whatever follows the Hello stays on the stream until the Welcome.
            _ => return,
        }
        let Some(frame) = conn.hello.as_mut() else {
            return;
        };
        let mut recv = conn.quic.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        let outcome = loop {
            match chunks.next(frame.wanted()) {
                Ok(Some(chunk)) => match frame.push(&chunk.bytes) {
                    Ok(Some(hello)) => break HelloRead::Hello(hello),
                    Ok(None) => {}
                    Err(why) => break HelloRead::Protocol(why),
                },
                Ok(None) => {
                    break HelloRead::Protocol("control stream ended inside a frame".into());
                }
                Err(ReadError::Blocked) => break HelloRead::Pending,
                Err(ReadError::Reset(_)) => break HelloRead::Failed,
            }
        };
        let _ = chunks.finalize();
        match outcome {
            HelloRead::Pending => {}
            HelloRead::Hello(hello) => {
                conn.hello = None;
                self.on_hello(handle, conn, &hello, now);
            }
            HelloRead::Protocol(why) => {
                tracing::debug!("protocol error in the handshake: {why}");
                self.count(|c| &c.protocol_errors);
                self.close(
                    handle,
                    conn,
                    close::PROTOCOL_ERROR,
                    Bytes::copy_from_slice(why.as_bytes()),
                    now,
                );
            }
            HelloRead::Failed => {
                self.close(
                    handle,
                    conn,
                    close::NORMAL,
                    Bytes::from_static(b"control stream reset"),
                    now,
                );
            }
        }
    }

    /// The Hello checks (`admission::Gate`) with the datagram limit the peer advertised
    /// and the table's occupancy; then the join: the client holds a place in the table
    /// and waits for the sim's answer.
    fn on_hello(&mut self, handle: ConnectionHandle, conn: &mut Conn, hello: &Hello, now: Instant) {
        if let Err(Refusal { reason, detail }) = self.check_hello(hello, conn) {
            self.reject(handle, conn, reason, &detail, now);
            return;
        }
        self.peers.begin_admission();
        let client_id = hello.token.client_id;
        // One connection per client id: the newer replaces the older.
        if let Some(old) = self.peers.take_for_replacement(client_id) {
            self.close_replaced(client_id, old, now);
        }
        conn.phase = Phase::AwaitingJoin {
            client_id,
            deadline: now + JOIN_ACK_TIMEOUT,
        };
        if let Some(older) = self.pending_joins.insert(client_id, handle)
            && older != handle
        {
            // The older connection of this client can no longer get the answer: it is
            // rejected as if the sim had not answered.
            self.expire_join(older, now);
        }
        if self
            .membership
            .try_send(Membership::Joined { client_id })
            .is_err()
        {
            self.reject(
                handle,
                conn,
                RejectReason::Unavailable,
                "the server is busy",
                now,
            );
        }
    }

    fn check_hello(&mut self, hello: &Hello, conn: &Conn) -> Result<(), Refusal> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Refusal {
                reason: RejectReason::Draining,
                detail: "the server is draining".into(),
            });
        }
        let occupancy = Occupancy {
            resident_set: self.rss.bytes(Instant::now(), budget::resident_set_bytes),
            ..self.peers.occupancy(hello.token.client_id)
        };
        let advertised = session_max_datagram_frame_size(conn.quic.crypto_session());
        let admitted = self
            .gate
            .check_hello(hello, advertised, occupancy, unix_now_s())?;
        self.counters
            .nonces_remembered
            .store(self.gate.nonces_remembered() as u64, Ordering::Relaxed);
        if admitted.evicted_a_nonce {
            self.count(|c| &c.nonces_evicted);
        }
        Ok(())
    }

    /// Makes a connection waiting for its join answer time out now.
    fn expire_join(&mut self, handle: ConnectionHandle, now: Instant) {
        let Some(conn) = self.conn_mut(handle) else {
            return;
        };
        if let Phase::AwaitingJoin { deadline, .. } = &mut conn.phase {
            *deadline = now;
            conn.timer = Some(now);
            self.timers.push(now, handle.0);
        }
    }

    /// Writes a Reject on the control stream and lingers so the client can read it
    /// before the close discards it.
    fn reject(
        &mut self,
        handle: ConnectionHandle,
        conn: &mut Conn,
        reason: RejectReason,
        detail: &str,
        now: Instant,
    ) {
        tracing::debug!(reason = reason.name(), "rejecting: {detail}");
        self.count(|c| &c.rejects[usize::from(reason.code())]);
        if let Phase::AwaitingJoin { client_id, .. } = conn.phase {
            self.abandon_join(handle, client_id);
        }
        conn.phase = Phase::Rejecting {
            reason,
            until: now + REJECT_LINGER,
        };
        let message = ServerMessage::Reject(Reject::new(reason, detail));
        let written = write_message(conn, &message)
            && conn
                .control
                .is_some_and(|id| conn.quic.send_stream(id).finish().is_ok());
        if !written {
            self.close_rejected(handle, conn, reason, now);
        }
    }

    /// Closes a connection another one of the same client replaced, and tells the sim.
    fn close_replaced(&mut self, client_id: u64, old: Peer, now: Instant) {
        self.count(|c| &c.replaced);
        self.counters
            .count_disconnects(DisconnectReason::Replaced, 1);
        self.counters.peers.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = self.conn_mut(old.handle) {
            conn.quic.close(
                now,
                VarInt::from_u32(close::REPLACED),
                Bytes::from_static(b"replaced by a newer connection"),
            );
            // Out of the table already: its end gives back nothing more.
            conn.phase = Phase::Closed;
            self.touch(old.handle);
        }
        self.send_membership(Membership::Left { client_id });
    }

    /// The sim's answers to joins: each waiting connection gets its Welcome and joins
    /// the fan-out.
    fn take_join_acks(&mut self, now: Instant) {
        while let Ok(ack) = self.join_acks.try_recv() {
            let Some(handle) = self.pending_joins.remove(&ack.client_id) else {
                continue;
            };
            let Some(mut conn) = self.take(handle) else {
                continue;
            };
            if matches!(conn.phase, Phase::AwaitingJoin { client_id, .. } if client_id == ack.client_id)
            {
                self.welcome(handle, &mut conn, ack, now);
            }
            self.put(handle, conn);
            self.touch(handle);
        }
    }

    fn welcome(&mut self, handle: ConnectionHandle, conn: &mut Conn, ack: JoinAck, now: Instant) {
        let client_id = ack.client_id;
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            client_id,
            entity: ack.entity,
            tick_rate: self.config.tick_rate,
            chunk_payload: u16::try_from(self.config.chunk_payload).unwrap_or(u16::MAX),
            arena_width: self.config.arena.0,
            arena_height: self.config.arena.1,
            cell_size: self.config.cell_size,
            view_cells: self.config.view_cells,
            server_tick: self.current_tick,
        });
        // Right after the Welcome, the game's schema (docs/PROTOCOL.md §3): a client reads
        // the game's records and builds its inputs from it.
        let schema_frame = self.config.schema.as_deref().map(msg::schema_frame);
        if !write_message(conn, &welcome)
            || !schema_frame.is_some_and(|frame| write_bytes(conn, &frame))
        {
            // Gives back the place and sends the Left (`release`).
            self.close(
                handle,
                conn,
                close::NORMAL,
                Bytes::from_static(b"the Welcome could not be written"),
                now,
            );
            return;
        }
        let (generation, raced) = self.peers.connect(
            client_id,
            Peer {
                handle,
                entity: ack.entity,
                send_state: PeerSendState::default(),
            },
        );
        self.counters.peers.fetch_add(1, Ordering::Relaxed);
        self.count(|c| &c.admitted);
        if let Some(old) = raced {
            self.close_replaced(client_id, old, now);
        }
        self.counters.handshaking.fetch_sub(1, Ordering::Relaxed);
        conn.phase = Phase::Joined {
            client_id,
            generation,
            allowance: InputAllowance::new(self.config.max_inputs_per_tick),
        };
        tracing::debug!(client_id, entity = ack.entity, "joined");
        // What arrived while the sim was answering.
        self.read_inputs(handle, conn, now);
        self.read_control(handle, conn, now);
    }

    /// Reads the peer's input datagrams; a malformed one closes it.
    fn read_inputs(&mut self, handle: ConnectionHandle, conn: &mut Conn, now: Instant) {
        while let Phase::Joined {
            client_id,
            allowance,
            ..
        } = &mut conn.phase
        {
            let client_id = *client_id;
            let Some(bytes) = conn.quic.datagrams().recv() else {
                return;
            };
            self.count(|c| &c.datagrams_received);
            self.counters
                .bytes_in
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let cmd_len = self.config.input_cmd_len();
            let datagram = match InputDatagram::decode(&bytes, cmd_len) {
                Ok(datagram) => datagram,
                Err(e) => {
                    tracing::debug!(client_id, "malformed datagram: {e}");
                    self.close_protocol_error(handle, conn, b"malformed datagram", now);
                    return;
                }
            };
            if !allowance.admit(self.current_tick) {
                self.count(|c| &c.inputs_dropped_rate);
                continue;
            }
            match self.inputs.try_send(PeerEvent::Input {
                client_id,
                datagram,
            }) {
                Ok(()) => self.count(|c| &c.inputs_received),
                Err(TrySendError::Full(_)) => self.count(|c| &c.inputs_dropped_channel_full),
                // The server is stopping.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    // ---- the tick ----

    /// Sends every peer the part of the tick in its view, written straight into its
    /// connection, if its send buffer has room for all of that part; the transmits go out
    /// when the turn drives the touched connections.
    fn fan_out(&mut self, published: PublishedTick) {
        if let Some(last) = self.last_tick {
            let gap = published.tick.wrapping_since(last).saturating_sub(1);
            self.counters
                .ticks_coalesced
                .fetch_add(u64::from(gap), Ordering::Relaxed);
        }
        self.last_tick = Some(published.tick);
        self.current_tick = published.tick;
        self.count(|c| &c.ticks_fanned_out);

        let fan_out_scope = FanOutScope::enter();
        let shape = DatagramShape {
            // quinn counts each queued datagram's bookkeeping (one `Bytes` handle)
            // against the send buffer as well as its payload.
            entry_cost: DATAGRAM_QUEUE_ENTRY_BYTES,
            bundle_limit: self.config.chunk_payload + TICK_FRAME_PREFIX_LEN,
        };
        // Every peer gets refcounted slices of the sim's tick buffer: no copy, no encode.
        let tick = &published.buffer;
        let send_buffer = self.config.datagram_send_buffer;
        let view_cells = self.config.view_cells;
        let mut queue_peak = 0usize;
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        let (mut ticks_sent, mut ticks_skipped, mut ticks_cut) = (0u64, 0u64, 0u64);
        let conns = &mut self.conns;
        let touched = &mut self.touched;
        for peer in self.peers.peers_mut() {
            let Some(conn) = conns.get_mut(peer.handle.0).and_then(Option::as_mut) else {
                continue;
            };
            // Backpressure reads the connection's own state: the room quinn has left in
            // its datagram send queue, what of it is still queued, and what its
            // controller says of its window (`fanout::offer_tick`).
            let path_room = conn.quic.datagrams().max_size();
            let view_bytes = select_view(
                &published.index,
                published.index.player_cell(peer.entity),
                view_cells,
                shape.within(path_room),
                &mut self.plan,
            );
            let offered = offer_tick(
                &mut conn.quic,
                send_buffer,
                &mut peer.send_state,
                &mut conn.outbox,
                tick,
                &self.plan,
                view_bytes,
            );
            self.plan.clear();
            ticks_skipped += u64::from(offered.dropped_ticks);
            sent += offered.datagrams;
            sent_bytes += offered.bytes;
            ticks_sent += u64::from(offered.sent_whole);
            ticks_cut += u64::from(offered.cut);
            queue_peak = queue_peak.max(offered.queue_after);
            if offered.datagrams > 0 && !conn.touched {
                conn.touched = true;
                touched.push(peer.handle);
            }
        }
        drop(fan_out_scope);
        let counters = &self.counters;
        counters
            .peer_ticks_sent
            .fetch_add(ticks_sent, Ordering::Relaxed);
        counters
            .peer_ticks_skipped_backpressure
            .fetch_add(ticks_skipped, Ordering::Relaxed);
        counters
            .peer_ticks_send_errors
            .fetch_add(ticks_cut, Ordering::Relaxed);
        counters.datagrams_sent.fetch_add(sent, Ordering::Relaxed);
        counters.bytes_out.fetch_add(sent_bytes, Ordering::Relaxed);
        // The spread is measured to the last peer's datagrams handed to its connection,
        // as before; the transmits follow in this turn's flush.
        let spread = published.published_at.elapsed().as_micros() as u64;
        counters.fanout_spread.record_us(spread);
        counters
            .fanout_spread_us_max
            .fetch_max(spread, Ordering::Relaxed);
        counters
            .peer_send_queue_peak_bytes
            .fetch_max(queue_peak as u64, Ordering::Relaxed);
    }

    // ---- once a second, and the end ----

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + UDP_STATS_INTERVAL.min(NONCE_SWEEP_INTERVAL);
        self.publish_udp_stats();
        // Forget the nonces of expired tokens, and keep the gauge current: the cache
        // empties after a burst of joins even if no Hello follows.
        self.gate.forget_expired_nonces(unix_now_s());
        self.counters
            .nonces_remembered
            .store(self.gate.nonces_remembered() as u64, Ordering::Relaxed);
    }

    /// The ended connections' UDP traffic plus the live ones', into `NetCounters::udp`.
    fn publish_udp_stats(&self) {
        let mut total = self.udp_of_ended;
        for conn in self.conns.iter().flatten() {
            total.add(&conn.quic.stats());
        }
        total.publish(&self.counters.udp);
    }

    /// Closes every connection with the shutdown code (or `drained`), and gives them
    /// [`SHUTDOWN_GRACE`] to acknowledge.
    fn begin_shutdown(&mut self, now: Instant) {
        let draining = self.draining.load(Ordering::Relaxed);
        let (code, reason, disconnect): (u32, &'static [u8], _) = if draining {
            (close::DRAINED, b"server drained", DisconnectReason::Drained)
        } else {
            (
                close::SERVER_SHUTDOWN,
                b"server shutting down",
                DisconnectReason::ServerShutdown,
            )
        };
        self.counters
            .count_disconnects(disconnect, self.peers.len() as u64);
        tracing::info!("closing every connection: {}", close::name(code.into()));
        for slot in 0..self.conns.len() {
            let handle = ConnectionHandle(slot);
            let Some(mut conn) = self.take(handle) else {
                continue;
            };
            conn.quic
                .close(now, VarInt::from_u32(code), Bytes::from_static(reason));
            if matches!(conn.phase, Phase::Joined { .. }) {
                // Counted above, all at once; the sim is stopping and needs no Left.
                conn.phase = Phase::Closed;
            } else {
                self.release(handle, &mut conn, None);
            }
            self.put(handle, conn);
            self.touch(handle);
        }
        self.closing_until = Some(now + SHUTDOWN_GRACE);
    }
}

/// How far the Hello got this time.
enum HelloRead {
    Pending,
    Hello(Hello),
    Protocol(String),
    Failed,
}

/// Writes one framed message on the control stream; `false` if it did not all fit (it
/// always does: the client's stream window is far larger than any message).
fn write_message(conn: &mut Conn, message: &ServerMessage) -> bool {
    let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let Ok(len) = wire::encode_frame(message, &mut frame) else {
        return false;
    };
    write_bytes(conn, &frame[..len])
}

/// Writes bytes already framed on the control stream; `false` if they did not all fit.
fn write_bytes(conn: &mut Conn, frame: &[u8]) -> bool {
    let Some(id) = conn.control else {
        return false;
    };
    matches!(conn.quic.send_stream(id).write(frame), Ok(n) if n == frame.len())
}
