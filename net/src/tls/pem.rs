//! Reading certificates, keys, CA bundles and CRLs from files, failing
//! with the words Go's `crypto/tls` and `os` use, so basalt's refusals read
//! like etcd's.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::Error;

/// The whole file, or Go's `open F: reason`.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("open {}: {}", path.display(), go_words(&e))))
}

/// An OS error as Go prints it: strerror in lower case, no error number.
fn go_words(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
        None => e.to_string(),
    };
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The certificate chain in `path`, end entity first.
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("tls: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(
            "tls: failed to find any PEM data in certificate input".into(),
        ));
    }
    Ok(certs)
}

/// The private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if CertificateDer::from_pem_slice(&bytes).is_ok() => {
            Err(Error::Tls(
                "tls: found a certificate rather than a key in the PEM for the private key".into(),
            ))
        }
        Err(pem::Error::NoItemsFound) => Err(Error::Tls(
            "tls: failed to find any PEM data in key input".into(),
        )),
        Err(e) => Err(Error::Tls(format!("tls: {}: {e}", path.display()))),
    }
}

/// The CA certificates in `path`. A file with none gives an empty store
/// (etcd then starts and every certificate fails verification).
pub(super) fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let bytes = read(path)?;
    let mut roots = RootCertStore::empty();
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(file = %path.display(), added, ignored, "unusable CA certificates ignored");
    }
    Ok(roots)
}

/// The revocation lists in `path`, PEM or DER (Go's `x509.ParseCRL` takes
/// either).
pub(super) fn revocation_lists(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let bytes = read(path)?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if pem.is_empty() {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_read_like_go() {
        let e = read(Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "open /nonexistent/cert.pem: no such file or directory"
        );
    }

    #[test]
    fn files_without_pem_data_read_like_go() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk\n").unwrap();
        assert_eq!(
            certificates(&junk).unwrap_err().to_string(),
            "tls: failed to find any PEM data in certificate input"
        );
        assert_eq!(
            private_key(&junk).unwrap_err().to_string(),
            "tls: failed to find any PEM data in key input"
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        assert_eq!(
            private_key(&cert_file).unwrap_err().to_string(),
            "tls: found a certificate rather than a key in the PEM for the private key"
        );
        assert_eq!(certificates(&cert_file).unwrap().len(), 1);
        assert!(roots(&junk).unwrap().is_empty());
    }
}
