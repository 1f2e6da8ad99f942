//! TLS for every listener and for the peer dialler, with `rustls`, read
//! from etcd's flags with etcd's meanings (its `transport.TLSInfo`).
//!
//! ```no_run
//! use basalt_net::tls::{TlsInfo, TlsSettings};
//!
//! let mut settings = TlsSettings::default();
//! settings.client = TlsInfo {
//!     cert_file: Some("server.pem".into()),
//!     key_file: Some("server-key.pem".into()),
//!     trusted_ca_file: Some("ca.pem".into()),
//!     client_cert_auth: true,
//!     ..TlsInfo::default()
//! };
//! let data_dir = std::path::Path::new("default.basalt");
//! let client_urls = ["https://127.0.0.1:2379".to_string()];
//! let tls = settings.client_server_config(&client_urls, data_dir).unwrap();
//! assert!(tls.is_some());
//! ```
//!
//! What holds, and why:
//! - **A scheme decides.** A listener is TLS exactly when its URL is
//!   `https://`; certificates given for an `http://` URL are ignored with
//!   etcd's warning, and an `https://` URL without certificates (and
//!   without `--auto-tls`) is refused at start with etcd's message.
//! - **Bad files stop the start**, with Go's words (`open F: no such file
//!   or directory`, `tls: private key does not match public key`, …), so an
//!   operator sees the same thing from basalt as from etcd.
//! - **Rotation without restart.** The certificate and key files are
//!   checked at every handshake (etcd re-reads them there too): when either
//!   changed on disk the pair is read again, and the new certificate serves
//!   the next handshake. A pair that does not load (a key written before
//!   its certificate, say) is logged and the previous pair keeps serving.
//! - **Client certificates** are required (and verified against
//!   `--trusted-ca-file`) when `--client-cert-auth` or `--trusted-ca-file`
//!   is given, as etcd's `ServerConfig` does; `--client-crl-file` revokes
//!   certificates by serial; `--peer-cert-allowed-cn` and
//!   `--peer-cert-allowed-hostname` narrow which verified peers are let in.
//! - **ALPN** offers `h2` (gRPC) and `http/1.1` (scrapers and `curl
//!   --http1.1`), and the first bytes after the handshake tell HTTP/2 from
//!   HTTP/1 as on a plain port.

mod pem;
mod rotation;
mod self_signed;
mod stream;
mod suites;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

pub use rotation::RotatingCert;
pub use stream::{server_name, Stream};
pub use suites::{parse_tls_version, TlsVersion};
pub use verify::common_name;

use crate::error::Error;

/// One side's certificates (etcd's `transport.TLSInfo`): the client side
/// (`--cert-file`, …) or the peer side (`--peer-cert-file`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `--cert-file` / `--peer-cert-file`: the certificate (chain) served.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`: verifies the other
    /// side's certificate (and, given alone, requires one, as in etcd).
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--client-crl-file` / `--peer-crl-file`: revoked certificates.
    pub crl_file: Option<PathBuf>,
    /// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate in
    /// `<data-dir>/fixtures/{client,peer}` when no files are given.
    pub auto_tls: bool,
    /// `--peer-cert-allowed-cn`: the only common name a peer may have.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`: a name a peer's certificate must be
    /// valid for.
    pub allowed_hostname: Option<String>,
}

impl TlsInfo {
    /// No certificate or key file given (etcd's `TLSInfo.Empty`).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// Every TLS flag of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub client: TlsInfo,
    pub peer: TlsInfo,
    /// `--self-signed-cert-validity`, in years (etcd: 1; 0 means 1).
    pub self_signed_cert_validity: u32,
    /// `--cipher-suites`: Go's names of TLS 1.2 suites; empty = rustls's.
    pub cipher_suites: Vec<String>,
    /// `--tls-min-version` (etcd 3.5): `TLS1.2` by default.
    pub min_version: TlsVersion,
    /// `--tls-max-version` (etcd 3.5): `None` = the newest (TLS 1.3).
    pub max_version: Option<TlsVersion>,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            client: TlsInfo::default(),
            peer: TlsInfo::default(),
            self_signed_cert_validity: 1,
            cipher_suites: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: None,
        }
    }
}

