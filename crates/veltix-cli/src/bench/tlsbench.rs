//! `--against tls`: a throwaway CA and server certificate, made for the run with rcgen and
//! written to a temporary directory (the bench server may be another process), removed at the
//! end.

use std::path::PathBuf;
use std::sync::Arc;

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

    /// The same trust as a rustls configuration, for the memory scenario's raw connections.
    pub fn rustls_client(&self) -> Res<Arc<rustls::ClientConfig>> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// A blocking TLS connection that completed the Gen 3 handshake (memory scenario).
pub type RawTls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// Connects over TLS to `port` and runs the Gen 3 client handshake (see
/// `memory::handshake_connect`, its plaintext twin).
pub fn handshake_connect(port: u16, config: &Arc<rustls::ClientConfig>) -> Res<RawTls> {
    use std::io::{Read, Write};
    use veltix::proto::{Generation, Handshake, HandshakeConfig};
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let conn = rustls::ClientConnection::new(config.clone(), name)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut hs = Handshake::client(HandshakeConfig::new(Generation::Gen3))?;
    let mut buf = [0u8; 4096];
    loop {
        while let Some(b) = hs.poll_transmit() {
            s.write_all(&b)?;
            s.flush()?;
        }
        if hs.is_done() {
            return Ok(s);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        hs.feed(&buf[..n])?;
    }
}

impl Drop for TlsSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
