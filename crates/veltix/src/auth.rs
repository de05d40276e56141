//! Authentication in the handshake: the client presents credentials in its hello's `meta`, the
//! server's authenticate hook accepts (optionally tagging the client) or rejects it.
//!
//! On the wire (Gen 3) the client's hello is `{"v": ..., "pv": "1.0", "meta": {...}}`; a
//! refused client gets `{"error": REASON}` instead of `{"result": "ok"}`, and its `connect()`
//! fails with [`Error::Rejected`](crate::Error::Rejected) (a Python 3.3.0 client's `connect()`
//! fails too). Gen 1 has no `meta` and no refusal message: there the hook sees an empty `meta`
//! (the TLS identity still counts) and a refused client is disconnected.
//!
//! The hook runs within the server's `handshake_timeout`, counted from the TCP accept; a hook
//! that does not answer in time gets the client disconnected (and counted as a failure), and
//! holds nothing but that client's connection slot meanwhile. Sync hooks run on tokio's
//! blocking pool, async hooks on the server's runtime: neither delays other handshakes.
//!
//! ```
//! use veltix::auth::{AuthDecision, AuthRequest};
//! use veltix::{Client, ClientConfig, Error, Server, ServerConfig};
//!
//! let server = Server::new(ServerConfig::local());
//! server.authenticate(|req: &AuthRequest| match req.token() {
//!     Some("s3cret") => AuthDecision::accept().with_tag("role", "admin"),
//!     _ => AuthDecision::reject("unauthorized"),
//! });
//! let addr = server.start()?;
//!
//! let good = Client::new(ClientConfig::new("127.0.0.1", addr.port()).with_token("s3cret"));
//! good.connect()?;
//! let bad = Client::new(ClientConfig::new("127.0.0.1", addr.port()).with_token("guess"));
//! assert!(matches!(bad.connect(), Err(Error::Rejected(r)) if r == "unauthorized"));
//! assert_eq!(server.auth_failures(), 1);
//! # Ok::<(), veltix::Error>(())
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::tls::TlsInfo;

/// What the authenticate hook is told about a client that completed the protocol handshake.
///
/// ```
/// use veltix::auth::AuthRequest;
/// let mut req = AuthRequest {
///     peer: "10.0.0.7:50000".parse().unwrap(),
///     meta: Default::default(),
///     peer_version: "3.3.0".into(),
///     tls: None,
/// };
/// req.meta.insert("token".into(), "abc".into());
/// assert_eq!(req.token(), Some("abc"));
/// assert_eq!(req.certificate_cn(), None); // no TLS
/// ```
#[derive(Clone)]
pub struct AuthRequest {
    /// The client's address.
    pub peer: SocketAddr,
    /// The `meta` object of the client's hello (empty for Gen 1 and for clients that send none,
    /// such as Python 3.3.0).
    pub meta: Map<String, Value>,
    /// The version the client announced (`v`).
    pub peer_version: String,
    /// The TLS session, when the server speaks TLS (with the client's verified certificate
    /// under mutual TLS).
    pub tls: Option<TlsInfo>,
}

/// Shows the keys of `meta`, never its values (they may be credentials).
impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("peer", &self.peer)
            .field("meta_keys", &self.meta.keys().collect::<Vec<_>>())
            .field("peer_version", &self.peer_version)
            .field("tls", &self.tls)
            .finish()
    }
}

impl AuthRequest {
    /// `meta["token"]` when it is a string (what [`ClientConfig::with_token`](crate::ClientConfig::with_token)
    /// sends).
    pub fn token(&self) -> Option<&str> {
        self.meta.get("token").and_then(Value::as_str)
    }

    /// The common name of the client's verified certificate (mutual TLS), if any.
    pub fn certificate_cn(&self) -> Option<&str> {
        self.tls
            .as_ref()?
            .peer_certificate
            .as_ref()?
            .common_name
            .as_deref()
    }
}

/// The hook's answer.
///
/// ```
/// use veltix::auth::AuthDecision;
/// let yes = AuthDecision::accept().with_tag("user", "alice");
/// assert!(yes.is_accept());
/// assert!(!AuthDecision::reject("unauthorized").is_accept());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum AuthDecision {
    /// Let the client in, with these tags set on its [`ClientInfo`](crate::ClientInfo) before
    /// `on_connect` runs.
    Accept(HashMap<String, Value>),
    /// Refuse it; the reason is sent to the client as `{"error": REASON}` (cut to 1024 bytes).
    Reject(String),
}

