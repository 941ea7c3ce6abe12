//! The gateway from the outside: authentication and per-client rate limits on a
//! real `flujo run`, over HTTP, gRPC and TCP.
//!
//! Keys are made at test time: an HS256 secret, an RSA key pair (served to flujo as
//! a JWKS file, `kid` `rsa-1`) and an EC P-256 key pair (its public key as a PEM
//! file), by the `openssl` command; tokens are minted here with `jsonwebtoken`.
//!
//! - `auth`: every case on every transport (no credential, expired, forged: wrong
//!   secret, wrong key, `alg: none`, tampered payload, an HMAC token signed with the
//!   public key; wrong scope; good, by each key; an API key), health, metrics,
//!   OpenAPI and the page's assets open, the document describing the scheme, the
//!   failures counted.
//! - `limits`: one client flooding gets 429 with `Retry-After` and the `RateLimit`
//!   headers while another, measured against its own unloaded latencies, gets 202
//!   throughout; the same on gRPC (`RESOURCE_EXHAUSTED`) and TCP (`err busy`), and
//!   by peer address when authentication is off.
//! - `forward`: a receiver-only process authenticates its forward to the router
//!   with `auth.forward_token_file` (Kafka bus, `scripts/services.sh up`).

mod auth;
mod forward;
mod limits;
#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)]
use auth::*;
#[allow(unused_imports)]
use limits::*;

use flujo_proto::v1::ingest_client::IngestClient;
use flujo_proto::v1::{Ack, Sale, SaleBatch};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The HS256 secret flujo is given.
const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
/// The API key listed in the keys file, with the `ingest` scope, named `loader`.
const API_KEY: &str = "fk_live_0123456789abcdef";
/// A second API key, with the `query` scope only, named `viewer`.
const QUERY_KEY: &str = "fk_view_0123456789abcdef";

/// Key material made for one test.
struct Keys {
    dir: tempfile::TempDir,
    rsa: EncodingKey,
    other_rsa: EncodingKey,
    ec: EncodingKey,
    /// The EC public key PEM, as flujo reads it (for the key-confusion forgery).
    ec_public_pem: Vec<u8>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = output_within(
        {
            let mut c = Command::new("openssl");
            c.args(args).current_dir(dir);
            c
        },
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("key directory");
        let d = dir.path();
        for name in ["rsa", "other"] {
            openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &format!("{name}.pem"),
                ],
                d,
            );
        }
        openssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec.pem",
            ],
            d,
        );
        openssl(
            &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"],
            d,
        );
        let read = |name: &str| std::fs::read(d.join(name)).expect("read a key");
        let rsa = EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("RSA key");
        let other_rsa = EncodingKey::from_rsa_pem(&read("other.pem")).expect("RSA key");
        let ec = EncodingKey::from_ec_pem(&read("ec.pem")).expect("EC key");
        let mut jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).expect("JWK");
        jwk.common.key_id = Some("rsa-1".into());
        let jwks = JwkSet { keys: vec![jwk] };
        std::fs::write(
            d.join("jwks.json"),
            serde_json::to_vec(&jwks).expect("JWKS"),
        )
        .expect("write JWKS");
        std::fs::write(d.join("secret"), format!("{SECRET}\n")).expect("write secret");
        std::fs::write(
            d.join("api-keys.toml"),
            format!(
                "[[keys]]\nname = \"loader\"\nkey = \"{API_KEY}\"\nscopes = [\"ingest\"]\n\n\
                 [[keys]]\nname = \"viewer\"\nsha256 = \"{}\"\nscopes = [\"query\"]\n",
                sha256_hex(QUERY_KEY)
            ),
        )
        .expect("write API keys");
        Keys {
            ec_public_pem: read("ec.pub.pem"),
            dir,
            rsa,
            other_rsa,
            ec,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The environment that turns every kind of credential on.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLUJO__AUTH__JWT_SECRET_FILE", self.path("secret")),
            ("FLUJO__AUTH__JWKS_FILE", self.path("jwks.json")),
            ("FLUJO__AUTH__JWT_PUBLIC_KEY_FILE", self.path("ec.pub.pem")),
            ("FLUJO__AUTH__API_KEYS_FILE", self.path("api-keys.toml")),
        ]
    }

    fn hs(&self, claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("secret");
        encode(&Header::new(Algorithm::HS256), claims, &key).expect("HS256 token")
    }

    fn rs(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        encode(&header, claims, &self.rsa).expect("RS256 token")
    }

    fn es(&self, claims: &Value) -> String {
        encode(&Header::new(Algorithm::ES256), claims, &self.ec).expect("ES256 token")
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims of `sub` with `scope`, expiring in `exp_in` seconds (negative: past).
fn claims(sub: &str, scope: &str, exp_in: i64) -> Value {
    json!({"sub": sub, "scope": scope, "exp": now() + exp_in, "iat": now()})
}

/// Starts flujo with `env` (owned strings).
fn start(env: &[(&'static str, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::start(&env)
}

/// One good sale as JSON.
fn sale_body(i: usize) -> String {
    json!({"category": "home", "product_id": format!("P{i}"), "price": 3.5, "quantity": 1})
        .to_string()
}

/// `POST /v1/sales` with `headers`.
async fn post_sale(server: &TestServer, headers: &[(&str, &str)], i: usize) -> reqwest::Response {
    let mut req = server
        .client
        .post(server.url("/v1/sales"))
        .header("content-type", "application/json")
        .body(sale_body(i));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("POST /v1/sales")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A gRPC client of the server's Ingest service.
async fn grpc_client(server: &TestServer) -> IngestClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_uri())
        .expect("URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect to gRPC");
    IngestClient::new(channel)
}

/// `PublishSales` of one sale with `metadata`.
async fn grpc_sale(
    client: &mut IngestClient<Channel>,
    metadata: &[(&'static str, &str)],
) -> Result<Ack, Status> {
    let mut req = Request::new(SaleBatch {
        sales: vec![Sale {
            category: 3,
            product_id: "G1".into(),
            price: 2.0,
            quantity: 1,
            ..Sale::default()
        }],
    });
    for (k, v) in metadata {
        req.metadata_mut()
            .insert(*k, v.parse().expect("metadata value"));
    }
    client
        .publish_sales(req)
        .await
        .map(tonic::Response::into_inner)
}

/// A TCP event line.
fn sale_line(i: usize) -> String {
    json!({"kind": "sale", "category": "home", "product_id": format!("T{i}"), "price": 1.5, "quantity": 1})
        .to_string()
}
