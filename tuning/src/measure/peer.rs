//! Round-trip time to peers, measured as TCP connect time: a connect
//! completes after one SYN / SYN-ACK exchange, so it costs one network
//! round trip plus the peer kernel's accept work, and needs no protocol
//! (TLS or not) on the other side. Every wait is bounded.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::TuneError;

/// A peer to measure, parsed from an etcd-style URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    pub url: String,
    /// `host:port`, ready for name resolution.
    pub authority: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerMeasurement {
    pub url: String,
    /// The address connected to, once resolved.
    pub address: Option<String>,
    pub reachable: bool,
    /// Connects that succeeded; RTT figures come from these.
    pub connects: usize,
    pub failures: usize,
    pub rtt_min_us: Option<f64>,
    pub rtt_median_us: Option<f64>,
    pub rtt_max_us: Option<f64>,
    /// What went wrong, for an unreachable peer.
    pub error: Option<String>,
}

/// How many connects per peer and how long each may take.
#[derive(Debug, Clone, Copy)]
pub struct PeerProbeConfig {
    pub samples: usize,
    pub timeout: Duration,
}

impl Default for PeerProbeConfig {
    fn default() -> Self {
        Self {
            samples: 5,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Parses `http://host:port`, `https://host:port[/path]`, `host:port` or
/// `[v6]:port`. A port is required: etcd peer URLs always carry one and
/// guessing would measure the wrong listener.
pub fn parse_peer_url(url: &str) -> Result<PeerTarget, TuneError> {
    let bad = |reason: &str| TuneError::BadPeerUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim();
    let rest = match trimmed.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("scheme {scheme:?} is not http or https"))),
        None => trimmed,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let no_port = || bad("no port (expected host:port, e.g. http://10.0.0.2:2380)");
    if authority.ends_with(']') {
        return Err(no_port());
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(no_port)?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address needs brackets: http://[::1]:2380"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad(&format!("port {port:?} is not a number from 1 to 65535")))?;
    if port == 0 {
        return Err(bad("port 0 is not a listening port"));
    }
    Ok(PeerTarget {
        url: trimmed.to_owned(),
        authority: format!("{host}:{port}"),
    })
}

/// Measures one peer; an unreachable peer is a result, not an error.
pub fn measure(target: &PeerTarget, config: PeerProbeConfig) -> PeerMeasurement {
    let mut result = PeerMeasurement {
        url: target.url.clone(),
        address: None,
        reachable: false,
        connects: 0,
        failures: 0,
        rtt_min_us: None,
        rtt_median_us: None,
        rtt_max_us: None,
        error: None,
    };
    let address = match resolve(&target.authority, config.timeout) {
        Ok(address) => address,
        Err(error) => {
            result.error = Some(error);
            return result;
        }
    };
    result.address = Some(address.to_string());

    let mut samples = Vec::with_capacity(config.samples);
    let mut last_error = None;
    for _ in 0..config.samples {
        let start = Instant::now();
        match TcpStream::connect_timeout(&address, config.timeout) {
            Ok(stream) => {
                samples.push(start.elapsed());
                drop(stream);
            }
            Err(error) => {
                result.failures += 1;
                last_error = Some(if error.kind() == std::io::ErrorKind::TimedOut {
                    format!("no answer within {:?} (timed out)", config.timeout)
                } else {
                    error.to_string()
                });
                // A refused or unroutable peer will not change its mind
                // within a second; don't spend the whole budget on it.
                if samples.is_empty() {
                    break;
                }
            }
        }
    }
    samples.sort_unstable();
    result.connects = samples.len();
    result.reachable = !samples.is_empty();
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let micros = |d: &Duration| d.as_nanos() as f64 / 1e3;
        result.rtt_min_us = Some(micros(first));
        result.rtt_median_us = Some(micros(&samples[samples.len() / 2]));
        result.rtt_max_us = Some(micros(last));
    }
    if !result.reachable {
        result.error = last_error.map(|e| format!("cannot connect to {address}: {e}"));
    }
    result
}

/// Resolves on a helper thread so a hung DNS server costs at most
/// `timeout` (std's resolver has no timeout of its own).
fn resolve(authority: &str, timeout: Duration) -> Result<SocketAddr, String> {
    let (sender, receiver) = mpsc::channel();
    let owned = authority.to_owned();
    thread::Builder::new()
        .name("peer-resolve".into())
        .spawn(move || {
            let result = owned
                .to_socket_addrs()
                .map(|mut addrs| addrs.next())
                .map_err(|e| e.to_string());
            let _ = sender.send(result);
        })
        .map_err(|e| format!("cannot start resolver thread: {e}"))?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(Some(address))) => Ok(address),
        Ok(Ok(None)) => Err(format!("{authority} resolves to no address")),
        Ok(Err(error)) => Err(format!("cannot resolve {authority}: {error}")),
        Err(_) => Err(format!(
            "resolving {authority} took longer than {timeout:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn parses_etcd_style_urls() {
        let t = parse_peer_url("http://10.0.0.2:2380").unwrap();
        assert_eq!(t.authority, "10.0.0.2:2380");
        let t = parse_peer_url("https://node-1.example:2380/x").unwrap();
        assert_eq!(t.authority, "node-1.example:2380");
        let t = parse_peer_url("[::1]:2380").unwrap();
        assert_eq!(t.authority, "[::1]:2380");
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (url, needle) in [
            ("unix://sock", "scheme"),
            ("http://host", "no port"),
            ("http://host:http", "not a number"),
            ("http://host:0", "port 0"),
            ("http://:2380", "no host"),
            ("[::1]", "no port"),
            ("::1:2380", "brackets"),
            ("", "no host"),
        ] {
            let err = parse_peer_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url:?}: {err}");
        }
    }

    #[test]
    fn measures_a_listening_peer_and_reports_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = parse_peer_url(&format!("http://127.0.0.1:{port}")).unwrap();
        let config = PeerProbeConfig {
            samples: 3,
            timeout: Duration::from_secs(1),
        };
        let up = measure(&target, config);
        assert!(up.reachable, "{up:?}");
        assert_eq!(up.connects, 3);
        assert!(up.rtt_min_us.unwrap() > 0.0);
        assert!(up.rtt_max_us.unwrap() < 1e6);

        drop(listener);
        let down = measure(&target, config);
        assert!(!down.reachable);
        assert!(down.error.unwrap().contains("cannot connect"));
    }
}
