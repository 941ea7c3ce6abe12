//! HTTP ingest as a client sees it: every path and encoding, the seeds' event forms,
//! every error answer, backpressure, and that no input brings the process down.

mod accepted;
mod refused;
mod robustness;
#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)]
use refused::*;
#[allow(unused_imports)]
use robustness::*;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;
