//! The exit codes of `flujo` (README, "Exit codes"): sysexits(3)'s where one
//! fits, so scripts and orchestrators can tell a usage error from a bad
//! configuration from a dependency that is down.

/// Everything held.
pub const OK: u8 = 0;
/// Failed while running: `run` stopped with an error (e.g. an address in use),
/// `loadgen` had failed requests, `ping` failed stimuli.
pub const FAILURE: u8 = 1;
/// Usage error: an unknown flag, a value not among the allowed ones, flags that
/// contradict each other (clap's own code).
pub const USAGE: u8 = 2;
/// `loadgen --verify`: the KPIs read back differ from the ground truth
/// (`EX_DATAERR`, 65; loadgen's report decides it).
pub const VERIFY_FAILED: u8 = flujo_loadgen::EXIT_VERIFY_FAILED as u8;
/// `validate`: a dependency (broker, store, remote router) is unreachable
/// (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// `run`, `config`, `validate`: the configuration cannot be used (`EX_CONFIG`).
pub const CONFIG: u8 = 78;
