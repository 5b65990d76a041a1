//! Stage 5 support: a per-backend circuit breaker, so a dead backend fails calls fast instead
//! of tying up the broker's connections and the callers' time.
//!
//! Closed → (N consecutive failures) → Open → (cool-down passed) → HalfOpen: exactly one
//! probe call goes through; its success closes the circuit, its failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// A circuit breaker for one backend.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// Permission to make one call; report its result with [`CallPermit::record`]. A permit
/// dropped without a result (the call was cancelled) counts as a failure, so a half-open
/// probe that never finishes cannot wedge the breaker.
#[derive(Debug)]
pub struct CallPermit<'a> {
    breaker: &'a CircuitBreaker,
    done: bool,
}

impl CallPermit<'_> {
    /// Records whether the call succeeded (the backend is healthy).
    pub fn record(mut self, success: bool) {
        self.done = true;
        self.breaker.record(success);
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(false);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Lets a call through, or says how long until the circuit may let one through.
    pub fn acquire(&self) -> Result<CallPermit<'_>, Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => {}
            State::Open { until } if now >= until => *state = State::HalfOpen,
            State::Open { until } => return Err(until - now),
            // A probe is in flight; its outcome decides. Callers retry after a short pause.
            State::HalfOpen => return Err(Duration::from_secs(1)),
        }
        Ok(CallPermit {
            breaker: self,
            done: false,
        })
    }

    /// Whether the circuit is currently refusing calls.
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn record(&self, success: bool) {
        let mut state = self.lock();
        *state = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            // Threshold reached, or a failed probe (or a late failure while already open).
            (_, false) => {
                tracing::warn!(
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit opened"
                );
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value, valid even if a holder panicked: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = CircuitBreaker::new(2, Duration::from_millis(20));
        b.acquire().unwrap().record(false);
        assert!(!b.is_open());
        b.acquire().unwrap().record(false);
        assert!(b.is_open());
        assert!(b.acquire().is_err());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.acquire().unwrap();
        assert!(b.acquire().is_err(), "only one probe while half-open");
        probe.record(true);
        assert!(!b.is_open());
        assert!(b.acquire().is_ok());
    }

    #[test]
    fn a_failed_or_dropped_probe_reopens() {
        let b = CircuitBreaker::new(1, Duration::from_millis(10));
        b.acquire().unwrap().record(false);
        std::thread::sleep(Duration::from_millis(15));
        drop(b.acquire().unwrap());
        assert!(b.is_open());
        assert!(b.acquire().is_err());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(60));
        b.acquire().unwrap().record(false);
        b.acquire().unwrap().record(true);
        b.acquire().unwrap().record(false);
        assert!(!b.is_open());
    }
}
