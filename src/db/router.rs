//! The router: where a statement runs. Writes (and STRONG reads) go to the primary; reads go to
//! a replica that is eligible — healthy, with a weight, whose last lag sample is no older than
//! the MAXLAG in force and shows a lag within it, and, when the reading connection has written
//! recently, whose replay position is at or past that write — and the balancer picks among
//! those; with none eligible, reads go to the primary.
//!
//! Lag comes from a probe that runs every `database.lag_probe_ms` on its own connections, apart
//! from the health checks. The primary's probe records its WAL insert position over time (a
//! bounded history); a replica's probe reads its replay position. A replica that has replayed
//! what the primary had written at the newest primary sample taken before it has lag 0;
//! otherwise its lag is the time since the newest primary sample it had caught up with (never
//! below the true lag, and at most one probe period above it). The replay
//! positions double as the proof a cached-result fill needs: a result read from a replica is
//! stored only if the replica's replay position, sampled before the query started, is at or
//! past every write that invalidated the result's tables.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Primary samples kept: at 250 ms, a little over 17 minutes of history.
const HISTORY: usize = 4096;

/// One probe of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagSample {
    /// When the probe's answer arrived.
    pub at: Instant,
    /// The replica's replay position (pg_last_wal_replay_lsn).
    pub replay_lsn: u64,
    pub lag: Duration,
}

/// The primary's WAL insert position over time.
#[derive(Default)]
pub struct PrimaryHistory {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl PrimaryHistory {
    /// Forgets every sample (a new primary: its positions are on a new timeline).
    pub fn reset(&self) {
        self.samples.lock().clear();
    }

    /// Records the primary's position `lsn` read by a probe sent at `sent`.
    pub fn record(&self, sent: Instant, lsn: u64) {
        let mut s = self.samples.lock();
        if s.back().is_some_and(|&(t, l)| t >= sent || l > lsn) {
            // Out of order (a slow probe) or going back (a new primary): start over from here
            // if it went back, else keep the newer sample.
            if s.back().is_some_and(|&(_, l)| l > lsn) {
                s.clear();
            } else {
                return;
            }
        }
        if s.len() == HISTORY {
            s.pop_front();
        }
        s.push_back((sent, lsn));
    }

    /// The newest sample taken at or before `t`.
    pub fn latest_before(&self, t: Instant) -> Option<(Instant, u64)> {
        self.samples
            .lock()
            .iter()
            .rev()
            .find(|&&(at, _)| at <= t)
            .copied()
    }

