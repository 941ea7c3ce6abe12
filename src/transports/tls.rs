//! TLS of the listeners (HTTP, gRPC, the TCP line protocol) and of flujo's own
//! clients of them (the receiver's forward to its router, `flujo ping`).
//!
//! A listener given `tls_cert_file` and `tls_key_file` speaks TLS only: a client
//! that sends plain text fails the handshake and its connection is closed without
//! an answer. Handshakes run concurrently, each within [`HANDSHAKE_TIMEOUT`], so a
//! slow or silent client never holds up the next one. rustls with ring, TLS 1.2 and
//! 1.3; the HTTP port offers ALPN `h2` and `http/1.1`, the gRPC port `h2`.
//!
//! The files are read at start (and checked by `flujo config` and `flujo
//! validate`, naming the key at fault): a renewed certificate takes a restart.
//!
//! A client given a CA file trusts exactly the certificates in it (as `curl
//! --cacert` does); without one, the system's roots.

use axum::serve::Listener;
use futures::Stream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use crate::config::sections::ListenerTlsFiles;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN of the HTTP port: HTTP/2, then HTTP/1.1.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the gRPC port: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// The TCP line protocol negotiates no application protocol.
pub const ALPN_NONE: &[&[u8]] = &[];

/// A TLS file that cannot be used, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct TlsFileError {
    /// Dotted key, e.g. `http.tls_key_file`.
    pub key: &'static str,
    /// Why the file is refused.
    pub reason: String,
}

/// The crypto of every TLS configuration flujo builds: ring, whatever other
/// provider another dependency may have compiled in.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file: at least one, each well-formed.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
            path.display()
        ),
        e => format!("{} is not a PEM private key file: {e}", path.display()),
    })
}

/// The TLS configuration of one listener (its certificate and key, and `alpn`), or
/// `None` when it has neither file. Every problem names its key: a file set without
/// the other, unreadable, not PEM, or a key that does not go with the certificate.
pub fn server_config(
    files: ListenerTlsFiles<'_>,
    alpn: &[&[u8]],
) -> Result<Option<Arc<ServerConfig>>, Vec<TlsFileError>> {
    let refuse = |key, reason| vec![TlsFileError { key, reason }];
    let (cert_path, key_path) = match (files.cert, files.key) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(refuse(
                files.key_key,
                format!("must be set too, with {} (both or neither)", files.cert_key),
            ))
        }
        (None, Some(_)) => {
            return Err(refuse(
                files.cert_key,
                format!("must be set too, with {} (both or neither)", files.key_key),
            ))
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let (certs, key) = match (read_certificates(cert_path), read_private_key(key_path)) {
        (Ok(certs), Ok(key)) => (certs, key),
        (certs, key) => {
            let mut problems = Vec::new();
            if let Err(reason) = certs {
                problems.push(TlsFileError {
                    key: files.cert_key,
                    reason,
                });
            }
            if let Err(reason) = key {
                problems.push(TlsFileError {
                    key: files.key_key,
                    reason,
                });
            }
            return Err(problems);
        }
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse(files.cert_key, e.to_string()))?;
    let mut config = builder
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "it is the key of another certificate".into(),
                e => e.to_string(),
            };
            refuse(
                files.key_key,
                format!(
                    "{} does not go with the certificate in {}: {why}",
                    key_path.display(),
                    cert_path.display()
                ),
            )
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Some(Arc::new(config)))
}

/// The acceptor of one listener, or `None` without TLS (see [`server_config`]).
pub fn acceptor(
    files: ListenerTlsFiles<'_>,
    alpn: &[&[u8]],
) -> anyhow::Result<Option<TlsAcceptor>> {
    match server_config(files, alpn) {
        Ok(config) => Ok(config.map(TlsAcceptor::from)),
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("{}", lines.join("; "))
        }
    }
}

/// Checks a CA file for a client: readable PEM certificates, each usable as a
/// trust anchor.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(())
}

