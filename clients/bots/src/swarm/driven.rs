//! The swarm on the sans-IO client driver: a shard is one thread, one
//! [`ClientDriver`] (a few UDP sockets, one quinn-proto endpoint) and its bots, each a
//! plain state machine ([`DrivenBot`]) woken by a timer heap shared by the shard or by
//! what its connection heard.
//!
//! One turn: the driver's events go to their bots (Welcome, datagrams, loss); the bots
//! whose timer is due act (connect, send an input, leave); the driver flushes what they
//! queued; then it sleeps on the sockets until the next bot or connection timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickcast_clients::driver::{ClientDriver, ConnectionId, DriverOptions, SessionEvent};
use tickcast_clients::pace::InputPacer;
use tickcast_clients::track::{SnapshotReceiver, View};
use tickcast_clients::{
    EndpointOptions, InputHistory, InputMapper, connection_error_key, now_us_wrapping,
};
use tickcast_shared::msg::Welcome;
use tickcast_shared::schema::Schema;
use tickcast_shared::{Tick, close};

use super::{Flushed, Shared, SwarmError, flush_live};
use crate::behaviour::{Action, Behaviour, BehaviourSettings, Bot};
use crate::outcome::ClientOutcome;

/// How long a shard waits at the end for its closes to be acknowledged, as the async
/// path's `wait_idle` did.
const LINGER: Duration = Duration::from_secs(2);

/// Runs one shard's bots on a driver of its own; returns each bot's outcome.
pub(super) fn run_shard(
    shared: &Arc<Shared>,
    bots: Vec<(usize, Behaviour)>,
    start: Instant,
) -> Result<Vec<(usize, ClientOutcome)>, SwarmError> {
    let config = &shared.config;
    let options = DriverOptions {
        endpoint: EndpointOptions {
            datagram_receive_buffer: config.datagram_receive_buffer,
            ..EndpointOptions::default()
        },
        sockets: bots.len().div_ceil(config.clients_per_endpoint.max(1)),
        ..DriverOptions::default()
    };
    let mut shard = Shard {
        shared,
        driver: ClientDriver::new(config.server, config.fingerprint, &options)?,
        owners: Vec::new(),
        wakes: BinaryHeap::with_capacity(bots.len() * 2),
    };
    let mut bots: Vec<DrivenBot> = bots
        .into_iter()
        .map(|(index, behaviour)| DrivenBot::new(shared, index, behaviour, start))
        .collect();
    for (slot, bot) in bots.iter().enumerate() {
        shard.wakes.push(Reverse((bot.wake, slot)));
    }
    let mut events = Vec::new();
    let mut remaining = bots.len();
    while remaining > 0 {
        let now = Instant::now();
        shard.driver.events(now, &mut events);
        for (id, event) in events.drain(..) {
            if let Some(slot) = shard.owner(id) {
                let bot = &mut bots[slot];
                let before = bot.wake;
                bot.on_event(&mut shard, id, event, now);
                remaining -= usize::from(bot.just_finished());
                shard.rearm(slot, before, bot.wake);
            }
        }
        while let Some(&Reverse((at, slot))) = shard.wakes.peek() {
            if at > now {
                break;
            }
            shard.wakes.pop();
            let bot = &mut bots[slot];
            if bot.wake != at || bot.is_done() {
                continue; // stale entry
            }
            bot.on_wake(&mut shard, slot, now);
            remaining -= usize::from(bot.just_finished());
            if !bot.is_done() {
                shard.wakes.push(Reverse((bot.wake, slot)));
            }
        }
        shard.driver.flush(now);
        if remaining == 0 {
            break;
        }
        let until = shard
            .wakes
            .peek()
            .map_or(now + Duration::from_millis(100), |&Reverse((at, _))| at);
        shard
            .driver
            .wait(until)
            .map_err(|e| SwarmError::Thread(format!("waiting on the sockets: {e}")))?;
    }
    // Let the closes reach the server and be acknowledged (vanished connections stay
    // silent until they time out, and are not waited for).
    let linger_end = Instant::now() + LINGER;
    while shard.driver.open_connections() > shard.driver.silent_connections()
        && Instant::now() < linger_end
    {
        shard
            .driver
            .wait(linger_end)
            .map_err(|e| SwarmError::Thread(format!("waiting on the sockets: {e}")))?;
        let now = Instant::now();
        shard.driver.events(now, &mut events);
        events.clear();
        shard.driver.flush(now);
    }
    let counters = shard.driver.counters();
    tracing::debug!(?counters, "shard done");
    Ok(bots
        .into_iter()
        .map(|bot| (bot.index, bot.outcome))
        .collect())
}

