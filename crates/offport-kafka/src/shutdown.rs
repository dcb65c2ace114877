//! Graceful shutdown: one cancellation token that every task of a service honours.
//!
//! [`Shutdown::listen`] cancels the token on SIGTERM (Kubernetes) or Ctrl-C; tasks select on
//! [`Shutdown::cancelled`] at their await points and finish or abort their open work. No other
//! stop flags exist.

use tokio_util::sync::CancellationToken;

/// The service-wide shutdown signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a task that triggers the signal on SIGTERM or Ctrl-C.
    pub fn listen(&self) -> tokio::task::JoinHandle<()> {
        let token = self.token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            token.cancel();
        })
    }

    /// Triggers the signal from inside the process (end of input, fatal error).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once triggered.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let worker = shutdown.clone();
        let task = tokio::spawn(async move {
            worker.cancelled().await;
            "stopped"
        });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        assert_eq!(task.await.ok(), Some("stopped"));
    }
}
