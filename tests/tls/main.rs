//! TLS on the listeners, as clients meet it: a real `flujo run` given a server
//! certificate signed by a CA made at test time (rcgen), for `localhost` and
//! `127.0.0.1`.
//!
//! # Layout
//! - this file: starting a server whose three listeners speak TLS; running the
//!   binary and other commands to completion.
//! - `https`: ingest posted over HTTPS is counted by a query over HTTPS; `curl
//!   --cacert` against it (and over HTTP/2 by ALPN); plain HTTP sent to the port gets
//!   no HTTP answer; a client that does not trust the CA fails the handshake;
//!   `flujo ping` with and without `--ca-file`.
//! - `grpc`: the independent Python client over TLS, `flujo loadgen --ca-file` to
//!   `grpcs://` and `https://` with `--verify`, `flujo ping grpcs://`, and the TCP
//!   line protocol inside TLS.
//! - `forward`: a receiver forwards to a router in another process over
//!   `grpcs://` with `router_ca_file`; without the CA it cannot.
//! - `config`: a certificate without its key (and the other way round, and a file
//!   that is not PEM) is refused at start and by `flujo validate`, exit 78, naming
//!   the key.

mod config;
mod forward;
mod grpc;
mod https;
#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::*;

/// The longest any one command of these tests may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// `(name, value)` pairs as the server starters take them.
fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A server (every role) whose HTTP, gRPC and TCP listeners speak TLS with
/// `pki`'s certificate, with these extra variables; its client trusts `pki`'s CA.
fn tls_server(pki: &TestPki, extra: &[(&str, &str)]) -> TestServer {
    let mut env = pki.listener_env("http");
    env.extend(pki.listener_env("grpc"));
    env.extend(pki.listener_env("tcp"));
    env.push(("FLUJO__QUERY__CACHE_TTL_MS".into(), "0".into()));
    let mut env = borrowed(&env);
    env.extend_from_slice(extra);
    TestServer::start(&env).over_tls(&pki.ca)
}

/// `flujo ARGS` with `envs`, run to completion in a fresh directory, no inherited
/// `FLUJO*` or `RUST_LOG` variables.
fn flujo(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = flujo_command(dir.path());
    cmd.args(args).envs(envs.iter().copied());
    output_within(cmd, COMMAND_TIMEOUT)
}

/// A command (not flujo) run to completion.
fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    output_within(cmd, COMMAND_TIMEOUT)
}

/// The path as an argument.
fn arg(path: &Path) -> String {
    path.display().to_string()
}
