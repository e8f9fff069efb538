//! Point-in-time recovery to every target type, timelines after a promotion, and targets that
//! cannot be reached refused before anything is written.

use super::*;

/// Restores into a fresh directory with `args`, starts it (not archiving) and waits for the
/// promotion; returns the running cluster.
pub(super) fn restore_and_start(scratch: &Scratch, s: &Setup, name: &str, args: &[&str]) -> Cluster {
    let dir = scratch.path(name);
    let pg1 = format!("--pg1-path={}", dir.display());
    let mut all = vec!["--stanza=db", "restore", pg1.as_str()];
    all.extend_from_slice(args);
    s.ok(&all);
    let c = Cluster::existing(scratch, dir, name);
    c.configure("archive_mode = off");
    c.start();
    c.wait_promoted();
    c
}

fn pgbench(cluster: &Cluster, seconds: &str) {
    let o = cluster.tool("pgbench", &["-T", seconds, "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
}

#[test]
fn point_in_time_targets_and_timelines() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-pitr-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    let init = cluster.tool("pgbench", &["-i", "-s", "2", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "stanza-create"]);
    let before_backup = cluster.sql("select clock_timestamp()");
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);

    // Four moments, each followed by dropping the table made just before it.
    pgbench(&cluster, "2");
    cluster.sql("create table t_time as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
    let at_time = cluster.dumpall();
    let time = cluster.sql("select clock_timestamp()");
    std::thread::sleep(std::time::Duration::from_millis(50));
    cluster.sql("drop table t_time");

    pgbench(&cluster, "1");
    cluster.sql("create table t_lsn as select g as id from generate_series(1, 5000) g");
    let at_lsn = cluster.dumpall();
    let lsn = cluster.sql("select pg_current_wal_insert_lsn()");
    cluster.sql("drop table t_lsn");

    pgbench(&cluster, "1");
    cluster.sql("create table t_xid (id int)");
    let xid = cluster.sql("insert into t_xid select generate_series(1, 5000) returning txid_current()");
    let xid = xid.lines().next().unwrap().to_string();
    let at_xid = cluster.dumpall();
    cluster.sql("drop table t_xid");

    pgbench(&cluster, "1");
    cluster.sql("create table t_name as select g as id from generate_series(1, 5000) g");
    let at_name = cluster.dumpall();
    cluster.sql("select pg_create_restore_point('before drop')");
    cluster.sql("drop table t_name");
    pgbench(&cluster, "1");
    cluster.archive_now();

    for (name, args, expected, table) in [
        ("by-time", vec!["--type=time".to_string(), format!("--target={time}")], &at_time, "t_time"),
        ("by-lsn", vec!["--type=lsn".into(), format!("--target={lsn}")], &at_lsn, "t_lsn"),
        ("by-xid", vec!["--type=xid".into(), format!("--target={xid}")], &at_xid, "t_xid"),
        ("by-name", vec!["--type=name".into(), "--target=before drop".into()], &at_name, "t_name"),
    ] {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push("--target-action=promote");
        let c = restore_and_start(&scratch, &s, name, &args);
        assert_eq!(c.sql(&format!("select count(*) from {table}")), "5000", "{name}");
        assert!(c.dumpall() == *expected, "{name}: restored cluster differs from the dump taken at the target");
        c.stop();
    }

    // Unreachable targets are refused before anything is written.
    let early = format!("--target={before_backup}");
    let late = "--target=2999-01-01 00:00:00+00";
    let far = "--target=FF/0";
    for (args, says) in [
        (vec!["--type=time", early.as_str(), "--target-timeline=current"], "before every usable backup"),
        (vec!["--type=time", late], "beyond the archive"),
        (vec!["--type=lsn", far], "beyond the archive"),
        (vec!["--type=lsn", "--target=0/10"], "before every usable backup"),
        (vec!["--type=time", "--target=last tuesday"], "not a valid target time"),
        (vec!["--type=xid"], "requires option: target"),
        (vec!["--type=default", "--target=0/10"], "not valid with restore --type=default"),
    ] {
        let dir = scratch.path("refused");
        let pg1 = format!("--pg1-path={}", dir.display());
        let mut all = vec!["--stanza=db", "restore", pg1.as_str()];
        all.extend_from_slice(&args);
        let o = s.run(&all);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(text(&o).contains(says), "{args:?}: expected '{says}' in {}", text(&o));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{args:?} wrote into {}", dir.display());
    }

    // Timelines: a clone restored to the time target is promoted onto timeline 2 and archives
    // there; a restore following the latest timeline reaches its data.
    let tl2_dir = scratch.path("tl2");
    let pg1 = format!("--pg1-path={}", tl2_dir.display());
    s.ok(&["--stanza=db", "restore", &pg1, "--type=time", &format!("--target={time}"), "--target-action=promote"]);
    // The clone takes the stanza over: its archive_command names its own data directory (the
    // original's configuration would be refused in another directory).
    let tl2 = Cluster::existing(&scratch, tl2_dir.clone(), "tl2");
    tl2.configure(&format!(
        "archive_mode = on\narchive_command = '{} --pg1-path={} archive-push %p'",
        s.command_prefix(),
        tl2_dir.display()
    ));
    tl2.start();
    tl2.wait_promoted();
    assert_eq!(tl2.sql("select timeline_id from pg_control_checkpoint()"), "2");
    tl2.sql("create table on_tl2 as select g as id from generate_series(1, 777) g");
    tl2.archive_now();
    let on_tl2 = tl2.dumpall();
    tl2.stop();

    let latest = restore_and_start(&scratch, &s, "latest", &["--target-timeline=latest"]);
    assert_eq!(latest.sql("select count(*) from on_tl2"), "777");
    assert!(latest.dumpall() == on_tl2, "restore along timeline 2 differs from the timeline-2 cluster");
    latest.stop();
    // Timeline 1 is still there to follow.
    let current = restore_and_start(&scratch, &s, "current", &["--target-timeline=current"]);
    assert_eq!(current.sql("select count(*) from pg_class where relname in ('on_tl2', 't_time')"), "0");
    current.stop();

    // info shows the archive per timeline.
    let info = String::from_utf8_lossy(&s.ok(&["--stanza=db", "info"]).stdout).into_owned();
    assert!(info.contains("timeline 1:") && info.contains("timeline 2:"), "{info}");
}

/// The operator's sequence that used to restore the wrong backup, then none: F1, F2, an
/// in-place PITR of F1 to a time before F2 (`--delta` into the same PGDATA, as PGO's restore Job
/// does) promoted onto timeline 2 and archiving there. `--type=immediate` must restore F2 (the
/// newest; recovery follows its own timeline). Then F1 recovered to an LSN before timeline 2's
/// switch with `--target-timeline=2` is promoted by PostgreSQL onto timeline 3, whose history
/// file lists 2's switch point before 1's: restores, verify and info go on working, and a
/// default restore follows timeline 3 from the one backup on its history, saying why it passed
/// over the newer one.
#[test]
fn timeline_forks_before_the_newest_backup() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-forks-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table t as select g as id from generate_series(1, 1000) g");
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let f1 = info_json(&s)[0]["backup"][0]["label"].as_str().unwrap().to_string();
    // Backups record whole seconds: the time target lies in a later second than F1's end, and F2
    // ends in a later one still (not synchronization: a clock resolution).
    cluster.sql("select pg_sleep(1.1)");
    cluster.sql("create table before_lsn as select g as id from generate_series(1, 100) g");
    let lsn = cluster.sql("select pg_current_wal_insert_lsn()");
    cluster.sql("create table before_time as select g as id from generate_series(1, 100) g");
    let time = cluster.sql("select clock_timestamp()");
    cluster.sql("select pg_sleep(1.1)");
    cluster.sql("create table in_f2 as select g as id from generate_series(1, 100) g");
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    cluster.stop();

    // In-place PITR of F1 (the backup before the time target), promoted onto timeline 2.
    s.ok(&["--stanza=db", "restore", "--delta", "--type=time", &format!("--target={time}"), "--target-action=promote"]);
    cluster.start();
    cluster.wait_promoted();
    assert_eq!(cluster.sql("select timeline_id from pg_control_checkpoint()"), "2");
    assert_eq!(cluster.sql("select count(*) from pg_class where relname in ('before_time', 'in_f2')"), "1");
    cluster.archive_now();
    cluster.stop();

    let immediate = restore_and_start(&scratch, &s, "immediate", &["--type=immediate", "--target-action=promote"]);
    assert_eq!(
        immediate.sql("select count(*) from in_f2"),
        "100",
        "--type=immediate did not restore the newest backup (F2)"
    );
    immediate.stop();

    // F1 to an LSN before timeline 2 left timeline 1, following timeline 2: PostgreSQL promotes
    // onto timeline 3 and writes "1 <switch of 2>", then "2 <this LSN>", an earlier point.
    let tl3_dir = scratch.path("tl3");
    let pg1 = format!("--pg1-path={}", tl3_dir.display());
    s.ok(&[
        "--stanza=db",
        "restore",
        &pg1,
        &format!("--set={f1}"),
        "--type=lsn",
        &format!("--target={lsn}"),
        "--target-timeline=2",
        "--target-action=promote",
    ]);
    let tl3 = Cluster::existing(&scratch, tl3_dir.clone(), "tl3");
    tl3.configure(&format!(
        "archive_mode = on\narchive_command = '{} --pg1-path={} archive-push %p'",
        s.command_prefix(),
        tl3_dir.display()
    ));
    tl3.start();
    tl3.wait_promoted();
    assert_eq!(tl3.sql("select timeline_id from pg_control_checkpoint()"), "3");
    tl3.sql("create table on_tl3 as select g as id from generate_series(1, 333) g");
    tl3.archive_now();
    tl3.stop();
    let history = s.ok(&["--stanza=db", "repo-get", "archive/db/15-1/00000003.history"]);
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    let switches: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(switches.len(), 2, "{history}");
    let at = |l: &str| {
        let (hi, lo) = l.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(at(switches[1]) < at(switches[0]), "PostgreSQL did not write an earlier switch point: {history}");
    assert!(at(switches[1]) >= at(&lsn), "{history} (target {lsn})");

    // Everything goes on: the default restore follows timeline 3 from F1, and says why not F2.
    let dir = scratch.path("latest");
    let pg1 = format!("--pg1-path={}", dir.display());
    let o = s.ok(&["--stanza=db", "restore", &pg1, "--log-level-console=info"]);
    let said = text(&o);
    assert!(said.contains("passing over backup") && said.contains("target timeline 3 forked from"), "{said}");
    let latest = Cluster::existing(&scratch, dir, "latest");
    latest.configure("archive_mode = off");
    latest.start();
    latest.wait_promoted();
    assert_eq!(latest.sql("select count(*) from on_tl3"), "333");
    latest.stop();
    let o = s.run(&["--stanza=db", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    s.ok(&["--stanza=db", "info"]);
    // F2 named with timeline 3 to follow: refused before anything is written.
    let f2 = info_json(&s)[0]["backup"][1]["label"].as_str().unwrap().to_string();
    let refused = scratch.path("refused");
    let pg1 = format!("--pg1-path={}", refused.display());
    let o = s.run(&["--stanza=db", "restore", &pg1, &format!("--set={f2}")]);
    assert_eq!(o.status.code(), Some(58), "{}", text(&o));
    assert!(text(&o).contains("target timeline 3 forked from backup timeline 1"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&refused).unwrap().count(), 0);
}
