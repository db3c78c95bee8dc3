//! Time as an input: the [`Clock`] the authority reads once per call, so the
//! rules that depend on it (leeway at `exp`, the refresh grace window, "revoked
//! before") are unit-tested at their exact edges on a fixed clock, beside the
//! wall-clock integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use crate::tokens::unix_micros;

/// Where the time comes from.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a fixed instant (Unix µs) that only
    /// moves when told to (tests).
    fixed: Option<Arc<AtomicI64>>,
}

/// One reading of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Now {
    /// Unix microseconds.
    pub micros: i64,
}

impl Now {
    /// Unix seconds (rounded down).
    pub fn seconds(self) -> i64 {
        self.micros.div_euclid(1_000_000)
    }

    /// Unix milliseconds (rounded down).
    pub fn millis(self) -> i64 {
        self.micros.div_euclid(1_000)
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { fixed: None }
    }

    /// A clock stopped at `micros` (Unix µs).
    pub fn fixed(micros: i64) -> Self {
        Clock {
            fixed: Some(Arc::new(AtomicI64::new(micros))),
        }
    }

    /// Moves a fixed clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.fixed {
            t.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
        }
    }

    /// The time now.
    pub fn now(&self) -> Now {
        match &self.fixed {
            Some(t) => Now {
                micros: t.load(Ordering::SeqCst),
            },
            None => Now {
                micros: unix_micros(SystemTime::now()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let c = Clock::fixed(1_500_000);
        assert_eq!(c.now().seconds(), 1);
        assert_eq!(c.now().millis(), 1_500);
        c.advance(Duration::from_millis(600));
        assert_eq!(c.now().micros, 2_100_000);
        assert_eq!(c.now().seconds(), 2);
        let s = Clock::system();
        assert!(s.now().seconds() > 1_700_000_000);
    }
}
