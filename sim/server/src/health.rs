//! The health decisions behind `GET /healthz` and `GET /readyz`, as plain functions of
//! their inputs and a clock passed in; the metrics thread feeds them.
//!
//! * **Live** (`/healthz`): the sim loop has ticked within [`StallDetector`]'s window. A
//!   hung loop (a deadlock, a runaway tick, a drill's `LoopProgress::hold`) fails it;
//!   an orchestrator restarts the process.
//! * **Ready** (`/readyz`): the server would admit one more client now. A full server
//!   is healthy but not ready; a load balancer or matchmaker sends new players elsewhere.

use std::time::{Duration, Instant};

/// Fewest periods without a tick before the loop counts as stalled: one late tick (a
/// scheduler hiccup, a page fault storm) is not a hang.
pub const STALL_PERIODS: u32 = 10;

/// Shortest stall window, whatever the tick rate: at 30 Hz ten periods are 333 ms, and a
/// shared 2-core machine under a build can pause a thread that long without anything
/// being wrong.
pub const MIN_STALL_WINDOW: Duration = Duration::from_secs(1);

/// The window without a tick after which the loop is reported stalled: the larger of
/// [`STALL_PERIODS`] periods and [`MIN_STALL_WINDOW`].
pub fn stall_window(tick_rate: u16) -> Duration {
    let period = Duration::from_secs(1) / u32::from(tick_rate.max(1));
    (period * STALL_PERIODS).max(MIN_STALL_WINDOW)
}

/// Watches the loop's tick count: it is ticking while the count changed within the
/// window. Fed by observations (count, now); knows no clock of its own.
#[derive(Debug, Clone)]
pub struct StallDetector {
    window: Duration,
    last_ticks: u64,
    last_change: Instant,
}

impl StallDetector {
    /// Starts watching at `now` with the count `ticks`; the loop gets one window to
    /// start ticking.
    pub fn new(window: Duration, ticks: u64, now: Instant) -> Self {
        Self {
            window,
            last_ticks: ticks,
            last_change: now,
        }
    }

    /// Notes the count seen at `now`.
    pub fn observe(&mut self, ticks: u64, now: Instant) {
        if ticks != self.last_ticks {
            self.last_ticks = ticks;
            self.last_change = now;
        }
    }

    /// Whether the count changed within the window before `now`.
    pub fn is_ticking(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_change) <= self.window
    }
}

/// What readiness is decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The sim loop is ticking ([`StallDetector::is_ticking`]): a joining client waits
    /// for the sim to spawn its entity, so a hung loop admits no one.
    pub ticking: bool,
    /// Clients connected now.
    pub clients: u64,
    /// The configured client limit.
    pub max_clients: u64,
    /// Clients the memory budget admits (`MemoryPlan::clients`).
    pub budget_clients: u64,
    /// The server is draining (SIGTERM, Ctrl-C, an Agones shutdown: no new clients, the
    /// connected ones play on until the grace ends; `Server::drain_flag`).
    pub draining: bool,
}

/// Why the server is not ready, for the `/readyz` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The sim loop has not ticked within the stall window.
    NotTicking,
    /// Draining: admitting no one.
    Draining,
    /// At the configured client limit.
    AtClientLimit,
    /// At what the memory budget admits.
    AtMemoryBudget,
}

impl NotReady {
    /// A short reason, for the response body.
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::NotTicking => "the simulation loop is not ticking",
            NotReady::Draining => "draining",
            NotReady::AtClientLimit => "at the client limit",
            NotReady::AtMemoryBudget => "at the memory budget's client count",
        }
    }
}

impl Readiness {
    /// Ready when ticking, not draining, and one more client fits under both the client
    /// limit and the memory budget; otherwise the first reason that fails.
    pub fn decide(&self) -> Result<(), NotReady> {
        if !self.ticking {
            Err(NotReady::NotTicking)
        } else if self.draining {
            Err(NotReady::Draining)
        } else if self.clients >= self.max_clients {
            Err(NotReady::AtClientLimit)
        } else if self.clients >= self.budget_clients {
            Err(NotReady::AtMemoryBudget)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_is_stalled_only_after_a_whole_window_without_a_new_count() {
        let start = Instant::now();
        let window = Duration::from_secs(1);
        let mut detector = StallDetector::new(window, 0, start);
        assert!(detector.is_ticking(start), "a window to start in");
        assert!(!detector.is_ticking(start + Duration::from_millis(1001)));
        detector.observe(5, start + Duration::from_millis(1100));
        assert!(detector.is_ticking(start + Duration::from_millis(1100)));
        // The same count again is no progress.
        detector.observe(5, start + Duration::from_millis(1900));
        assert!(detector.is_ticking(start + Duration::from_millis(2100)));
        assert!(!detector.is_ticking(start + Duration::from_millis(2101)));
        detector.observe(6, start + Duration::from_millis(2500));
        assert!(detector.is_ticking(start + Duration::from_millis(2500)));
    }

    #[test]
    fn the_stall_window_is_ten_periods_but_never_under_a_second() {
        assert_eq!(stall_window(30), Duration::from_secs(1));
        assert_eq!(stall_window(5), Duration::from_secs(2));
        assert_eq!(
            stall_window(0),
            Duration::from_secs(10),
            "no division by zero"
        );
    }

    fn ready() -> Readiness {
        Readiness {
            ticking: true,
            clients: 10,
            max_clients: 100,
            budget_clients: 50,
            draining: false,
        }
    }

    #[test]
    fn ready_while_ticking_and_one_more_client_fits() {
        assert_eq!(ready().decide(), Ok(()));
        let last_slot = Readiness {
            clients: 49,
            ..ready()
        };
        assert_eq!(last_slot.decide(), Ok(()));
    }

    #[test]
    fn not_ready_when_full_by_either_limit_draining_or_stalled() {
        let at_budget = Readiness {
            clients: 50,
            ..ready()
        };
        assert_eq!(at_budget.decide(), Err(NotReady::AtMemoryBudget));
        let at_limit = Readiness {
            clients: 100,
            budget_clients: 1000,
            ..ready()
        };
        assert_eq!(at_limit.decide(), Err(NotReady::AtClientLimit));
        let draining = Readiness {
            draining: true,
            ..ready()
        };
        assert_eq!(draining.decide(), Err(NotReady::Draining));
        let stalled = Readiness {
            ticking: false,
            draining: true,
            ..ready()
        };
        assert_eq!(
            stalled.decide(),
            Err(NotReady::NotTicking),
            "the first reason"
        );
        let no_room_at_all = Readiness {
            clients: 0,
            budget_clients: 0,
            ..ready()
        };
        assert_eq!(no_room_at_all.decide(), Err(NotReady::AtMemoryBudget));
    }
}
