//! TLS for both ends (rustls through tokio-rustls): certificates and keys, trust anchors,
//! mutual TLS, and what a server learns about a client's certificate.
//!
//! A [`ServerConfig`](crate::ServerConfig) with `tls: Some(ServerTls)` speaks TLS 1.2 / 1.3
//! on every connection before the Veltix handshake (either wire generation); a
//! [`ClientConfig`](crate::ClientConfig) with `tls: Some(ClientTls)` does the same as a client.
//! Certificates and keys are read and checked when the server starts or the client connects:
//! a missing, unreadable or mismatched file is an [`Error::TlsConfig`] then, never a panic.
//!
//! ```
//! use veltix::tls::{ClientTls, ServerTls};
//! use veltix::{ClientConfig, ServerConfig};
//!
//! let server = ServerConfig::local()
//!     .tls(ServerTls::from_pem_files("server.pem", "server.key").client_ca_file("ca.pem"));
//! let client = ClientConfig::new("127.0.0.1", 8443)
//!     .tls(ClientTls::ca_file("ca.pem").server_name("veltix.example").client_cert_files("me.pem", "me.key"));
//! # let _ = (server, client);
//! ```
//!
//! What TLS changes at run time: a TLS connection is driven by its own reader and writer
//! (`conn::tls`); the two plaintext fast paths (a sending thread writing the socket itself, and a
//! blocking `send_and_wait` reading it itself) are not used for it, because the TLS session
//! state lives in one place and every byte must go through it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SupportedProtocolVersion};

use crate::{Error, Result};

/// PEM data: a file read when the server starts / the client connects, or bytes in memory.
///
/// ```
/// use veltix::tls::{Pem, ServerTls};
/// let tls = ServerTls::new(Pem::File("chain.pem".into()), Pem::Bytes(b"-----BEGIN PRIVATE KEY-----...".to_vec()));
/// // Key material is never printed.
/// assert!(format!("{tls:?}").contains("Pem::Bytes(30 bytes)"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file.
    File(PathBuf),
    /// PEM text in memory.
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(p) => write!(f, "Pem::File({})", p.display()),
            // Never print key material.
            Pem::Bytes(b) => write!(f, "Pem::Bytes({} bytes)", b.len()),
        }
    }
}

impl Pem {
    fn what(&self, kind: &str) -> String {
        match self {
            Pem::File(p) => format!("{kind} file {}", p.display()),
            Pem::Bytes(_) => format!("{kind} (in memory)"),
        }
    }

    fn read(&self, kind: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(p) => std::fs::read(p)
                .map_err(|e| Error::TlsConfig(format!("cannot read {}: {e}", self.what(kind)))),
            Pem::Bytes(b) => Ok(b.clone()),
        }
    }

    fn certs(&self, kind: &str) -> Result<Vec<CertificateDer<'static>>> {
        let data = self.read(kind)?;
        let certs = CertificateDer::pem_slice_iter(&data)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::TlsConfig(format!("{} is not valid PEM: {e}", self.what(kind))))?;
        if certs.is_empty() {
            return Err(Error::TlsConfig(format!(
                "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                self.what(kind)
            )));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>> {
        let data = self.read("private key")?;
        PrivateKeyDer::from_pem_slice(&data).map_err(|e| {
            Error::TlsConfig(format!(
                "{} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                self.what("private key")
            ))
        })
    }

    fn roots(&self, kind: &str) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(kind)? {
            roots.add(cert).map_err(|e| {
                Error::TlsConfig(format!(
                    "{} holds an unusable certificate: {e}",
                    self.what(kind)
                ))
            })?;
        }
        Ok(roots)
    }
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

fn versions(v: &[TlsVersion]) -> Result<Vec<&'static SupportedProtocolVersion>> {
    let mut out = Vec::new();
    // Preference order: 1.3 first.
    if v.contains(&TlsVersion::Tls13) {
        out.push(&rustls::version::TLS13);
    }
    if v.contains(&TlsVersion::Tls12) {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(Error::TlsConfig("no TLS version enabled".into()));
    }
    Ok(out)
}

