//! Storage faults end to end. A proxy (`scripts/faultproxy.py`) in front of the S3 and Azure
//! emulators resets connections, answers bursts of 503 "slow down", adds latency and loses
//! answers after the write landed, while WAL is archived (`archive_command`), a backup is taken
//! and restored, and the restored cluster recovers through `archive-get`: each completes, and the
//! restored data equals the source. Under a full outage a backup fails within bounded time with
//! an error naming the store, and nothing of it becomes visible.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{self, Cluster, Scratch, Setup, postgres_available, text};
use super::{Backend, archiving_cluster_on, repo_options, setup_on};

/// A running fault proxy; stopped when dropped.
struct Proxy {
    child: Child,
    port: u16,
    upstream: String,
    stats: PathBuf,
}

impl Proxy {
    fn start(scratch: &Scratch, upstream: &str, port: u16, args: &[&str]) -> Proxy {
        Proxy::try_start(scratch, upstream, port, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(scratch: &Scratch, upstream: &str, port: u16, args: &[&str]) -> Result<Proxy, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/faultproxy.py");
        let stats = scratch.path("proxy").join("stats.json");
        let _ = std::fs::remove_file(&stats);
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--upstream", upstream, "--port", &port.to_string(), "--stats"])
            .arg(&stats)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unable to start the fault proxy (python3): {e}"))?;
        let mut line = String::new();
        let out = child.stdout.take().ok_or("no proxy stdout")?;
        std::io::BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
        match line.trim().parse() {
            Ok(port) => Ok(Proxy { child, port, upstream: upstream.to_string(), stats }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the fault proxy did not start on port {port}: {line:?}"))
            }
        }
    }

    /// The same port, other faults.
    fn restart(&mut self, scratch: &Scratch, args: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Proxy::try_start(scratch, &self.upstream, self.port, args) {
                Ok(p) => {
                    *self = p;
                    return;
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Faults injected so far, by kind.
    fn injected(&self, kind: &str) -> u64 {
        let stats = std::fs::read_to_string(&self.stats).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
        v[kind].as_u64().unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://host:port` of an endpoint (the Azure one has the account as its path).
fn authority(endpoint: &str) -> &str {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let end = rest.find('/').unwrap_or(rest.len());
    &endpoint[..endpoint.len() - rest.len() + end]
}

fn labels_on_store(direct: &Setup) -> Vec<String> {
    let o = direct.ok(&["--stanza=db", "repo-ls", "stanza/db/backup"]);
    let mut dirs: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .filter(|d| !d.starts_with("backup.catalog"))
        .collect();
    dirs.dedup();
    dirs
}

fn listed_backups(direct: &Setup) -> Vec<String> {
    let o = direct.ok(&["--stanza=db", "info", "--output=json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info json");
    v[0]["backup"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["label"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn faults_end_to_end(backend: Backend) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-faults-");
    let repo = scratch.path("repo");
    let Some(direct_lines) = repo_options(backend, &repo) else { return };
    let var = if backend == Backend::S3 { "PGSTRATA_TEST_S3_ENDPOINT" } else { "PGSTRATA_TEST_AZURE_ENDPOINT" };
    let Some(endpoint) = support::emulator(var) else { return };
    let upstream = authority(&endpoint).to_string();
    // Every 10th request faulty, in turn: a reset, a burst of three 503s, a lost answer.
    let faults = ["--every", "10", "--faults", "reset,slowdown,lost", "--burst", "3", "--latency-ms", "3"];
    let mut proxy = Proxy::start(&scratch, &upstream, 0, &faults);
    let lines = direct_lines.replace(&upstream, &format!("http://127.0.0.1:{}", proxy.port));

    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    let direct = setup_on(&scratch, "direct.conf", &cluster, &direct_lines, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "2", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=2"]);
    cluster.sql("create table after_backup as select g from generate_series(1, 5000) g");
    cluster.archive_now();
    let expected = cluster.dumpall();

    let target = scratch.path("restored");
    s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", target.display()), "--process-max=2"]);
    let restored = Cluster::existing(&scratch, target, "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert!(restored.dumpall() == expected, "the cluster restored through faults differs from the source");
    restored.stop();
    for kind in ["reset", "slowdown", "lost"] {
        assert!(proxy.injected(kind) > 0, "no {kind} fault was injected: {} requests", proxy.injected("requests"));
    }
    // Exactly the backup, nothing else stored under backup/.
    let listed = listed_backups(&direct);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(labels_on_store(&direct), listed);

    // A full outage: the backup fails within bounded time, naming the store; nothing of it is
    // listed, and the catalog still lists the first backup only.
    proxy.restart(&scratch, &["--outage"]);
    let started = Instant::now();
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-timeout=10"]);
    let took = started.elapsed();
    assert!(!o.status.success(), "a backup through an outage succeeded: {}", text(&o));
    assert!(took < Duration::from_secs(90), "the failing backup took {took:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("503") || err.contains("Service Unavailable") || err.contains("SlowDown"), "{err}");
    assert!(proxy.injected("outage") > 0);
    assert_eq!(listed_backups(&direct), listed);
    // Once the store is back, the next backup succeeds and leaves exactly two backups.
    proxy.restart(&scratch, &faults);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let now = listed_backups(&direct);
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(labels_on_store(&direct), now);
}

#[test]
fn faults_on_s3_backup_restore_and_wal() {
    faults_end_to_end(Backend::S3);
}

#[test]
fn faults_on_azure_backup_restore_and_wal() {
    faults_end_to_end(Backend::Azure);
}
