//! Who may connect: the verifiers of the other side's certificate.
//!
//! - On a listener, a client certificate is required when
//!   `--client-cert-auth` or `--trusted-ca-file` is given (etcd's
//!   `TLSInfo.ServerConfig`), verified against the CA file and the CRL.
//!   With no usable CA (none given, or a file without certificates) etcd
//!   still starts and refuses every certificate ("signed by unknown
//!   authority"); so does basalt, with a warning at start.
//! - Dialling a peer, its certificate is verified against the peer CA, or
//!   not at all with `--peer-auto-tls` (etcd's `InsecureSkipVerify` for
//!   self-signed peers).
//! - The CRL file is read again when it changes (etcd reads it at every
//!   connection), so a revocation takes effect without a restart.
//! - `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname` then admit
//!   only a verified certificate with that common name, or valid for that
//!   host name (etcd's `VerifyPeerCertificate`, on both ends).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{pem, TlsInfo};
use crate::error::Error;

/// The handshake-signature checks of a verifier that holds `provider`.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// etcd's refusal of a verified peer with the wrong name.
const NAME_REFUSED: &str = "client certificate authentication failed";

/// The listener's verifier of client certificates for `info`.
pub(super) fn client_verifier(
    info: &TlsInfo,
    provider: &Arc<CryptoProvider>,
    peer: bool,
) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    if !info.client_cert_auth && info.trusted_ca_file.is_none() {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let roots = match &info.trusted_ca_file {
        Some(f) => pem::roots(f)?,
        None => rustls::RootCertStore::empty(),
    };
    let flag = if peer {
        "--peer-trusted-ca-file"
    } else {
        "--trusted-ca-file"
    };
    let verifier: Arc<dyn ClientCertVerifier> = if roots.is_empty() {
        tracing::warn!(
            "client certificates are required but {flag} gives no CA certificate: every \
             connection will be refused (as etcd refuses them)"
        );
        Arc::new(RefuseAll {
            provider: provider.clone(),
        })
    } else {
        let roots = Arc::new(roots);
        match &info.crl_file {
            None => webpki_clients(&roots, provider, Vec::new())?,
            Some(crl) => Arc::new(ReloadingCrl::new(roots, provider.clone(), crl.clone())?),
        }
    };
    Ok(match names(info) {
        Some(names) => Arc::new(Named {
            inner: verifier,
            names,
        }),
        None => verifier,
    })
}

/// rustls's verifier of client certificates against `roots`, revoking
/// what `crls` list (certificates of CAs without a list pass, as in Go).
fn webpki_clients(
    roots: &Arc<rustls::RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if !crls.is_empty() {
        builder = builder
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    builder
        .build()
        .map_err(|e| Error::Tls(format!("client certificate verification: {e}")))
}

/// Client verification with a CRL file that is read again when it
/// changes; a file that does not parse is logged and the last good list
/// stays in force.
struct ReloadingCrl {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
    crl_file: std::path::PathBuf,
    hints: Vec<DistinguishedName>,
    current: std::sync::Mutex<(Option<super::rotation::Stamp>, Arc<dyn ClientCertVerifier>)>,
}

impl std::fmt::Debug for ReloadingCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCrl")
            .field("crl_file", &self.crl_file)
            .finish()
    }
}

impl ReloadingCrl {
    fn new(
        roots: Arc<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
        crl_file: std::path::PathBuf,
    ) -> Result<ReloadingCrl, Error> {
        let seen = super::rotation::stamp(&crl_file);
        let verifier = webpki_clients(&roots, &provider, pem::revocation_lists(&crl_file)?)?;
        Ok(ReloadingCrl {
            hints: roots.subjects(),
            roots,
            provider,
            crl_file,
            current: std::sync::Mutex::new((seen, verifier)),
        })
    }

    /// The verifier with the CRL file as it is now.
    fn fresh(&self) -> Arc<dyn ClientCertVerifier> {
        let now = super::rotation::stamp(&self.crl_file);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            current.0 = now;
            let reloaded = pem::revocation_lists(&self.crl_file)
                .and_then(|crls| webpki_clients(&self.roots, &self.provider, crls));
            match reloaded {
                Ok(v) => {
                    tracing::info!(crl = %self.crl_file.display(), "revocation list reloaded");
                    current.1 = v;
                }
                Err(e) => tracing::warn!(
                    crl = %self.crl_file.display(),
                    error = %e,
                    "changed revocation list does not load; the previous one stays in force"
                ),
            }
        }
        current.1.clone()
    }
}

