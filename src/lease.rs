//! One writer per repository, across machines: a lease object in the repository itself.
//!
//! Two pods that share a bucket do not share a lock directory, so the lock that counts lives
//! next to the data: `stanza/<name>/lock/writer-<generation>` (plain JSON: holder host, pid,
//! command, expiry). Taking the lease is a create-only put of the next generation after the
//! newest one, so of two writers racing for it exactly one wins — also when they take over an
//! expired lease at the same moment (no delete is needed to take over, and none can remove
//! the winner's object). The holder renews its expiry while it works; a holder that finds a
//! newer generation, or could not renew before its expiry, has lost the lease and must not
//! commit ([`Lease::check`] before every commit point). A lease not renewed for its whole
//! time (a killed or partitioned writer) is taken over by the next writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult, ErrorCode};
use pgstrata_repo_format::layout::StanzaLayout;
use pgstrata_storage::RepoStore;

/// Shortest lease time accepted (`lease-time`); a lease is renewed every third of its time.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(3);

/// `lease-time`'s default.
pub const LEASE_TIME: Duration = Duration::from_secs(60);

/// What a lease object says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// Unix seconds.
    pub acquired: i64,
    /// Unix seconds; after this the lease may be taken over.
    pub expires: i64,
    /// How far the holder's copy is, as of its last renewal (a backup: bytes of the cluster,
    /// estimated, and bytes read so far): what `info` shows of a running backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<LeaseProgress>,
}

/// A running command's progress in bytes, as pgBackRest's lock file carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseProgress {
    pub size: u64,
    #[serde(rename = "size-cplt")]
    pub size_cplt: u64,
}

/// The progress a lease publishes at each renewal, set by the work it covers.
#[derive(Clone, Debug, Default)]
pub struct ProgressShare(Arc<(AtomicU64, AtomicU64)>);

impl ProgressShare {
    /// Records the total and what is done so far.
    pub fn set(&self, size: u64, done: u64) {
        self.0.0.store(size, Ordering::Relaxed);
        self.0.1.store(done, Ordering::Relaxed);
    }

    fn get(&self) -> Option<LeaseProgress> {
        let size = self.0.0.load(Ordering::Relaxed);
        (size > 0).then(|| LeaseProgress { size, size_cplt: self.0.1.load(Ordering::Relaxed).min(size) })
    }
}

impl LeaseHolder {
    pub fn describe(&self) -> String {
        format!("{} (pid {} on host {}, since {})", self.command, self.pid, self.host, self.acquired)
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn generation_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_prefix("writer-")?.parse().ok()
}

/// The newest lease object, if any: its key, generation and holder (`None` when it was removed
/// meanwhile or cannot be parsed: it is then taken over, with a warning).
async fn newest(store: &RepoStore, prefix: &str) -> CliResult<Option<(String, u64, Option<LeaseHolder>)>> {
    let mut found: Vec<(u64, String)> =
        store.list_files(prefix).await?.into_iter().filter_map(|o| Some((generation_of(&o.key)?, o.key))).collect();
    found.sort();
    let Some((generation, key)) = found.pop() else { return Ok(None) };
    match store.get(&key).await {
        Ok(bytes) => Ok(Some((key, generation, serde_json::from_slice(&bytes).ok()))),
        Err(e) if e.is_not_found() => Ok(Some((key, generation, None))),
        Err(e) => Err(e.into()),
    }
}

/// The holder of a repository's lease now, if it is held (what `info` shows); a released lease
/// (`expires: 0`) is not held.
pub async fn current_holder(store: &RepoStore, layout: &StanzaLayout) -> CliResult<Option<LeaseHolder>> {
    let prefix = layout.lock("writer-");
    Ok(newest(store, &prefix).await?.and_then(|(_, _, h)| h).filter(|h| h.expires > now()))
}

/// Whether a lease is still held, for the code that writes under it.
#[derive(Clone, Debug)]
pub struct LeaseWatch {
    lost: Arc<AtomicBool>,
    /// Unix seconds: the expiry of the last renewal. Past it the lease counts as lost even
    /// before the renewer says so — a process stopped (SIGSTOP, a stall) past its lease resumes
    /// with its renewer as late as itself, and must not commit on the strength of a stale flag.
    expires: Arc<AtomicI64>,
    what: String,
}

impl LeaseWatch {
    /// A watch of no real lease, lost or not (tests of the writers that check it).
    #[cfg(test)]
    pub fn detached(lost: bool) -> Self {
        Self {
            lost: Arc::new(AtomicBool::new(lost)),
            expires: Arc::new(AtomicI64::new(i64::MAX)),
            what: "a test lease".into(),
        }
    }

