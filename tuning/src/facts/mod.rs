//! Facts about the host, read from `/proc` and `/sys` below a
//! [`HostRoot`](crate::host_root::HostRoot) so tests can feed recorded
//! trees. Gathering facts never changes the host and never fails: what a
//! kernel does not expose is `None`, and the rules say so.

pub mod cpu;
pub mod disk;
pub mod kernel;
pub mod memory;
pub mod network;

use std::path::Path;

use serde::Serialize;

use crate::host_root::HostRoot;

pub use cpu::CpuFacts;
pub use disk::{BlockDeviceFacts, DiskFacts, MountFacts};
pub use kernel::KernelFacts;
pub use memory::{Limit, MemoryFacts};
pub use network::NetworkFacts;

/// Everything read (not measured) about the host.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostFacts {
    pub cpu: CpuFacts,
    pub memory: MemoryFacts,
    pub disk: DiskFacts,
    pub kernel: KernelFacts,
    pub network: NetworkFacts,
}

impl HostFacts {
    pub fn gather(host: &HostRoot, data_dir: &Path) -> Self {
        Self {
            cpu: CpuFacts::gather(host),
            memory: MemoryFacts::gather(host),
            disk: DiskFacts::gather(host, data_dir),
            kernel: KernelFacts::gather(host),
            network: NetworkFacts::gather(host),
        }
    }
}
