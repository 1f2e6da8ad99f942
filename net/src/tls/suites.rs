//! `--cipher-suites`, `--tls-min-version` and `--tls-max-version`: Go's
//! names mapped onto rustls (ring). rustls has only AEAD suites with
//! ECDHE key exchange; the other names Go knows (CBC, RC4, 3DES, RSA key
//! exchange) are refused with a message saying so. As in Go, the list
//! narrows TLS 1.2 only: TLS 1.3's suites are always offered.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// `--tls-min-version` / `--tls-max-version` values (etcd 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        })
    }
}

/// etcd's `tlsutil.GetTLSVersion`: `Ok(None)` for the empty default.
pub fn parse_tls_version(text: &str) -> Result<Option<TlsVersion>, String> {
    match text {
        "TLS1.2" => Ok(Some(TlsVersion::Tls12)),
        "TLS1.3" => Ok(Some(TlsVersion::Tls13)),
        "" => Ok(None),
        other => Err(format!(
            "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
        )),
    }
}

/// The protocol versions from `min` to `max` (newest when `None`).
pub(super) fn versions(
    min: TlsVersion,
    max: Option<TlsVersion>,
) -> Vec<&'static SupportedProtocolVersion> {
    let max = max.unwrap_or(TlsVersion::Tls13);
    let mut v = Vec::new();
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

/// Go's names of the TLS 1.2 suites rustls has (rustls names them alike).
fn rustls_suite(name: &str) -> Option<SupportedCipherSuite> {
    use ring::cipher_suite::*;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// Suites Go accepts that rustls does not implement.
const GO_ONLY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// ring's provider, its TLS 1.2 suites narrowed to `names` if any.
pub(super) fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, String> {
    let mut provider = ring::default_provider();
    if names.is_empty() {
        return Ok(Arc::new(provider));
    }
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    for name in names {
        match rustls_suite(name) {
            Some(s) if !chosen.contains(&s) => chosen.push(s),
            Some(_) => {}
            None if GO_ONLY.contains(&name.as_str()) => {
                return Err(format!(
                    "TLS cipher suite {name:?} is not supported by basalt (rustls offers only \
                     ECDHE suites with AES-GCM or ChaCha20-Poly1305)"
                ))
            }
            // etcd's words.
            None => return Err(format!("unexpected TLS cipher suite {name:?}")),
        }
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_or_are_refused() {
        let p = provider(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()]).unwrap();
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert!(p.cipher_suites.len() > 1, "TLS 1.3 suites stay");
        assert_eq!(
            provider(&["foo".into()]).unwrap_err(),
            "unexpected TLS cipher suite \"foo\""
        );
        assert!(provider(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()])
            .unwrap_err()
            .contains("not supported by basalt"));
    }

    #[test]
    fn versions_parse_like_etcd() {
        assert_eq!(parse_tls_version("TLS1.3"), Ok(Some(TlsVersion::Tls13)));
        assert_eq!(parse_tls_version(""), Ok(None));
        assert_eq!(
            parse_tls_version("TLS1.1").unwrap_err(),
            "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"
        );
        assert_eq!(versions(TlsVersion::Tls13, None).len(), 1);
        assert_eq!(
            versions(TlsVersion::Tls12, Some(TlsVersion::Tls12)).len(),
            1
        );
        assert_eq!(versions(TlsVersion::Tls12, None).len(), 2);
    }
}
