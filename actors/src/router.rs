//! Router: sends each batch to every sink its kind is routed to, and answers once
//! all of them confirmed.

use crate::event::Kind;
use crate::mailbox::Mailbox;
use crate::messages::{Batch, PipelineError, Publish, Route};
use crate::publisher::Publisher;
use actix::Addr;
use std::collections::HashMap;
use std::future::Future;

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

    /// Sends `batch` to every publisher of its kind; resolves once all confirmed.
    fn route(&self, batch: Batch) -> impl Future<Output = Result<(), PipelineError>> + 'static {
        let kind = batch.kind();
        let publishers = self.routes.get(&kind).cloned().unwrap_or_default();
        async move {
            if publishers.is_empty() {
                return Err(PipelineError::NoRoute(kind));
            }
            let sends = publishers
                .iter()
                .map(|p| p.send(Publish::new(batch.clone())));
            let mut confirmed = 0usize;
            let mut failure: Option<PipelineError> = None;
            for result in futures::future::join_all(sends).await {
                match result.unwrap_or(Err(PipelineError::Stopped("publisher"))) {
                    Ok(()) => confirmed += 1,
                    Err(e) => {
                        tracing::warn!(%kind, error = %e, "routing failed");
                        // An unknown outcome wins: the client must learn that its
                        // events may be on a bus already.
                        let keep = matches!(&failure, Some(kept) if !kept.nothing_published());
                        if !keep {
                            failure = Some(e);
                        }
                    }
                }
            }
            match failure {
                None => Ok(()),
                // Another sink has the batch already: a retry must reuse its ids.
                Some(e) if confirmed > 0 && e.nothing_published() => {
                    Err(PipelineError::Partial(Box::new(e)))
                }
                Some(e) => Err(e),
            }
        }
    }
}

crate::pass_batches_on!(Router, Route, route);
