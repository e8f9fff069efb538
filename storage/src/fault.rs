//! A fault-injecting wrapper for tests: fail the Nth call, fail a given operation a number of
//! times, or cut a streaming upload after some bytes. It wraps any backend, so retry and
//! error handling are exercised through the same code paths real failures take.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};

/// Which kind of operation a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    Put,
    Get,
    Head,
    List,
    Delete,
    StartUpload,
    UploadPart,
    Copy,
}

/// What an injected failure looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A connection failure: retryable.
    Transient,
    /// A request the server refuses for good (a 400-class error): not retryable.
    Permanent,
    /// Credentials refused.
    Denied,
}

#[derive(Debug)]
enum Rule {
    NthCall {
        n: u64,
        kind: FaultKind,
    },
    Op {
        op: FaultOp,
        remaining: u32,
        kind: FaultKind,
    },
    /// The operation is carried out, then its answer is lost (a transient error).
    LoseResponse {
        op: FaultOp,
        remaining: u32,
    },
    CutUploadAfter {
        bytes: u64,
    },
}

/// The faults to inject, shared between the test and the wrapper.
#[derive(Debug, Default)]
pub struct FaultPlan {
    calls: AtomicU64,
    rules: Mutex<Vec<Rule>>,
    injected: AtomicU64,
}

impl FaultPlan {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The `n`th call (counting from 1, any operation) fails.
    pub fn fail_call(&self, n: u64, kind: FaultKind) {
        self.lock().push(Rule::NthCall { n, kind });
    }

    /// The next `times` calls of `op` fail.
    pub fn fail_op(&self, op: FaultOp, times: u32, kind: FaultKind) {
        self.lock().push(Rule::Op { op, remaining: times, kind });
    }

    /// The next `times` calls of `op` reach the store and take effect, but their answer is
    /// lost: the caller sees a transient failure after the write landed.
    pub fn lose_responses(&self, op: FaultOp, times: u32) {
        self.lock().push(Rule::LoseResponse { op, remaining: times });
    }

    /// Upload parts fail once more than `bytes` have been sent in one upload.
    pub fn cut_uploads_after(&self, bytes: u64) {
        self.lock().push(Rule::CutUploadAfter { bytes });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Calls seen so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self, op: FaultOp, path: &Path) -> object_store::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rules = self.lock();
        let mut hit = None;
        for rule in rules.iter_mut() {
            match rule {
                Rule::NthCall { n: at, kind } if *at == n => hit = Some(*kind),
                Rule::Op { op: o, remaining, kind } if *o == op && *remaining > 0 => {
                    *remaining -= 1;
                    hit = Some(*kind);
                }
                _ => {}
            }
            if hit.is_some() {
                break;
            }
        }
        drop(rules);
        match hit {
            None => Ok(()),
            Some(kind) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                Err(injected(kind, op, path))
            }
        }
    }

    /// After `op` succeeded in the store: the lost answer, if a rule says so.
    fn after(&self, op: FaultOp, path: &Path) -> object_store::Result<()> {
        let mut rules = self.lock();
        let lost = rules.iter_mut().any(|rule| match rule {
            Rule::LoseResponse { op: o, remaining } if *o == op && *remaining > 0 => {
                *remaining -= 1;
                true
            }
            _ => false,
        });
        drop(rules);
        if lost {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(injected(FaultKind::Transient, op, path));
        }
        Ok(())
    }

    fn cut_limit(&self) -> Option<u64> {
        self.lock().iter().find_map(|r| match r {
            Rule::CutUploadAfter { bytes } => Some(*bytes),
            _ => None,
        })
    }
}

fn injected(kind: FaultKind, op: FaultOp, path: &Path) -> object_store::Error {
    let what = format!("injected {kind:?} fault on {op:?} {path}");
    match kind {
        // A reset connection of a store without an HTTP client's retries (as the local
        // filesystem's errors are): RepoStore's own retry layer handles it.
        FaultKind::Transient => object_store::Error::Generic {
            store: "faulty",
            source: Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, what)),
        },
        FaultKind::Permanent => object_store::Error::Generic { store: "faulty", source: what.into() },
        FaultKind::Denied => object_store::Error::PermissionDenied { path: path.to_string(), source: what.into() },
    }
}

/// An [`ObjectStore`] that injects the faults of a [`FaultPlan`] in front of another store.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<FaultPlan>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.plan.check(FaultOp::Put, location)?;
        let done = self.inner.put_opts(location, payload, opts).await?;
        self.plan.after(FaultOp::Put, location)?;
        Ok(done)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.plan.check(FaultOp::StartUpload, location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload { inner, plan: Arc::clone(&self.plan), path: location.clone(), sent: 0 }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let op = if options.head { FaultOp::Head } else { FaultOp::Get };
        self.plan.check(op, location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.plan.check(FaultOp::Get, location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let plan = Arc::clone(&self.plan);
        let checked =
            locations.map(move |p| p.and_then(|path| plan.check(FaultOp::Delete, &path).map(|()| path))).boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.plan.check(FaultOp::List, prefix.unwrap_or(&Path::default())) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.plan.check(FaultOp::List, prefix.unwrap_or(&Path::default()))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.plan.check(FaultOp::Copy, to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    plan: Arc<FaultPlan>,
    path: Path,
    sent: u64,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.sent += data.content_length() as u64;
        let cut = self.plan.cut_limit().is_some_and(|limit| self.sent > limit);
        let check = self.plan.check(FaultOp::UploadPart, &self.path);
        if cut {
            let err = injected(FaultKind::Transient, FaultOp::UploadPart, &self.path);
            return Box::pin(async move { Err(err) });
        }
        if let Err(e) = check {
            return Box::pin(async move { Err(e) });
        }
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