impl ClientCertVerifier for ReloadingCrl {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.fresh()
            .verify_client_cert(end_entity, intermediates, now)
    }

    handshake_signatures!();
}

/// The dialler's verifier of a peer's server certificate.
pub(super) fn server_verifier(
    info: &TlsInfo,
    provider: &Arc<CryptoProvider>,
    self_signed: bool,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let verifier: Arc<dyn ServerCertVerifier> = match &info.trusted_ca_file {
        Some(f) if !self_signed => {
            let roots = pem::roots(f)?;
            if roots.is_empty() {
                Arc::new(RefuseAll {
                    provider: provider.clone(),
                })
            } else {
                let mut builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                );
                if let Some(crl) = &info.crl_file {
                    builder = builder
                        .with_crls(pem::revocation_lists(crl)?)
                        .only_check_end_entity_revocation()
                        .allow_unknown_revocation_status();
                }
                builder
                    .build()
                    .map_err(|e| Error::Tls(format!("--peer-trusted-ca-file: {e}")))?
            }
        }
        // Self-signed peers (or no CA): etcd skips verification.
        _ => Arc::new(TrustAny {
            provider: provider.clone(),
        }),
    };
    Ok(match names(info) {
        Some(names) => Arc::new(Named {
            inner: verifier,
            names,
        }),
        None => verifier,
    })
}

/// `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`.
#[derive(Debug, Clone)]
struct AllowedNames {
    cn: Option<String>,
    hostname: Option<String>,
}

fn names(info: &TlsInfo) -> Option<AllowedNames> {
    (info.allowed_cn.is_some() || info.allowed_hostname.is_some()).then(|| AllowedNames {
        cn: info.allowed_cn.clone(),
        hostname: info.allowed_hostname.clone(),
    })
}

impl AllowedNames {
    fn admit(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if let Some(cn) = &self.cn {
            if common_name(cert).as_deref() == Some(cn.as_str()) {
                return Ok(());
            }
        }
        if let Some(host) = &self.hostname {
            let parsed = ParsedCertificate::try_from(cert)?;
            if let Ok(name) = ServerName::try_from(host.as_str()) {
                if rustls::client::verify_server_name(&parsed, &name).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(rustls::Error::General(NAME_REFUSED.into()))
    }
}

/// The subject's common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A verifier narrowed to [`AllowedNames`].
#[derive(Debug)]
struct Named<V: ?Sized> {
    inner: Arc<V>,
    names: AllowedNames,
}

impl ClientCertVerifier for Named<dyn ClientCertVerifier> {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.names.admit(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl ServerCertVerifier for Named<dyn ServerCertVerifier> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.names.admit(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Asks for a certificate and refuses every one: client certificates
/// required with no CA to check them against.
#[derive(Debug)]
struct RefuseAll {
    provider: Arc<CryptoProvider>,
}

/// Accepts any certificate (self-signed peers), still checking that the
/// other side holds its key.
#[derive(Debug)]
struct TrustAny {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RefuseAll {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    handshake_signatures!();
}

impl ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    handshake_signatures!();
}

impl ServerCertVerifier for TrustAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn allowed_names_admit_by_cn_or_hostname() {
        let by_cn = AllowedNames {
            cn: Some("member-a".into()),
            hostname: None,
        };
        assert!(by_cn.admit(&cert("member-a", &["x"])).is_ok());
        let refused = by_cn.admit(&cert("member-b", &["x"])).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!("unexpected error: {NAME_REFUSED}")
        );
        let by_host = AllowedNames {
            cn: None,
            hostname: Some("node-a.example".into()),
        };
        assert!(by_host.admit(&cert("any", &["node-a.example"])).is_ok());
        assert!(by_host.admit(&cert("any", &["node-b.example"])).is_err());
        assert_eq!(
            common_name(&cert("member-a", &[])).as_deref(),
            Some("member-a")
        );
    }
}
