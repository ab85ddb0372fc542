//! The `quinn-endpoint` baseline (a build option for the A/B, not the default): the net
//! thread's glue as quinn and tokio tasks for accept, handshake, each peer's input
//! loop and the fan-out. The decisions they carry out — who is admitted, how many inputs
//! a peer may send, what each peer is sent — are plain code in [`crate::admission`] and
//! [`crate::fanout`]; this file moves bytes and time into them.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Sender, TrySendError};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tickcast_shared::Tick;
use tickcast_shared::chunk::TICK_FRAME_PREFIX_LEN;
use tickcast_shared::event::{JoinAck, Membership, PeerEvent};
use tickcast_shared::msg::{
    self, Hello, InputDatagram, Reject, RejectReason, ServerMessage, Welcome,
};
use tickcast_shared::wire::{self, FRAME_PREFIX_LEN, MAX_MESSAGE_LEN};
use tickcast_shared::{PROTOCOL_VERSION, close};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use crate::admission::{
    Gate, HelloDeadline, InputAllowance, Limits, Occupancy, PeerTable, Refusal, admit_connection,
    needs_address_validation,
};
use crate::budget::{self, RssSample};
use crate::fanout::{DatagramShape, FanOutScope, PeerSendState, SendDecision, plan_tick_for_peer};
use crate::peer_params::advertised_max_datagram_frame_size;
use crate::transport::{
    DATAGRAM_QUEUE_ENTRY_BYTES, JOIN_ACK_TIMEOUT, NONCE_SWEEP_INTERVAL, REJECT_LINGER,
    SHUTDOWN_GRACE, UDP_STATS_INTERVAL, UdpTally, datagram_for_peer, unix_now_s,
};
use crate::{DisconnectReason, NetConfig, NetCounters, NetError, NetParts, PublishedTick};

/// The glue's per-peer state, kept in the [`PeerTable`].
struct Peer {
    conn: Connection,
    /// The entity the peer controls; its cell is the center of the peer's view.
    entity: u32,
    send_state: PeerSendState,
}

/// State shared by the net thread's tasks. They all run on one current-thread runtime;
/// the mutexes are never held across an await.
struct NetState {
    config: NetConfig,
    counters: Arc<NetCounters>,
    membership: Sender<Membership>,
    inputs: Sender<PeerEvent>,
    /// Who is connected, and the places held by admissions in flight.
    peers: Mutex<PeerTable<Peer>>,
    pending_joins: Mutex<HashMap<u64, oneshot::Sender<JoinAck>>>,
    /// The Hello checks, with the nonces seen.
    gate: Mutex<Gate>,
    /// The resident set the memory budget's measured check last read.
    rss: Mutex<RssSample>,
    /// The newest tick fanned out: the Welcome's `server_tick`, and the tick the peers'
    /// input allowances count against.
    current_tick: AtomicU32,
    /// Set by the server when it starts draining: Hellos are refused with `draining`,
    /// and the final close carries `close::DRAINED`.
    draining: Arc<AtomicBool>,
    /// UDP traffic of the connections that have ended; the live ones' is added to it
    /// each time the totals are published.
    udp_of_ended: Mutex<UdpTally>,
}

impl NetState {
    fn new(parts: NetParts) -> Self {
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
        Self {
            config,
            counters,
            membership,
            inputs,
            peers: Mutex::new(PeerTable::default()),
            pending_joins: Mutex::new(HashMap::new()),
            gate: Mutex::new(gate),
            rss: Mutex::new(RssSample::default()),
            current_tick: AtomicU32::new(0),
            draining,
            udp_of_ended: Mutex::new(UdpTally::default()),
        }
    }

