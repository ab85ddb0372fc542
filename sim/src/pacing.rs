//! Fixed-step pacing: when each tick is due, as a pure function of the instants passed in.
//!
//! Tick `n` is due at `start + n × period`, so the overshoot of one sleep never carries
//! into the next tick's slot (no drift). A tick that starts more than one period after
//! its slot — a stall, a suspended process — re-bases the schedule on the current
//! instant instead of running a burst of catch-up ticks, and is counted as late.
//!
//! [`FixedStep`] never reads the clock: the server's loop, `tickcast-replay serve` and
//! tests pass `now` in, so the policy is tested on made-up instants.

use std::time::{Duration, Instant};

/// What the loop should do after finishing a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The next tick is due in this long: sleep, then run it.
    Wait(Duration),
    /// The next tick is due now or was due less than a period ago: run it at once.
    RunNow,
    /// The loop fell more than a period behind; the schedule restarts from `now` and the
    /// next tick runs at once. Counted in [`FixedStep::late_ticks`].
    Rebased,
}

/// The schedule of a fixed-step loop: `start + n × period`, re-based when late.
#[derive(Debug, Clone)]
pub struct FixedStep {
    period: Duration,
    start: Instant,
    /// Ticks finished since `start`.
    finished: u32,
    late_ticks: u64,
}

impl FixedStep {
    /// A schedule whose first tick is due at `start`.
    ///
    /// # Panics
    /// If `period` is zero (a config validated by `SimConfig` never gives one).
    pub fn new(period: Duration, start: Instant) -> Self {
        assert!(!period.is_zero(), "a fixed step needs a period above zero");
        Self {
            period,
            start,
            finished: 0,
            late_ticks: 0,
        }
    }

    /// A schedule of `rate` ticks per second (at least 1) starting at `start`.
    pub fn per_second(rate: f64, start: Instant) -> Self {
        Self::new(Duration::from_secs_f64(1.0 / rate.max(1e-3)), start)
    }

    /// The time between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Ticks that started more than one period after their slot, since creation.
    pub fn late_ticks(&self) -> u64 {
        self.late_ticks
    }

    /// When the next tick is due.
    pub fn next_deadline(&self) -> Instant {
        self.start + self.period * (self.finished + 1)
    }

    /// Marks a tick finished at `now` and says what to do next.
    pub fn tick_finished(&mut self, now: Instant) -> Pace {
        // A u32 of ticks at 1 kHz is 49 days: re-base before `period × n` could overflow.
        if self.finished == u32::MAX - 1 {
            self.start = self.next_deadline();
            self.finished = 0;
        } else {
            self.finished += 1;
        }
        let deadline = self.start + self.period * self.finished;
        match deadline.checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => Pace::Wait(wait),
            _ if now - deadline > self.period => {
                self.late_ticks += 1;
                self.start = now;
                self.finished = 0;
                Pace::Rebased
            }
            _ => Pace::RunNow,
        }
    }

    /// [`Self::tick_finished`] at the real clock's `now`, then sleeps out any wait.
    /// The one place pacing meets the wall clock; loops call this.
    pub fn sleep_until_next(&mut self) -> Pace {
        let pace = self.tick_finished(Instant::now());
        if let Pace::Wait(wait) = pace {
            std::thread::sleep(wait);
        }
        pace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(33);

    #[test]
    fn ticks_are_due_at_start_plus_n_periods_whatever_the_overshoot() {
        let t0 = Instant::now();
        let mut step = FixedStep::new(PERIOD, t0);
        // The first tick took 10 ms: wait out the remaining 23.
        assert_eq!(
            step.tick_finished(t0 + Duration::from_millis(10)),
            Pace::Wait(Duration::from_millis(23))
        );
        // The sleep overshot by 4 ms and the second tick took 5: the third slot is still
        // at 66 ms, not 33 + 4 + 5 + 33.
        assert_eq!(
            step.tick_finished(t0 + Duration::from_millis(42)),
            Pace::Wait(Duration::from_millis(24))
        );
        assert_eq!(step.next_deadline(), t0 + PERIOD * 3);
        assert_eq!(step.late_ticks(), 0);
    }

    #[test]
    fn a_tick_less_than_a_period_behind_runs_at_once_without_rebasing() {
        let t0 = Instant::now();
        let mut step = FixedStep::new(PERIOD, t0);
        assert_eq!(
            step.tick_finished(t0 + Duration::from_millis(50)),
            Pace::RunNow
        );
        assert_eq!(step.late_ticks(), 0);
        // It catches up: the next slot is still 66 ms.
        assert_eq!(step.next_deadline(), t0 + PERIOD * 2);
    }

    #[test]
    fn a_stall_rebases_on_now_and_counts_one_late_tick() {
        let t0 = Instant::now();
        let mut step = FixedStep::new(PERIOD, t0);
        let after_stall = t0 + Duration::from_secs(2);
        assert_eq!(step.tick_finished(after_stall), Pace::Rebased);
        assert_eq!(step.late_ticks(), 1);
        // No burst of catch-up ticks: the next one is a whole period after the stall.
        assert_eq!(step.next_deadline(), after_stall + PERIOD);
        assert_eq!(
            step.tick_finished(after_stall + Duration::from_millis(3)),
            Pace::Wait(Duration::from_millis(30))
        );
    }

    #[test]
    fn per_second_gives_the_period_of_the_rate() {
        let step = FixedStep::per_second(30.0, Instant::now());
        assert_eq!(step.period(), Duration::from_secs_f64(1.0 / 30.0));
    }
}
