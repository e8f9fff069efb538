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

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}
