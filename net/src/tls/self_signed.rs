//! `--auto-tls` / `--peer-auto-tls`: a self-signed certificate, made once
//! and kept in the data directory (etcd's `transport.SelfCert`): ECDSA
//! P-256, organisation `etcd`, valid for the listen URLs' hosts for
//! `--self-signed-cert-validity` years. Files already there are reused.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::Digest;

use crate::error::Error;

/// `cert.pem` and `key.pem` in `dir`, made if either is missing.
/// `client_auth`: the certificate may also authenticate its holder as a
/// client (peers dial each other with it).
pub(super) fn self_cert(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
    client_auth: bool,
) -> Result<(PathBuf, PathBuf), Error> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Tls(format!(
            "cannot generate a self-signed certificate: {what}: {e}"
        ))
    };
    let key = KeyPair::generate().map_err(|e| fail("key", &e))?;
    let mut names: Vec<String> = hosts.to_vec();
    names.dedup();
    let mut params = CertificateParams::new(names).map_err(|e| fail("hosts", &e))?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "etcd");
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years));
    params.serial_number = Some(serial(&key, now));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    let cert = params.self_signed(&key).map_err(|e| fail("signing", &e))?;
    std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), &e))?;
    write(&cert_path, cert.pem().as_bytes(), 0o644).map_err(|e| fail("writing", &e))?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(|e| fail("writing", &e))?;
    tracing::info!(cert = %cert_path.display(), ?hosts, validity_years, "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

/// 127 bits from the key and the time: unique per generated certificate,
/// positive as X.509 wants.
fn serial(key: &KeyPair, now: time::OffsetDateTime) -> SerialNumber {
    let mut h = sha2::Sha256::new();
    h.update(key.public_key_der());
    h.update(now.unix_timestamp_nanos().to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        let (c, k) = self_cert(&fixtures, &hosts, 1, false).unwrap();
        let first = std::fs::read(&c).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        self_cert(&fixtures, &hosts, 1, false).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), first, "reused, not remade");
    }
}
