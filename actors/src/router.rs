//! Router: sends each batch to every sink its kind is routed to, and answers once
//! all of them confirmed.

use crate::event::Kind;
use crate::messages::{PipelineError, Publish, Route};
use crate::metrics::MAILBOX_DEPTH;
use crate::publisher::Publisher;
use actix::prelude::*;
use std::collections::HashMap;

const ACTOR: &str = "router";

/// Fans batches out to the publishers of their kind.
pub struct Router {
    routes: HashMap<Kind, Vec<Addr<Publisher>>>,
    mailbox_capacity: usize,
}

impl Router {
    /// A router with the given publishers per kind.
    pub fn new(routes: HashMap<Kind, Vec<Addr<Publisher>>>, mailbox_capacity: usize) -> Self {
        Router {
            routes,
            mailbox_capacity,
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

// The routing table is configuration, rebuilt as is on restart.
impl Supervised for Router {
    fn restarting(&mut self, _: &mut Self::Context) {
        metrics::counter!(crate::metrics::ACTOR_RESTARTS, "actor" => ACTOR).increment(1);
    }
}

impl Handler<Route> for Router {
    type Result = ResponseFuture<Result<(), PipelineError>>;

    fn handle(&mut self, Route(batch): Route, _: &mut Self::Context) -> Self::Result {
        metrics::gauge!(MAILBOX_DEPTH, "actor" => ACTOR).decrement(1.0);
        let kind = batch.kind();
        let publishers = self.routes.get(&kind).cloned().unwrap_or_default();
        Box::pin(async move {
            if publishers.is_empty() {
                return Err(PipelineError::NoRoute(kind));
            }
            let sends = publishers.iter().map(|p| {
                metrics::gauge!(MAILBOX_DEPTH, "actor" => "publisher").increment(1.0);
                p.send(Publish(batch.clone()))
            });
            let mut outcome = Ok(());
            for result in futures::future::join_all(sends).await {
                let result = result.unwrap_or(Err(PipelineError::Stopped("publisher")));
                if let Err(e) = result {
                    tracing::warn!(%kind, error = %e, "routing failed");
                    outcome = Err(e);
                }
            }
            outcome
        })
    }
}
