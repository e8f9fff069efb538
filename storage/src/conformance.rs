//! The storage contract as a test suite. Every backend's tests call [`run_all`] on a fresh key
//! prefix; a backend that fails any check does not meet the contract [`RepoStore`] promises.
//!
//! This is test support: checks panic with a message naming the backend and the broken promise.
#![allow(clippy::panic)]

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::StorageError;
use crate::store::RepoStore;

/// What a backend is known to guarantee beyond the common contract.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// Concurrent create-only writes have exactly one winner (not true of some S3 emulators).
    pub atomic_create: bool,
}

/// A cheap content fingerprint (FNV-1a 64) for comparing large payloads without printing them.
fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn payload(len: usize, seed: u8) -> Bytes {
    Bytes::from((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>())
}

/// Runs every check against `store` (use a fresh, empty prefix).
pub async fn run_all(store: &RepoStore, caps: Capabilities) {
    let name = store.describe().to_string();
    round_trip(store).await;
    missing_objects(store).await;
    create_only(store).await;
    ranged_reads(store).await;
    listing(store).await;
    streaming_upload(store).await;
    aborted_upload(store).await;
    atomic_overwrite(store).await;
    conditional_update(store).await;
    if caps.atomic_create {
        create_race(store).await;
    }
    let left = store.delete_prefix("").await.unwrap_or_else(|e| panic!("{name}: cleanup failed: {e}"));
    assert!(left > 0, "{name}: cleanup found nothing to delete");
    let after = store.list_all("").await.unwrap_or_else(|e| panic!("{name}: list after cleanup: {e}"));
    assert!(after.is_empty(), "{name}: objects left after cleanup: {after:?}");
}

/// An update on condition of the version read: applied when the object is unchanged, refused
/// (`Changed`, nothing written) when another write came in between.
async fn conditional_update(s: &RepoStore) {
    let n = s.describe();
    s.put("cas/catalog", payload(100, 1)).await.unwrap_or_else(|e| panic!("{n}: put: {e}"));
    let (read, v1) = s.get_versioned("cas/catalog").await.unwrap_or_else(|e| panic!("{n}: get_versioned: {e}"));
    assert_eq!(read, payload(100, 1), "{n}: get_versioned content");
    assert!(v1.e_tag.is_some() || v1.version.is_some(), "{n}: no version reported");
    let v2 = s
        .put_if("cas/catalog", payload(120, 2), v1.clone())
        .await
        .unwrap_or_else(|e| panic!("{n}: update at the version read: {e}"));
    assert_ne!(v2, v1, "{n}: the version did not change with the content");
    let stale = s.put_if("cas/catalog", payload(140, 3), v1).await;
    assert!(matches!(stale, Err(StorageError::Changed { .. })), "{n}: an update at a stale version: {stale:?}");
    assert_eq!(s.get("cas/catalog").await.unwrap_or_else(|e| panic!("{n}: get: {e}")), payload(120, 2));
    let (_, v3) = s.get_versioned("cas/catalog").await.unwrap_or_else(|e| panic!("{n}: get_versioned: {e}"));
    assert_eq!(v3, v2, "{n}: the version read is not the one written");
    // A plain overwrite in between also makes the version stale.
    s.put("cas/catalog", payload(160, 4)).await.unwrap_or_else(|e| panic!("{n}: put: {e}"));
    let stale = s.put_if("cas/catalog", payload(180, 5), v3).await;
    assert!(matches!(stale, Err(StorageError::Changed { .. })), "{n}: an update after an overwrite: {stale:?}");
    let listed = s.list_all("cas/").await.unwrap_or_else(|e| panic!("{n}: list: {e}"));
    assert_eq!(listed.len(), 1, "{n}: an update left more than the object: {listed:?}");
}

async fn round_trip(s: &RepoStore) {
    let n = s.describe();
    let a = payload(1000, 1);
    s.put("rt/object", a.clone()).await.unwrap_or_else(|e| panic!("{n}: put: {e}"));
    assert_eq!(s.get("rt/object").await.unwrap_or_else(|e| panic!("{n}: get: {e}")), a, "{n}: get after put");
    let b = payload(2000, 2);
    s.put("rt/object", b.clone()).await.unwrap_or_else(|e| panic!("{n}: overwrite: {e}"));
    assert_eq!(s.get("rt/object").await.unwrap_or_else(|e| panic!("{n}: get: {e}")), b, "{n}: get after overwrite");
    let head = s.head("rt/object").await.unwrap_or_else(|e| panic!("{n}: head: {e}"));
    assert_eq!(head.map(|h| h.size), Some(2000), "{n}: head size");
    s.put("rt/empty", Bytes::new()).await.unwrap_or_else(|e| panic!("{n}: put empty: {e}"));
    assert!(s.get("rt/empty").await.unwrap_or_else(|e| panic!("{n}: get empty: {e}")).is_empty());
}

async fn missing_objects(s: &RepoStore) {
    let n = s.describe();
    assert!(matches!(s.get("missing/x").await, Err(StorageError::NotFound { .. })), "{n}: get of missing object");
    assert!(
        matches!(s.get_range("missing/x", 0..1).await, Err(StorageError::NotFound { .. })),
        "{n}: ranged get of missing object"
    );
    assert!(s.head("missing/x").await.unwrap_or_else(|e| panic!("{n}: head missing: {e}")).is_none());
    s.delete("missing/x").await.unwrap_or_else(|e| panic!("{n}: delete of a missing object must succeed: {e}"));
    let err = s.get("missing/x").await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("missing/x"), "{n}: error does not name the key: {err}");
}