    fn peers(&self) -> MutexGuard<'_, PeerTable<Peer>> {
        // A panic while holding the lock would be a bug in this file; the map is still
        // consistent (every update is a single insert or remove), so keep serving.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending_joins(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<JoinAck>>> {
        self.pending_joins.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, counter: impl Fn(&NetCounters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    fn send_membership(&self, event: Membership) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.membership.try_send(event)
        {
            self.count(|c| &c.membership_events_lost);
        }
    }

    /// The Hello checks (`admission::Gate`) with the datagram limit the peer advertised
    /// and the table's occupancy. On success the client holds a place in the table until it
    /// connects or its [`AdmissionSlot`] is dropped. No await inside: on this
    /// single-threaded runtime no other handshake can pass the check in between.
    fn check_hello(
        self: &Arc<Self>,
        hello: &Hello,
        conn: &Connection,
    ) -> Result<AdmissionSlot, Refusal> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(Refusal {
                reason: RejectReason::Draining,
                detail: "the server is draining".into(),
            });
        }
        let mut peers = self.peers();
        let occupancy = Occupancy {
            resident_set: self
                .rss
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bytes(std::time::Instant::now(), budget::resident_set_bytes),
            ..peers.occupancy(hello.token.client_id)
        };
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = gate.check_hello(
            hello,
            advertised_max_datagram_frame_size(conn),
            occupancy,
            unix_now_s(),
        )?;
        self.counters
            .nonces_remembered
            .store(gate.nonces_remembered() as u64, Ordering::Relaxed);
        drop(gate);
        if admitted.evicted_a_nonce {
            self.count(|c| &c.nonces_evicted);
        }
        peers.begin_admission();
        Ok(AdmissionSlot(Some(self.clone())))
    }
}

async fn run(
    endpoint: quinn::Endpoint,
    state: NetState,
    slot: watch::Receiver<Option<PublishedTick>>,
    acks: mpsc::Receiver<JoinAck>,
    shutdown: Arc<Notify>,
) {
    let state = Arc::new(state);
    let fanout = tokio::spawn(fan_out(state.clone(), slot));
    let join_acks = tokio::spawn(deliver_join_acks(state.clone(), acks));
    let udp_stats = tokio::spawn(publish_udp_stats(state.clone()));
    let nonce_sweep = tokio::spawn(sweep_expired_nonces(state.clone()));
    loop {
        tokio::select! {
            () = shutdown.notified() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => admit(&state, incoming),
                None => break,
            },
        }
    }
    fanout.abort();
    join_acks.abort();
    udp_stats.abort();
    nonce_sweep.abort();
    let (code, reason): (u32, &[u8]) = if state.draining.load(Ordering::Relaxed) {
        (close::DRAINED, b"server drained")
    } else {
        (close::SERVER_SHUTDOWN, b"server shutting down")
    };
    let closing = state.peers().len() as u64;
    let disconnect = if code == close::DRAINED {
        DisconnectReason::Drained
    } else {
        DisconnectReason::ServerShutdown
    };
    state.counters.count_disconnects(disconnect, closing);
    tracing::info!("closing every connection: {}", close::name(code.into()));
    endpoint.close(VarInt::from_u32(code), reason);
    let _ = timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
}

/// Hands each of the sim's join answers to the handshake waiting for it, as soon as it
/// arrives: a Welcome never waits for a published tick.
async fn deliver_join_acks(state: Arc<NetState>, mut acks: mpsc::Receiver<JoinAck>) {
    while let Some(ack) = acks.recv().await {
        if let Some(waiting) = state.pending_joins().remove(&ack.client_id) {
            let _ = waiting.send(ack);
        }
    }
}

/// Forgets the nonces of expired tokens once a second, and keeps the gauge current: the
/// cache empties after a burst of joins even if no Hello follows.
async fn sweep_expired_nonces(state: Arc<NetState>) {
    let mut ticker = tokio::time::interval(NONCE_SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut gate = state.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.forget_expired_nonces(unix_now_s());
        state
            .counters
            .nonces_remembered
            .store(gate.nonces_remembered() as u64, Ordering::Relaxed);
    }
}

