//! When the server stops, and how it lets its players go: the drain.
//!
//! A server asked to stop — by SIGTERM (what Kubernetes sends before it kills a pod), by
//! its orchestrator (the Agones GameServer went to `Shutdown`), or by itself (no players
//! for `--shutdown-when-empty` after having had some) — does not cut its players off.
//! It **drains**: it stops admitting (a Hello gets Reject `draining`, readiness reads
//! false), lets the players it has go on for up to the drain grace, then closes every
//! connection with `close::DRAINED`, flushes its recording and exits 0. A drain ends
//! early when the last player leaves. A second signal during a drain exits at once.
//!
//! [`Lifecycle`] is the whole decision, a plain state machine over the player count, the
//! stop requests and a clock passed in; [`crate::Server::run_until_stopped`] is the loop
//! that feeds it, and `main.rs` installs the signal handler that feeds
//! [`StopRequest`] and calls [`signal_action`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How the server drains and when it decides on its own that it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// How long players may stay once a drain begins. Default 10 s: a third of
    /// Kubernetes' default `terminationGracePeriodSeconds` (30 s), which must also cover
    /// closing the connections, flushing the recording and telling Agones; long enough
    /// for a round to end or for a client to hear from its matchmaker.
    pub grace: Duration,
    /// Stop (drain, tell Agones, exit) after this long with no players, once the server
    /// has had at least one. Default `None`: a server waits for players forever. A session
    /// server in a fleet sets it so a finished match gives its pod back.
    pub shutdown_when_empty: Option<Duration>,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10),
            shutdown_when_empty: None,
        }
    }
}

/// Why the server is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGTERM or Ctrl-C.
    Signal,
    /// The orchestrator shut the server down (Agones moved the GameServer to `Shutdown`).
    Orchestrator,
    /// No players for `shutdown_when_empty` after having had some.
    Empty,
}

impl StopCause {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            StopCause::Signal => "signal",
            StopCause::Orchestrator => "orchestrator",
            StopCause::Empty => "empty",
        }
    }

    fn code(self) -> u8 {
        match self {
            StopCause::Signal => 1,
            StopCause::Orchestrator => 2,
            StopCause::Empty => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [StopCause::Signal, StopCause::Orchestrator, StopCause::Empty]
            .into_iter()
            .find(|c| c.code() == code)
    }
}

/// A request to stop, set from any thread (the signal handler, the Agones watcher) and
/// read by the loop that drives [`Lifecycle`]. The first request wins; later ones are
/// ignored (the drain they ask for is already under way).
#[derive(Debug, Default)]
pub struct StopRequest(AtomicU8);

impl StopRequest {
    /// Asks the server to drain and stop; a no-op if a stop was already asked.
    pub fn request(&self, cause: StopCause) {
        let _ = self
            .0
            .compare_exchange(0, cause.code(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The first cause asked for, if any.
    pub fn cause(&self) -> Option<StopCause> {
        StopCause::from_code(self.0.load(Ordering::Relaxed))
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// The last player left before the grace ran out (or there was none).
    Empty,
    /// The grace ran out with players still connected; they are closed with
    /// `close::DRAINED`.
    GraceElapsed,
}

/// What the loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleStep {
    /// Keep serving (or keep draining): nothing to do this time.
    Serve,
    /// Start draining now: refuse Hellos, report not ready.
    BeginDrain(StopCause),
    /// The drain is over: close every connection, flush, tell the orchestrator, exit.
    Finish(DrainEnd),
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Serving,
    Draining { since: Instant },
    Finished(DrainEnd),
}

/// The server's life from serving to exit, as a state machine of the player count, the
/// stop request and a clock passed in.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    config: DrainConfig,
    phase: Phase,
    had_players: bool,
    empty_since: Option<Instant>,
}

impl Lifecycle {
    /// A server that has just started serving.
    pub fn new(config: DrainConfig) -> Self {
        Self {
            config,
            phase: Phase::Serving,
            had_players: false,
            empty_since: None,
        }
    }

    /// One look at the world: `players` connected now, `stop` asked for (if any), at
    /// `now`. Call it often (the server does every 20 ms); each call returns what to do.
    pub fn step(&mut self, now: Instant, players: u64, stop: Option<StopCause>) -> LifecycleStep {
        match self.phase {
            Phase::Serving => {
                if let Some(cause) = stop.or_else(|| self.empty_for_too_long(now, players)) {
                    self.phase = Phase::Draining { since: now };
                    return LifecycleStep::BeginDrain(cause);
                }
                LifecycleStep::Serve
            }
            Phase::Draining { since } => {
                let end = if players == 0 {
                    DrainEnd::Empty
                } else if now.saturating_duration_since(since) >= self.config.grace {
                    DrainEnd::GraceElapsed
                } else {
                    return LifecycleStep::Serve;
                };
                self.phase = Phase::Finished(end);
                LifecycleStep::Finish(end)
            }
            Phase::Finished(end) => LifecycleStep::Finish(end),
        }
    }

    /// Whether a drain has begun (and maybe finished).
    pub fn is_draining(&self) -> bool {
        !matches!(self.phase, Phase::Serving)
    }

    /// `Some(Empty)` once the server has had players and then none for
    /// `shutdown_when_empty`. A server that never had a player is waiting for its first
    /// match, not done with one.
    fn empty_for_too_long(&mut self, now: Instant, players: u64) -> Option<StopCause> {
        if players > 0 {
            self.had_players = true;
            self.empty_since = None;
            return None;
        }
        if !self.had_players {
            return None;
        }
        let since = *self.empty_since.get_or_insert(now);
        let limit = self.config.shutdown_when_empty?;
        (now.saturating_duration_since(since) >= limit).then_some(StopCause::Empty)
    }
}

/// What to do on the `count`-th SIGTERM or SIGINT (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// The first: drain, then exit 0.
    Drain,
    /// Any later one: the operator (or Kubernetes, after the grace) means it — exit now,
    /// without closing connections or flushing.
    ExitNow,
}

/// The first signal drains; a second one exits at once.
pub fn signal_action(count: u32) -> SignalAction {
    if count <= 1 {
        SignalAction::Drain
    } else {
        SignalAction::ExitNow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_signal_drains_until_the_grace_ends_while_players_stay() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(DrainConfig {
            grace: secs(10),
            shutdown_when_empty: None,
        });
        assert_eq!(life.step(t0, 5, None), LifecycleStep::Serve);
        assert_eq!(
            life.step(t0 + secs(1), 5, Some(StopCause::Signal)),
            LifecycleStep::BeginDrain(StopCause::Signal)
        );
        assert!(life.is_draining());
        assert_eq!(
            life.step(t0 + secs(10), 5, Some(StopCause::Signal)),
            LifecycleStep::Serve,
            "9 s into a 10 s grace"
        );
        assert_eq!(
            life.step(t0 + secs(11), 5, Some(StopCause::Signal)),
            LifecycleStep::Finish(DrainEnd::GraceElapsed)
        );
        assert_eq!(
            life.step(t0 + secs(12), 0, None),
            LifecycleStep::Finish(DrainEnd::GraceElapsed),
            "finished stays finished"
        );
    }

    #[test]
    fn a_drain_ends_as_soon_as_the_last_player_leaves() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(DrainConfig::default());
        life.step(t0, 3, None);
        assert_eq!(
            life.step(t0, 3, Some(StopCause::Orchestrator)),
            LifecycleStep::BeginDrain(StopCause::Orchestrator)
        );
        assert_eq!(life.step(t0 + secs(1), 1, None), LifecycleStep::Serve);
        assert_eq!(
            life.step(t0 + secs(2), 0, None),
            LifecycleStep::Finish(DrainEnd::Empty)
        );
    }

