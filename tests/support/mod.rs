//! Shared support of the integration tests. Each test target includes it with
//! `mod support;` (or `#[path = "../support/mod.rs"] mod support;` from a directory
//! target) and uses what it needs.
//!
//! # Layout
//! - `server`: a real `flujo run` process per test ([`TestServer`]), HTTP helpers.
//! - `services`: the shared brokers' addresses (`FLUJO_TEST_*`), probes that fail
//!   when a service is down, Valkey key helpers.
//! - `own_valkey`: a `valkey-server` of the test's own ([`OwnValkey`]), and a
//!   three-master Valkey Cluster ([`OwnCluster`]).
//! - `bodies`: request bodies (object, array, NDJSON) and the spellings of events.
//! - `assertions`: numbers to 1e-9, KPI objects against the ground truth of
//!   `flujo_loadgen::truth`, ranking pages, Prometheus samples.
//! - `actor_events`: events and batches as the actors carry them.
//! - `tools`: finding Prometheus, Locust, valkey-server.
//! - `line_client`: the TCP line protocol client; bounded child processes and
//!   their output (`output_within`, `stdout`, `stderr`, `assert_code`).
//! - `tls`: a CA and a server certificate made at test time ([`TestPki`]).
//!
//! The events, their generator and the ground truth are the load generator's
//! (`flujo_loadgen::{generate, truth}`), re-exported here.

// Each test target uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod actor_events;
pub mod assertions;
pub mod bodies;
pub mod line_client;
pub mod own_valkey;
pub mod server;
pub mod services;
pub mod tls;
pub mod tools;

pub use actor_events::*;
pub use assertions::*;
pub use bodies::*;
pub use flujo_loadgen::generate::{
    random_price, random_sale, random_tweet, Sale, Tweet, CATEGORIES, WEATHERS,
};
pub use flujo_loadgen::truth::{DedupTruth, SaleAgg, Truth, TweetAgg};
pub use line_client::*;
pub use own_valkey::{OwnCluster, OwnValkey};
pub use server::*;
pub use services::*;
pub use tls::TestPki;
pub use tools::*;
