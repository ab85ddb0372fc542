//! What each bot does, as plain decisions: a [`Bot`] is told the time and what happened
//! (an input is due, a datagram was read) and answers what to do — send this input, keep
//! reading or not, leave. No socket and no clock: the swarm drives it, tests step it on
//! made-up instants.

use std::time::{Duration, Instant};

use tickcast_clients::Intent;

/// What a bot does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// Walks in a new random direction every second; reads every datagram.
    Walk,
    /// Stands still (inputs with no movement, still acking); reads every datagram.
    Idle,
    /// Reads for [`BehaviourSettings::stall_after`], then never reads a datagram again while
    /// staying connected and sending still inputs. quinn keeps acknowledging the
    /// packets underneath, so the server sees a healthy QUIC peer: this loads the
    /// client's own buffer, not the server's backpressure. Its expected ticks run to
    /// the server's tick at the end (estimated from the Welcome and the clock).
    Stall,
    /// Walks, but reads at most [`BehaviourSettings::slow_read_rate`] datagrams a second; the
    /// rest wait in quinn's datagram receive buffer, which drops the oldest when full.
    /// Its expected ticks run to the server's tick at the end, like `Stall`'s.
    Slow,
    /// Walks, and every [`BehaviourSettings::churn_every`] (first period jittered per bot)
    /// closes its connection and connects again with a fresh token.
    Churn,
}

impl Behaviour {
    /// Every behaviour, in report order.
    pub const ALL: [Behaviour; 5] = [
        Behaviour::Walk,
        Behaviour::Idle,
        Behaviour::Stall,
        Behaviour::Slow,
        Behaviour::Churn,
    ];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Walk => "walk",
            Behaviour::Idle => "idle",
            Behaviour::Stall => "stall",
            Behaviour::Slow => "slow",
            Behaviour::Churn => "churn",
        }
    }

    /// The behaviour with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether a client of this behaviour reads everything promptly and stays
    /// connected, so its delivery and latency judge the server (walk and idle).
    pub fn is_healthy(self) -> bool {
        matches!(self, Behaviour::Walk | Behaviour::Idle)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn moves(self) -> bool {
        matches!(self, Behaviour::Walk | Behaviour::Slow | Behaviour::Churn)
    }
}

/// The knobs of the behaviours that have any (from [`crate::swarm::SwarmConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BehaviourSettings {
    /// `slow` bots read at most this many datagrams per second.
    pub slow_read_rate: u32,
    /// `stall` bots stop reading this long after connecting.
    pub stall_after: Duration,
    /// `churn` bots reconnect this often.
    pub churn_every: Duration,
}

/// What a bot does when its input timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send this input. `new_second` is true once a second (every `tick_rate` inputs):
    /// when the walk turns, and when the swarm re-phases the timer and samples RTT.
    Send {
        /// What the bot wants, in no game's terms: the swarm turns it into the game's
        /// input command through its schema ([`tickcast_clients::InputMapper`]).
        cmd: Intent,
        /// A second's worth of inputs has gone by.
        new_second: bool,
    },
    /// The session is over: close the connection.
    Leave,
}

/// One bot's behaviour and the state it keeps across its sessions.
#[derive(Debug, Clone)]
pub struct Bot {
    behaviour: Behaviour,
    index: usize,
    settings: BehaviourSettings,
    walk: Walk,
    session: Session,
}

/// What a bot keeps for one session (one connection).
#[derive(Debug, Clone)]
struct Session {
    ends_at: Instant,
    tick_rate: u32,
    inputs: u64,
    stall_at: Option<Instant>,
    stalled: bool,
    /// Slow bots: datagrams they may read now, a token bucket refilled each input tick
    /// and banking at most two ticks' worth. Infinite for every other behaviour.
    read_budget: f64,
    refill: f64,
    bank: f64,
}

impl Bot {
    /// Bot number `index` of a swarm, playing `behaviour`. The index seeds its walk and
    /// spreads its first churn.
    pub fn new(behaviour: Behaviour, index: usize, settings: BehaviourSettings) -> Self {
        Self {
            behaviour,
            index,
            settings,
            walk: Walk::new(index as u64),
            session: Session {
                ends_at: Instant::now(),
                tick_rate: 1,
                inputs: 0,
                stall_at: None,
                stalled: false,
                read_budget: f64::INFINITY,
                refill: 0.0,
                bank: 0.0,
            },
        }
    }

