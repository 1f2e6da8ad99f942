//! The one clock of a run: every call, return, watch response and fault
//! is stamped from it, so the checker's real-time order and the nemesis
//! timeline compare.

use std::time::{Duration, Instant};

/// Monotonic nanoseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// A stamp as seconds since the start, for timelines.
    pub fn seconds(stamp: u64) -> f64 {
        Duration::from_nanos(stamp).as_secs_f64()
    }
}