/// The TLS of flujo's own gRPC and HTTP clients (the forward to the router,
/// `flujo ping`): the load generator's, so that both trust a CA file the same way.
pub use flujo_loadgen::{grpc_tls as grpc_client_tls, http_roots as http_client_roots};

/// A rustls client configuration (for the TCP line protocol) trusting exactly the
/// certificates of `ca_file`, else the system's roots.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certificates(path).map_err(anyhow::Error::msg)? {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                !roots.is_empty(),
                "no system root certificates found; give a CA file"
            );
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One handshake, within [`HANDSHAKE_TIMEOUT`]; a failed one is logged and closes
/// the connection unanswered.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A TCP listener whose connections come out TLS-handshaken (with `TCP_NODELAY`),
/// handshakes running concurrently: an axum [`Listener`], and through
/// [`TlsListener::into_stream`] the incoming connections of a tonic server.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// TLS with `acceptor` on `tcp`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        TlsListener {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }

    /// The handshaken connections, for `serve_with_incoming_shutdown`.
    pub fn into_stream(
        self,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut listener| async move {
            let (stream, _) = Listener::accept(&mut listener).await;
            Some((Ok(stream), listener))
        })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        self.handshakes.spawn(handshake(self.acceptor.clone(), stream, peer));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Accepts a TLS connection on the TCP line port, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept_line_connection(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files<'a>(cert: Option<&'a Path>, key: Option<&'a Path>) -> ListenerTlsFiles<'a> {
        ListenerTlsFiles {
            cert_key: "http.tls_cert_file",
            key_key: "http.tls_key_file",
            cert,
            key,
        }
    }

    #[test]
    fn both_or_neither_and_each_problem_names_its_key() {
        assert!(server_config(files(None, None), ALPN_HTTP)
            .expect("no TLS")
            .is_none());
        let dir = tempfile::tempdir().expect("temporary directory");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let err = server_config(files(Some(&cert), None), ALPN_HTTP).expect_err("no key");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].key, "http.tls_key_file");
        assert!(err[0].reason.contains("http.tls_cert_file"), "{err:?}");
        let err = server_config(files(None, Some(&key)), ALPN_HTTP).expect_err("no cert");
        assert_eq!(err[0].key, "http.tls_cert_file");

        let err = server_config(files(Some(&cert), Some(&key)), ALPN_HTTP).expect_err("missing");
        let keys: Vec<&str> = err.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["http.tls_cert_file", "http.tls_key_file"]);
        assert!(err[0].reason.contains("cannot read"), "{err:?}");

        std::fs::write(&cert, "not a certificate\n").expect("write");
        std::fs::write(
            &key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = server_config(files(Some(&cert), Some(&key)), ALPN_HTTP).expect_err("not PEM");
        assert!(
            err[0].reason.contains("holds no PEM certificate"),
            "{err:?}"
        );
        assert!(
            err[1].reason.contains("holds no PEM private key"),
            "{err:?}"
        );
        assert!(check_ca_file(&cert).is_err());
    }

    #[test]
    fn a_key_must_go_with_its_certificate() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let one = rcgen::generate_simple_self_signed(["localhost".to_owned()]).expect("one");
        let other = rcgen::generate_simple_self_signed(["localhost".to_owned()]).expect("other");
        let cert = write("cert.pem", one.cert.pem());
        let key = write("key.pem", one.signing_key.serialize_pem());
        let other_key = write("other.pem", other.signing_key.serialize_pem());

        let config = server_config(files(Some(&cert), Some(&key)), ALPN_HTTP)
            .expect("a good pair")
            .expect("TLS");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(check_ca_file(&cert).is_ok());
        let err = server_config(files(Some(&cert), Some(&other_key)), ALPN_HTTP)
            .expect_err("another key");
        assert_eq!(err[0].key, "http.tls_key_file");
        assert!(err[0].reason.contains("does not go with"), "{err:?}");
    }
}
