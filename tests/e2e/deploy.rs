//! As an operator deploys it: installed as a `pgbackrest` symlink on `PATH`, configured only
//! through `conf.d` found via `PGBACKREST_CONFIG_PATH`, asynchronous archiving. The workers and
//! the `restore_command` pgstrata writes must run under that name with that configuration.

use std::time::{Duration, Instant};

use super::*;
use support::chown_postgres;

#[test]
fn symlinked_as_pgbackrest_with_conf_d_and_async_archiving() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-deploy-");
    let bindir = scratch.path("bin");
    let link = bindir.join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let etc = scratch.path("etc");
    let conf_d = scratch.path("etc/conf.d");
    let (repo, spool, logs, locks) =
        (scratch.path("repo"), scratch.path("spool"), scratch.path("log"), scratch.path("lock"));
    let primary = Cluster::init(&scratch, "primary");
    std::fs::write(
        conf_d.join("db.conf"),
        format!(
            "[global]\nrepo1-path={}\nspool-path={}\nlog-path={}\nlock-path={}\narchive-async=y\nprocess-max=2\n\
             log-level-file=info\nlog-level-console=warn\n\n[db]\npg1-path={}\npg1-socket-path={}\npg1-port={}\n",
            repo.display(),
            spool.display(),
            logs.display(),
            locks.display(),
            primary.data.display(),
            primary.socket.display(),
            primary.port
        ),
    )
    .unwrap();
    chown_postgres(&etc);
    let path_env = format!("{}:/usr/bin:/bin", bindir.display());
    let env = [("PATH", path_env.as_str()), ("PGBACKREST_CONFIG_PATH", etc.to_str().unwrap())];
    let pgbackrest = |args: &[&str]| {
        // Called by name through PATH, as the operator's scripts do.
        let o = run_as_postgres(
            Path::new("/bin/sh"),
            &[&["-c", "exec pgbackrest \"$@\"", "pgbackrest"], args].concat(),
            &env,
        );
        assert!(o.status.success(), "pgbackrest {args:?}: {}", text(&o));
        o
    };
    primary.configure(
        "archive_mode = on\narchive_command = 'pgbackrest --stanza=db archive-push \"%p\"'\nwal_level = replica\n",
    );
    primary.start_with_env(&env);
    pgbackrest(&["--stanza=db", "stanza-create"]);
    let init = primary.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    pgbackrest(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let bench = primary.tool("pgbench", &["-T", "5", "-c", "2", "-n", "postgres"]);
    assert!(bench.status.success(), "pgbench: {}", text(&bench));
    primary.archive_now();
    // The async worker ran as pgbackrest and logged where this configuration says.
    let worker_log = std::fs::read_to_string(logs.join("db-archive-push-async.log")).unwrap_or_default();
    assert!(worker_log.contains("archive-push:async"), "no async worker log in {}: {worker_log}", logs.display());

    // PGO's scheduled incremental Job: `backup` with the default type, under the same name; the
    // standby below is restored from it (the latest backup), through its chain.
    pgbackrest(&["--stanza=db", "backup", "--start-fast"]);
    let o = pgbackrest(&["--stanza=db", "info", "--output=json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info[0]["backup"][1]["type"], "incr", "{info}");
    assert_eq!(info[0]["backup"][1]["prior"], info[0]["backup"][0]["label"], "{info}");

    // A standby restored through the same name follows the primary.
    let standby_dir = scratch.path("standby");
    pgbackrest(&["--stanza=db", "restore", &format!("--pg1-path={}", standby_dir.display()), "--type=standby"]);
    let auto = std::fs::read_to_string(standby_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("restore_command = '{} ", link.display())),
        "restore_command does not run the pgbackrest name: {auto}"
    );
    let standby = Cluster::existing(&scratch, standby_dir, "standby");
    standby.configure("archive_mode = off\nhot_standby = on\n");
    standby.start_with_env(&env);
    primary.sql("create table after_standby as select g from generate_series(1, 1234) g");
    primary.archive_now();
    standby.wait_for("select count(*) from after_standby", "1234", "the standby did not replay the new table");
    assert_eq!(standby.sql("select pg_is_in_recovery()"), "t");

    // stop / start under the same name: the stop file goes into the lock path conf.d gives, and
    // archiving fails until start (the async worker's lock file names its pid for stop --force).
    let worker_lock = std::fs::read_to_string(locks.join("db-archive-push-async.lock")).unwrap();
    assert!(worker_lock.trim().parse::<u32>().is_ok(), "the worker's lock file records no pid: {worker_lock:?}");
    pgbackrest(&["--stanza=db", "stop"]);
    assert!(locks.join("db.stop").exists(), "no stop file in the configured lock path");
    let failed = |c: &Cluster| c.sql("select failed_count from pg_stat_archiver").parse::<u64>().unwrap();
    let failed_before = failed(&primary);
    primary.sql("create table while_stopped as select 1 as one");
    primary.sql("select pg_switch_wal()");
    let began = Instant::now();
    while failed(&primary) == failed_before {
        assert!(began.elapsed() < Duration::from_secs(60), "archive_command did not fail while stopped");
        std::thread::sleep(Duration::from_millis(200));
    }
    pgbackrest(&["--stanza=db", "start"]);
    primary.sql("create table after_start as select 1 as one");
    primary.archive_now();
}

/// The `[global]` a PGO user carries over: S3 on TLS with a certificate nobody trusts and
/// `repo1-storage-verify-tls=n` (a self-signed MinIO), gz compression, pgBackRest's timeouts,
/// bundles and block incremental, retention, asynchronous archiving — through the `pgbackrest`
/// name. A full and an incr back up, the restore starts with the source's data, and `manifest`
/// shows the backup was compressed as configured.
#[test]
fn a_pgo_configuration_with_gz_on_self_signed_s3_backs_up_and_restores() {
    if !postgres_available() {
        return;
    }
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_TLS_ENDPOINT") else { return };
    let scratch = Scratch::new("pgstrata-pgo-conf-");
    let link = scratch.path("bin").join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let primary = Cluster::init(&scratch, "primary");
    let repo_path = format!(
        "/pgo-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    );
    let conf = scratch.write(
        "pgbackrest.conf",
        &format!(
            "[global]\nrepo1-type=s3\nrepo1-path={repo_path}\nrepo1-s3-bucket=test-bucket\nrepo1-s3-endpoint={endpoint}\n\
             repo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\nrepo1-s3-key=test\nrepo1-s3-key-secret=test\n\
             repo1-storage-verify-tls=n\nrepo1-retention-full=2\nrepo1-retention-full-type=count\nrepo1-bundle=y\n\
             repo1-block=y\ncompress-type=gz\ncompress-level=6\ndb-timeout=1800\nio-timeout=60\nprotocol-timeout=1830\n\
             archive-async=y\narchive-push-queue-max=1GiB\nspool-path={spool}\nlog-path={log}\nlog-level-console=warn\n\
             log-level-file=info\nprocess-max=2\nstart-fast=y\ndelta=y\ntcp-keep-alive=y\n\n\
             [db]\npg1-path={data}\npg1-port={port}\npg1-socket-path={socket}\n",
            spool = scratch.path("spool").display(),
            log = scratch.path("log").display(),
            data = primary.data.display(),
            port = primary.port,
            socket = primary.socket.display(),
        ),
    );
    let cfg = format!("--config={}", conf.display());
    let pgbackrest = |args: &[&str]| {
        let o = run_as_postgres(&link, &[&[cfg.as_str(), "--stanza=db"], args].concat(), &[]);
        assert!(o.status.success(), "pgbackrest {args:?}: {}", text(&o));
        o
    };
    primary.configure(&format!(
        "archive_mode = on\narchive_command = '{} {cfg} --stanza=db archive-push \"%p\"'\nwal_level = replica\n",
        link.display()
    ));
    primary.start();
    pgbackrest(&["stanza-create"]);
    pgbackrest(&["check"]);
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    pgbackrest(&["backup", "--type=full"]);
    primary.sql("update t set v = 'changed' where id % 100 = 0");
    primary.sql("create table t2 as select g from generate_series(1, 1000) g");
    pgbackrest(&["backup", "--type=incr"]);
    let expected = primary.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    primary.archive_now();

    let o = pgbackrest(&["info", "--output=json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let incr = info[0]["backup"][1]["label"].as_str().unwrap().to_string();
    assert_eq!(info[0]["backup"][1]["type"], "incr", "{info}");
    let o = pgbackrest(&["manifest", &format!("--set={incr}"), "--output=json"]);
    let manifest: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(manifest["pgstrata"]["option"]["compress-type"], "gz", "{}", manifest["pgstrata"]);
    assert_eq!(manifest["label"], incr.as_str());
    let files = manifest["fileList"].as_array().unwrap();
    assert!(files.iter().any(|f| f["name"] == "pg_data/PG_VERSION"), "no PG_VERSION in the file list");
    assert!(files.iter().any(|f| f.get("reference").is_some()), "an incr with no file referenced to the full");
    let o = pgbackrest(&["manifest", &format!("--set={incr}"), "--filter=pg_data/PG_VERSION"]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("  - pg_data/PG_VERSION\n") && shown.matches("  - ").count() == 1, "{shown}");

    let restored = scratch.path("restored");
    pgbackrest(&["restore", &format!("--pg1-path={}", restored.display())]);
    let copy = Cluster::existing(&scratch, restored, "restored");
    copy.configure("archive_mode = off\n");
    copy.start();
    copy.wait_promoted();
    assert_eq!(copy.sql("select count(*), md5(string_agg(v, ',' order by id)) from t"), expected);
    assert_eq!(copy.sql("select count(*) from t2"), "1000");
    pgbackrest(&["verify"]);
}
