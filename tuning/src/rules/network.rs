//! Network rules: every peer reachable, and how far away the farthest is.

use crate::facts::NetworkFacts;
use crate::measure::latency::human_us;
use crate::measure::PeerMeasurement;
use crate::rules::{Area, Finding, Verdict};

/// Above this RTT peers are in different zones or regions, and etcd's
/// default 100 ms heartbeat / 1 s election timeout start to flap.
pub const FAR_PEER_RTT_US: f64 = 10_000.0;

/// An accept queue shorter than this overflows when many clients (an
/// apiserver fleet) reconnect at once.
pub const SOMAXCONN_MIN: u64 = 1024;

pub fn evaluate(network: &NetworkFacts, peers: &[PeerMeasurement]) -> Vec<Finding> {
    let mut findings = vec![sysctl(network), summary(peers)];
    findings.extend(peers.iter().map(peer));
    findings
}

fn sysctl(network: &NetworkFacts) -> Finding {
    let show = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let value = format!(
        "somaxconn={} tcp_max_syn_backlog={} tcp_slow_start_after_idle={}",
        show(network.somaxconn),
        show(network.tcp_max_syn_backlog),
        show(network.tcp_slow_start_after_idle)
    );
    let mut problems = Vec::new();
    if network.somaxconn.is_some_and(|v| v < SOMAXCONN_MIN) {
        problems.push("a short accept queue drops SYNs when many clients reconnect at once, and each retry waits a second");
    }
    if network.tcp_slow_start_after_idle == Some(1) {
        problems.push("peer links idle between heartbeats restart from a small congestion window, slowing the next burst of entries");
    }
    if problems.is_empty() {
        Finding::new("network.sysctl", Area::Network, Verdict::Ok, value)
            .detail("accept queues and idle connections are set for bursty cluster traffic")
    } else {
        Finding::new("network.sysctl", Area::Network, Verdict::Info, value)
            .detail(problems.join("; "))
            .fix("net.core.somaxconn=4096, net.ipv4.tcp_max_syn_backlog=4096, net.ipv4.tcp_slow_start_after_idle=0 (tuning/profiles/90-basalt.conf)")
    }
}

fn summary(peers: &[PeerMeasurement]) -> Finding {
    if peers.is_empty() {
        return Finding::new(
            "network.peers",
            Area::Network,
            Verdict::Info,
            "no --peer-urls given",
        )
        .detail(
            "pass the other members' peer URLs to measure round-trip times and derive the timeouts",
        );
    }
    let unreachable = peers.iter().filter(|p| !p.reachable).count();
    let max_rtt = peers
        .iter()
        .filter_map(|p| p.rtt_max_us)
        .fold(0.0, f64::max);
    let value = format!(
        "{} of {} reachable, max RTT {}",
        peers.len() - unreachable,
        peers.len(),
        human_us(max_rtt)
    );
    if unreachable > 0 {
        Finding::new("network.peers", Area::Network, Verdict::Fail, value)
            .detail("a member that cannot reach its peers cannot join or keep a quorum")
            .fix("see the failing network.peer items")
    } else if max_rtt >= FAR_PEER_RTT_US {
        Finding::new("network.peers", Area::Network, Verdict::Warn, value)
            .detail("peers are far apart: etcd's default timeouts (100 ms / 1 s) leave little margin; use `basalt-tune recommend`")
            .fix("set --heartbeat-interval and --election-timeout from `basalt-tune recommend --peer-urls …`")
    } else {
        Finding::new("network.peers", Area::Network, Verdict::Ok, value)
            .detail("all peers reachable and close")
    }
}

fn peer(measurement: &PeerMeasurement) -> Finding {
    let id = format!("network.peer[{}]", measurement.url);
    if !measurement.reachable {
        let error = measurement
            .error
            .clone()
            .unwrap_or_else(|| "unknown error".into());
        return Finding::new(id, Area::Network, Verdict::Fail, format!("unreachable: {error}"))
            .detail("no TCP connection to the peer URL")
            .fix("check the URL, that the peer is up and listens there (--listen-peer-urls), and firewalls between the nodes");
    }
    let (min, median, max) = (
        measurement.rtt_min_us.unwrap_or(0.0),
        measurement.rtt_median_us.unwrap_or(0.0),
        measurement.rtt_max_us.unwrap_or(0.0),
    );
    let mut value = format!(
        "RTT min {} median {} max {} ({} connects",
        human_us(min),
        human_us(median),
        human_us(max),
        measurement.connects
    );
    if measurement.failures > 0 {
        value.push_str(&format!(", {} failed", measurement.failures));
    }
    value.push(')');
    let verdict = if measurement.failures > 0 {
        Verdict::Warn
    } else {
        Verdict::Ok
    };
    let finding = Finding::new(id, Area::Network, verdict, value)
        .detail("TCP connect time: one SYN/SYN-ACK round trip to the peer's listener");
    if measurement.failures > 0 {
        finding.fix("some connects failed: look for packet loss or a saturated peer")
    } else {
        finding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reachable(url: &str, max_us: f64) -> PeerMeasurement {
        PeerMeasurement {
            url: url.into(),
            address: Some("10.0.0.2:2380".into()),
            reachable: true,
            connects: 5,
            failures: 0,
            rtt_min_us: Some(max_us / 2.0),
            rtt_median_us: Some(max_us * 0.7),
            rtt_max_us: Some(max_us),
            error: None,
        }
    }

    #[test]
    fn no_peers_is_info_and_unreachable_fails() {
        let none = evaluate(&NetworkFacts::default(), &[]);
        assert_eq!(none.len(), 2);
        assert_eq!(none[1].verdict, Verdict::Info);

        let down = PeerMeasurement {
            reachable: false,
            connects: 0,
            failures: 1,
            rtt_min_us: None,
            rtt_median_us: None,
            rtt_max_us: None,
            error: Some("cannot connect to 10.0.0.3:2380: Connection refused".into()),
            ..reachable("http://10.0.0.3:2380", 0.0)
        };
        let findings = evaluate(
            &NetworkFacts::default(),
            &[reachable("http://10.0.0.2:2380", 300.0), down],
        );
        assert_eq!(findings.len(), 4);
        assert_eq!(findings[1].verdict, Verdict::Fail);
        assert_eq!(findings[2].verdict, Verdict::Ok);
        assert_eq!(findings[3].id, "network.peer[http://10.0.0.3:2380]");
        assert!(findings[3].value.contains("Connection refused"));
    }

    #[test]
    fn far_peers_warn() {
        let findings = evaluate(
            &NetworkFacts::default(),
            &[reachable("http://a:2380", 40_000.0)],
        );
        assert_eq!(findings[1].verdict, Verdict::Warn);
    }

    #[test]
    fn network_sysctls() {
        let defaults = NetworkFacts {
            somaxconn: Some(128),
            tcp_max_syn_backlog: Some(256),
            tcp_slow_start_after_idle: Some(1),
        };
        let finding = &evaluate(&defaults, &[])[0];
        assert_eq!(finding.verdict, Verdict::Info);
        assert!(
            finding.detail.contains("accept queue") && finding.detail.contains("congestion window")
        );
        let tuned = NetworkFacts {
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(4096),
            tcp_slow_start_after_idle: Some(0),
        };
        assert_eq!(evaluate(&tuned, &[])[0].verdict, Verdict::Ok);
    }
}