    #[test]
    fn an_empty_server_finishes_its_drain_at_the_next_step() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(DrainConfig::default());
        assert_eq!(
            life.step(t0, 0, Some(StopCause::Signal)),
            LifecycleStep::BeginDrain(StopCause::Signal)
        );
        assert_eq!(
            life.step(t0, 0, None),
            LifecycleStep::Finish(DrainEnd::Empty)
        );
    }

    #[test]
    fn shutdown_when_empty_waits_for_a_first_player_then_for_the_whole_duration() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(DrainConfig {
            grace: secs(10),
            shutdown_when_empty: Some(secs(30)),
        });
        // Never had a player: an hour empty is still waiting for the match.
        assert_eq!(life.step(t0, 0, None), LifecycleStep::Serve);
        assert_eq!(life.step(t0 + secs(3600), 0, None), LifecycleStep::Serve);
        // A player comes and goes; the clock starts when the server empties.
        let t1 = t0 + secs(3601);
        assert_eq!(life.step(t1, 1, None), LifecycleStep::Serve);
        assert_eq!(life.step(t1 + secs(5), 0, None), LifecycleStep::Serve);
        // Someone rejoins before the limit: the clock resets.
        assert_eq!(life.step(t1 + secs(20), 2, None), LifecycleStep::Serve);
        assert_eq!(life.step(t1 + secs(21), 0, None), LifecycleStep::Serve);
        assert_eq!(life.step(t1 + secs(50), 0, None), LifecycleStep::Serve);
        assert_eq!(
            life.step(t1 + secs(51), 0, None),
            LifecycleStep::BeginDrain(StopCause::Empty)
        );
        assert_eq!(
            life.step(t1 + secs(51), 0, None),
            LifecycleStep::Finish(DrainEnd::Empty)
        );
    }

    #[test]
    fn without_shutdown_when_empty_an_empty_server_keeps_serving() {
        let t0 = Instant::now();
        let mut life = Lifecycle::new(DrainConfig::default());
        life.step(t0, 4, None);
        assert_eq!(life.step(t0 + secs(86_400), 0, None), LifecycleStep::Serve);
    }

    #[test]
    fn the_first_stop_request_wins() {
        let request = StopRequest::default();
        assert_eq!(request.cause(), None);
        request.request(StopCause::Orchestrator);
        request.request(StopCause::Signal);
        assert_eq!(request.cause(), Some(StopCause::Orchestrator));
    }

    #[test]
    fn the_second_signal_exits_at_once() {
        assert_eq!(signal_action(1), SignalAction::Drain);
        assert_eq!(signal_action(2), SignalAction::ExitNow);
        assert_eq!(signal_action(7), SignalAction::ExitNow);
    }
}