async fn create_only(s: &RepoStore) {
    let n = s.describe();
    let first = payload(100, 3);
    s.put_new("create/obj", first.clone()).await.unwrap_or_else(|e| panic!("{n}: first create: {e}"));
    let second = s.put_new("create/obj", payload(100, 4)).await;
    assert!(matches!(second, Err(StorageError::AlreadyExists { .. })), "{n}: second create gave {second:?}");
    assert_eq!(s.get("create/obj").await.unwrap_or_else(|e| panic!("{n}: {e}")), first, "{n}: create overwrote");
}

async fn ranged_reads(s: &RepoStore) {
    let n = s.describe();
    let data = payload(1000, 5);
    s.put("range/obj", data.clone()).await.unwrap_or_else(|e| panic!("{n}: put: {e}"));
    for r in [0..10u64, 990..1000, 500..600, 0..1000] {
        let got = s.get_range("range/obj", r.clone()).await.unwrap_or_else(|e| panic!("{n}: range {r:?}: {e}"));
        assert_eq!(got, data.slice(r.start as usize..r.end as usize), "{n}: range {r:?}");
    }
    assert!(s.get_range("range/obj", 990..1010).await.is_err(), "{n}: a range past the end must fail");
}

async fn listing(s: &RepoStore) {
    let n = s.describe();
    let keys: Vec<String> = (0..1050).map(|i| format!("list/{}-{i:05}", if i % 2 == 0 { "a" } else { "b" })).collect();
    futures::stream::iter(keys.iter().cloned())
        .map(|k| async move { s.put(&k, Bytes::from_static(b"x")).await })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("{n}: put for listing: {e}"));
    s.put("listing-decoy", Bytes::from_static(b"x")).await.unwrap_or_else(|e| panic!("{n}: {e}"));
    s.put("listx/decoy", Bytes::from_static(b"x")).await.unwrap_or_else(|e| panic!("{n}: {e}"));
    s.put("listx/sub/nested", Bytes::from_static(b"x")).await.unwrap_or_else(|e| panic!("{n}: {e}"));
    let flat = s.list_files("listx/").await.unwrap_or_else(|e| panic!("{n}: list files: {e}"));
    let flat: Vec<&str> = flat.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(flat, ["listx/decoy"], "{n}: list_files must not descend");
    let b = s.list_files("list/b-").await.unwrap_or_else(|e| panic!("{n}: list files: {e}"));
    assert_eq!(b.len(), 525, "{n}: list_files with a plain-string prefix (pagination?)");
    let all = s.list_all("list/").await.unwrap_or_else(|e| panic!("{n}: list: {e}"));
    let got: Vec<&str> = all.iter().map(|o| o.key.as_str()).collect();
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "{n}: listing count (pagination?)");
    assert_eq!(got, want, "{n}: listing content");
    let dirs = s.list_dirs("").await.unwrap_or_else(|e| panic!("{n}: list dirs: {e}"));
    assert!(dirs.contains(&"list".to_string()) && dirs.contains(&"listx".to_string()), "{n}: list_dirs gave {dirs:?}");
    assert!(!dirs.contains(&"listing-decoy".to_string()), "{n}: list_dirs returned an object: {dirs:?}");
    let a = s.list_all("list/a-").await.unwrap_or_else(|e| panic!("{n}: list: {e}"));
    assert_eq!(a.len(), 525, "{n}: a plain-string prefix selects part of a directory");
    assert!(a.iter().all(|o| o.key.starts_with("list/a-") && o.size == 1));
    // Bulk delete across more than one batch, a missing key among them.
    let mut doomed = keys.clone();
    doomed.insert(7, "list/never-written".to_string());
    let deleted = s.delete_many(&doomed).await.unwrap_or_else(|e| panic!("{n}: bulk delete: {e}"));
    assert_eq!(deleted, doomed.len() as u64, "{n}: bulk delete count");
    let left = s.list_all("list/").await.unwrap_or_else(|e| panic!("{n}: list: {e}"));
    assert!(left.is_empty(), "{n}: {} objects left after a bulk delete", left.len());
    assert_eq!(s.list_files("listx/").await.map(|v| v.len()).ok(), Some(1), "{n}: bulk delete took a bystander");
}

