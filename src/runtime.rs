//! What every command needs from the process, below the engine: a small async runtime for
//! short commands, and the clock in Unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{CliError, CliResult, ErrorCode};

/// A small runtime for short commands: one thread, no pool to warm up.
pub fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ErrorCode::Service, format!("unable to start the I/O runtime: {e}")))
}

/// A runtime for long commands: `threads` worker threads (2 for the engine's commands: their
/// CPU work runs on the blocking pool) and at most `blocking` blocking threads (`None`: tokio's
/// default), so the threads a command starts depend on `process-max`, never on the data.
pub fn pool(threads: usize, blocking: Option<usize>) -> CliResult<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads.max(1)).enable_all();
    if let Some(n) = blocking {
        b.max_blocking_threads(n.max(1));
    }
    b.build().map_err(|e| CliError::new(ErrorCode::Service, format!("unable to start the I/O runtime: {e}")))
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}
