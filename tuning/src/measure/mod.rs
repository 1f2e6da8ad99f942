//! Live measurements: what can only be known by trying (disk sync
//! latency, direct I/O, io_uring, peer round trips). Each is bounded in
//! count and time, and writes only inside a scratch directory it removes.

pub mod disk;
pub mod io_uring;
pub mod latency;
pub mod peer;

use serde::Serialize;

pub use disk::{DiskMeasurement, DiskProbeConfig};
pub use io_uring::IoUringProbe;
pub use latency::LatencySummary;
pub use peer::{PeerMeasurement, PeerProbeConfig, PeerTarget};

/// Everything measured on the host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measurements {
    pub disk: DiskMeasurement,
    pub io_uring: IoUringProbe,
    pub peers: Vec<PeerMeasurement>,
}
