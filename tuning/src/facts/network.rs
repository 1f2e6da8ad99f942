//! Network sysctls that shape peer and client traffic.

use serde::Serialize;

use crate::host_root::HostRoot;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NetworkFacts {
    /// `net.core.somaxconn`: the cap on every listener's accept queue.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections per listener.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_slow_start_after_idle`: 1 shrinks the congestion
    /// window of a connection that was idle for one RTO.
    pub tcp_slow_start_after_idle: Option<u64>,
}

impl NetworkFacts {
    pub fn gather(host: &HostRoot) -> Self {
        Self {
            somaxconn: host.read_u64("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: host.read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            tcp_slow_start_after_idle: host
                .read_u64("/proc/sys/net/ipv4/tcp_slow_start_after_idle"),
        }
    }
}
