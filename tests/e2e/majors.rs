//! One user's cycle on every supported PostgreSQL major (13–18), through a `pgbackrest` link as
//! an operator calls it: stanza-create, check, a full and a page-level incr, asynchronous
//! archive-push and archive-get, point-in-time restores to a time, an LSN, an xid and a named
//! restore point, a delta restore, verify and restore-test (with the server alone: no psql,
//! pg_amcheck or pg_checksums of that major). Restored data is compared with the source by SQL
//! (no pg_dump of a newer major is needed).

use super::*;
use support::server_bin;

/// Every ordinary table of `public` with an md5 of its rows in a fixed order: equal
/// fingerprints mean equal data.
fn fingerprint(c: &Cluster) -> String {
    let tables =
        c.sql("select relname from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace order by 1");
    tables
        .lines()
        .map(|t| {
            let digest =
                c.sql(&format!("select md5(coalesce(string_agg(r::text, ',' order by r::text), '')) from {t} r"));
            format!("{t}:{digest}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Major {
    link: std::path::PathBuf,
    setup: Setup,
    env: Vec<(String, String)>,
}

impl Major {
    /// Runs pgstrata through its `pgbackrest` link, as postgres.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let all = self.setup.args(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_as_postgres(&self.link, &refs, &env)
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let o = self.run(args);
        assert!(o.status.success(), "pgbackrest {args:?}: {}", text(&o));
        o
    }

    /// Restores into `dir` with `args`, starts the cluster (not archiving) and waits until it
    /// was promoted.
    fn restore_and_start(&self, scratch: &Scratch, dir: &Path, name: &str, args: &[&str]) -> Cluster {
        let pg1 = format!("--pg1-path={}", dir.display());
        let mut all = vec!["--stanza=db", "restore", pg1.as_str()];
        all.extend_from_slice(args);
        self.ok(&all);
        let c = Cluster::existing(scratch, dir.to_path_buf(), name);
        c.configure("archive_mode = off");
        c.start();
        c.wait_promoted();
        c
    }
}

fn cycle(major: u32) {
    let Some(server) = server_bin(major) else { return };
    let scratch = Scratch::new(&format!("pgstrata-pg{major}-"));
    let (repo, spool) = (scratch.path("repo"), scratch.path("spool"));
    let link = scratch.path("bin").join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let cluster = Cluster::init_on(&server, &scratch, "src", &[]);
    let conf = format!(
        "[global]\nrepo1-path={}\nlock-path={}\nspool-path={}\narchive-async=y\nprocess-max=2\n\
         repo1-retention-full=2\nlog-level-file=off\nlog-level-console=warn\nlog-level-stderr=warn\n\n\
         [db]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
        repo.display(),
        scratch.path("lock").display(),
        spool.display(),
        cluster.data.display(),
        cluster.socket.display(),
        cluster.port
    );
    let setup = Setup { config: scratch.write("pgbackrest.conf", &conf), env: vec![] };
    let m = Major { link: link.clone(), setup, env: vec![] };
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} --config={} --stanza=db archive-push %p'\nwal_level = replica\n",
        link.display(),
        m.setup.config.display()
    ));
    cluster.start();
    let version = cluster.sql("select current_setting('server_version_num')::int / 10000");
    assert_eq!(version, major.to_string(), "the server under test is not PostgreSQL {major}");
    let init = cluster.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));

    m.ok(&["--stanza=db", "stanza-create"]);
    m.ok(&["--stanza=db", "check"]);
    m.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    // Changes touching a few pages of the large table: the incr stores those pages.
    cluster.sql("update pgbench_accounts set abalance = abalance + 1 where aid % 1000 = 0");
    cluster.sql("create table t_incr as select g as id from generate_series(1, 1000) g");
    m.ok(&["--stanza=db", "backup", "--start-fast"]);
    let o = m.ok(&["--stanza=db", "info", "--output=json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info[0]["db"][0]["version"], major.to_string(), "{info}");
    let backups = info[0]["backup"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{info}");
    assert_eq!(backups[1]["type"], "incr", "{info}");
    let full_delta = backups[0]["info"]["repository"]["delta"].as_u64().unwrap();
    let incr_delta = backups[1]["info"]["repository"]["delta"].as_u64().unwrap();
    assert!(incr_delta * 4 < full_delta, "the incr stored {incr_delta} bytes against the full's {full_delta}: {info}");
    // pgbench_accounts changed on a few pages: stored by page, not whole.
    let set = format!("--set={}", backups[1]["label"].as_str().unwrap());
    let o = m.ok(&["--stanza=db", "info", "--output=json", &set]);
    let detail: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let by_page = detail[0]["backup"][0]["file"]["page"].as_u64().unwrap_or(0);
    assert!(by_page >= 1, "PostgreSQL {major}: no file of the incr was stored by page: {detail}");

    // Backups record whole seconds: the time target lies in a later second than the incr's
    // end (a clock resolution, not synchronization).
    cluster.sql("select pg_sleep(1.1)");
    // Four targets, each followed by dropping the table made just before it.
    cluster.sql("create table t_time as select g as id, md5(g::text) as v from generate_series(1, 3000) g");
    let at_time = fingerprint(&cluster);
    let time = cluster.sql("select clock_timestamp()");
    cluster.sql("select pg_sleep(0.05)");
    cluster.sql("drop table t_time");
    cluster.sql("create table t_lsn as select g as id from generate_series(1, 3000) g");
    let at_lsn = fingerprint(&cluster);
    let lsn = cluster.sql("select pg_current_wal_insert_lsn()");
    cluster.sql("drop table t_lsn");
    cluster.sql("create table t_xid (id int)");
    let xid = cluster.sql("insert into t_xid select generate_series(1, 3000) returning txid_current()");
    let xid = xid.lines().next().unwrap().to_string();
    let at_xid = fingerprint(&cluster);
    cluster.sql("drop table t_xid");
    cluster.sql("create table t_name as select g as id from generate_series(1, 3000) g");
    let at_name = fingerprint(&cluster);
    cluster.sql("select pg_create_restore_point('before drop')");
    cluster.sql("drop table t_name");
    cluster.sql("update pgbench_accounts set abalance = abalance - 7 where aid % 500 = 0");
    let at_end = fingerprint(&cluster);
    cluster.archive_now();

    let restored = scratch.path("restored");
    for (name, args, expected) in [
        ("by-time", vec!["--type=time".to_string(), format!("--target={time}")], &at_time),
        ("by-lsn", vec!["--type=lsn".into(), format!("--target={lsn}")], &at_lsn),
        ("by-xid", vec!["--type=xid".into(), format!("--target={xid}")], &at_xid),
        ("by-name", vec!["--type=name".into(), "--target=before drop".into()], &at_name),
    ] {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--target-action=promote");
        let dir = scratch.path(name);
        let c = m.restore_and_start(&scratch, &dir, name, &args);
        assert_eq!(fingerprint(&c), *expected, "PostgreSQL {major}, {name}: the restored data differs");
        c.stop();
    }
    // Recovery fetched WAL asynchronously, through the spool.
    assert!(spool.join("archive/db/in").is_dir(), "archive-get did not use the spool");

    // A delta restore of the latest state over an older restore, then a fresh restore of it.
    let by_time = scratch.dir.path().join("by-time");
    let c = m.restore_and_start(&scratch, &by_time, "delta", &["--delta", "--force"]);
    assert_eq!(fingerprint(&c), at_end, "PostgreSQL {major}: the delta restore differs from the source");
    c.stop();
    let c = m.restore_and_start(&scratch, &restored, "restored", &[]);
    assert_eq!(fingerprint(&c), at_end, "PostgreSQL {major}: the restore differs from the source");
    c.stop();

    let o = m.run(&["--stanza=db", "verify"]);
    assert!(o.status.success(), "PostgreSQL {major}: verify: {}", text(&o));

    let work = scratch.path("restore-test");
    let at = format!("--restore-test-path={}", work.display());
    let pg_bin = format!("--pg-bin={}", server.display());
    let o = m.ok(&["--stanza=db", "restore-test", &at, &pg_bin, "--output=json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["status"], "ok", "{report}");
    let detail = |i: usize| report["steps"][i]["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail(3).contains("heapallindexed") && !detail(3).starts_with("0 "), "{report}");
    assert!(detail(5).contains(" 0 bad") && !detail(5).starts_with("0 pages"), "{report}");
}

#[test]
fn cycle_postgresql_13() {
    cycle(13);
}

#[test]
fn cycle_postgresql_14() {
    cycle(14);
}

#[test]
fn cycle_postgresql_15() {
    cycle(15);
}

#[test]
fn cycle_postgresql_16() {
    cycle(16);
}

#[test]
fn cycle_postgresql_17() {
    cycle(17);
}

#[test]
fn cycle_postgresql_18() {
    cycle(18);
}
