//! `--against tls`: a throwaway CA and server certificate, made for the run with rcgen and
//! written to a temporary directory (the bench server may be another process), removed at the
//! end.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use veltix::tls::ClientTls;

use super::Res;

/// The files and trust anchor of one bench run.
pub struct TlsSetup {
    dir: PathBuf,
    ca_pem: String,
}

impl TlsSetup {
    pub fn new() -> Res<TlsSetup> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "veltix bench CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "veltix bench server");
        let cert = leaf.signed_by(&key, &issuer)?;
        let dir = std::env::temp_dir().join(format!("veltix-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("server.pem"), cert.pem())?;
        std::fs::write(dir.join("server.key"), key.serialize_pem())?;
        Ok(TlsSetup {
            dir,
            ca_pem: ca_cert.pem(),
        })
    }

    /// (certificate, key) files for the bench server.
    pub fn server_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.pem"), self.dir.join("server.key"))
    }

    /// The clients' TLS settings (trusting only this run's CA).
    pub fn client(&self) -> ClientTls {
        ClientTls::ca_pem(self.ca_pem.clone())
    }
}

impl Drop for TlsSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
