//! The command line as a user meets it, against the real binary: `flujo validate`
//! (exit 0 / 78 / 69 and one line per problem naming the key, against closed ports
//! and the real services), `--help` listing allowed values and variables, shell
//! completions, the precedence of `--log-level` over `RUST_LOG`, `FLUJO__CONFIG` and
//! the old `FLUJO_CONFIG`, and `flujo loadgen` picking its transport from the target.
//!
//! # Layout
//! - this file: running the binary to completion, closed ports.
//! - `validate`: `flujo validate` and the exit codes of a bad configuration.
//! - `flags`: help, completions, variables, log precedence.
//! - `loadgen`: the transport inferred from `--target`.

#[path = "../support/mod.rs"]
mod support;

mod flags;
mod loadgen;
mod validate;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::{assert_code, flujo_command, output_within, stderr, stdout};

/// The longest any one command of these tests may run (validate bounds each
/// dependency check at 5 s, all at once).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `flujo ARGS` with `envs`, run to completion in `dir`, no inherited `FLUJO*` or
/// `RUST_LOG` variables.
fn flujo_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = flujo_command(dir);
    cmd.args(args).envs(envs.iter().copied());
    output_within(cmd, COMMAND_TIMEOUT)
}

/// `flujo ARGS` with `envs`, in a fresh empty directory (no `flujo.toml`).
fn flujo(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    flujo_in(dir.path(), args, envs)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