const ALL_VERSIONS: &[TlsVersion] = &[TlsVersion::Tls13, TlsVersion::Tls12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA that client
/// certificates must chain to (mutual TLS: clients without a valid certificate are refused
/// during the TLS handshake, and [`ClientInfo::tls`](crate::ClientInfo::tls) shows the subject
/// of the one presented).
///
/// ```
/// use veltix::tls::{ServerTls, TlsVersion};
/// let tls = ServerTls::from_pem_files("cert.pem", "key.pem")
///     .client_ca_file("clients-ca.pem")
///     .versions(&[TlsVersion::Tls13]);
/// # let _ = tls;
/// ```
#[derive(Clone, Debug)]
pub struct ServerTls {
    cert_chain: Pem,
    key: Pem,
    client_ca: Option<Pem>,
    versions: Vec<TlsVersion>,
}

impl ServerTls {
    /// Certificate chain (leaf first) and private key from PEM files, read at `start()`.
    pub fn from_pem_files(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self::new(Pem::File(cert_chain.into()), Pem::File(key.into()))
    }

    /// Certificate chain (leaf first) and private key as PEM text.
    pub fn from_pem(cert_chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        Self::new(Pem::Bytes(cert_chain.into()), Pem::Bytes(key.into()))
    }

    /// From any [`Pem`] sources.
    pub fn new(cert_chain: Pem, key: Pem) -> Self {
        ServerTls {
            cert_chain,
            key,
            client_ca: None,
            versions: ALL_VERSIONS.to_vec(),
        }
    }

    /// Mutual TLS: every client must present a certificate issued by a CA in this PEM file.
    pub fn client_ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.client_ca(Pem::File(path.into()))
    }

    /// Mutual TLS with the client CA given as PEM text.
    pub fn client_ca_pem(self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca(Pem::Bytes(pem.into()))
    }

    /// Mutual TLS with the client CA from any [`Pem`] source.
    pub fn client_ca(mut self, ca: Pem) -> Self {
        self.client_ca = Some(ca);
        self
    }

    /// The TLS versions offered (default: 1.3 and 1.2).
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// Reads and checks everything; the acceptor used for every connection of one `start()`.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor> {
        let chain = self.cert_chain.certs("certificate")?;
        let key = self.key.key()?;
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions(&self.versions)?)
            .map_err(|e| Error::TlsConfig(format!("TLS versions: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = ca.roots("client CA")?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| Error::TlsConfig(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            Error::TlsConfig(format!(
                "{} and {} do not make a usable certificate: {e}",
                self.cert_chain.what("certificate"),
                self.key.what("private key")
            ))
        })?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Where a client's trust anchors come from.
///
/// ```
/// use veltix::tls::{ClientTls, Pem, Roots};
/// let private = ClientTls::new(Roots::Pem(Pem::File("ca.pem".into())));
/// let public = ClientTls::new(Roots::System); // = ClientTls::system_roots()
/// # let _ = (private, public);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store (on Linux, `/etc/ssl/certs`; `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR` override).
    System,
    /// The CA certificates of a PEM source (a private CA, a self-signed server).
    Pem(Pem),
}

/// A client's TLS settings: trust anchors, the name the server's certificate must carry
/// (default: the configured host, which may be an IP address), an optional client certificate.
///
/// ```
/// use veltix::tls::ClientTls;
/// let tls = ClientTls::ca_file("ca.pem").server_name("veltix.example");
/// let public = ClientTls::system_roots();
/// # let _ = (tls, public);
/// ```
#[derive(Clone, Debug)]
pub struct ClientTls {
    roots: Roots,
    server_name: Option<String>,
    identity: Option<(Pem, Pem)>,
    versions: Vec<TlsVersion>,
}

impl ClientTls {
    /// Trusts the operating system's CA store.
    pub fn system_roots() -> Self {
        Self::new(Roots::System)
    }

    /// Trusts the CA certificates of a PEM file.
    pub fn ca_file(path: impl Into<PathBuf>) -> Self {
        Self::new(Roots::Pem(Pem::File(path.into())))
    }

