//! Benchmark: does asynchronous archiving keep up with PostgreSQL writing as fast as it can?
//! pgbench at full speed for two minutes (`PGSTRATA_KEEPUP_SECS` to change it) while the
//! `.ready` files waiting in `pg_wal/archive_status` are sampled; reports the transaction rate,
//! the WAL rate and the largest backlog seen. A report, not a pass/fail: the machines are shared.
//!
//!     cargo bench --bench keepup
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Cluster, Scratch, Setup, text};

fn main() {
    // `cargo test --all-targets` runs bench binaries too (without `--bench`): nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("keepup: a benchmark; run it with `cargo bench --bench keepup`");
        return;
    }
    if !support::pg_bin().join("initdb").exists() {
        eprintln!("keepup: no PostgreSQL binaries in {}", support::pg_bin().display());
        std::process::exit(1);
    }
    let secs: u64 = std::env::var("PGSTRATA_KEEPUP_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let scratch = Scratch::new("pgstrata-keepup-");
    let cluster = Cluster::init(&scratch, "src");
    let conf = format!(
        "[global]\nrepo1-path={}\nlock-path={}\nspool-path={}\narchive-async=y\nprocess-max=2\n\
         log-level-file=off\nlog-level-console=warn\nlog-level-stderr=warn\n\n\
         [db]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
        scratch.path("repo").display(),
        scratch.path("lock").display(),
        scratch.path("spool").display(),
        cluster.data.display(),
        cluster.socket.display(),
        cluster.port
    );
    let s = Setup { config: scratch.write("db.conf", &conf), env: vec![] };
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\nmax_wal_size = 4GB\n\
         checkpoint_timeout = 30s\nsynchronous_commit = off",
        s.command_prefix()
    ));
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "10", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    let start_lsn = cluster.sql("select pg_current_wal_lsn()");

    let bench = {
        let bin = support::pg_bin().join("pgbench");
        let (socket, port) = (cluster.socket.display().to_string(), cluster.port.to_string());
        let t = secs.to_string();
        std::thread::spawn(move || {
            support::run_as_postgres(
                &bin,
                &["-h", &socket, "-p", &port, "-U", "postgres", "-T", &t, "-c", "4", "-j", "2", "-n", "postgres"],
                &[],
            )
        })
    };
    let status = cluster.data.join("pg_wal/archive_status");
    let started = Instant::now();
    let mut worst = (0usize, 0u64);
    let mut samples = 0;
    while !bench.is_finished() {
        let ready = std::fs::read_dir(&status)
            .map(|d| {
                d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))).count()
            })
            .unwrap_or(0);
        if ready > worst.0 {
            worst = (ready, started.elapsed().as_secs());
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let bench = bench.join().unwrap();
    assert!(bench.status.success(), "pgbench: {}", text(&bench));
    let wal_bytes: f64 = cluster.sql(&format!("select pg_current_wal_lsn() - '{start_lsn}'::pg_lsn")).parse().unwrap();
    let tps = String::from_utf8_lossy(&bench.stdout)
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("tps unknown")
        .to_string();
    println!(
        "keepup: pgbench {secs} s: {tps}; WAL {:.0} MiB ({:.1} segments/s); most .ready waiting: {} (at {} s), {samples} samples",
        wal_bytes / 1048576.0,
        wal_bytes / 16777216.0 / secs as f64,
        worst.0,
        worst.1
    );
    // And everything reached the repository.
    cluster.archive_now();
}
