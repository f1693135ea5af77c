//! Pace and patience: the shared send rate (`rate_per_second`) and the retry
//! delays for transient failures (exponential backoff with jitter).

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Spaces sends evenly at `rate` per second across all workers: each caller
/// reserves the next free slot and sleeps until it. No burst, so the rate over
/// any window of a few seconds is the configured one.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `rate` messages per second; 0 (or less) means no limit.
    pub fn new(rate: f64) -> RateLimiter {
        let interval = if rate > 0.0 && rate.is_finite() {
            Some(Duration::from_secs_f64(1.0 / rate))
        } else {
            None
        };
        RateLimiter {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Whether a rate is set at all.
    pub fn is_limited(&self) -> bool {
        self.interval.is_some()
    }

    /// The instant the next caller may go, reserving it.
    fn reserve(&self, now: Instant) -> Option<Instant> {
        let interval = self.interval?;
        let mut next = self.next.lock().expect("rate limiter lock");
        // A slot left unused in the past is not saved up: no burst after a pause.
        let slot = match *next {
            Some(t) if t > now => t,
            _ => now,
        };
        *next = Some(slot + interval);
        Some(slot)
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        if let Some(slot) = self.reserve(Instant::now()) {
            tokio::time::sleep_until(slot).await;
        }
    }
}

/// When to try again after the `attempt`-th transient failure (1-based):
/// `base · 2^(attempt-1)`, capped at one minute, times a random factor in [0.5, 1.5).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(Duration::from_secs(60));
    let jitter: f64 = rand::thread_rng().gen_range(0.5..1.5);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval_whoever_asks() {
        let r = RateLimiter::new(500.0);
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..1000).map(|_| r.reserve(t0).unwrap()).collect();
        assert_eq!(slots[0], t0);
        // 1000 slots at 500/s span 2 s minus one interval.
        let span = slots[999] - slots[0];
        let expected = Duration::from_secs_f64(999.0 / 500.0);
        assert!(
            span.abs_diff(expected) < Duration::from_micros(100),
            "{span:?}"
        );
    }

    #[test]
    fn an_idle_limiter_does_not_save_up_a_burst() {
        let r = RateLimiter::new(10.0);
        let t0 = Instant::now();
        r.reserve(t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(r.reserve(later), Some(later));
        assert_eq!(r.reserve(later), Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(RateLimiter::new(0.0).reserve(Instant::now()), None);
    }

    #[test]
    fn workers_sharing_the_limiter_get_distinct_evenly_spaced_slots() {
        let r = std::sync::Arc::new(RateLimiter::new(100.0));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..50).map(|_| r.reserve(t0).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Instant> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        for w in all.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap.abs_diff(Duration::from_millis(10)) < Duration::from_micros(10),
                "{gap:?}"
            );
        }
        assert_eq!(all.len(), 200);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for _ in 0..100 {
            let d1 = backoff(base, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(150));
            let d3 = backoff(base, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(600));
            assert!(backoff(base, 40) < Duration::from_secs(90));
        }
    }
}