/// Which side a [`TlsInfo`] serves; names the flags in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Peer,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Peer => "peer",
        }
    }
}

/// The schemes basalt listens and dials with.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("unixs://")
}

/// `host` of `scheme://host:port`, for self-signed certificates.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1.trim_end_matches('/');
    let host = match rest.rsplit_once(':') {
        Some((h, _)) => h,
        None => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_owned())
}

impl TlsSettings {
    /// etcd's checks of the version and suite flags (its
    /// `embed.Config.Validate`), with its messages.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(max) = self.max_version {
            if self.min_version > max {
                return Err(format!(
                    "min version ({}) is greater than max version ({})",
                    self.min_version, max
                ));
            }
        }
        if self.min_version == TlsVersion::Tls13 && !self.cipher_suites.is_empty() {
            return Err(
                "cipher suites cannot be configured when only TLS1.3 or greater is supported"
                    .into(),
            );
        }
        suites::provider(&self.cipher_suites)?;
        Ok(())
    }

    fn provider(&self) -> Result<Arc<rustls::crypto::CryptoProvider>, Error> {
        suites::provider(&self.cipher_suites).map_err(Error::Tls)
    }

    /// The TLS configuration of the client listeners (and of `https`
    /// metrics URLs), if any client or metrics URL is `https`. Warns, as
    /// etcd does, about certificates given for plain URLs only.
    pub fn client_server_config(
        &self,
        urls: &[String],
        data_dir: &Path,
    ) -> Result<Option<Arc<ServerConfig>>, Error> {
        self.server_config(Side::Client, &self.client, urls, data_dir)
    }

    /// The TLS configuration of the peer listeners, if any is `https`.
    pub fn peer_server_config(
        &self,
        urls: &[String],
        data_dir: &Path,
    ) -> Result<Option<Arc<ServerConfig>>, Error> {
        self.server_config(Side::Peer, &self.peer, urls, data_dir)
    }

    fn server_config(
        &self,
        side: Side,
        info: &TlsInfo,
        urls: &[String],
        data_dir: &Path,
    ) -> Result<Option<Arc<ServerConfig>>, Error> {
        let https: Vec<&String> = urls.iter().filter(|u| is_https(u)).collect();
        if https.is_empty() {
            if !info.is_empty() {
                // etcd's words ("peer key/cert files" on both sides).
                let ignored = match side {
                    Side::Client => "key/cert files",
                    Side::Peer => "peer key/cert files",
                };
                for u in urls {
                    tracing::warn!(
                        "The scheme of {} url {u} is HTTP while peer key/cert files are presented. Ignored {ignored}.",
                        side.word()
                    );
                }
            }
            return Ok(None);
        }
        let cert = self.certificate(side, info, urls, data_dir, https[0])?;
        let provider = self.provider()?;
        let clients = verify::client_verifier(info, &provider, side == Side::Peer)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&suites::versions(self.min_version, self.max_version))
            .map_err(|e| Error::Tls(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(cert);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tracing::info!(
            side = side.word(),
            cert = ?info.cert_file,
            key = ?info.key_file,
            trusted_ca = ?info.trusted_ca_file,
            client_cert_auth = info.client_cert_auth,
            crl_file = ?info.crl_file,
            "TLS configured"
        );
        Ok(Some(Arc::new(config)))
    }

    /// The certificate a side serves: its files, or a self-signed pair.
    fn certificate(
        &self,
        side: Side,
        info: &TlsInfo,
        urls: &[String],
        data_dir: &Path,
        first_https: &str,
    ) -> Result<Arc<RotatingCert>, Error> {
        let provider = self.provider()?;
        if info.auto_tls && !info.is_empty() {
            tracing::warn!("ignoring {} auto TLS since certs given", side.word());
        }
        let (cert, key) = match (&info.cert_file, &info.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ if info.auto_tls && info.is_empty() => {
                let hosts: Vec<String> = urls.iter().filter_map(|u| url_host(u)).collect();
                self_signed::self_cert(
                    &data_dir.join("fixtures").join(side.word()),
                    &hosts,
                    self.self_signed_cert_validity.max(1),
                    side == Side::Peer,
                )?
            }
            _ => return Err(missing_cert(side, first_https)),
        };
        Ok(Arc::new(RotatingCert::load(cert, key, provider)?))
    }

    /// The TLS configuration for dialling `https` peer URLs: the peer
    /// certificate as a client certificate, the peer CA as trust (or, with
    /// `--peer-auto-tls`, no verification, as etcd). `None` when no peer
    /// TLS flag is given, or no peer URL of this member is `https` (its
    /// peer files are then ignored, as on its listeners).
    pub fn peer_client_config(
        &self,
        peer_urls: &[String],
        data_dir: &Path,
    ) -> Result<Option<Arc<ClientConfig>>, Error> {
        let info = &self.peer;
        if info.is_empty() && !info.auto_tls && info.trusted_ca_file.is_none() {
            return Ok(None);
        }
        if !peer_urls.iter().any(|u| is_https(u)) {
            return Ok(None);
        }
        let provider = self.provider()?;
        let cert = if !info.is_empty() || info.auto_tls {
            let first = peer_urls.iter().find(|u| is_https(u)).cloned();
            let first = first.unwrap_or_default();
            Some(self.certificate(Side::Peer, info, peer_urls, data_dir, &first)?)
        } else {
            None
        };
        let self_signed = info.auto_tls && info.is_empty();
        let servers = verify::server_verifier(info, &provider, self_signed)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&suites::versions(self.min_version, self.max_version))
            .map_err(|e| Error::Tls(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(servers);
        let config = match cert {
            Some(c) => builder.with_client_cert_resolver(c),
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// etcd's refusal of an `https` URL with no certificate to serve.
fn missing_cert(side: Side, url: &str) -> Error {
    match side {
        Side::Client => Error::Tls(format!(
            "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
        )),
        Side::Peer => Error::Tls(format!(
            "cannot listen on TLS for {}: KeyFile and CertFile are not presented",
            url.split_once("://").map_or(url, |(_, h)| h).trim_end_matches('/')
        )),
    }
}

/// A TLS configuration for the metrics listeners: the client one,
/// offering only HTTP/1.1 (they serve no gRPC).
pub fn metrics_config(client: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut c = ServerConfig::clone(client);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_files_for_plain_peer_urls_are_ignored() {
        let s = TlsSettings {
            peer: TlsInfo {
                cert_file: Some("/nonexistent/peer.pem".into()),
                key_file: Some("/nonexistent/peer-key.pem".into()),
                ..TlsInfo::default()
            },
            ..TlsSettings::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let plain = ["http://127.0.0.1:2380".to_string()];
        assert!(s.peer_server_config(&plain, dir.path()).unwrap().is_none());
        assert!(s.peer_client_config(&plain, dir.path()).unwrap().is_none());
        let https = ["https://127.0.0.1:2380".to_string()];
        assert_eq!(
            s.peer_client_config(&https, dir.path())
                .unwrap_err()
                .to_string(),
            "open /nonexistent/peer.pem: no such file or directory"
        );
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("https://127.0.0.1:2379").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(url_host("https://[::1]:2379/").as_deref(), Some("::1"));
        assert_eq!(url_host("https://node-a:2380").as_deref(), Some("node-a"));
    }

    #[test]
    fn version_and_suite_flags_are_checked_like_etcd() {
        let mut s = TlsSettings {
            min_version: TlsVersion::Tls13,
            max_version: Some(TlsVersion::Tls12),
            ..TlsSettings::default()
        };
        assert_eq!(
            s.validate().unwrap_err(),
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        s.max_version = None;
        s.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()];
        assert_eq!(
            s.validate().unwrap_err(),
            "cipher suites cannot be configured when only TLS1.3 or greater is supported"
        );
        s.min_version = TlsVersion::Tls12;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn an_https_url_without_a_certificate_is_refused_with_etcds_words() {
        let s = TlsSettings::default();
        let dir = tempfile::tempdir().unwrap();
        let e = s
            .client_server_config(&["https://127.0.0.1:2379".into()], dir.path())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        let e = s
            .peer_server_config(&["https://127.0.0.1:2380".into()], dir.path())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        // Plain URLs need nothing.
        assert!(s
            .client_server_config(&["http://127.0.0.1:2379".into()], dir.path())
            .unwrap()
            .is_none());
    }
}
