//! SIGTERM and SIGINT as an error a long command can act on. Kubernetes sends SIGTERM when a
//! backup Job is deleted, evicted or past its deadline; killed outright, a backup would leave
//! its open multipart upload behind and hold the repository's lease until it expired. Listened
//! for, the signal stops the copy with an error (exit 63, pgBackRest's "term"), so the normal
//! failure path runs: the open upload is aborted, the backup's objects are removed and the lease
//! is released.

use tokio::sync::watch;

use crate::error::{CliError, ErrorCode};

/// Resolves once the process has been asked to terminate; clones share the signal.
#[derive(Clone, Debug)]
pub struct Termination(Option<watch::Receiver<bool>>);

impl Termination {
    /// Listens for SIGTERM and SIGINT on the current tokio runtime.
    pub fn listen() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let unable =
            |e: std::io::Error| CliError::new(ErrorCode::Service, format!("unable to listen for signals: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(unable)?;
        let mut int = signal(SignalKind::interrupt()).map_err(unable)?;
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("terminating: a signal asked the command to stop");
            let _ = tx.send(true);
        });
        Ok(Self(Some(rx)))
    }

    /// A termination that never comes (for callers without signals, and tests).
    pub fn never() -> Self {
        Self(None)
    }

    /// Waits until termination is asked for.
    pub async fn requested(&mut self) {
        let signalled = match &mut self.0 {
            Some(rx) => rx.wait_for(|t| *t).await.is_ok(),
            None => false,
        };
        if !signalled {
            std::future::pending::<()>().await;
        }
    }

    /// The error a terminated command ends with.
    pub fn error() -> CliError {
        CliError::new(ErrorCode::Term, "terminated by a signal (SIGTERM or SIGINT)")
            .hint("what this command had written is removed; run it again")
    }
}
