//! Mailbox depth (`flujo_mailbox_depth{actor}`), kept so it cannot drift.
//!
//! Every message bound for a bounded mailbox carries a [`Queued`] guard, made from
//! the destination actor's [`Mailbox`] when the message is built. The guard counts
//! the message in from that moment and out when it is dropped: when the actor's
//! handler takes the message, and just as well when a full mailbox hands it back, a
//! stopped actor's mailbox refuses it, or a stopped actor drops what was waiting. No
//! caller bumps another actor's gauge by name, and no path forgets to undo it.

use crate::metrics::MAILBOX_DEPTH;
use actix::{Actor, Addr, ArbiterHandle, Context};

/// Starts `actor` on `arbiter` with a mailbox of at most `capacity` messages: a full
/// mailbox makes `send` wait and `try_send` refuse at once.
pub fn start_bounded<A>(arbiter: &ArbiterHandle, capacity: usize, actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>> + Send,
{
    A::start_in_arbiter(arbiter, move |ctx| {
        ctx.set_mailbox_capacity(capacity);
        actor
    })
}

/// The mailbox of one kind of actor, named by its `actor` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox(pub &'static str);

impl Mailbox {
    /// The `actor` label of this mailbox.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// Counts one message into this mailbox until the returned guard is dropped.
    pub fn enqueue(self) -> Queued {
        let gauge = metrics::gauge!(MAILBOX_DEPTH, "actor" => self.0);
        gauge.increment(1.0);
        Queued { gauge }
    }
}

/// One message waiting in a mailbox; counted out of the depth when dropped.
#[must_use = "the message counts as queued until this guard is dropped"]
pub struct Queued {
    gauge: metrics::Gauge,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use std::sync::{Arc, Mutex};

    /// A recorder keeping the one gauge value it is given.
    #[derive(Default)]
    struct OneGauge(Arc<Mutex<f64>>);

    impl GaugeFn for OneGauge {
        fn increment(&self, value: f64) {
            *self.0.lock().expect("lock") += value;
        }
        fn decrement(&self, value: f64) {
            *self.0.lock().expect("lock") -= value;
        }
        fn set(&self, value: f64) {
            *self.0.lock().expect("lock") = value;
        }
    }

    impl metrics::Recorder for OneGauge {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            assert_eq!(key.name(), MAILBOX_DEPTH);
            Gauge::from_arc(Arc::new(OneGauge(self.0.clone())))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_message_counts_until_it_is_dropped_on_any_path() {
        let recorder = OneGauge::default();
        let depth = recorder.0.clone();
        metrics::with_local_recorder(&recorder, || {
            let mailbox = Mailbox("router");
            let taken = mailbox.enqueue();
            let refused = mailbox.enqueue();
            assert_eq!(*depth.lock().expect("lock"), 2.0);
            drop(taken);
            drop(refused);
            assert_eq!(*depth.lock().expect("lock"), 0.0);
        });
    }
}
