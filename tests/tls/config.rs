//! TLS files that cannot be used are refused before anything listens: exit 78,
//! one line per problem naming the key.

use super::*;

/// `flujo run` and `flujo validate` with `env` both refuse the configuration,
/// naming `key` on a line that also holds `reason`.
fn refused(env: &[(&str, &str)], key: &str, reason: &str) {
    for command in ["run", "validate"] {
        let args: Vec<&str> = std::iter::once(command).chain(LOOPBACK_PORTS).collect();
        let out = flujo(&args, env);
        assert_code(&out, 78, &format!("flujo {command}: {key}"));
        let err = stderr(&out);
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("key `{key}`")) && l.contains(reason)),
            "flujo {command}: no line names `{key}` with {reason:?}:\n{err}"
        );
        assert!(
            !stdout(&out).contains("flujo listening"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_certificate_without_its_key_is_refused_naming_the_key() {
    let pki = TestPki::new("config");
    let cert = arg(&pki.cert);
    let key = arg(&pki.key);
    refused(
        &[("FLUJO__HTTP__TLS_CERT_FILE", &cert)],
        "http.tls_key_file",
        "http.tls_cert_file",
    );
    refused(
        &[("FLUJO__GRPC__TLS_KEY_FILE", &key)],
        "grpc.tls_cert_file",
        "both or neither",
    );
}

#[test]
fn unreadable_or_mismatched_files_are_refused_naming_the_key() {
    let pki = TestPki::new("config");
    let other = TestPki::new("other");
    let (cert, key) = (arg(&pki.cert), arg(&pki.key));
    let missing = arg(&pki.dir.path().join("missing.pem"));
    refused(
        &[
            ("FLUJO__TCP__TLS_CERT_FILE", &missing),
            ("FLUJO__TCP__TLS_KEY_FILE", &key),
        ],
        "tcp.tls_cert_file",
        "cannot read",
    );
    // The key file given as the certificate: no certificate in it.
    refused(
        &[
            ("FLUJO__HTTP__TLS_CERT_FILE", &key),
            ("FLUJO__HTTP__TLS_KEY_FILE", &key),
        ],
        "http.tls_cert_file",
        "holds no PEM certificate",
    );
    refused(
        &[
            ("FLUJO__GRPC__TLS_CERT_FILE", &cert),
            ("FLUJO__GRPC__TLS_KEY_FILE", &arg(&other.key)),
        ],
        "grpc.tls_key_file",
        "does not go with the certificate",
    );
    refused(
        &[("FLUJO__ROUTER_CA_FILE", &missing)],
        "router_ca_file",
        "cannot read",
    );
}