/// A shard's driver and who owns which connection.
struct Shard<'a> {
    shared: &'a Shared,
    driver: ClientDriver,
    /// The bot (slot in the shard) of each live connection id.
    owners: Vec<Option<usize>>,
    /// Bots' wake-ups; an entry whose time is not its bot's `wake` any more is stale.
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Shard<'_> {
    fn owner(&self, id: ConnectionId) -> Option<usize> {
        self.owners.get(id.0).copied().flatten()
    }

    fn own(&mut self, id: ConnectionId, slot: usize) {
        if self.owners.len() <= id.0 {
            self.owners.resize(id.0 + 1, None);
        }
        self.owners[id.0] = Some(slot);
    }

    fn disown(&mut self, id: ConnectionId) {
        if let Some(owner) = self.owners.get_mut(id.0) {
            *owner = None;
        }
    }

    /// Files a bot's new wake-up after an event moved it earlier (a later one is found
    /// by the old entry, which re-files it).
    fn rearm(&mut self, slot: usize, before: Instant, after: Instant) {
        if after != before {
            self.wakes.push(Reverse((after, slot)));
        }
    }
}

enum State {
    /// Not connected; connects at `wake`.
    Idle,
    /// Connecting; `wake` is the connect deadline.
    Connecting {
        id: ConnectionId,
        began: Instant,
        vanishes: bool,
    },
    /// Admitted; `wake` is the next input.
    Playing(Box<Playing>),
    Done {
        counted: bool,
    },
}

/// One session's state once admitted: the same pieces the async path's `play` keeps.
struct Playing {
    id: ConnectionId,
    welcome: Welcome,
    welcomed: Instant,
    vanishes: bool,
    period: Duration,
    pacer: InputPacer,
    receiver: SnapshotReceiver,
    history: InputHistory,
    /// Turns the bot's intent into the game's input command (the schema's roles).
    mapper: Box<dyn InputMapper>,
    flushed: Flushed,
}

/// One bot on the driver: its behaviour, where it is in its sessions, and what it saw.
struct DrivenBot {
    index: usize,
    bot: Bot,
    outcome: ClientOutcome,
    state: State,
    /// When its timer is due.
    wake: Instant,
    /// The end of its run (its first connect plus the duration).
    end: Instant,
    session_index: u32,
    /// Which player this bot is: a new one after each vanished session, since the ghost
    /// of the old one is still on the server until it times out.
    player: u32,
}

