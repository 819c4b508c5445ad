//! The balancer: which eligible replica serves the next read. It is smooth weighted round-robin
//! (nginx's algorithm) over the replicas the router found eligible (healthy, within MAXLAG), each
//! with its *effective* weight: the configured weight times a health factor from its CPU and its
//! response time. It is pure logic: the caller supplies CPU (from `nodemetrics`) and response
//! times (an `Ewma` per replica); nothing here does I/O or decides eligibility, and no replica
//! eligible means the caller reads from the primary.
//!
//! Smooth weighted round-robin: on every pick each candidate's current weight grows by its
//! effective weight, the largest current weight wins (the first in `candidates` on a tie) and
//! the winner's current weight drops by the sum of all effective weights. With weights 5, 1, 1
//! it picks `a a b a c a a`, never `a a a a a b c`, and over any full cycle of `sum` picks each
//! replica is picked exactly `weight` times. Current weights are kept per replica `id` (stable
//! across calls, whatever the order or subset of `candidates`), so a replica left out of one
//! pick (another query's MAXLAG) keeps its place in the rotation.
//!
//! Health factors (DESIGN.md, "Pools, router, balancer"), multiplied:
//! - **CPU**: a replica at or over `HIGH_CPU` (80 %) busy gets `HIGH_CPU_FACTOR` (a quarter) of
//!   its weight; below it, or unknown (`None`, NaN), the full weight. A step rather than a
//!   slope: CPU below 80 % says little about spare capacity, and a replica over it still gets
//!   some reads so its response time keeps being measured.
//! - **Response time**: `(fastest + RESPONSE_SLACK_MS) / (own + RESPONSE_SLACK_MS)`, clamped to
//!   `[MIN_RESPONSE_FACTOR, 1]`, where `fastest` is the lowest response-time EWMA among the
//!   candidates with a weight. The fastest replica keeps its weight, one twice as slow gets about
//!   half, and none drops below a fifth (it must keep being measured to recover). The slack of
//!   one millisecond keeps sub-millisecond noise on a LAN from swinging shares. Unknown (no
//!   sample yet, NaN, negative) means factor 1.
//!
//! A replica with configured weight 0 is never picked.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// CPU busy fraction from which a replica's traffic is reduced.
pub const HIGH_CPU: f64 = 0.80;
/// What is left of the weight of a replica at or over `HIGH_CPU`.
pub const HIGH_CPU_FACTOR: f64 = 0.25;
/// The smallest response-time factor: the slowest replica keeps a fifth of its weight.
pub const MIN_RESPONSE_FACTOR: f64 = 0.2;
/// Added to both response times before comparing them (milliseconds).
pub const RESPONSE_SLACK_MS: f64 = 1.0;
/// The weight of a new sample in `Ewma::new()`.
pub const EWMA_ALPHA: f64 = 0.2;
/// Past this many replica ids in the state, ids absent from a pick are forgotten.
const MAX_TRACKED: usize = 1024;

/// One eligible replica, as the router sees it at the time of a pick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Stable replica index (its position in the configuration).
    pub id: usize,
    /// Configured weight.
    pub weight: u32,
    /// CPU busy fraction, 0..1; `None` when unknown (no metrics URL, no sample yet).
    pub cpu: Option<f64>,
    /// Response-time EWMA in milliseconds; `None` when unknown.
    pub ewma_ms: Option<f64>,
}

impl Candidate {
    /// A candidate with nothing known about its health.
    pub fn new(id: usize, weight: u32) -> Candidate {
        Candidate {
            id,
            weight,
            cpu: None,
            ewma_ms: None,
        }
    }
}

/// The CPU factor of the module documentation.
pub fn cpu_factor(cpu: Option<f64>) -> f64 {
    match cpu {
        Some(busy) if busy >= HIGH_CPU => HIGH_CPU_FACTOR,
        _ => 1.0,
    }
}