    /// The replica lag of a replica that had replayed up to `replay` when probed at `probed`
    /// (see the module documentation); `None` without a primary sample before the probe.
    pub fn lag(&self, replay: u64, probed: Instant) -> Option<Duration> {
        let s = self.samples.lock();
        let mut behind = false;
        let mut oldest = None;
        for &(at, lsn) in s.iter().rev() {
            if at > probed {
                continue;
            }
            if lsn <= replay {
                // Caught up with the primary as of `at`: behind by at most the time since.
                return Some(if behind {
                    probed.saturating_duration_since(at)
                } else {
                    Duration::ZERO
                });
            }
            behind = true;
            oldest = Some(at);
        }
        // Behind every sample kept: at least since the oldest.
        oldest.map(|at| probed.saturating_duration_since(at))
    }
}

/// A replica's routing state.
#[derive(Default)]
pub struct ReplicaState {
    sample: Mutex<Option<LagSample>>,
    /// The last probe failed (down, refusing connections, not a replica any more).
    down: std::sync::atomic::AtomicBool,
}

impl ReplicaState {
    pub fn record(&self, sample: LagSample) {
        *self.sample.lock() = Some(sample);
        self.down.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// A probe that succeeded without a lag sample (the primary).
    pub fn record_up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn record_failure(&self) {
        self.down.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn sample(&self) -> Option<LagSample> {
        *self.sample.lock()
    }

    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a read asks of a replica.
#[derive(Debug, Clone, Copy)]
pub struct ReadNeeds {
    pub max_lag: Duration,
    /// The replay position the replica must have reached (read your writes); 0 = none.
    pub min_lsn: u64,
    pub now: Instant,
}

/// Whether a replica may serve a read (Properties 12 and 22).
pub fn eligible(sample: Option<LagSample>, down: bool, weight: u32, needs: &ReadNeeds) -> bool {
    let Some(s) = sample else {
        return false;
    };
    !down
        && weight > 0
        && needs.now.saturating_duration_since(s.at) <= needs.max_lag
        && s.lag <= needs.max_lag
        && s.replay_lsn >= needs.min_lsn
}

/// Where a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    /// A replica, by index in the configured list.
    Replica(usize),
}

/// What the router knows of one replica when a read arrives.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    pub sample: Option<LagSample>,
    pub down: bool,
    /// Its balancer view (`id` is its index; `weight` the configured weight).
    pub candidate: super::balancer::Candidate,
}

/// Where a read goes (Properties 10 and 12): the balancer's pick among the eligible replicas,
/// or the primary when none is eligible.
pub fn choose(
    replicas: &[ReplicaView],
    needs: &ReadNeeds,
    balancer: &super::balancer::Balancer,
) -> Target {
    let candidates: Vec<super::balancer::Candidate> = replicas
        .iter()
        .filter(|r| eligible(r.sample, r.down, r.candidate.weight, needs))
        .map(|r| r.candidate)
        .collect();
    match balancer.pick(&candidates) {
        Some(i) => Target::Replica(candidates[i].id),
        None => Target::Primary,
    }
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// PostgreSQL's `X/Y` text of an LSN.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsn_round_trips() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(lsn_text(0x1_0000_00A0), "1/A0");
        assert_eq!(parse_lsn("x"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }

    #[test]
    fn lag_is_zero_when_caught_up_and_grows_while_behind() {
        let h = PrimaryHistory::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        h.record(t0, 100);
        h.record(t0 + ms(250), 100);
        h.record(t0 + ms(500), 200);
        h.record(t0 + ms(750), 300);
        // Caught up with everything before the probe.
        assert_eq!(h.lag(300, t0 + ms(800)), Some(Duration::ZERO));
        // Replayed 100: caught up as of the 250 ms sample, behind since.
        assert_eq!(h.lag(100, t0 + ms(800)), Some(ms(550)));
        assert_eq!(h.lag(250, t0 + ms(1000)), Some(ms(500)));
        // A probe before any primary sample knows nothing.
        assert_eq!(h.lag(0, t0 - ms(1)), None);
        // A new primary whose positions start lower resets the history.
        h.record(t0 + ms(1000), 50);
        assert_eq!(h.lag(50, t0 + ms(1001)), Some(Duration::ZERO));
    }

    fn needs(max_lag_ms: u64, min_lsn: u64, now: Instant) -> ReadNeeds {
        ReadNeeds {
            max_lag: Duration::from_millis(max_lag_ms),
            min_lsn,
            now,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        // Feature: db-cache-optimization, Property 22: Replication Lag Bounds
        #[test]
        fn no_replica_over_the_bound_or_with_an_old_sample_is_eligible(
            lag_ms in 0u64..5000,
            age_ms in 0u64..5000,
            max_lag_ms in 0u64..5000,
            replay in 0u64..1000,
            min_lsn in 0u64..1000,
            down in any::<bool>(),
            weight in 0u32..3,
        ) {
            let now = Instant::now() + Duration::from_secs(10);
            let s = LagSample {
                at: now - Duration::from_millis(age_ms),
                replay_lsn: replay,
                lag: Duration::from_millis(lag_ms),
            };
            let ok = eligible(Some(s), down, weight, &needs(max_lag_ms, min_lsn, now));
            if ok {
                prop_assert!(lag_ms <= max_lag_ms && age_ms <= max_lag_ms);
                prop_assert!(replay >= min_lsn && !down && weight > 0);
            } else {
                prop_assert!(lag_ms > max_lag_ms || age_ms > max_lag_ms || replay < min_lsn
                    || down || weight == 0);
            }
            prop_assert!(!eligible(None, false, 1, &needs(max_lag_ms, 0, now)));
        }

        // Feature: db-cache-optimization, Property 10: Read Routing to Replicas
        // Feature: db-cache-optimization, Property 12: Replica Lag Fallback
        #[test]
        fn reads_go_to_an_eligible_replica_whenever_one_exists(
            replicas in proptest::collection::vec(
                (0u64..3000, 0u64..3000, 0u64..100, any::<bool>(), 0u32..4, any::<bool>()),
                0..6,
            ),
            max_lag_ms in 0u64..3000,
            min_lsn in 0u64..100,
            reads in 1usize..40,
        ) {
            let now = Instant::now() + Duration::from_secs(10);
            let views: Vec<ReplicaView> = replicas
                .iter()
                .enumerate()
                .map(|(i, &(lag, age, replay, down, weight, sampled))| ReplicaView {
                    sample: sampled.then(|| LagSample {
                        at: now - Duration::from_millis(age),
                        replay_lsn: replay,
                        lag: Duration::from_millis(lag),
                    }),
                    down,
                    candidate: super::super::balancer::Candidate::new(i, weight),
                })
                .collect();
            let n = needs(max_lag_ms, min_lsn, now);
            let ok: Vec<bool> = views
                .iter()
                .map(|v| eligible(v.sample, v.down, v.candidate.weight, &n))
                .collect();
            let balancer = super::super::balancer::Balancer::new();
            for _ in 0..reads {
                match choose(&views, &n, &balancer) {
                    Target::Replica(i) => prop_assert!(ok[i], "read sent to ineligible replica {i}"),
                    Target::Primary => prop_assert!(!ok.iter().any(|&e| e), "an eligible replica was skipped"),
                }
            }
        }

        /// The lag estimate never understates the true lag (the primary first wrote past the
        /// replica's position after the last sample it had caught up with) and overstates it
        /// by at most one probe period.
        #[test]
        fn lag_estimate_is_never_below_the_truth(
            steps in proptest::collection::vec((1u64..400, 0u64..50), 1..60),
            replay_at in 0usize..60,
            probe_after_ms in 0u64..400,
        ) {
            let h = PrimaryHistory::default();
            let t0 = Instant::now();
            let (mut t, mut lsn) = (0u64, 0u64);
            let mut samples = Vec::new();
            for (dt, dl) in &steps {
                t += dt;
                lsn += dl;
                h.record(t0 + Duration::from_millis(t), lsn);
                samples.push((t, lsn));
            }
            let replay = samples[replay_at.min(samples.len() - 1)].1;
            let probed = t + probe_after_ms;
            let lag = h.lag(replay, t0 + Duration::from_millis(probed)).unwrap();
            // The first sample showing WAL the replica lacks.
            let first_missing = samples.iter().find(|(_, l)| *l > replay).map(|(t, _)| *t);
            let last_caught_up = samples.iter().rev().find(|(_, l)| *l <= replay).map(|(t, _)| *t);
            match first_missing {
                None => prop_assert_eq!(lag, Duration::ZERO),
                Some(tm) => {
                    prop_assert!(lag >= Duration::from_millis(probed - tm));
                    if let Some(tc) = last_caught_up {
                        prop_assert_eq!(lag, Duration::from_millis(probed - tc));
                    }
                }
            }
        }
    }
}