async fn streaming_upload(s: &RepoStore) {
    let n = s.describe();
    let data = payload(13 << 20, 6);
    let mut up = s.upload("upload/big").await.unwrap_or_else(|e| panic!("{n}: start upload: {e}"));
    for piece in data.chunks(700_000) {
        up.write(piece).await.unwrap_or_else(|e| panic!("{n}: upload write: {e}"));
    }
    let size = up.finish().await.unwrap_or_else(|e| panic!("{n}: finish upload: {e}"));
    assert_eq!(size, data.len() as u64);
    let back = s.get("upload/big").await.unwrap_or_else(|e| panic!("{n}: get uploaded: {e}"));
    assert_eq!(back.len(), data.len(), "{n}: uploaded size");
    assert_eq!(fingerprint(&back), fingerprint(&data), "{n}: uploaded content");
    // A tiny upload (one short part) works too.
    let mut up = s.upload("upload/small").await.unwrap_or_else(|e| panic!("{n}: start upload: {e}"));
    up.write(b"tiny").await.unwrap_or_else(|e| panic!("{n}: {e}"));
    up.finish().await.unwrap_or_else(|e| panic!("{n}: finish small upload: {e}"));
    assert_eq!(s.get("upload/small").await.unwrap_or_else(|e| panic!("{n}: {e}")).as_ref(), b"tiny");
}

async fn aborted_upload(s: &RepoStore) {
    let n = s.describe();
    let mut up = s.upload("upload/aborted").await.unwrap_or_else(|e| panic!("{n}: start upload: {e}"));
    up.write(&payload(6 << 20, 7)).await.unwrap_or_else(|e| panic!("{n}: upload write: {e}"));
    up.abort().await.unwrap_or_else(|e| panic!("{n}: abort: {e}"));
    assert!(
        s.head("upload/aborted").await.unwrap_or_else(|e| panic!("{n}: {e}")).is_none(),
        "{n}: aborted upload visible"
    );
    let listed = s.list_all("upload/aborted").await.unwrap_or_else(|e| panic!("{n}: {e}"));
    assert!(listed.is_empty(), "{n}: aborted upload listed: {listed:?}");
}

async fn atomic_overwrite(s: &RepoStore) {
    let n = s.describe();
    let a = Bytes::from(vec![b'a'; 2 << 20]);
    let b = Bytes::from(vec![b'b'; 2 << 20]);
    s.put("atomic/obj", a.clone()).await.unwrap_or_else(|e| panic!("{n}: {e}"));
    let writer = async {
        for i in 0..8 {
            let next = if i % 2 == 0 { b.clone() } else { a.clone() };
            s.put("atomic/obj", next).await.unwrap_or_else(|e| panic!("{n}: overwrite: {e}"));
        }
    };
    let reader = async {
        for _ in 0..16 {
            let got = s.get("atomic/obj").await.unwrap_or_else(|e| panic!("{n}: read during overwrite: {e}"));
            assert!(got == a || got == b, "{n}: a reader saw a partial or mixed object ({} bytes)", got.len());
        }
    };
    futures::join!(writer, reader);
}

async fn create_race(s: &RepoStore) {
    let n = s.describe();
    for round in 0..3 {
        let key = format!("race/lock-{round}");
        let results = futures::future::join_all((0..16u8).map(|i| {
            let key = key.clone();
            async move { (i, s.put_new(&key, payload(64, i)).await) }
        }))
        .await;
        let winners: Vec<u8> = results.iter().filter(|(_, r)| r.is_ok()).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "{n}: create race round {round} had winners {winners:?}");
        for (i, r) in &results {
            if let Err(e) = r {
                assert!(e.is_already_exists(), "{n}: loser {i} got {e}");
            }
        }
        let stored = s.get(&key).await.unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(stored, payload(64, winners[0]), "{n}: the winner's content must be stored");
    }
}