/// Refuses before any TLS work when the server is full, or when the handshakes beyond
/// the memory budget's clients are already at their allowance; answers with a stateless
/// Retry when many handshakes are in flight and the address is not validated yet
/// (`admission::needs_address_validation`); otherwise hands the connection to its own
/// task.
fn admit(state: &Arc<NetState>, incoming: quinn::Incoming) {
    let peers = NetCounters::get(&state.counters.peers) as usize;
    let handshaking = NetCounters::get(&state.counters.handshaking) as usize;
    let limits = *state
        .gate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .limits();
    if let Err(reason) = admit_connection(&limits, peers, handshaking) {
        state.count(|c| &c.refused_before_handshake);
        state.count(|c| &c.rejects[usize::from(reason.code())]);
        incoming.refuse();
        return;
    }
    // An unvalidated address may always be retried (quinn guarantees `may_retry`).
    let validated = incoming.remote_address_validated();
    if needs_address_validation(handshaking, state.config.retry_from_handshakes, validated) {
        // Stateless: the token carries everything; nothing is kept for this address.
        if incoming.retry().is_ok() {
            state.count(|c| &c.handshakes_retried);
        }
        return;
    }
    let now_handshaking = state.counters.handshaking.fetch_add(1, Ordering::Relaxed) + 1;
    state
        .counters
        .handshaking_peak
        .fetch_max(now_handshaking, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", remote = %incoming.remote_address());
    let state = state.clone();
    tokio::spawn(
        async move {
            let handshake = HandshakeSlot(state.clone());
            connection(state, incoming, handshake).await;
        }
        .instrument(span),
    );
}

/// Holds one `handshaking` count until dropped.
struct HandshakeSlot(Arc<NetState>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.counters.handshaking.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds a client's place in the [`PeerTable`], from a passed Hello until it connects
/// ([`AdmissionSlot::connect`]) or fails (dropped).
struct AdmissionSlot(Option<Arc<NetState>>);

impl AdmissionSlot {
    /// The client is connected: its held place becomes its entry. Returns its generation
    /// and any older connection of the same client that raced in meanwhile.
    fn connect(mut self, client_id: u64, peer: Peer) -> (u64, Option<Peer>) {
        let state = self.0.take().expect("an admission slot connects once");
        state.peers().connect(client_id, peer)
    }
}

impl Drop for AdmissionSlot {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.peers().abandon();
        }
    }
}

enum HelloError {
    /// The peer sent bytes that are not a Hello.
    Protocol(String),
    /// The connection failed underneath.
    Connection,
}

async fn read_hello(conn: &Connection) -> Result<(SendStream, RecvStream, Hello), HelloError> {
    let (send, mut recv) = conn.accept_bi().await.map_err(|_| HelloError::Connection)?;
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    read_exact(&mut recv, &mut prefix).await?;
    let len = wire::frame_len(prefix).map_err(|e| HelloError::Protocol(e.to_string()))?;
    let mut body = [0u8; MAX_MESSAGE_LEN];
    read_exact(&mut recv, &mut body[..len]).await?;
    let hello = wire::decode_exact::<Hello>(&body[..len])
        .map_err(|e| HelloError::Protocol(format!("bad Hello: {e}")))?;
    Ok((send, recv, hello))
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), HelloError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => {
            HelloError::Protocol("control stream ended inside a frame".into())
        }
        quinn::ReadExactError::ReadError(_) => HelloError::Connection,
    })
}

