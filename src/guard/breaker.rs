//! A circuit breaker for one backend (the L2 upstream; later each PostgreSQL instance).
//!
//! CLOSED counts outcomes in a sliding window of one-second buckets; once the window holds at
//! least `min_calls` calls and the failure ratio reaches `failure_ratio`, it turns OPEN and
//! refuses calls for `open_ms`. Then HALF_OPEN lets exactly one trial call through: its
//! success closes the breaker (with a fresh window), its failure opens it again. Time is passed
//! in (milliseconds), so the state machine is a pure function of its inputs and is tested as one.

use crate::config::L2Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of the `strata_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub failure_ratio: f64,
    pub window_s: u64,
    pub min_calls: u64,
    pub open_ms: u64,
}

impl Settings {
    pub fn from_l2(c: &L2Config) -> Settings {
        Settings {
            failure_ratio: c.breaker_failure_ratio,
            window_s: c.breaker_window_s.max(1),
            min_calls: c.breaker_min_calls.max(1),
            open_ms: c.breaker_open_s.max(1) * 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    ok: u64,
    failed: u64,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    settings: Settings,
    state: State,
    /// One bucket per second of the window, indexed by `second % window_s`: the buckets hold
    /// the seconds `head - window_s + 1 ..= head`, and `calls`/`failed` are their sums, so
    /// recording an outcome costs the same whatever the window's length.
    buckets: Vec<Bucket>,
    head: u64,
    calls: u64,
    failed: u64,
    opened_at: u64,
    trial_in_flight: bool,
    /// How many times it has opened (INFO, metrics).
    pub opened: u64,
}

impl Breaker {
    pub fn new(settings: Settings) -> Breaker {
        Breaker {
            buckets: vec![Bucket::default(); settings.window_s as usize],
            head: 0,
            calls: 0,
            failed: 0,
            settings,
            state: State::Closed,
            opened_at: 0,
            trial_in_flight: false,
            opened: 0,
        }
    }

    pub fn state(&self, now_ms: u64) -> State {
        match self.state {
            State::Open if now_ms >= self.opened_at + self.settings.open_ms => State::HalfOpen,
            s => s,
        }
    }

    /// Whether a call may go to the backend now. In HALF_OPEN only one trial is let through
    /// until its outcome is recorded.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen => {
                self.state = State::HalfOpen;
                if self.trial_in_flight {
                    false
                } else {
                    self.trial_in_flight = true;
                    true
                }
            }
        }
    }

    /// Records the outcome of a call that `allow` let through.
    pub fn record(&mut self, now_ms: u64, ok: bool) {
        match self.state(now_ms) {
            State::HalfOpen => {
                self.trial_in_flight = false;
                if ok {
                    self.close();
                } else {
                    self.open(now_ms);
                }
            }
            // A late outcome of a call made before the breaker opened changes nothing.
            State::Open => {}
            State::Closed => {
                let second = now_ms / 1000;
                self.advance(second);
                // An outcome timed before the window (a call that took longer than the
                // window, or a clock step back) no longer counts.
                if second + self.settings.window_s <= self.head {
                    return;
                }
                let n = self.buckets.len() as u64;
                let b = &mut self.buckets[(second % n) as usize];
                if ok {
                    b.ok += 1;
                } else {
                    b.failed += 1;
                    self.failed += 1;
                }
                self.calls += 1;
                if self.calls >= self.settings.min_calls
                    && self.failed as f64 >= self.settings.failure_ratio * self.calls as f64
                {
                    self.open(now_ms);
                }
            }
        }
    }

    /// Moves the window's end to `second` (if it is newer), emptying the buckets of the
    /// seconds that left the window.
    fn advance(&mut self, second: u64) {
        if second <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        let from = (self.head + 1).max(second.saturating_sub(n - 1));
        for s in from..=second {
            let b = &mut self.buckets[(s % n) as usize];
            self.calls -= b.ok + b.failed;
            self.failed -= b.failed;
            *b = Bucket::default();
        }
        self.head = second;
    }

    fn open(&mut self, now_ms: u64) {
        self.state = State::Open;
        self.opened_at = now_ms;
        self.trial_in_flight = false;
        self.opened += 1;
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.buckets.iter_mut().for_each(|b| *b = Bucket::default());
        self.calls = 0;
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> Settings {
        Settings {
            failure_ratio: 0.5,
            window_s: 60,
            min_calls: 10,
            open_ms: 30_000,
        }
    }

    #[test]
    fn opens_at_half_failures_and_half_opens_after_the_open_time() {
        let mut b = Breaker::new(settings());
        for i in 0..9 {
            assert!(b.allow(i));
            b.record(i, false);
        }
        // Nine calls: below the minimum, still closed.
        assert_eq!(b.state(10), State::Closed);
        b.record(10, true);
        // 9 failures of 10 calls: open.
        assert_eq!(b.state(11), State::Open);
        assert!(!b.allow(29_999));
        assert_eq!(b.state(30_010), State::HalfOpen);
        assert!(b.allow(30_010));
        assert!(!b.allow(30_011), "only one trial call in half-open");
        b.record(30_020, true);
        assert_eq!(b.state(30_021), State::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again() {
        let mut b = Breaker::new(settings());
        for i in 0..10 {
            b.allow(i);
            b.record(i, false);
        }
        assert!(b.allow(40_000));
        b.record(40_001, false);
        assert_eq!(b.state(40_002), State::Open);
        assert!(!b.allow(69_000));
        assert!(b.allow(70_001));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut b = Breaker::new(settings());
        for i in 0..9 {
            b.record(i * 1000, false);
        }
        // 70 s later those failures are out of the 60 s window.
        for i in 0..10 {
            b.record(70_000 + i, true);
        }
        b.record(70_100, false);
        assert_eq!(b.state(70_200), State::Closed);
    }

    #[test]
    fn an_outcome_older_than_the_window_is_not_counted() {
        let mut b = Breaker::new(settings());
        for i in 0..9 {
            b.record(100_000 + i, true);
        }
        // Ten failures timed 70 s before the newest outcome: outside the 60 s window.
        for i in 0..10 {
            b.record(30_000 + i, false);
        }
        assert_eq!(b.state(100_100), State::Closed);
        // The same failures timed inside the window open it (10 of 19 calls failed).
        for i in 0..10 {
            b.record(99_000 + i, false);
        }
        assert_eq!(b.state(100_200), State::Open);
    }

    #[test]
    fn a_long_quiet_spell_empties_the_window() {
        let mut b = Breaker::new(settings());
        for i in 0..9 {
            b.record(i, false);
        }
        // Years later: nine old failures are gone, one new failure of one call is not enough.
        b.record(10_000_000_000, false);
        assert_eq!(b.state(10_000_000_001), State::Closed);
    }

    /// A model of the breaker that keeps every outcome (no buckets).
    struct Model {
        s: Settings,
        open_at: Option<u64>,
        trial: bool,
        log: Vec<(u64, bool)>,
    }

    impl Model {
        fn state(&self, now: u64) -> State {
            match self.open_at {
                Some(t) if now >= t + self.s.open_ms => State::HalfOpen,
                Some(_) => State::Open,
                None => State::Closed,
            }
        }
        fn allow(&mut self, now: u64) -> bool {
            match self.state(now) {
                State::Closed => true,
                State::Open => false,
                State::HalfOpen if self.trial => false,
                State::HalfOpen => {
                    self.trial = true;
                    true
                }
            }
        }
        fn record(&mut self, now: u64, ok: bool) {
            match self.state(now) {
                State::HalfOpen => {
                    self.trial = false;
                    if ok {
                        self.open_at = None;
                        self.log.clear();
                    } else {
                        self.open_at = Some(now);
                    }
                }
                State::Open => {}
                State::Closed => {
                    self.log.push((now, ok));
                    let sec = now / 1000;
                    let in_window: Vec<_> = self
                        .log
                        .iter()
                        .filter(|(t, _)| t / 1000 + self.s.window_s > sec)
                        .collect();
                    let calls = in_window.len() as u64;
                    let failed = in_window.iter().filter(|(_, ok)| !ok).count() as u64;
                    if calls >= self.s.min_calls
                        && failed as f64 >= self.s.failure_ratio * calls as f64
                    {
                        self.open_at = Some(now);
                        self.log.clear();
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        // Feature: db-cache-optimization, Property 42: Circuit Breaker State Machine
        /// The breaker opens exactly when the failure ratio over the window reaches the
        /// threshold with enough calls, refuses calls while open, and lets exactly one trial
        /// through when half-open, whose outcome decides the next state.
        #[test]
        fn breaker_matches_its_model(
            steps in proptest::collection::vec((0u64..4000, any::<bool>(), any::<bool>()), 1..400)
        ) {
            let s = Settings { failure_ratio: 0.5, window_s: 5, min_calls: 4, open_ms: 3000 };
            let mut b = Breaker::new(s);
            let mut m = Model { s, open_at: None, trial: false, log: Vec::new() };
            let mut now = 0;
            for (dt, ok, call) in steps {
                now += dt;
                prop_assert_eq!(b.state(now), m.state(now), "state at {}", now);
                if call {
                    let a = b.allow(now);
                    prop_assert_eq!(a, m.allow(now), "allow at {}", now);
                    if a {
                        b.record(now, ok);
                        m.record(now, ok);
                    }
                }
            }
        }
    }
}
