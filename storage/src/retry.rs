//! Retries with exponential backoff and full jitter, for retryable failures only, within a
//! bounded total time — in one layer per kind of store.
//!
//! For the HTTP backends the layer is object_store's own request loop (its `RetryConfig`, set
//! from [`RetryPolicy`]): it retries 5xx, 429 "slow down", timeouts, connection failures and
//! response bodies cut short, request by request (multipart parts included), and never a 4xx
//! that will not change; each request gives up after the policy's attempts or total time. An
//! error that comes back through it is final: [`RepoStore`] does not retry it again (it used to,
//! nesting up to 25 attempts). Around each [`RepoStore`] call, this module retries only what no
//! HTTP client retried — the local filesystem's transient I/O errors, injected faults, and a
//! create-only put whose connection broke after it was sent (the client never repeats those;
//! `put_new` can, because it reads back what it finds) — classified by [`is_transient`] and
//! [`retried_by_http_client`], within the same policy.
//!
//! [`RepoStore`]: crate::RepoStore

use std::time::Duration;

use object_store::client::{HttpError, HttpErrorKind};

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Longest single backoff.
    pub max_backoff: Duration,
    /// No retry starts after this much time since the first attempt.
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // A burst of 503s or resets lasting a few seconds is ridden out (backoffs of up to
        // 0.2 + 0.4 + ... + 5 s, jittered); a store down for longer fails within a minute.
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            total_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Backoff before attempt `attempt + 1` (attempt counts from 1): full jitter over an
    /// exponentially growing cap.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(if nanos == 0 { 0 } else { jitter() % (nanos + 1) })
    }

    /// The equivalent object_store request retry settings.
    pub fn http_retry_config(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_attempts.saturating_sub(1) as usize,
            retry_timeout: self.total_timeout,
        }
    }
}

fn jitter() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // Without randomness, fall back to the clock's low bits: still spreads retries.
        return u64::from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0),
        );
    }
    u64::from_le_bytes(b)
}

/// True when an HTTP client produced the error and its request loop has retried it already (or
/// would have, had it been worth it). `idempotent`: whether the client treats the request as
/// safe to repeat; it does not repeat a non-idempotent request (a create-only put) after a
/// connection broke mid-request or a timeout, since it cannot know whether the write landed.
pub fn retried_by_http_client(err: &object_store::Error, idempotent: bool) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return idempotent || !matches!(http.kind(), HttpErrorKind::Timeout | HttpErrorKind::Interrupted);
        }
        current = e.source();
    }
    false
}

/// True when an error is worth retrying: a transport failure (connect, request, timeout,
/// interrupted) anywhere in its source chain, or an I/O error of a transient kind.
pub fn is_transient(err: &object_store::Error) -> bool {
    use std::io::ErrorKind;
    match err {
        object_store::Error::NotFound { .. }
        | object_store::Error::AlreadyExists { .. }
        | object_store::Error::Precondition { .. }
        | object_store::Error::NotModified { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => return false,
        _ => {}
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::Interrupted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            total_timeout: Duration::from_secs(5),
        };
        for attempt in 1..10 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_millis(400));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= cap);
            }
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }

    #[test]
    fn classification() {
        let transient = object_store::Error::Generic {
            store: "x",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, std::io::Error::other("reset"))),
        };
        assert!(is_transient(&transient));
        let decode = object_store::Error::Generic {
            store: "x",
            source: Box::new(HttpError::new(HttpErrorKind::Decode, std::io::Error::other("bad body"))),
        };
        assert!(!is_transient(&decode));
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() };
        assert!(!is_transient(&denied));
        let reset = object_store::Error::Generic {
            store: "x",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(is_transient(&reset));
        // What an HTTP client returns has been retried there; a local I/O error has not.
        assert!(retried_by_http_client(&transient, true) && !retried_by_http_client(&reset, true));
        // A create whose connection broke after it was sent: the client did not repeat it.
        let broken = object_store::Error::Generic {
            store: "x",
            source: Box::new(HttpError::new(HttpErrorKind::Interrupted, std::io::Error::other("reset"))),
        };
        assert!(retried_by_http_client(&broken, true) && !retried_by_http_client(&broken, false));
        assert!(retried_by_http_client(&transient, false));
    }
}
