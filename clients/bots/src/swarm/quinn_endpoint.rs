//! The swarm on quinn's async endpoint: each shard a current-thread tokio runtime, a
//! few `quinn::Endpoint`s, and one task per bot. The default driver
//! (`--driver quinn-endpoint`), and the A/B's baseline against `--driver proto`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quinn::SendDatagramError;
use tickcast_clients::pace::InputPacer;
use tickcast_clients::track::{SnapshotReceiver, View};
use tickcast_clients::vanish::silenceable_endpoint;
use tickcast_clients::{
    EndpointOptions, InputHistory, Session, client_endpoint_with, connect, connection_error_key,
    now_us_wrapping,
};
use tickcast_shared::Tick;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Flushed, Shared, SwarmError, flush_live};
use crate::behaviour::{Action, Behaviour, BehaviourSettings, Bot};
use crate::outcome::ClientOutcome;

/// One thread's bots, on a current-thread runtime with endpoints of its own.
pub(super) fn run_shard(
    shared: &Arc<Shared>,
    bots: Vec<(usize, Behaviour)>,
    start: std::time::Instant,
) -> Result<Vec<(usize, ClientOutcome)>, SwarmError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SwarmError::Thread(format!("starting a runtime: {e}")))?;
    runtime.block_on(async {
        let config = &shared.config;
        let options = EndpointOptions {
            datagram_receive_buffer: config.datagram_receive_buffer,
            ..EndpointOptions::default()
        };
        let endpoint_count = bots.len().div_ceil(config.clients_per_endpoint.max(1));
        let endpoints = (0..endpoint_count)
            .map(|_| client_endpoint_with(config.server, config.fingerprint, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let start = Instant::from_std(start);
        let tasks: Vec<_> = bots
            .iter()
            .enumerate()
            .map(|(i, &(index, behaviour))| {
                let endpoint = endpoints[i % endpoints.len()].clone();
                let shared = shared.clone();
                tokio::spawn(
                    async move { run_bot(&shared, &endpoint, index, behaviour, start).await },
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for (task, &(index, behaviour)) in tasks.into_iter().zip(&bots) {
            // A bot task only fails by panicking; report it as that bot's error.
            outcomes.push((
                index,
                task.await.unwrap_or_else(|e| {
                    let mut outcome = ClientOutcome::new(behaviour);
                    outcome.errors.push(format!("bot_panicked:{e}"));
                    outcome
                }),
            ));
        }
        for endpoint in &endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        Ok(outcomes)
    })
}

async fn run_bot(
    shared: &Shared,
    endpoint: &quinn::Endpoint,
    index: usize,
    behaviour: Behaviour,
    start: Instant,
) -> ClientOutcome {
    let config = &shared.config;
    let mut outcome = ClientOutcome::new(behaviour);
    let delay = config
        .ramp
        .mul_f64(index as f64 / config.clients.max(1) as f64);
    tokio::time::sleep_until(start + delay).await;
    let end = Instant::now() + config.duration;
    let mut bot = Bot::new(
        behaviour,
        index,
        BehaviourSettings {
            slow_read_rate: config.slow_read_rate,
            stall_after: config.stall_after,
            churn_every: config.churn_every,
        },
    );
    let mut session_index = 0u32;
    // Which player this bot is: a new one after each vanished session, since the ghost
    // of the old one is still on the server until it times out.
    let mut player = 0u32;
    while Instant::now() < end {
        let token = match shared.token(index, session_index, player) {
            Ok(token) => token,
            Err(key) => {
                outcome.errors.push(format!("connect:{key}"));
                break;
            }
        };
        // A session that will vanish gets an endpoint of its own, to mute.
        let vanishes = behaviour == Behaviour::Churn && config.churn_leave.vanishes(session_index);
        let own = if vanishes {
            let options = EndpointOptions {
                datagram_receive_buffer: config.datagram_receive_buffer,
                ..EndpointOptions::default()
            };
            match silenceable_endpoint(config.server, config.fingerprint, &options) {
                Ok(own) => Some(own),
                Err(e) => {
                    outcome.errors.push(format!("connect:{}", e.key()));
                    break;
                }
            }
        } else {
            None
        };
        let session_endpoint = own.as_ref().map_or(endpoint, |(own, _)| own);
        let connecting = Instant::now();
        let attempt = tokio::time::timeout_at(
            end,
            connect(
                session_endpoint,
                config.server,
                token,
                config.connect_timeout,
            ),
        )
        .await;
        let session = match attempt {
            Err(_) => break, // the run ended while connecting
            Ok(Err(e)) => {
                tracing::debug!(index, "connect failed: {e}");
                outcome.errors.push(format!("connect:{}", e.key()));
                shared.live.connect_failures.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Ok(session)) => session,
        };
        outcome
            .connect_time
            .record(connecting.elapsed().as_micros() as u64);
        outcome.connected = true;
        outcome.tick_rate = session.welcome().tick_rate;
        shared.live.connected.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        bot.start_session(
            began.into_std(),
            end.into_std(),
            session.welcome().tick_rate,
            session_index,
        );
        let lost = play(shared, &session, &mut bot, &mut outcome).await;
        outcome.played_for += began.elapsed();
        let stats = session.stats();
        outcome.udp_bytes_in += stats.udp_rx.bytes;
        outcome.udp_bytes_out += stats.udp_tx.bytes;
        outcome.udp_packets_in += stats.udp_rx.datagrams;
        outcome.udp_packets_out += stats.udp_tx.datagrams;
        match &own {
            // Gone without a close: the server times the peer out.
            Some((_, silencer)) => silencer.silence(),
            None => session.close(),
        }
        drop(session);
        drop(own);
        if vanishes {
            player = session_index + 1;
        }
        shared.live.connected.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = lost {
            outcome.disconnected = Some(key);
            break;
        }
        if !bot.reconnects(Instant::now().into_std(), end.into_std()) {
            break;
        }
        outcome.reconnects += 1;
        session_index += 1;
    }
    shared.live.finished.fetch_add(1, Ordering::Relaxed);
    outcome
}

/// Plays one session as `bot` decides, until it leaves; returns the reason if the
/// connection was lost instead.
async fn play(
    shared: &Shared,
    session: &Session,
    bot: &mut Bot,
    outcome: &mut ClientOutcome,
) -> Option<String> {
    let welcomed = Instant::now();
    let tick_rate = u32::from(session.welcome().tick_rate.max(1));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / tick_rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pacer = InputPacer::new(session.welcome().tick_rate);
    let mut receiver = SnapshotReceiver::new(
        View::from_welcome(session.welcome()),
        session.schema().clone(),
    );
    let mut history = InputHistory::default();
    let mut mapper = shared.config.inputs.mapper();
    let mut flushed = Flushed::default();
    let lost = loop {
        tokio::select! {
            biased;
            now = ticker.tick() => {
                // The end is checked here rather than as a timer of its own: one timer
                // fewer to poll on every wake-up of thousands of bots; the end is at most
                // a tick late.
                let (cmd, new_second) = match bot.on_input_due(now.into_std()) {
                    Action::Leave => break None,
                    Action::Send { cmd, new_second } => (cmd, new_second),
                };
                if new_second {
                    // Once a second, put the inputs back just before the server's tick.
                    if let Some(at) = pacer.next_send_after(std::time::Instant::now()) {
                        ticker.reset_at(tokio::time::Instant::from_std(at));
                    }
                    outcome.rtt.record(session.rtt().as_micros() as u64);
                    flush_live(&shared.live, &receiver, &mut flushed);
                }
                let now_us = now_us_wrapping();
                if let Some(age) = receiver.snapshot_age_us(now_us) {
                    outcome.snapshot_age.record(age);
                }
                receiver.staleness().sample(now_us, &mut outcome.staleness);
                let ack = receiver.assembler().delivery().last_tick.unwrap_or(Tick::ZERO);
                let datagram = history.push_intent(session.schema(), mapper.as_mut(), cmd, ack);
                match session.send_input(&datagram) {
                    Ok(()) => {}
                    Err(SendDatagramError::ConnectionLost(e)) => break Some(connection_error_key(&e)),
                    Err(e) => tracing::debug!("input not sent: {e}"),
                }
            }
            datagram = session.next_datagram(), if bot.reads() => match datagram {
                Ok(bytes) => {
                    bot.on_datagram_read();
                    receiver.on_datagram(&bytes, now_us_wrapping());
                    if let Some(tick) = receiver.assembler().delivery().last_tick {
                        pacer.on_datagram(tick, std::time::Instant::now());
                    }
                }
                Err(e) => break Some(connection_error_key(&e)),
            },
        }
    };
    flush_live(&shared.live, &receiver, &mut flushed);
    // The last two ticks may still be in flight when the session ends: leave them out.
    let delivery = receiver.finish(2);
    outcome.delivery.add(&delivery);
    if bot.falls_behind() {
        // These bots stop reading or read behind, so the newest tick they saw is not
        // the server's: count the ticks published since as undelivered too.
        let elapsed = welcomed.elapsed().as_secs_f64();
        let server_tick = session
            .welcome()
            .server_tick
            .plus((elapsed * f64::from(tick_rate)) as u32)
            .minus(2);
        outcome.delivery.add_unseen_tail(&delivery, server_tick);
    }
    outcome.latency.merge(receiver.latency());
    outcome.settled_latency.merge(receiver.settled_latency());
    outcome.bytes_in += receiver.bytes();
    outcome.malformed_chunks += receiver.malformed();
    lost
}
