//! gRPC ingest as a client built from the proto sees it: batches and their Acks, every
//! refusal and its metadata, the bidirectional stream, health, reflection,
//! backpressure; the same KPIs whichever transport carried the events; and an
//! independent client in Python compiled from `proto/flujo/v1/ingest.proto` at run time.

mod backpressure;
mod health_reflection;
mod python_client;
mod same_kpis;
mod stream;
#[path = "../support/mod.rs"]
mod support;
mod unary;

#[allow(unused_imports)]
use backpressure::*;
#[allow(unused_imports)]
use health_reflection::*;
#[allow(unused_imports)]
use python_client::*;
#[allow(unused_imports)]
use same_kpis::*;
#[allow(unused_imports)]
use stream::*;
#[allow(unused_imports)]
use unary::*;

use flujo_proto::v1::ingest_client::IngestClient;
use flujo_proto::v1::{self as pb, event, Ack, Event, SaleBatch, TweetBatch};
use futures::future::join_all;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Upper bound of one gRPC call (and of waiting for one stream message).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A channel to the server's gRPC port, bounded in time.
async fn channel(server: &TestServer) -> Channel {
    tonic::transport::Endpoint::from_shared(server.grpc_uri())
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.grpc_uri()))
}

/// A client of the Ingest service over a channel to the test server.
type Ingest = IngestClient<Channel>;

async fn ingest_client(server: &TestServer) -> Ingest {
    IngestClient::new(channel(server).await)
}

/// Code of `name` in a proto enum whose values follow `names` (from 1; 0 is
/// UNSPECIFIED); `what` names the enum in the panic of an unknown name.
fn enum_code(names: &[&str], name: &str, what: &str) -> i32 {
    let position = names.iter().position(|n| *n == name);
    position.map_or_else(|| panic!("not a {what}: {name}"), |i| i as i32 + 1)
}

/// Category code of the proto enum (1–4, in [`CATEGORIES`] order).
fn category_code(category: &str) -> i32 {
    enum_code(&CATEGORIES, category, "category")
}

/// Weather code of the proto enum (1–6, in [`WEATHERS`] order).
fn weather_code(weather: &str) -> i32 {
    enum_code(&WEATHERS, weather, "weather")
}

fn pb_sale(s: &Sale) -> pb::Sale {
    pb::Sale {
        id: s.id.clone(),
        ts: s.ts,
        category: category_code(s.category),
        product_id: s.product_id.clone(),
        price: s.price,
        quantity: s.quantity as i64,
    }
}

fn pb_tweet(t: &Tweet) -> pb::Tweet {
    pb::Tweet {
        id: t.id.clone(),
        ts: 0,
        location: t.location.clone(),
        weather: weather_code(t.weather),
        temperature: t.temperature,
        humidity: t.humidity,
        text: String::new(),
    }
}

fn sale_event(s: pb::Sale) -> Event {
    Event {
        event: Some(event::Event::Sale(s)),
    }
}

fn tweet_event(t: pb::Tweet) -> Event {
    Event {
        event: Some(event::Event::Tweet(t)),
    }
}

async fn publish_sales(client: &mut Ingest, sales: Vec<pb::Sale>) -> Result<Ack, Status> {
    client
        .publish_sales(SaleBatch { sales })
        .await
        .map(tonic::Response::into_inner)
}

async fn publish_tweets(client: &mut Ingest, tweets: Vec<pb::Tweet>) -> Result<Ack, Status> {
    client
        .publish_tweets(TweetBatch { tweets })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts a batch Ack accepted `sent` in order: client ids echoed, empty ids
/// replaced by UUIDv7s, no stream-only fields. Returns the ids.
fn assert_batch_ack(ack: &Ack, sent: &[&str]) -> Vec<String> {
    assert_eq!(ack.accepted as usize, sent.len(), "{ack:?}");
    assert_eq!(ack.ids.len(), sent.len(), "{ack:?}");
    for (id, want) in ack.ids.iter().zip(sent) {
        if want.is_empty() {
            assert_uuid_v7(id);
        } else {
            assert_eq!(id, want, "a client id is echoed");
        }
    }
    assert!(
        ack.error.is_empty() && ack.code.is_empty() && ack.field.is_empty(),
        "{ack:?}"
    );
    ack.ids.clone()
}

/// A metadata value of a status as text.
fn meta<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// True when `text` holds `word` as a whole token (not inside a longer number or name).
fn has_token(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|t| t == word)
}
