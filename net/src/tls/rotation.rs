//! A certificate and key read from files and read again when the files
//! change, so a rotated certificate serves the next handshake without a
//! restart (etcd re-reads the files at every handshake; here a `stat` of
//! both per handshake decides whether to).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::pem;
use crate::error::Error;

/// What identifies a file's content cheaply: modification time, size and
/// inode (a rename over the file changes the inode even within one tick
/// of the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

pub(super) fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The served certificate of one side (a server certificate on a
/// listener, a client certificate when dialling a peer).
pub struct RotatingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

struct Loaded {
    /// The files as last seen (loaded or not).
    seen: (Option<Stamp>, Option<Stamp>),
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl RotatingCert {
    /// Reads the pair, or fails as etcd fails on it.
    pub fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<RotatingCert, Error> {
        let seen = (stamp(&cert_file), stamp(&key_file));
        let key = Arc::new(read_pair(&cert_file, &key_file, &provider)?);
        Ok(RotatingCert {
            cert_file,
            key_file,
            provider,
            current: Mutex::new(Loaded { seen, key }),
        })
    }

    /// The pair to serve now: read again if a file changed since last
    /// seen; the previous pair if the new one does not load.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let now = (stamp(&self.cert_file), stamp(&self.key_file));
        let mut loaded = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.seen != now {
            loaded.seen = now;
            match read_pair(&self.cert_file, &self.key_file, &self.provider) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert_file.display(), "certificate reloaded from disk");
                    loaded.key = Arc::new(key);
                }
                Err(e) => tracing::warn!(
                    cert = %self.cert_file.display(),
                    key = %self.key_file.display(),
                    error = %e,
                    "changed certificate files do not load; serving the previous certificate"
                ),
            }
        }
        loaded.key.clone()
    }
}

fn read_pair(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Error> {
    let chain = pem::certificates(cert_file)?;
    let key = pem::private_key(key_file)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            Error::Tls("tls: private key does not match public key".into())
        }
        other => Error::Tls(format!(
            "tls: failed to parse private key {}: {other}",
            key_file.display()
        )),
    })
}

impl rustls::server::ResolvesServerCert for RotatingCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for RotatingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (c, k, first) = write_pair(dir.path(), "first");
        let rotating = RotatingCert::load(c.clone(), k.clone(), provider).unwrap();
        assert_eq!(rotating.current().cert[0].as_ref(), &first[..]);
        let (_, _, second) = write_pair(dir.path(), "second");
        assert_eq!(rotating.current().cert[0].as_ref(), &second[..]);
        // A certificate whose key is not written yet: the old pair serves.
        let other = rcgen::KeyPair::generate().unwrap();
        let third = rcgen::CertificateParams::new(vec!["third".into()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        std::fs::write(&c, third.pem()).unwrap();
        assert_eq!(rotating.current().cert[0].as_ref(), &second[..]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_with_gos_words() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _, _) = write_pair(dir.path(), "one");
        let other = dir.path().join("other-key.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let e = RotatingCert::load(c, other, provider).unwrap_err();
        assert_eq!(e.to_string(), "tls: private key does not match public key");
    }
}