    /// Fails when the lease was lost: nothing more may be written or committed (a writer that
    /// took it over may be resuming this very backup).
    pub fn check(&self) -> CliResult<()> {
        if now() >= self.expires.load(Ordering::SeqCst) {
            self.lost.store(true, Ordering::SeqCst);
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(CliError::new(
                ErrorCode::LockAcquire,
                format!("lost the lease of {}: another writer took it over; nothing was committed", self.what),
            ));
        }
        Ok(())
    }
}

/// A held lease; renewed in the background until released.
#[derive(Debug)]
pub struct Lease {
    store: RepoStore,
    key: String,
    lost: Arc<AtomicBool>,
    expires: Arc<AtomicI64>,
    renewer: tokio::task::JoinHandle<()>,
    what: String,
    holder: LeaseHolder,
    progress: ProgressShare,
}

impl Lease {
    /// Takes the lease of `repo` for `command`, or fails with exit 50 naming the holder.
    pub async fn acquire(
        store: &RepoStore,
        layout: &StanzaLayout,
        index: u32,
        command: &str,
        time: Duration,
    ) -> CliResult<Lease> {
        let secs = i64::try_from(time.as_secs()).unwrap_or(60);
        let prefix = layout.lock("writer-");
        let what = format!("repo{index} stanza {}", layout.stanza());
        for _ in 0..5 {
            let next = match newest(store, &prefix).await? {
                Some((_, _, Some(holder))) if holder.expires > now() => {
                    return Err(CliError::new(
                        ErrorCode::LockAcquire,
                        format!("unable to acquire the lease of {what}: it is held by {}", holder.describe()),
                    )
                    .hint(format!(
                        "only one backup, expire or stanza command writes a repository at a time; the lease expires \
                         {}s after its holder stops renewing it",
                        time.as_secs()
                    )));
                }
                Some((key, generation, holder)) => {
                    match holder {
                        // Released by its holder at the end of its work: nothing to say.
                        Some(h) if h.expires == 0 => {}
                        Some(h) => tracing::warn!("{what}: taking over the expired lease of {}", h.describe()),
                        None => tracing::warn!("{what}: taking over the unreadable lease {key}"),
                    }
                    generation + 1
                }
                None => 1,
            };
            let key = format!("{prefix}{next:010}");
            let holder = LeaseHolder {
                host: hostname(),
                pid: std::process::id(),
                command: command.to_string(),
                acquired: now(),
                expires: now() + secs,
                progress: None,
            };
            let body =
                Bytes::from(serde_json::to_vec(&holder).map_err(|e| CliError::new(ErrorCode::Format, e.to_string()))?);
            match store.put_new(&key, body).await {
                Ok(()) => {
                    // Older generations are history now.
                    for o in store.list_files(&prefix).await.unwrap_or_default() {
                        if generation_of(&o.key).is_some_and(|g| g < next) {
                            let _ = store.delete(&o.key).await;
                        }
                    }
                    let lost = Arc::new(AtomicBool::new(false));
                    let expires = Arc::new(AtomicI64::new(holder.expires));
                    let progress = ProgressShare::default();
                    let renewer = tokio::spawn(renew(
                        store.clone(),
                        prefix.clone(),
                        key.clone(),
                        next,
                        (holder.clone(), progress.clone()),
                        time,
                        (Arc::clone(&lost), Arc::clone(&expires)),
                    ));
                    return Ok(Lease { store: store.clone(), key, lost, expires, renewer, what, holder, progress });
                }
                // Another writer took this generation first: look again (it holds it now).
                Err(e) if e.is_already_exists() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CliError::new(
            ErrorCode::LockAcquire,
            format!("unable to acquire the lease of {what}: too much contention"),
        ))
    }

    /// Fails when the lease was lost (taken over, or not renewed in time): the caller must not
    /// commit anything.
    pub fn check(&self) -> CliResult<()> {
        self.watch().check()
    }

    /// What a writer checks before each object it adds, without holding the lease itself.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch { lost: Arc::clone(&self.lost), expires: Arc::clone(&self.expires), what: self.what.clone() }
    }

    /// Where the covered work records its progress; each renewal publishes it in the lease.
    pub fn progress(&self) -> ProgressShare {
        self.progress.clone()
    }

    /// Stops renewing and marks the lease released (`expires: 0`). The object stays until the
    /// next holder replaces it, so generations only ever grow: a writer that was paused past its
    /// expiry can never mistake a later holder's lower number for its own lease still standing.
    pub async fn release(self) {
        self.renewer.abort();
        if self.check().is_err() {
            return;
        }
        let released = LeaseHolder { expires: 0, ..self.holder.clone() };
        let put = match serde_json::to_vec(&released) {
            Ok(body) => self.store.put(&self.key, Bytes::from(body)).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = put {
            tracing::warn!("unable to release the lease {}: {e}; it expires by itself", self.key);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(
    store: RepoStore,
    prefix: String,
    key: String,
    generation: u64,
    (mut holder, progress): (LeaseHolder, ProgressShare),
    time: Duration,
    (lost, expires): (Arc<AtomicBool>, Arc<AtomicI64>),
) {
    let secs = i64::try_from(time.as_secs()).unwrap_or(60);
    loop {
        tokio::time::sleep(time / 3).await;
        let newer = match store.list_files(&prefix).await {
            Ok(objects) => objects.iter().any(|o| generation_of(&o.key).is_some_and(|g| g > generation)),
            Err(_) => false,
        };
        let previous = holder.expires;
        // Woken after our own expiry (paused, starved): another writer may hold it already.
        let late = now() >= previous;
        let renewed = !newer && !late && {
            let next = LeaseHolder { expires: now() + secs, progress: progress.get(), ..holder.clone() };
            let ok = match serde_json::to_vec(&next) {
                Ok(body) => store.put(&key, Bytes::from(body)).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                expires.store(next.expires, Ordering::SeqCst);
                holder = next;
            }
            ok
        };
        // Not renewed and (nearly) expired: another writer may take it over any moment.
        if newer || late || (!renewed && now() >= previous - secs / 6) {
            tracing::error!("lost the repository lease {key}");
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}
