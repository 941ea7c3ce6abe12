//! Router: sends each batch to every sink its kind is routed to, and answers once
//! all of them confirmed.

use crate::event::Kind;
use crate::mailbox::Mailbox;
use crate::messages::{PipelineError, Publish, Route};
use crate::publisher::Publisher;
use actix::prelude::*;
use std::collections::HashMap;

/// The router's mailbox (`actor="router"`); a forwarder to a remote router uses it too.
pub const MAILBOX: Mailbox = Mailbox("router");

/// Fans batches out to the publishers of their kind.
pub struct Router {
    routes: HashMap<Kind, Vec<Addr<Publisher>>>,
}

impl Router {
    /// A router with the given publishers per kind.
    pub fn new(routes: HashMap<Kind, Vec<Addr<Publisher>>>) -> Self {
        Router { routes }
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<Route> for Router {
    type Result = ResponseFuture<Result<(), PipelineError>>;

    fn handle(&mut self, msg: Route, _: &mut Self::Context) -> Self::Result {
        let batch = msg.into_batch();
        let kind = batch.kind();
        let publishers = self.routes.get(&kind).cloned().unwrap_or_default();
        Box::pin(async move {
            if publishers.is_empty() {
                return Err(PipelineError::NoRoute(kind));
            }
            let sends = publishers
                .iter()
                .map(|p| p.send(Publish::new(batch.clone())));
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