async fn connection(state: Arc<NetState>, incoming: quinn::Incoming, handshake: HandshakeSlot) {
    let deadline = HelloDeadline::new(
        std::time::Instant::now(),
        state.config.handshake_timeout,
        state.config.hello_timeout,
    );
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
    };
    let conn = match timeout_at(Instant::from_std(deadline.handshake_by()), connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            state.count(|c| &c.hello_timeouts);
            return;
        }
    };
    let _udp = UdpOfConnection(state.clone(), conn.clone());
    let hello_by = Instant::from_std(deadline.hello_by(std::time::Instant::now()));
    let (mut send, recv, hello) = match timeout_at(hello_by, read_hello(&conn)).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(HelloError::Protocol(why))) => {
            tracing::debug!("protocol error in the handshake: {why}");
            state.count(|c| &c.protocol_errors);
            conn.close(VarInt::from_u32(close::PROTOCOL_ERROR), why.as_bytes());
            return;
        }
        Ok(Err(HelloError::Connection)) => return,
        Err(_) => {
            state.count(|c| &c.hello_timeouts);
            conn.close(VarInt::from_u32(close::HELLO_TIMEOUT), b"no Hello in time");
            return;
        }
    };
    let admission = match state.check_hello(&hello, &conn) {
        Ok(admission) => admission,
        Err(Refusal { reason, detail }) => {
            reject(&state, &conn, send, reason, &detail).await;
            return;
        }
    };
    let client_id = hello.token.client_id;

    // One connection per client id: the newer replaces the older.
    let replaced = state.peers().take_for_replacement(client_id);
    if let Some(old) = replaced {
        close_replaced(&state, client_id, &old);
    }

    let (ack_tx, ack_rx) = oneshot::channel();
    state.pending_joins().insert(client_id, ack_tx);
    if state
        .membership
        .try_send(Membership::Joined { client_id })
        .is_err()
    {
        state.pending_joins().remove(&client_id);
        reject(
            &state,
            &conn,
            send,
            RejectReason::Unavailable,
            "the server is busy",
        )
        .await;
        return;
    }
    let ack = match timeout(JOIN_ACK_TIMEOUT, ack_rx).await {
        Ok(Ok(ack)) => ack,
        _ => {
            // The sim may still spawn the entity later; the Left makes it despawn again.
            state.send_membership(Membership::Left { client_id });
            reject(
                &state,
                &conn,
                send,
                RejectReason::Unavailable,
                "the simulation did not answer",
            )
            .await;
            return;
        }
    };
    let welcome = ServerMessage::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        client_id,
        entity: ack.entity,
        tick_rate: state.config.tick_rate,
        chunk_payload: u16::try_from(state.config.chunk_payload).unwrap_or(u16::MAX),
        arena_width: state.config.arena.0,
        arena_height: state.config.arena.1,
        cell_size: state.config.cell_size,
        view_cells: state.config.view_cells,
        server_tick: Tick::new(state.current_tick.load(Ordering::Relaxed)),
    });
    // Right after the Welcome, the game's schema (docs/PROTOCOL.md §3).
    let schema_frame = state.config.schema.as_deref().map(msg::schema_frame);
    let sent = match (write_message(&mut send, &welcome).await, schema_frame) {
        (Ok(()), Some(frame)) => send.write_all(&frame).await.is_ok(),
        _ => false,
    };
    if !sent {
        state.send_membership(Membership::Left { client_id });
        return;
    }

    let (generation, raced) = admission.connect(
        client_id,
        Peer {
            conn: conn.clone(),
            entity: ack.entity,
            send_state: PeerSendState::default(),
        },
    );
    state.counters.peers.fetch_add(1, Ordering::Relaxed);
    state.count(|c| &c.admitted);
    if let Some(old) = raced {
        close_replaced(&state, client_id, &old);
    }
    drop(handshake);
    tracing::debug!(client_id, entity = ack.entity, "joined");

    // The control stream has its own task: polled only when its stream wakes it, not on
    // every input datagram as a branch of the input loop would be.
    let control = tokio::spawn(watch_control(state.clone(), conn.clone(), recv));
    serve_peer(&state, &conn, client_id).await;
    control.abort();
    if let Some(reason) = conn
        .close_reason()
        .as_ref()
        .and_then(DisconnectReason::from_connection_error)
    {
        state.counters.count_disconnects(reason, 1);
    }

    let removed = state.peers().disconnect(client_id, generation);
    if removed {
        state.counters.peers.fetch_sub(1, Ordering::Relaxed);
        state.send_membership(Membership::Left { client_id });
        tracing::debug!(client_id, "left");
    }
    // Keep the send half alive until here: dropping it earlier would reset the stream.
    drop(send);
}

