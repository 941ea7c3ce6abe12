//! Shutdown as a type: one token cancelled by SIGTERM or Ctrl-C (or by a failing
//! task), and a deadline for the ordered drain that follows.

use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The process-wide shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal nobody has raised yet.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Raises the signal when SIGTERM or Ctrl-C arrives.
    pub fn on_signals(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => tokio::select! {
                        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
            token.cancel();
        });
    }

    /// Raises the signal.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once raised.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once raised.
    pub async fn triggered(&self) {
        self.token.cancelled().await
    }

    /// A future that resolves once raised, for servers' graceful shutdown hooks.
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }
}

/// A point in time by which the drain must be done.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// `within` from now.
    pub fn after(within: Duration) -> Self {
        Deadline(Instant::now() + within)
    }

    /// Runs `fut` until the deadline; `None` if the deadline passed first.
    pub async fn run<F: std::future::Future>(&self, fut: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.0, fut).await.ok()
    }
}