    /// The behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// Session number `session` (0 first) began at `now` with a server at `tick_rate`
    /// Hz; the run ends at `run_end`. Returns when this session ends: `run_end`, or for
    /// a churning bot its churn period later (the first one jittered per bot).
    pub fn start_session(
        &mut self,
        now: Instant,
        run_end: Instant,
        tick_rate: u16,
        session: u32,
    ) -> Instant {
        let tick_rate = u32::from(tick_rate.max(1));
        let ends_at = match self.behaviour {
            Behaviour::Churn => {
                run_end.min(now + churn_period(self.settings.churn_every, self.index, session))
            }
            _ => run_end,
        };
        let refill = f64::from(self.settings.slow_read_rate) / f64::from(tick_rate);
        self.session = Session {
            ends_at,
            tick_rate,
            inputs: 0,
            stall_at: (self.behaviour == Behaviour::Stall).then(|| now + self.settings.stall_after),
            stalled: false,
            read_budget: if self.behaviour == Behaviour::Slow {
                refill
            } else {
                f64::INFINITY
            },
            refill,
            bank: (2.0 * refill).max(1.0),
        };
        ends_at
    }

    /// The input timer fired at `now`: the input to send, or leave when the session is
    /// over. A stall starts, and a slow bot's reading budget refills, here.
    pub fn on_input_due(&mut self, now: Instant) -> Action {
        let session = &mut self.session;
        if now >= session.ends_at {
            return Action::Leave;
        }
        session.inputs += 1;
        let new_second = session.inputs.is_multiple_of(u64::from(session.tick_rate));
        if new_second {
            self.walk.turn();
        }
        if session.stall_at.is_some_and(|at| now >= at) {
            session.stalled = true;
        }
        if self.behaviour == Behaviour::Slow {
            session.read_budget = (session.read_budget + session.refill).min(session.bank);
        }
        let (move_x, move_y) = if self.behaviour.moves() {
            self.walk.direction
        } else {
            (0, 0)
        };
        Action::Send {
            cmd: Intent {
                move_x,
                move_y,
                ..Default::default()
            },
            new_second,
        }
    }

    /// Whether the bot reads the next datagram now: not once stalled, and a slow bot
    /// only while its budget holds a whole datagram.
    pub fn reads(&self) -> bool {
        !self.session.stalled && self.session.read_budget >= 1.0
    }

    /// The bot read a datagram.
    pub fn on_datagram_read(&mut self) {
        self.session.read_budget -= 1.0;
    }

    /// A session ended at `now` with the connection still up: whether the bot connects
    /// again (a churning bot, while the run lasts).
    pub fn reconnects(&self, now: Instant, run_end: Instant) -> bool {
        self.behaviour == Behaviour::Churn && now < run_end
    }

    /// Whether the newest tick this bot saw falls behind the server's by design (it
    /// stops reading or reads behind), so the ticks published since count as
    /// undelivered too.
    pub fn falls_behind(&self) -> bool {
        matches!(self.behaviour, Behaviour::Stall | Behaviour::Slow)
    }
}

/// A deterministic walk: a new direction each time it turns (once a second).
#[derive(Debug, Clone)]
struct Walk {
    state: u64,
    direction: (i8, i8),
}

impl Walk {
    fn new(seed: u64) -> Self {
        let mut walk = Self {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            direction: (0, 0),
        };
        walk.turn();
        walk
    }

    fn turn(&mut self) {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let dx = ((self.state >> 33) % 255) as i16 - 127;
        let dy = ((self.state >> 41) % 255) as i16 - 127;
        self.direction = (dx as i8, dy as i8);
    }
}