/// Closes a connection another one of the same client replaced, and tells the sim.
fn close_replaced(state: &NetState, client_id: u64, old: &Peer) {
    state.count(|c| &c.replaced);
    state
        .counters
        .count_disconnects(DisconnectReason::Replaced, 1);
    state.counters.peers.fetch_sub(1, Ordering::Relaxed);
    old.conn.close(
        VarInt::from_u32(close::REPLACED),
        b"replaced by a newer connection",
    );
    state.send_membership(Membership::Left { client_id });
}

/// Reads the peer's input datagrams until it leaves or misbehaves.
async fn serve_peer(state: &NetState, conn: &Connection, client_id: u64) {
    let mut allowance = InputAllowance::new(state.config.max_inputs_per_tick);
    while let Ok(bytes) = conn.read_datagram().await {
        state.count(|c| &c.datagrams_received);
        state
            .counters
            .bytes_in
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let cmd_len = state.config.input_cmd_len();
        let datagram = match InputDatagram::decode(&bytes, cmd_len) {
            Ok(datagram) => datagram,
            Err(e) => {
                tracing::debug!(client_id, "malformed datagram: {e}");
                state.count(|c| &c.protocol_errors);
                state
                    .counters
                    .count_disconnects(DisconnectReason::ProtocolError, 1);
                conn.close(
                    VarInt::from_u32(close::PROTOCOL_ERROR),
                    b"malformed datagram",
                );
                return;
            }
        };
        if !allowance.admit(Tick::new(state.current_tick.load(Ordering::Relaxed))) {
            state.count(|c| &c.inputs_dropped_rate);
            continue;
        }
        match state.inputs.try_send(PeerEvent::Input {
            client_id,
            datagram,
        }) {
            Ok(()) => state.count(|c| &c.inputs_received),
            Err(TrySendError::Full(_)) => state.count(|c| &c.inputs_dropped_channel_full),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Watches the control stream after the Welcome: nothing may follow the Hello in
/// protocol version 2, so any byte closes the connection with `protocol_error`. A
/// finished stream is fine.
async fn watch_control(state: Arc<NetState>, conn: Connection, mut control: RecvStream) {
    let mut scratch = [0u8; 64];
    if let Ok(Some(_)) = control.read(&mut scratch).await {
        state.count(|c| &c.protocol_errors);
        state
            .counters
            .count_disconnects(DisconnectReason::ProtocolError, 1);
        conn.close(
            VarInt::from_u32(close::PROTOCOL_ERROR),
            b"unexpected bytes on the control stream",
        );
    }
}

async fn reject(
    state: &NetState,
    conn: &Connection,
    mut send: SendStream,
    reason: RejectReason,
    detail: &str,
) {
    tracing::debug!(reason = reason.name(), "rejecting: {detail}");
    state.count(|c| &c.rejects[usize::from(reason.code())]);
    let message = ServerMessage::Reject(Reject::new(reason, detail));
    if write_message(&mut send, &message).await.is_ok() && send.finish().is_ok() {
        // Give the client a moment to read the Reject before the close discards it.
        let _ = timeout(REJECT_LINGER, send.stopped()).await;
    }
    conn.close(
        VarInt::from_u32(close::for_reject(reason)),
        reason.name().as_bytes(),
    );
}

async fn write_message(send: &mut SendStream, message: &ServerMessage) -> Result<(), ()> {
    let mut frame = [0u8; FRAME_PREFIX_LEN + MAX_MESSAGE_LEN];
    let len = wire::encode_frame(message, &mut frame).map_err(|_| ())?;
    send.write_all(&frame[..len]).await.map_err(|_| ())
}

/// Waits for each published tick and sends every peer the part of it in its view, if
/// its send buffer has room for all of that part.
async fn fan_out(state: Arc<NetState>, mut slot: watch::Receiver<Option<PublishedTick>>) {
    // Reused from peer to peer and tick to tick: the fan-out allocates nothing of its own
    // in steady state.
    let mut datagrams: Vec<Range<usize>> = Vec::new();
    let shape = DatagramShape {
        // quinn counts each queued datagram's bookkeeping (one `Bytes` handle) against
        // the send buffer as well as its payload; leaving it out would let the last
        // chunks of a tick evict the oldest queued ones.
        entry_cost: DATAGRAM_QUEUE_ENTRY_BYTES,
        bundle_limit: state.config.chunk_payload + TICK_FRAME_PREFIX_LEN,
    };
    let mut last_tick: Option<Tick> = None;
    while slot.changed().await.is_ok() {
        let published = slot.borrow_and_update().clone();
        let Some(published) = published else { continue };
        if let Some(last) = last_tick {
            let gap = published.tick.wrapping_since(last).saturating_sub(1);
            state
                .counters
                .ticks_coalesced
                .fetch_add(u64::from(gap), Ordering::Relaxed);
        }
        last_tick = Some(published.tick);
        state
            .current_tick
            .store(published.tick.get(), Ordering::Relaxed);
        state.count(|c| &c.ticks_fanned_out);

        let fan_out_scope = FanOutScope::enter();
        // Every peer gets refcounted slices of the sim's tick buffer: no copy, no encode.
        // A peer whose queue is stuck (a frozen client, no acknowledgements) keeps the
        // buffers of the ticks in its queue alive; the sim's pool then detaches them
        // instead of reusing them (`SimCounters::snapshot_buffers_detached`), so the
        // stuck peer costs its own bounded queue and the broadcast goes on.
        let tick = &published.buffer;
        let send_buffer = state.config.datagram_send_buffer;
        let view_cells = state.config.view_cells;
        let mut queue_peak = 0usize;
        let mut sent = 0u64;
        let mut sent_bytes = 0u64;
        for peer in state.peers().peers_mut() {
            let space = peer.conn.datagram_send_buffer_space();
            // quinn's space keeps one entry back for the next datagram; without it, an
            // empty queue would read as one entry queued.
            let queued = send_buffer
                .saturating_sub(space)
                .saturating_sub(DATAGRAM_QUEUE_ENTRY_BYTES);
            let (decision, view_bytes) = plan_tick_for_peer(
                &published.index,
                peer.entity,
                view_cells,
                shape.within(peer.conn.max_datagram_size()),
                &mut peer.send_state,
                space,
                queued,
                &mut datagrams,
            );
            match decision {
                SendDecision::Skip => state.count(|c| &c.peer_ticks_skipped_backpressure),
                SendDecision::Send => {
                    let mut whole = true;
                    for range in datagrams.drain(..) {
                        let len = range.len() as u64;
                        match peer.conn.send_datagram(datagram_for_peer(tick, range)) {
                            Ok(()) => {
                                sent += 1;
                                sent_bytes += len;
                            }
                            Err(e) => {
                                tracing::trace!("send_datagram: {e}");
                                whole = false;
                                break;
                            }
                        }
                    }
                    if whole {
                        state.count(|c| &c.peer_ticks_sent);
                    } else {
                        state.count(|c| &c.peer_ticks_send_errors);
                    }
                    queue_peak = queue_peak.max(queued + view_bytes);
                }
            }
        }
        drop(fan_out_scope);
        state
            .counters
            .datagrams_sent
            .fetch_add(sent, Ordering::Relaxed);
        state
            .counters
            .bytes_out
            .fetch_add(sent_bytes, Ordering::Relaxed);
        let spread = published.published_at.elapsed().as_micros() as u64;
        state.counters.fanout_spread.record_us(spread);
        state
            .counters
            .fanout_spread_us_max
            .fetch_max(spread, Ordering::Relaxed);
        state
            .counters
            .peer_send_queue_peak_bytes
            .fetch_max(queue_peak as u64, Ordering::Relaxed);
    }
}

/// Adds a connection's UDP traffic to the ended connections' when its task ends.
struct UdpOfConnection(Arc<NetState>, Connection);

impl Drop for UdpOfConnection {
    fn drop(&mut self) {
        let stats = self.1.stats();
        self.0
            .udp_of_ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&stats);
    }
}

/// Once a second: the ended connections' UDP traffic plus the connected peers', into
/// `NetCounters::udp`. A peer between leaving the table and its task's end is briefly in
/// neither; `fetch_max` keeps the counters from going back.
async fn publish_udp_stats(state: Arc<NetState>) {
    let mut interval = tokio::time::interval(UDP_STATS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let mut total = *state.udp_of_ended.lock().unwrap_or_else(|e| e.into_inner());
        for peer in state.peers().peers_mut() {
            total.add(&peer.conn.stats());
        }
        total.publish(&state.counters.udp);
    }
}

/// The quinn endpoint on its tokio runtime, created but not yet running: `spawn` measures
/// the memory baseline between the two steps.
pub(crate) struct Endpoint {
    runtime: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
}

impl Endpoint {
    /// Creates the endpoint on `socket`.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        server_config: quinn::ServerConfig,
    ) -> Result<Self, NetError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| NetError::Io {
                what: "starting the net runtime".into(),
                source,
            })?;
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| NetError::Io {
                what: "starting the QUIC endpoint".into(),
                source,
            })?
        };
        Ok(Self { runtime, endpoint })
    }

    /// Starts the net thread.
    pub(crate) fn start(
        self,
        parts: NetParts,
        join_ack_capacity: usize,
    ) -> Result<(std::thread::JoinHandle<()>, TickSlot, Controls), NetError> {
        let (slot_tx, slot_rx) = watch::channel(None);
        let (acks_tx, acks_rx) = mpsc::channel(join_ack_capacity);
        let shutdown = Arc::new(Notify::new());
        let state = NetState::new(parts);
        let thread_shutdown = shutdown.clone();
        let Self { runtime, endpoint } = self;
        let thread = std::thread::Builder::new()
            .name("tickcast-net".into())
            .spawn(move || {
                runtime.block_on(run(endpoint, state, slot_rx, acks_rx, thread_shutdown));
            })
            .map_err(|source| NetError::Io {
                what: "spawning the net thread".into(),
                source,
            })?;
        Ok((
            thread,
            TickSlot(slot_tx),
            Controls {
                join_acks: acks_tx,
                shutdown,
            },
        ))
    }
}

/// The sim's end of the latest-wins handoff: a watch channel.
#[derive(Debug, Clone)]
pub(crate) struct TickSlot(watch::Sender<Option<PublishedTick>>);

impl TickSlot {
    /// Replaces any tick not taken yet.
    pub(crate) fn publish(&self, tick: PublishedTick) {
        self.0.send_replace(Some(tick));
    }
}

/// The handle's way into the net thread: join answers and the shutdown.
pub(crate) struct Controls {
    join_acks: mpsc::Sender<JoinAck>,
    shutdown: Arc<Notify>,
}

impl Controls {
    /// Hands a join answer over; `false` when the channel is full.
    pub(crate) fn acknowledge_join(&self, ack: JoinAck) -> bool {
        self.join_acks.try_send(ack).is_ok()
    }

    /// Asks the thread to close every connection and stop.
    pub(crate) fn shutdown(&self) {
        self.shutdown.notify_one();
    }
}
