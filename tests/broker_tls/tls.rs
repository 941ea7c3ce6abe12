//! Certificates made at test time (a private CA, a server certificate for
//! `127.0.0.1` and `localhost`, a client certificate), written as PEM files, and a
//! TLS-terminating proxy that forwards every connection to a plain server.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A certificate and its key, as PEM files.
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// A private CA with a server certificate (SANs `127.0.0.1`, `localhost`) and a
/// client certificate it signed, in a temporary directory.
pub struct TestPki {
    /// The CA certificate (what the clients are told to trust).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server: Pem,
    /// A client certificate (mutual TLS).
    pub client: Pem,
    ca_der: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

fn issue(
    dir: &std::path::Path,
    name: &str,
    sans: &[&str],
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> Pem {
    let key = KeyPair::generate().expect("key pair");
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, issuer).expect("sign");
    let pem = Pem {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    };
    std::fs::write(&pem.cert, cert.pem()).expect("write the certificate");
    std::fs::write(&pem.key, key.serialize_pem()).expect("write the key");
    pem
}

impl TestPki {
    /// Makes the CA and both certificates.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "flujo test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).expect("write the CA");
        let server = issue(dir.path(), "server", &["127.0.0.1", "localhost"], &ca);
        let client = issue(dir.path(), "client", &["flujo-client"], &ca);
        TestPki {
            ca: ca_path,
            ca_der: ca.der().clone(),
            server,
            client,
            _dir: dir,
        }
    }

    /// A rustls server configuration with the server certificate; with
    /// `require_client_cert`, only clients presenting a certificate of this CA are let in.
    fn server_config(&self, require_client_cert: bool) -> ServerConfig {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).expect("CA root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.key_der.clone()));
        builder
            .with_single_cert(vec![self.server.cert_der.clone()], key)
            .expect("server certificate")
    }
}

/// A TLS-terminating proxy on 127.0.0.1: every connection's TLS is ended here and
/// its bytes are copied to and from `upstream` in the clear. Stops when dropped.
pub struct TlsProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsProxy {
    /// Listens on a free port (call inside a tokio runtime).
    pub async fn start(pki: &TestPki, upstream: SocketAddr, require_client_cert: bool) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        TlsProxy::serve(listener, pki, upstream, require_client_cert)
    }

    /// Serves on `listener` (bound beforehand, e.g. to advertise its port).
    pub fn serve(
        listener: TcpListener,
        pki: &TestPki,
        upstream: SocketAddr,
        require_client_cert: bool,
    ) -> TlsProxy {
        let addr = listener.local_addr().expect("proxy address");
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config(require_client_cert)));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        TlsProxy { addr, accepting }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