impl DrivenBot {
    fn new(shared: &Shared, index: usize, behaviour: Behaviour, start: Instant) -> Self {
        let config = &shared.config;
        let delay = config
            .ramp
            .mul_f64(index as f64 / config.clients.max(1) as f64);
        let first = start + delay;
        Self {
            index,
            bot: Bot::new(
                behaviour,
                index,
                BehaviourSettings {
                    slow_read_rate: config.slow_read_rate,
                    stall_after: config.stall_after,
                    churn_every: config.churn_every,
                },
            ),
            outcome: ClientOutcome::new(behaviour),
            state: State::Idle,
            wake: first,
            end: first + config.duration,
            session_index: 0,
            player: 0,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// True once, right after the bot finished.
    fn just_finished(&mut self) -> bool {
        match &mut self.state {
            State::Done { counted } if !*counted => {
                *counted = true;
                true
            }
            _ => false,
        }
    }

    fn finish(&mut self, shard: &Shard<'_>) {
        self.state = State::Done { counted: false };
        shard.shared.live.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Its timer fired: connect, give up connecting, or send an input.
    fn on_wake(&mut self, shard: &mut Shard<'_>, slot: usize, now: Instant) {
        match &mut self.state {
            State::Idle => self.connect(shard, slot, now),
            State::Connecting { id, .. } => {
                let id = *id;
                shard.driver.close(id, close::NORMAL, b"bye", now);
                shard.disown(id);
                if now < self.end {
                    // The connect timed out (the run ending while connecting is no error).
                    self.outcome.errors.push("connect:timeout".into());
                    shard
                        .shared
                        .live
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.finish(shard);
            }
            State::Playing(_) => self.input_due(shard, now),
            State::Done { .. } => {}
        }
    }

    fn connect(&mut self, shard: &mut Shard<'_>, slot: usize, now: Instant) {
        if now >= self.end {
            return self.finish(shard);
        }
        let config = &shard.shared.config;
        let token = match shard
            .shared
            .token(self.index, self.session_index, self.player)
        {
            Ok(token) => token,
            Err(key) => {
                self.outcome.errors.push(format!("connect:{key}"));
                return self.finish(shard);
            }
        };
        let vanishes = self.bot.behaviour() == Behaviour::Churn
            && config.churn_leave.vanishes(self.session_index);
        match shard.driver.connect(token, now) {
            Ok(id) => {
                shard.own(id, slot);
                self.wake = self.end.min(now + config.connect_timeout);
                self.state = State::Connecting {
                    id,
                    began: now,
                    vanishes,
                };
            }
            Err(e) => {
                self.outcome.errors.push(format!("connect:{}", e.key()));
                shard
                    .shared
                    .live
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.finish(shard);
            }
        }
    }

    fn on_event(
        &mut self,
        shard: &mut Shard<'_>,
        id: ConnectionId,
        event: SessionEvent,
        now: Instant,
    ) {
        match (&mut self.state, event) {
            (
                State::Connecting {
                    began, vanishes, ..
                },
                SessionEvent::Welcomed(welcome, schema),
            ) => {
                let (began, vanishes) = (*began, *vanishes);
                self.admitted(shard, id, (*welcome, schema), began, vanishes, now);
            }
            (State::Connecting { .. }, SessionEvent::Failed(e)) => {
                tracing::debug!(index = self.index, "connect failed: {e}");
                shard.disown(id);
                self.outcome.errors.push(format!("connect:{}", e.key()));
                shard
                    .shared
                    .live
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.finish(shard);
            }
            (State::Playing(playing), SessionEvent::Datagrams) => {
                read_datagrams(&mut shard.driver, &mut self.bot, playing, now);
            }
            (State::Playing(_), SessionEvent::Lost(e)) => {
                self.end_session(shard, now, Some(connection_error_key(&e)));
            }
            _ => {}
        }
    }

    fn admitted(
        &mut self,
        shard: &mut Shard<'_>,
        id: ConnectionId,
        (welcome, schema): (Welcome, Arc<Schema>),
        began: Instant,
        vanishes: bool,
        now: Instant,
    ) {
        self.outcome
            .connect_time
            .record(now.duration_since(began).as_micros() as u64);
        self.outcome.connected = true;
        self.outcome.tick_rate = welcome.tick_rate;
        shard.shared.live.connected.fetch_add(1, Ordering::Relaxed);
        self.bot
            .start_session(now, self.end, welcome.tick_rate, self.session_index);
        let tick_rate = u32::from(welcome.tick_rate.max(1));
        self.state = State::Playing(Box::new(Playing {
            id,
            pacer: InputPacer::new(welcome.tick_rate),
            receiver: SnapshotReceiver::new(View::from_welcome(&welcome), schema),
            history: InputHistory::default(),
            mapper: shard.shared.config.inputs.mapper(),
            flushed: Flushed::default(),
            period: Duration::from_secs(1) / tick_rate,
            welcome,
            welcomed: now,
            vanishes,
        }));
        // The first input goes at once, as a tokio interval's first tick does.
        self.wake = now;
    }

    fn input_due(&mut self, shard: &mut Shard<'_>, now: Instant) {
        let State::Playing(playing) = &mut self.state else {
            return;
        };
        let (cmd, new_second) = match self.bot.on_input_due(now) {
            Action::Leave => return self.end_session(shard, now, None),
            Action::Send { cmd, new_second } => (cmd, new_second),
        };
        // When the next input is due: one period on, skipping missed ones; once a
        // second, put back just before the server's tick (`InputPacer`).
        let mut next = self.wake + playing.period;
        if next <= now {
            let behind = now.duration_since(next).as_nanos() / playing.period.as_nanos();
            next += playing.period * (behind as u32 + 1);
        }
        if new_second {
            if let Some(at) = playing.pacer.next_send_after(now) {
                next = at;
            }
            if let Some(rtt) = shard.driver.rtt(playing.id) {
                self.outcome.rtt.record(rtt.as_micros() as u64);
            }
            flush_live(&shard.shared.live, &playing.receiver, &mut playing.flushed);
        }
        self.wake = next;
        let now_us = now_us_wrapping();
        if let Some(age) = playing.receiver.snapshot_age_us(now_us) {
            self.outcome.snapshot_age.record(age);
        }
        playing
            .receiver
            .staleness()
            .sample(now_us, &mut self.outcome.staleness);
        let ack = playing
            .receiver
            .assembler()
            .delivery()
            .last_tick
            .unwrap_or(Tick::ZERO);
        let schema = playing.receiver.schema().clone();
        let datagram = playing
            .history
            .push_intent(&schema, playing.mapper.as_mut(), cmd, ack);
        let (bytes, len) = datagram.encode();
        if let Err(e) = shard
            .driver
            .send_datagram(playing.id, Bytes::copy_from_slice(&bytes[..len]))
        {
            tracing::debug!("input not sent: {e}");
        }
        // A slow bot's budget refilled: read what waits.
        read_datagrams(&mut shard.driver, &mut self.bot, playing, now);
    }

    /// The session is over: the bot left (`lost` None) or the connection was lost.
    /// Sums what the session saw, then connects again or finishes.
    fn end_session(&mut self, shard: &mut Shard<'_>, now: Instant, lost: Option<String>) {
        let State::Playing(mut playing) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        let shared = shard.shared;
        flush_live(&shared.live, &playing.receiver, &mut playing.flushed);
        // The last two ticks may still be in flight when the session ends: leave them out.
        let delivery = playing.receiver.finish(2);
        self.outcome.delivery.add(&delivery);
        if self.bot.falls_behind() {
            // These bots stop reading or read behind, so the newest tick they saw is not
            // the server's: count the ticks published since as undelivered too.
            let elapsed = now.duration_since(playing.welcomed).as_secs_f64();
            let tick_rate = f64::from(playing.welcome.tick_rate.max(1));
            let server_tick = playing
                .welcome
                .server_tick
                .plus((elapsed * tick_rate) as u32)
                .minus(2);
            self.outcome
                .delivery
                .add_unseen_tail(&delivery, server_tick);
        }
        self.outcome.latency.merge(playing.receiver.latency());
        self.outcome
            .settled_latency
            .merge(playing.receiver.settled_latency());
        self.outcome.bytes_in += playing.receiver.bytes();
        self.outcome.malformed_chunks += playing.receiver.malformed();
        self.outcome.played_for += now.duration_since(playing.welcomed);
        if let Some(stats) = shard.driver.stats(playing.id) {
            self.outcome.udp_bytes_in += stats.udp_rx.bytes;
            self.outcome.udp_bytes_out += stats.udp_tx.bytes;
            self.outcome.udp_packets_in += stats.udp_rx.datagrams;
            self.outcome.udp_packets_out += stats.udp_tx.datagrams;
        }
        if lost.is_none() {
            if playing.vanishes {
                // Gone without a close: the server times the peer out.
                shard.driver.silence(playing.id);
            } else {
                shard.driver.close(playing.id, close::NORMAL, b"bye", now);
            }
        }
        shard.disown(playing.id);
        if playing.vanishes {
            self.player = self.session_index + 1;
        }
        shared.live.connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = lost {
            self.outcome.disconnected = Some(key);
            return self.finish(shard);
        }
        if now >= self.end || !self.bot.reconnects(now, self.end) {
            return self.finish(shard);
        }
        self.outcome.reconnects += 1;
        self.session_index += 1;
        // Connect again at once: the bot's wake is already `now`, due this turn or next.
        self.state = State::Idle;
        self.wake = now;
    }
}

/// Reads the datagrams waiting for a bot while its behaviour lets it read.
fn read_datagrams(driver: &mut ClientDriver, bot: &mut Bot, playing: &mut Playing, now: Instant) {
    if !bot.reads() {
        return;
    }
    let now_us = now_us_wrapping();
    while bot.reads() {
        let Some(bytes) = driver.read_datagram(playing.id) else {
            break;
        };
        bot.on_datagram_read();
        playing.receiver.on_datagram(&bytes, now_us);
        if let Some(tick) = playing.receiver.assembler().delivery().last_tick {
            playing.pacer.on_datagram(tick, now);
        }
    }
}