    /// Trusts CA certificates given as PEM text.
    pub fn ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self::new(Roots::Pem(Pem::Bytes(pem.into())))
    }

    /// Trusts the given roots.
    pub fn new(roots: Roots) -> Self {
        ClientTls {
            roots,
            server_name: None,
            identity: None,
            versions: ALL_VERSIONS.to_vec(),
        }
    }

    /// The name to verify the server's certificate against (default: the configured host).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// A client certificate chain and key from PEM files (for servers that require mutual TLS).
    pub fn client_cert_files(
        self,
        cert_chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert(Pem::File(cert_chain.into()), Pem::File(key.into()))
    }

    /// A client certificate chain and key as PEM text.
    pub fn client_cert_pem(self, cert_chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_cert(Pem::Bytes(cert_chain.into()), Pem::Bytes(key.into()))
    }

    /// A client certificate chain and key from any [`Pem`] sources.
    pub fn client_cert(mut self, cert_chain: Pem, key: Pem) -> Self {
        self.identity = Some((cert_chain, key));
        self
    }

    /// The TLS versions offered (default: 1.3 and 1.2).
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// Reads and checks everything; `host` is the configured host (the default server name).
    pub(crate) fn connector(
        &self,
        host: &str,
    ) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| Error::TlsConfig(format!("invalid TLS server name {name:?}: {e}")))?;
        let roots = match &self.roots {
            Roots::Pem(p) => p.roots("CA")?,
            Roots::System => system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions(&self.versions)?)
            .map_err(|e| Error::TlsConfig(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let certs = chain.certs("client certificate")?;
                let key = key.key()?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    Error::TlsConfig(format!(
                        "{} and {} do not make a usable certificate: {e}",
                        chain.what("client certificate"),
                        self.identity
                            .as_ref()
                            .map(|(_, k)| k.what("private key"))
                            .unwrap_or_default()
                    ))
                })?
            }
        };
        Ok((
            tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        ))
    }
}

/// The system's CA store, loaded once per process.
fn system_roots() -> Result<RootCertStore> {
    static ROOTS: std::sync::OnceLock<std::result::Result<RootCertStore, String>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let why = loaded
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no certificates found".into());
                return Err(format!("cannot load the system's CA certificates: {why}"));
            }
            Ok(roots)
        })
        .clone()
        .map_err(Error::TlsConfig)
}

/// What a TLS connection negotiated, and the client's verified certificate (mutual TLS).
///
/// ```no_run
/// # fn f(client: &veltix::ClientInfo) {
/// if let Some(tls) = client.tls() {
///     println!("{} {}", tls.protocol, tls.cipher_suite);
///     if let Some(cert) = &tls.peer_certificate {
///         println!("client certificate: {}", cert.subject);
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub protocol: String,
    /// The negotiated cipher suite, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher_suite: String,
    /// The peer's end-entity certificate, when it presented one (verified against the CA).
    pub peer_certificate: Option<PeerCertificate>,
}

/// A verified peer certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's attributes in certificate order, `TYPE=value` joined by `", "`
    /// (e.g. `"CN=sensor-17, O=Acme"`).
    pub subject: String,
    /// The subject's common name (CN), if any.
    pub common_name: Option<String>,
    /// The whole certificate (DER), for checks of your own.
    pub der: Vec<u8>,
}

impl std::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl TlsInfo {
    pub(crate) fn of(conn: &rustls::CommonState) -> TlsInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let cipher_suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let peer_certificate = conn.peer_certificates().and_then(|c| c.first()).map(|der| {
            let (subject, common_name) = der::subject(der).unwrap_or_default();
            PeerCertificate {
                subject,
                common_name,
                der: der.to_vec(),
            }
        });
        TlsInfo {
            protocol,
            cipher_suite,
            peer_certificate,
        }
    }
}

/// Describes a TLS handshake failure (an `io::Error` from tokio-rustls) in one line.
pub(crate) fn describe(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(m)) => {
            format!("the peer does not speak TLS ({m:?})")
        }
        Some(r) => r.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection during the TLS handshake".into()
        }
        None => e.to_string(),
    }
}