/// First churn period of bot `index`: between half and one and a half periods, spread
/// by the golden ratio so reconnects do not come in waves.
fn churn_period(every: Duration, index: usize, session: u32) -> Duration {
    if session > 0 {
        return every;
    }
    let spread = (index as f64 * 0.618_033_988_75).fract();
    every.mul_f64(0.5 + spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BehaviourSettings = BehaviourSettings {
        slow_read_rate: 100,
        stall_after: Duration::from_secs(1),
        churn_every: Duration::from_secs(3),
    };
    const TICK: Duration = Duration::from_nanos(1_000_000_000 / 30);

    /// A bot in its first session at 30 Hz, started at `t0`, for a 60 s run.
    fn bot(behaviour: Behaviour, t0: Instant) -> Bot {
        let mut bot = Bot::new(behaviour, 7, SETTINGS);
        bot.start_session(t0, t0 + Duration::from_secs(60), 30, 0);
        bot
    }

    fn sent(action: Action) -> (Intent, bool) {
        match action {
            Action::Send { cmd, new_second } => (cmd, new_second),
            Action::Leave => panic!("the session is not over"),
        }
    }

    #[test]
    fn a_walker_moves_turns_once_a_second_and_reads_everything() {
        let t0 = Instant::now();
        let mut walker = bot(Behaviour::Walk, t0);
        let mut directions = Vec::new();
        for n in 1..=90u32 {
            let (cmd, new_second) = sent(walker.on_input_due(t0 + TICK * n));
            assert_eq!(new_second, n % 30 == 0, "input {n}");
            assert!(walker.reads());
            walker.on_datagram_read();
            directions.push((cmd.move_x, cmd.move_y));
        }
        assert!(directions.iter().all(|d| *d != (0, 0)));
        // Three turns in three seconds, each direction held for a second.
        assert_eq!(directions[0], directions[28]);
        assert_ne!(directions[28], directions[29]);
        assert_ne!(directions[58], directions[59]);
        // The same index walks the same way; another index another way.
        let first = sent(bot(Behaviour::Walk, t0).on_input_due(t0 + TICK)).0;
        assert_eq!((first.move_x, first.move_y), directions[0]);
        let mut other = Bot::new(Behaviour::Walk, 8, SETTINGS);
        other.start_session(t0, t0 + Duration::from_secs(60), 30, 0);
        let other = sent(other.on_input_due(t0 + TICK)).0;
        assert_ne!((other.move_x, other.move_y), directions[0]);
    }

    #[test]
    fn an_idle_bot_stands_still_and_reads_everything() {
        let t0 = Instant::now();
        let mut idle = bot(Behaviour::Idle, t0);
        for n in 1..=60u32 {
            let (cmd, _) = sent(idle.on_input_due(t0 + TICK * n));
            assert_eq!((cmd.move_x, cmd.move_y), (0, 0));
            assert!(idle.reads());
        }
    }

    #[test]
    fn a_stalling_bot_stops_reading_after_stall_after_and_keeps_sending_still_inputs() {
        let t0 = Instant::now();
        let mut stall = bot(Behaviour::Stall, t0);
        let mut last_read = None;
        for n in 1..=60u32 {
            let now = t0 + TICK * n;
            let (cmd, _) = sent(stall.on_input_due(now));
            assert_eq!((cmd.move_x, cmd.move_y), (0, 0));
            if stall.reads() {
                last_read = Some(now);
            }
        }
        let last_read = last_read.expect("it reads at first");
        assert!(last_read < t0 + SETTINGS.stall_after);
        assert!(last_read + TICK >= t0 + SETTINGS.stall_after);
        assert!(!stall.reads());
        assert!(stall.falls_behind());
    }

    #[test]
    fn a_slow_bot_walks_and_reads_at_most_its_rate() {
        let t0 = Instant::now();
        let mut slow = bot(Behaviour::Slow, t0);
        let mut reads = 0u32;
        for n in 1..=300u32 {
            let (cmd, _) = sent(slow.on_input_due(t0 + TICK * n));
            assert_ne!((cmd.move_x, cmd.move_y), (0, 0));
            // Datagrams are always waiting: it reads as long as it may.
            while slow.reads() {
                slow.on_datagram_read();
                reads += 1;
            }
        }
        // Ten seconds at 100 a second, plus the first tick's budget.
        assert_eq!(reads, 1_003, "{reads}");
        assert!(slow.falls_behind());
    }

    #[test]
    fn a_churning_bot_leaves_after_its_period_and_reconnects_until_the_run_ends() {
        let t0 = Instant::now();
        let run_end = t0 + Duration::from_secs(10);
        let mut churn = Bot::new(Behaviour::Churn, 7, SETTINGS);
        let first_end = churn.start_session(t0, run_end, 30, 0);
        assert_eq!(first_end, t0 + churn_period(SETTINGS.churn_every, 7, 0));
        assert!(matches!(
            churn.on_input_due(first_end - TICK),
            Action::Send { .. }
        ));
        assert_eq!(churn.on_input_due(first_end), Action::Leave);
        assert!(churn.reconnects(first_end, run_end));
        let second_end = churn.start_session(first_end, run_end, 30, 1);
        assert_eq!(second_end, first_end + SETTINGS.churn_every);
        // A session never outlasts the run.
        let late = run_end - Duration::from_millis(10);
        assert_eq!(churn.start_session(late, run_end, 30, 2), run_end);
        assert!(!churn.reconnects(run_end, run_end));
        // Other behaviours play one session to the end of the run.
        let mut walker = Bot::new(Behaviour::Walk, 7, SETTINGS);
        assert_eq!(walker.start_session(t0, run_end, 30, 0), run_end);
        assert!(!walker.reconnects(t0, run_end));
        assert_eq!(walker.on_input_due(run_end), Action::Leave);
    }

    #[test]
    fn churn_periods_are_spread_and_then_regular() {
        let every = Duration::from_secs(2);
        for index in 0..100 {
            let first = churn_period(every, index, 0);
            assert!(first >= Duration::from_secs(1) && first < Duration::from_secs(3));
        }
        assert_ne!(churn_period(every, 1, 0), churn_period(every, 2, 0));
        assert_eq!(churn_period(every, 7, 3), every);
    }
}
