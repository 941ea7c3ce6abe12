//! Certificates made at test time (rcgen), written as PEM files: a CA of the test's
//! own and a server certificate it signed for `localhost` and `127.0.0.1`.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::PathBuf;

/// A CA and a server certificate it signed, as files in a temporary directory.
pub struct TestPki {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server certificate (for `localhost` and `127.0.0.1`).
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
    /// Where the files are; removed on drop.
    pub dir: tempfile::TempDir,
}

impl TestPki {
    /// A fresh CA (named `name`) and a server certificate it signed.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");

        let write = |file: &str, text: String| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            dir,
        }
    }

    /// The variables that give the listener of `section` (`http`, `grpc`, `tcp`)
    /// this certificate and key.
    pub fn listener_env(&self, section: &str) -> Vec<(String, String)> {
        let section = section.to_uppercase();
        vec![
            (
                format!("FLUJO__{section}__TLS_CERT_FILE"),
                self.cert.display().to_string(),
            ),
            (
                format!("FLUJO__{section}__TLS_KEY_FILE"),
                self.key.display().to_string(),
            ),
        ]
    }
}