/// The response-time factor of the module documentation, for a replica whose EWMA is `own`
/// when the fastest candidate's is `fastest`.
pub fn response_factor(own: Option<f64>, fastest: Option<f64>) -> f64 {
    match (usable_ms(own), usable_ms(fastest)) {
        (Some(own), Some(fastest)) => ((fastest + RESPONSE_SLACK_MS) / (own + RESPONSE_SLACK_MS))
            .clamp(MIN_RESPONSE_FACTOR, 1.0),
        _ => 1.0,
    }
}

/// The weight in force for `c` among `all` (the candidates of the same pick; `c` may or may not
/// be one of them): what `pick` uses and DB.STATUS shows. 0 for a replica never picked.
pub fn effective_weight(c: &Candidate, all: &[Candidate]) -> f64 {
    let fastest = match (
        fastest_ms(all),
        usable_ms(c.ewma_ms).filter(|_| c.weight > 0),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    weight_with(c, fastest)
}

fn weight_with(c: &Candidate, fastest: Option<f64>) -> f64 {
    if c.weight == 0 {
        return 0.0;
    }
    f64::from(c.weight) * cpu_factor(c.cpu) * response_factor(c.ewma_ms, fastest)
}

/// A response time that means something: finite and not negative.
fn usable_ms(ms: Option<f64>) -> Option<f64> {
    ms.filter(|v| v.is_finite() && *v >= 0.0)
}

/// The lowest known response time among candidates that can be picked.
fn fastest_ms(all: &[Candidate]) -> Option<f64> {
    all.iter()
        .filter(|c| c.weight > 0)
        .filter_map(|c| usable_ms(c.ewma_ms))
        .reduce(f64::min)
}

/// Smooth weighted round-robin state: the current weight of each replica id.
#[derive(Debug, Default)]
pub struct Balancer {
    current: Mutex<HashMap<usize, f64>>,
}

impl Balancer {
    pub fn new() -> Balancer {
        Balancer::default()
    }

    /// The index in `candidates` of the replica to read from, `None` when no candidate has a
    /// weight (the caller reads from the primary).
    pub fn pick(&self, candidates: &[Candidate]) -> Option<usize> {
        let fastest = fastest_ms(candidates);
        let mut current = self.current.lock();
        if current.len() > MAX_TRACKED {
            current.retain(|id, _| candidates.iter().any(|c| c.id == *id));
        }
        let mut total = 0.0;
        let mut best: Option<(usize, usize, f64)> = None;
        for (index, c) in candidates.iter().enumerate() {
            let weight = weight_with(c, fastest);
            if !(weight > 0.0 && weight.is_finite()) {
                continue;
            }
            total += weight;
            let slot = current.entry(c.id).or_insert(0.0);
            if !slot.is_finite() {
                *slot = 0.0;
            }
            *slot += weight;
            if best.is_none_or(|(_, _, value)| *slot > value) {
                best = Some((index, c.id, *slot));
            }
        }
        let (index, id, _) = best?;
        if let Some(slot) = current.get_mut(&id) {
            *slot -= total;
        }
        Some(index)
    }

    /// Forgets every replica's place in the rotation.
    pub fn reset(&self) {
        self.current.lock().clear();
    }
}

/// An exponentially weighted moving average of response times in milliseconds, updated from
/// any thread without a lock. The first sample is taken as it is.
#[derive(Debug)]
pub struct Ewma {
    /// The average's `f64` bits, or `EMPTY`.
    bits: AtomicU64,
    alpha: f64,
}

/// No sample yet: a NaN pattern arithmetic on finite numbers never produces.
const EMPTY: u64 = u64::MAX;

impl Default for Ewma {
    fn default() -> Ewma {
        Ewma::new()
    }
}

impl Ewma {
    /// An average with `EWMA_ALPHA` (each sample weighs a fifth).
    pub fn new() -> Ewma {
        Ewma::with_alpha(EWMA_ALPHA)
    }

    /// An average where each new sample weighs `alpha` (clamped to (0, 1]; `EWMA_ALPHA` when
    /// not a number in that range).
    pub fn with_alpha(alpha: f64) -> Ewma {
        let alpha = if alpha > 0.0 && alpha <= 1.0 {
            alpha
        } else {
            EWMA_ALPHA
        };
        Ewma {
            bits: AtomicU64::new(EMPTY),
            alpha,
        }
    }

    /// Adds a sample; a negative or non-finite one is ignored.
    pub fn observe(&self, ms: f64) {
        if !(ms.is_finite() && ms >= 0.0) {
            return;
        }
        let alpha = self.alpha;
        let _ = self
            .bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let next = if bits == EMPTY {
                    ms
                } else {
                    let old = f64::from_bits(bits);
                    old + alpha * (ms - old)
                };
                Some(next.to_bits())
            });
    }

    /// The average, `None` before the first sample.
    pub fn value(&self) -> Option<f64> {
        match self.bits.load(Ordering::Acquire) {
            EMPTY => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// Back to no sample (e.g. after the instance was replaced).
    pub fn reset(&self) {
        self.bits.store(EMPTY, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(b: &Balancer, candidates: &[Candidate], picks: usize) -> Vec<u64> {
        let mut counts = vec![0u64; candidates.len()];
        for _ in 0..picks {
            let i = b.pick(candidates).expect("a candidate has a weight");
            counts[i] += 1;
        }
        counts
    }

    /// Ids that differ from positions, so a mix-up between the two shows.
    fn weighted(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate::new(i * 3 + 7, w))
            .collect()
    }

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let b = Balancer::new();
        let c = weighted(&[5, 1, 1]);
        let seq: Vec<usize> = (0..14).map(|_| b.pick(&c).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn nothing_to_pick() {
        let b = Balancer::new();
        assert_eq!(b.pick(&[]), None);
        assert_eq!(b.pick(&weighted(&[0, 0])), None);
        // Zero weight is skipped, whatever its health.
        let mut c = weighted(&[0, 3]);
        c[0].ewma_ms = Some(0.0);
        assert!((0..10).all(|_| b.pick(&c) == Some(1)));
        assert_eq!(effective_weight(&c[0], &c), 0.0);
    }

    #[test]
    fn state_follows_the_id_not_the_position() {
        let b = Balancer::new();
        let a = Candidate::new(1, 2);
        let z = Candidate::new(2, 1);
        let mut seen = Vec::new();
        for k in 0..6 {
            // Same two replicas, listed in alternating order.
            let list = if k % 2 == 0 { [a, z] } else { [z, a] };
            let i = b.pick(&list).unwrap();
            seen.push(list[i].id);
        }
        assert_eq!(seen.iter().filter(|&&id| id == 1).count(), 4);
        assert_eq!(seen.iter().filter(|&&id| id == 2).count(), 2);
    }

    #[test]
    fn factors() {
        assert_eq!(cpu_factor(None), 1.0);
        assert_eq!(cpu_factor(Some(0.79)), 1.0);
        assert_eq!(cpu_factor(Some(0.80)), HIGH_CPU_FACTOR);
        assert_eq!(cpu_factor(Some(f64::NAN)), 1.0);
        assert_eq!(response_factor(None, Some(1.0)), 1.0);
        assert_eq!(response_factor(Some(3.0), Some(3.0)), 1.0);
        assert_eq!(response_factor(Some(3.0), Some(1.0)), 0.5);
        assert_eq!(
            response_factor(Some(1000.0), Some(1.0)),
            MIN_RESPONSE_FACTOR
        );
        assert_eq!(response_factor(Some(f64::INFINITY), Some(1.0)), 1.0);
        assert_eq!(response_factor(Some(-1.0), Some(1.0)), 1.0);

        let mut c = weighted(&[10, 10]);
        c[0].ewma_ms = Some(1.0);
        c[1].ewma_ms = Some(3.0);
        c[1].cpu = Some(0.9);
        assert_eq!(effective_weight(&c[0], &c), 10.0);
        assert_eq!(effective_weight(&c[1], &c), 10.0 * 0.25 * 0.5);
        // Alone, a replica is its own fastest.
        assert_eq!(effective_weight(&c[1], &[]), 2.5);
    }

    #[test]
    fn unusable_numbers_never_break_a_pick() {
        let b = Balancer::new();
        let mut c = weighted(&[u32::MAX, u32::MAX, 1]);
        c[0].cpu = Some(f64::NAN);
        c[1].ewma_ms = Some(f64::NAN);
        c[2].ewma_ms = Some(f64::MAX);
        for _ in 0..1000 {
            assert!(b.pick(&c).is_some());
        }
    }

    #[test]
    fn state_is_bounded() {
        let b = Balancer::new();
        for id in 0..5000 {
            b.pick(&[Candidate::new(id, 1)]);
        }
        assert!(b.current.lock().len() <= MAX_TRACKED + 1);
    }

    #[test]
    fn ewma() {
        let e = Ewma::new();
        assert_eq!(e.value(), None);
        e.observe(f64::NAN);
        e.observe(-1.0);
        assert_eq!(e.value(), None);
        e.observe(10.0);
        assert_eq!(e.value(), Some(10.0));
        e.observe(20.0);
        assert!((e.value().unwrap() - 12.0).abs() < 1e-9);
        e.reset();
        assert_eq!(e.value(), None);

        let e = std::sync::Arc::new(Ewma::with_alpha(f64::NAN));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| e.observe(5.0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(e.value(), Some(5.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        // Feature: db-cache-optimization, Property 35: Load Distribution Across Replicas
        #[test]
        fn shares_follow_the_weights(
            weights in proptest::collection::vec(0u32..=100, 1..8),
            cycles in 1usize..4,
        ) {
            let b = Balancer::new();
            let c = weighted(&weights);
            let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            if sum == 0 {
                prop_assert_eq!(b.pick(&c), None);
                return Ok(());
            }
            // Smooth weighted round-robin is exact over whole cycles of `sum` picks.
            let got = counts(&b, &c, cycles * sum as usize);
            let want: Vec<u64> = weights.iter().map(|&w| cycles as u64 * u64::from(w)).collect();
            prop_assert_eq!(got, want);
        }

        // Feature: db-cache-optimization, Property 36: Traffic Reduction on High CPU
        #[test]
        fn high_cpu_reduces_the_share(
            weights in proptest::collection::vec(1u32..=100, 2..7),
            cool in proptest::collection::vec(proptest::option::of(0.0f64..0.8), 7),
            hot in any::<proptest::sample::Index>(),
            hot_cpu in 0.8f64..=1.0,
        ) {
            let b = Balancer::new();
            let mut c = weighted(&weights);
            for (candidate, cpu) in c.iter_mut().zip(&cool) {
                candidate.cpu = *cpu;
            }
            let h = hot.index(c.len());
            let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let before = counts(&b, &c, sum as usize);

            // The same balancer, live: its state is back to zero after the full cycle. The hot
            // replica's weight is a quarter: a full cycle is 4·sum − 3·w picks.
            c[h].cpu = Some(hot_cpu);
            let cycle = 4 * sum - 3 * u64::from(weights[h]);
            let after = counts(&b, &c, cycle as usize);

            // Shares compared as fractions: before[i] / sum against after[i] / cycle.
            prop_assert!(after[h] * sum < before[h] * cycle, "{:?} then {:?}", before, after);
            for i in (0..c.len()).filter(|&i| i != h) {
                prop_assert!(after[i] * sum >= before[i] * cycle, "{:?} then {:?}", before, after);
            }
        }

        // Feature: db-cache-optimization, Property 37: Response Time Preference
        #[test]
        fn the_faster_replica_gets_more(
            weight in 1u32..=100,
            fast_ms in 0.0f64..1000.0,
            slower_by in 1.05f64..20.0,
            fast_first in any::<bool>(),
        ) {
            let b = Balancer::new();
            let fast = Candidate { ewma_ms: Some(fast_ms), ..Candidate::new(1, weight) };
            let slow = Candidate {
                ewma_ms: Some(fast_ms * slower_by + 0.05),
                ..Candidate::new(2, weight)
            };
            let c = if fast_first { [fast, slow] } else { [slow, fast] };
            let got = counts(&b, &c, 400);
            let (f, s) = if fast_first { (got[0], got[1]) } else { (got[1], got[0]) };
            prop_assert!(f > s, "fast {} ms: {}, slow: {}", fast_ms, f, s);
        }
    }
}
