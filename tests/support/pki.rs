//! Certificates made by the test itself (rcgen): a CA, certificates it
//! issues, revocation lists, written into the test's temporary directory.
//! No private key is ever checked in.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// `ca.pem`.
    pub cert_file: PathBuf,
}

/// A certificate and key issued by a [`Ca`], on disk.
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate's DER bytes (to recognise it on the wire).
    pub der: Vec<u8>,
    pub serial: u64,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/name.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert_file = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("write CA");
        Ca {
            cert,
            key,
            cert_file,
        }
    }

    /// Issues a certificate for `cn`, valid for `hosts` (IPs or names),
    /// usable by servers and clients, into `dir/file.pem` and
    /// `dir/file-key.pem`.
    pub fn issue(&self, dir: &Path, file: &str, cn: &str, hosts: &[&str], serial: u64) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        let validity = (
            now - time::Duration::hours(1),
            now + time::Duration::days(30),
        );
        self.issue_valid(dir, file, cn, hosts, serial, validity)
    }

    /// Like [`Ca::issue`], valid only from `validity.0` to `validity.1`
    /// (to make expired or not yet valid certificates).
    pub fn issue_valid(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        hosts: &[&str],
        serial: u64,
        validity: (time::OffsetDateTime, time::OffsetDateTime),
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        (params.not_before, params.not_after) = validity;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign certificate");
        let cert_file = dir.join(format!("{file}.pem"));
        let key_file = dir.join(format!("{file}-key.pem"));
        write_replacing(&cert_file, cert.pem().as_bytes());
        write_replacing(&key_file, key.serialize_pem().as_bytes());
        Issued {
            cert_file,
            key_file,
            der: cert.der().to_vec(),
            serial,
        }
    }

    /// A revocation list of `revoked`, PEM, into `dir/file`.
    pub fn revoke(&self, dir: &Path, file: &str, revoked: &[&Issued]) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from(c.serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.cert, &self.key)
            .expect("sign the CRL");
        let path = dir.join(file);
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write CRL");
        path
    }
}

/// Writes through a new file renamed over the old one, as a certificate
/// rotation tool does, so a reader never sees half a file.
fn write_replacing(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A path as a string argument.
pub fn arg(p: &Path) -> String {
    p.display().to_string()
}
