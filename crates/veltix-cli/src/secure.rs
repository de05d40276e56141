//! The TLS and authentication options of `serve`, `send` and `ping`.

use std::path::PathBuf;

use veltix::tls::{ClientTls, ServerTls};
use veltix::{ClientConfig, Server, ServerConfig};

/// `veltix serve`: TLS and token authentication.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Speak TLS: the server's certificate chain (PEM, leaf first).
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by this CA (PEM).
    #[arg(long, value_name = "CA.pem", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Accept only clients presenting one of these tokens ({"token": "..."} in their hello's
    /// meta; one token per non-empty line); others get {"error": "unauthorized"}.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
}

impl ServeArgs {
    /// Sets `config.tls` from the flags.
    pub fn configure(&self, config: &mut ServerConfig) {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let mut tls = ServerTls::from_pem_files(cert, key);
            if let Some(ca) = &self.tls_client_ca {
                tls = tls.client_ca_file(ca);
            }
            config.tls = Some(tls);
        }
    }

    /// Installs the token check (reading the token file now: a bad file fails the command).
    pub fn install(&self, server: &Server) -> veltix::Result<()> {
        let Some(path) = &self.auth_token_file else {
            return Ok(());
        };
        let tokens = veltix::auth::read_token_file(path)?;
        if server.config().tls.is_none() {
            tracing::warn!("--auth-token-file without --tls-cert: tokens travel in plaintext");
        }
        tracing::info!(tokens = tokens.len(), "token authentication on");
        server.authenticate(veltix::auth::token_list(tokens));
        Ok(())
    }
}

/// `veltix send` / `veltix ping`: TLS and a token.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ClientArgs {
    /// Speak TLS, trusting the system's CA store (implied by the other --tls-* flags).
    #[arg(long)]
    pub tls: bool,
    /// Speak TLS, trusting the CA certificates of this PEM file instead of the system's.
    #[arg(long, value_name = "CA.pem")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: --host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// A client certificate (PEM) for servers that require mutual TLS.
    #[arg(long, value_name = "CERT.pem", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "KEY.pem", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Present this token ({"token": TOKEN} in the hello's meta).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

impl ClientArgs {
    /// Sets `config.tls` and `config.meta` from the flags.
    pub fn configure(&self, mut config: ClientConfig) -> ClientConfig {
        let wants_tls = self.tls
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
            || self.tls_cert.is_some();
        if wants_tls {
            let mut tls = match &self.tls_ca {
                Some(ca) => ClientTls::ca_file(ca),
                None => ClientTls::system_roots(),
            };
            if let Some(name) = &self.tls_server_name {
                tls = tls.server_name(name);
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.client_cert_files(cert, key);
            }
            config.tls = Some(tls);
        }
        if let Some(token) = &self.token {
            config = config.with_token(token);
        }
        config
    }
}