impl AuthDecision {
    /// Accept without tags.
    pub fn accept() -> Self {
        AuthDecision::Accept(HashMap::new())
    }

    /// Refuse with a reason.
    pub fn reject(reason: impl Into<String>) -> Self {
        AuthDecision::Reject(reason.into())
    }

    /// Adds a tag to an `Accept` (no effect on a `Reject`).
    pub fn with_tag(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        if let AuthDecision::Accept(tags) = &mut self {
            tags.insert(name.into(), value.into());
        }
        self
    }

    /// True for `Accept`.
    pub fn is_accept(&self) -> bool {
        matches!(self, AuthDecision::Accept(_))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A registered hook.
#[derive(Clone)]
pub(crate) enum Authenticator {
    /// Runs on tokio's blocking pool.
    Sync(Arc<dyn Fn(&AuthRequest) -> AuthDecision + Send + Sync>),
    /// Runs on the server's runtime.
    Async(Arc<dyn Fn(AuthRequest) -> BoxFuture<AuthDecision> + Send + Sync>),
}

impl Authenticator {
    pub(crate) fn sync(f: impl Fn(&AuthRequest) -> AuthDecision + Send + Sync + 'static) -> Self {
        Authenticator::Sync(Arc::new(f))
    }

    pub(crate) fn from_async<F, Fut>(f: F) -> Self
    where
        F: Fn(AuthRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AuthDecision> + Send + 'static,
    {
        Authenticator::Async(Arc::new(move |r| Box::pin(f(r))))
    }
}

/// A hook that accepts exactly the clients presenting one of `tokens` as `{"token": ...}` in
/// their `meta` and rejects every other with `"unauthorized"` (what `veltix serve
/// --auth-token-file` uses). Tokens are compared in constant time.
///
/// ```
/// use veltix::auth::{token_list, AuthRequest};
/// let hook = token_list(["alpha".to_string(), "beta".to_string()]);
/// let mut req = AuthRequest {
///     peer: "127.0.0.1:1".parse().unwrap(),
///     meta: Default::default(),
///     peer_version: "3.3.0".into(),
///     tls: None,
/// };
/// assert!(!hook(&req).is_accept());
/// req.meta.insert("token".into(), "beta".into());
/// assert!(hook(&req).is_accept());
/// ```
pub fn token_list(
    tokens: impl IntoIterator<Item = String>,
) -> impl Fn(&AuthRequest) -> AuthDecision + Send + Sync + 'static {
    let tokens: Vec<String> = tokens.into_iter().filter(|t| !t.is_empty()).collect();
    move |req: &AuthRequest| {
        let given = req.token().unwrap_or("");
        // Every token is compared, whatever matched, so timing says nothing about which.
        let mut ok = false;
        for t in &tokens {
            ok |= constant_time_eq(t.as_bytes(), given.as_bytes());
        }
        if ok && !given.is_empty() {
            AuthDecision::accept()
        } else {
            AuthDecision::reject("unauthorized")
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a token file: each non-empty line (surrounding whitespace trimmed) is a token.
///
/// ```
/// let path = std::env::temp_dir().join(format!("veltix-doc-tokens-{}", std::process::id()));
/// std::fs::write(&path, "alpha\n\n  beta  \n").unwrap();
/// assert_eq!(veltix::auth::read_token_file(&path).unwrap(), ["alpha", "beta"]);
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn read_token_file(path: impl AsRef<std::path::Path>) -> crate::Result<Vec<String>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::Error::Config(format!("cannot read token file {}: {e}", path.display()))
    })?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err(crate::Error::Config(format!(
            "token file {} holds no token",
            path.display()
        )));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn empty_token_never_matches() {
        let hook = token_list(["".to_string()]);
        let mut req = AuthRequest {
            peer: "127.0.0.1:1".parse().unwrap(),
            meta: Map::new(),
            peer_version: String::new(),
            tls: None,
        };
        assert!(!hook(&req).is_accept());
        req.meta.insert("token".into(), "".into());
        assert!(!hook(&req).is_accept());
    }
}