/// Just enough DER to read a certificate's subject (the certificate was verified by webpki
/// before we look at it; still, nothing here can panic on any input).
mod der {
    /// One TLV: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    fn oid_name(oid: &[u8]) -> String {
        match oid {
            [0x55, 0x04, 0x03] => "CN".into(),
            [0x55, 0x04, 0x05] => "serialNumber".into(),
            [0x55, 0x04, 0x06] => "C".into(),
            [0x55, 0x04, 0x07] => "L".into(),
            [0x55, 0x04, 0x08] => "ST".into(),
            [0x55, 0x04, 0x0a] => "O".into(),
            [0x55, 0x04, 0x0b] => "OU".into(),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
            _ => dotted(oid),
        }
    }

    fn dotted(oid: &[u8]) -> String {
        let mut parts: Vec<u64> = Vec::new();
        let mut v: u64 = 0;
        for &b in oid {
            v = (v << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                if parts.is_empty() {
                    let first = (v / 40).min(2);
                    parts.push(first);
                    parts.push(v - first * 40);
                } else {
                    parts.push(v);
                }
                v = 0;
            }
        }
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    fn value(tag: u8, v: &[u8]) -> String {
        match tag {
            // UTF8String, PrintableString, IA5String, VisibleString
            0x0c | 0x13 | 0x16 | 0x1a => String::from_utf8_lossy(v).into_owned(),
            // TeletexString: read as Latin-1
            0x14 => v.iter().map(|&b| char::from(b)).collect(),
            // BMPString: UTF-16BE
            0x1e => {
                let units: Vec<u16> = v
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            _ => format!(
                "#{}",
                v.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        }
    }

    /// `(subject, common name)` of a DER certificate.
    pub(super) fn subject(cert: &[u8]) -> Option<(String, Option<String>)> {
        let (_, cert, _) = tlv(cert)?; // Certificate ::= SEQUENCE
        let (_, tbs, _) = tlv(cert)?; // TBSCertificate ::= SEQUENCE
        let mut rest = tbs;
        let (tag, _, r) = tlv(rest)?;
        if tag == 0xa0 {
            rest = r; // [0] version
        }
        // serialNumber, signature, issuer, validity
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (_, mut name, _) = tlv(rest)?; // subject Name ::= SEQUENCE OF RDN
        let mut parts = Vec::new();
        let mut cn = None;
        while !name.is_empty() {
            let (_, mut set, r) = tlv(name)?; // RDN ::= SET OF AttributeTypeAndValue
            name = r;
            while !set.is_empty() {
                let (_, atv, r) = tlv(set)?;
                set = r;
                let (_, oid, r) = tlv(atv)?;
                let (tag, v, _) = tlv(r)?;
                let (k, v) = (oid_name(oid), value(tag, v));
                if k == "CN" && cn.is_none() {
                    cn = Some(v.clone());
                }
                parts.push(format!("{k}={v}"));
            }
        }
        Some((parts.join(", "), cn))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn every_truncation_and_corruption_of_a_real_certificate_is_safe() {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "wörker-7");
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "Acme");
            let der = params.self_signed(&key).unwrap().der().to_vec();
            assert_eq!(
                super::subject(&der),
                Some((
                    "CN=wörker-7, O=Acme".to_string(),
                    Some("wörker-7".to_string())
                ))
            );
            for n in 0..der.len() {
                let _ = super::subject(&der[..n]);
            }
            let mut rng = fastrand::Rng::with_seed(7);
            for _ in 0..20_000 {
                let mut d = der.clone();
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(..d.len());
                    d[i] = rng.u8(..);
                }
                let _ = super::subject(&d);
            }
        }

        #[test]
        fn garbage_does_not_panic() {
            for input in [
                &b""[..],
                b"\x30",
                b"\x30\x84\xff\xff\xff\xff",
                b"\x30\x03\x30\x01",
            ] {
                assert!(super::subject(input).is_none());
            }
            assert_eq!(super::dotted(&[0x2a, 0x86, 0x48]), "1.2.840");
        }
    }
}
