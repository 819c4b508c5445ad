//! Busy polling before sleep. After a client's request, the single-threaded runtime keeps
//! polling its sockets (a task that yields, so the runtime checks for I/O with a zero timeout)
//! for a short window instead of sleeping in `epoll_wait` at once. A thread that sleeps must
//! be woken by the next packet, and on a virtual machine whose idle vCPUs halt that wake-up
//! (an interrupt to a halted vCPU) costs the sender and the receiver several microseconds: the
//! one-client QUERY NOCACHE read and redis-benchmark at pipeline 1 both pay it on every request
//! (docs/performance.md). The window adapts as the kernel's haltpoll governor's does: it
//! doubles after a sleep shorter than `busy_poll_us` (spinning longer would have caught the next
//! request) and halves after a longer one (the spin was wasted), so a server with sparse traffic
//! stops spinning. `busy_poll_us = 0` turns it off. Only the single-threaded runtime spins (one
//! thread, or a process limited to one core): with several workers one of them holds the I/O
//! driver while it sleeps and a spinning task elsewhere could not see the sockets.

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The smallest window worth spinning; a shrinking window below it turns spinning off until
/// a short sleep grows it again.
const MIN_WINDOW: Duration = Duration::from_micros(10);

/// The spinner's state shared with the connections that report activity.
pub struct BusyPoll {
    max: Duration,
    /// Set by [`BusyPoll::touch`], cleared by the spinner each time it looks.
    active: AtomicBool,
    /// The spinner is sleeping: the next touch wakes it.
    asleep: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// A spinner whose window is at most `max` (zero: never spins).
    pub fn new(max: Duration) -> Self {
        BusyPoll {
            max,
            active: AtomicBool::new(false),
            asleep: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// A client's request arrived: keep (or start) spinning.
    #[inline]
    pub fn touch(&self) {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::Relaxed);
        }
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Whether this runtime can spin: a window is configured and the runtime is the
    /// single-threaded one.
    pub fn applies(&self) -> bool {
        !self.max.is_zero()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
    }

    /// The spinner task: sleeps until a request arrives, then yields to the runtime until no
    /// request has arrived for the current window, and adapts the window to how long it then
    /// slept. The time spent spinning is added to `spent`.
    pub async fn run(&self, spent: &Counter<f64, AtomicU64>) {
        let mut window = self.max;
        loop {
            self.asleep.store(true, Ordering::Release);
            let slept_at = Instant::now();
            self.wake.notified().await;
            window = next_window(window, slept_at.elapsed(), self.max);
            if window.is_zero() {
                continue;
            }
            self.active.store(false, Ordering::Relaxed);
            let started = Instant::now();
            let mut quiet_since = started;
            loop {
                tokio::task::yield_now().await;
                if self.active.swap(false, Ordering::Relaxed) {
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= window {
                    break;
                }
            }
            spent.inc_by(started.elapsed().as_secs_f64());
        }
    }
}

/// The window after a sleep of `slept`: doubled (at least [`MIN_WINDOW`], at most `max`) when
/// the sleep was short enough that spinning `max` would have caught its end, halved (zero once
/// below [`MIN_WINDOW`]) when it was longer.
fn next_window(window: Duration, slept: Duration, max: Duration) -> Duration {
    if slept <= max {
        (window * 2).max(MIN_WINDOW).min(max)
    } else {
        let half = window / 2;
        if half < MIN_WINDOW {
            Duration::ZERO
        } else {
            half
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(200);

    #[test]
    fn short_sleeps_grow_the_window_to_the_maximum() {
        let mut w = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..8 {
            w = next_window(w, Duration::from_micros(50), MAX);
            seen.push(w.as_micros());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 200, 200, 200]);
    }

    #[test]
    fn long_sleeps_shrink_the_window_to_zero() {
        let mut w = MAX;
        let mut seen = vec![];
        for _ in 0..6 {
            w = next_window(w, Duration::from_millis(5), MAX);
            seen.push(w.as_micros());
        }
        assert_eq!(seen, [100, 50, 25, 12, 0, 0]);
    }

    #[test]
    fn a_sleep_of_exactly_the_maximum_still_grows() {
        assert_eq!(
            next_window(Duration::from_micros(40), MAX, MAX).as_micros(),
            80
        );
        assert_eq!(
            next_window(
                Duration::from_micros(40),
                MAX + Duration::from_nanos(1),
                MAX
            )
            .as_micros(),
            20
        );
    }

    #[test]
    fn the_multi_threaded_runtime_does_not_spin() {
        let bp = BusyPoll::new(MAX);
        assert!(!bp.applies(), "outside a runtime");
        let ct = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(ct.block_on(async { bp.applies() }));
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert!(!mt.block_on(async { bp.applies() }));
        let off = BusyPoll::new(Duration::ZERO);
        assert!(!ct.block_on(async { off.applies() }));
    }

    /// The spinner really sleeps when nothing happens, and a touch wakes it.
    #[test]
    fn the_spinner_sleeps_when_idle_and_a_touch_wakes_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bp = std::sync::Arc::new(BusyPoll::new(MAX));
            let spent = Counter::<f64, AtomicU64>::default();
            let spinner = tokio::spawn({
                let (bp, spent) = (bp.clone(), spent.clone());
                async move { bp.run(&spent).await }
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(bp.asleep.load(Ordering::Acquire), "idle spinner sleeps");
            bp.touch();
            assert!(!bp.asleep.load(Ordering::Acquire), "a touch wakes it");
            // It spins for at most the window after the touch, then sleeps again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                bp.asleep.load(Ordering::Acquire),
                "asleep again after the window"
            );
            // It spun for a while (the window) and no longer than the 20 ms it was given.
            let s = spent.get();
            assert!(s > 0.0 && s < 0.02, "spun {s} s");
            spinner.abort();
        });
    }
}
