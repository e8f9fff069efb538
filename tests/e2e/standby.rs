//! Backups from a streaming standby (`backup-standby`, as PGO sets it): the standby listed first
//! and the primary second (pgstrata finds which is which), `check` accepting both, the backup
//! reading replicated files from the standby (its own counters say so), the restored cluster
//! holding what the primary wrote; with the standby down, `y` fails naming the standby and
//! `prefer` falls back to the primary with a warning.

use super::*;

/// A streaming standby of `primary` made with pg_basebackup (`-R`: standby.signal and
/// primary_conninfo), started and caught up.
fn streaming_standby(scratch: &Scratch, primary: &Cluster, setup: &Setup, name: &str) -> Cluster {
    let dir = scratch.dir.path().join(name);
    let o = primary.tool("pg_basebackup", &["-D", dir.to_str().unwrap(), "-R", "-X", "stream", "-c", "fast"]);
    assert!(o.status.success(), "pg_basebackup: {}", text(&o));
    let standby = Cluster::existing(scratch, dir.clone(), name);
    // archive_mode=on does nothing in recovery: it archives once promoted, into the same stanza,
    // naming its own data directory (PGO's pods share one path; these two cannot).
    standby.configure(&format!(
        "hot_standby = on\narchive_command = '{} --pg1-path={} archive-push %p'",
        setup.command_prefix(),
        dir.display()
    ));
    standby.start();
    standby.wait_for("select pg_is_in_recovery()", "t", "the standby did not start in recovery");
    standby
}

/// The `read N files (...) from the <role>` lines of a backup's log: (files, role) pairs.
pub(super) fn reads(said: &str) -> Vec<(u64, String)> {
    said.lines()
        .filter_map(|l| {
            let rest = &l[l.find("read ")? + 5..];
            let (files, rest) = rest.split_once(" files (")?;
            let role = rest.split_once(") from the ")?.1.split_whitespace().next()?;
            Some((files.parse().ok()?, role.to_string()))
        })
        .collect()
}

#[test]
fn a_backup_from_a_standby_reads_there_and_restores() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-standby-");
    let repo = scratch.path("repo");
    let (primary, s_primary) = archiving_cluster(&scratch, "primary", &repo, None);
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    let standby = streaming_standby(&scratch, &primary, &s_primary, "standby");
    // pg1 is the standby, pg2 the primary: the order PGO's pod list may well have.
    let conf = format!(
        "[global]\nrepo1-path={}\nlock-path={}\nlog-level-file=off\nlog-level-console=info\nlog-level-stderr=off\n\
         backup-standby=y\n\n[db]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n\
         pg2-path={}\npg2-socket-path={}\npg2-port={}\npg2-user=postgres\n",
        repo.display(),
        scratch.path("lock").display(),
        standby.data.display(),
        standby.socket.display(),
        standby.port,
        primary.data.display(),
        primary.socket.display(),
        primary.port
    );
    let s = Setup { config: scratch.write("both.conf", &conf), env: vec![] };
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "check"]);

    primary.sql("insert into t select g, 'after' from generate_series(20001, 25000) g");
    let expected = primary.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    let o = s.ok(&["--stanza=db", "backup", "--type=full"]);
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(said.contains("pg2 is the primary") && said.contains("pg1 is a standby"), "{said}");
    let read = reads(&said);
    let on = |role: &str| read.iter().find(|(_, r)| r == role).map(|(n, _)| *n).unwrap_or(0);
    assert!(on("standby") > 500 && on("primary") > 0, "{read:?}\n{said}");
    assert!(on("standby") > 10 * on("primary"), "the standby did not carry the read load: {read:?}");
    // The manifest records it too.
    let label = info_json(&s)[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let o = s.ok(&["--stanza=db", "info", "--set", &label, "--output=json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let recorded = &doc[0]["backup"][0]["read-from"];
    assert_eq!(recorded[1]["role"], "standby", "{doc}");
    assert_eq!(recorded[1]["path"], standby.data.display().to_string(), "{doc}");
    assert_eq!(recorded[1]["files"].as_u64(), Some(on("standby")), "{doc}");
    assert!(recorded[1]["bytes"].as_u64().unwrap() > 10 * recorded[0]["bytes"].as_u64().unwrap(), "{doc}");

    let restored = scratch.path("restored");
    let pg1 = format!("--pg1-path={}", restored.display());
    s.ok(&["--stanza=db", "restore", &pg1]);
    let c = Cluster::existing(&scratch, restored, "restored");
    c.configure("archive_mode = off");
    c.start();
    c.wait_promoted();
    assert_eq!(c.sql("select count(*), md5(string_agg(v, ',' order by id)) from t"), expected);
    c.stop();

    // The standby down: y fails naming it, prefer falls back to the primary.
    standby.stop();
    let o = s.run(&["--stanza=db", "backup", "--type=full"]);
    assert_eq!(o.status.code(), Some(56), "{}", text(&o));
    assert!(text(&o).contains("unable to find standby cluster"), "{}", text(&o));
    let o = s.ok(&["--stanza=db", "backup", "--type=full", "--backup-standby=prefer"]);
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(said.contains("unable to find a standby to perform the backup, using primary instead"), "{said}");
    let read = reads(&said);
    assert!(read.iter().all(|(_, r)| r == "primary") && !read.is_empty(), "{read:?}");

    // A failover: the standby catches up, the primary stops, the standby is promoted and
    // archives timeline 2 with the old timeline's last segment as a .partial, as PostgreSQL
    // names it; everything stays restorable and verifiable.
    standby.start();
    primary.sql("insert into t select g, 'before failover' from generate_series(25001, 26000) g");
    let lsn = primary.sql("select pg_current_wal_insert_lsn()");
    standby.wait_for(&format!("select pg_last_wal_replay_lsn() >= '{lsn}'"), "t", "the standby did not catch up");
    primary.stop();
    standby.sql("select pg_promote()");
    standby.wait_promoted();
    standby.sql("insert into t select g, 'after failover' from generate_series(26001, 26500) g");
    let expected = standby.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    standby.archive_now();
    let o = s_primary.ok(&["--stanza=db", "repo-ls", "--recurse", "stanza/db/archive"]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.contains(".partial-") && listed.contains("00000002.history"), "{listed}");
    let o = s_primary.run(&["--stanza=db", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let after = scratch.path("after-failover");
    let pg1 = format!("--pg1-path={}", after.display());
    s_primary.ok(&["--stanza=db", "restore", &pg1]);
    let c = Cluster::existing(&scratch, after, "after-failover");
    c.configure("archive_mode = off");
    c.start();
    c.wait_promoted();
    assert_eq!(c.sql("select count(*), md5(string_agg(v, ',' order by id)) from t"), expected);
}

/// After `pg_upgrade` (a new cluster: a new system identifier), `stanza-upgrade` records it as a
/// new database; the new cluster's WAL and backups go beside the old ones, and a backup of the
/// old cluster still restores with its own WAL to the old cluster's last state.
#[test]
fn stanza_upgrade_after_pg_upgrade_keeps_the_old_backups_restorable() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-upgrade-");
    let repo = scratch.path("repo");
    let (old, s_old) = archiving_cluster(&scratch, "old", &repo, None);
    s_old.ok(&["--stanza=db", "stanza-create"]);
    old.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
    s_old.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let old_label = info_json(&s_old)[0]["backup"][0]["label"].as_str().unwrap().to_string();
    old.sql("insert into t select g, 'after the old backup' from generate_series(5001, 6000) g");
    let old_state = old.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    old.archive_now();
    old.stop();

    let new = Cluster::init(&scratch, "new");
    let bin = support::pg_bin();
    let script = format!("cd '{}' && exec \"$0\" \"$@\"", scratch.path("upgrade-work").display());
    let o = run_as_postgres(
        Path::new("/bin/sh"),
        &[
            "-c",
            &script,
            bin.join("pg_upgrade").to_str().unwrap(),
            "-b",
            bin.to_str().unwrap(),
            "-B",
            bin.to_str().unwrap(),
            "-d",
            old.data.to_str().unwrap(),
            "-D",
            new.data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "pg_upgrade: {}", text(&o));
    let s_new = setup(&scratch, "new.conf", &new, &repo, None);
    new.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        s_new.command_prefix()
    ));
    new.start();
    s_new.ok(&["--stanza=db", "stanza-upgrade"]);
    new.sql("insert into t select g, 'upgraded' from generate_series(6001, 6500) g");
    s_new.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let new_state = new.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    new.archive_now();
    let info = info_json(&s_new);
    let dbs = info[0]["db"].as_array().unwrap();
    assert_eq!(dbs.len(), 2, "{info}");
    let archives: Vec<&str> =
        info[0]["archive"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(archives, ["15-1", "15-2"], "{info}");

    for (name, set, expected) in
        [("old-backup", Some(old_label.as_str()), &old_state), ("new-backup", None, &new_state)]
    {
        let dir = scratch.path(name);
        let pg1 = format!("--pg1-path={}", dir.display());
        let set = set.map(|l| format!("--set={l}"));
        let mut args = vec!["--stanza=db", "restore", pg1.as_str()];
        args.extend(set.as_deref());
        s_new.ok(&args);
        let c = Cluster::existing(&scratch, dir, name);
        c.configure("archive_mode = off");
        c.start();
        c.wait_promoted();
        assert_eq!(c.sql("select count(*), md5(string_agg(v, ',' order by id)) from t"), *expected, "{name}");
        c.stop();
    }
    let o = s_new.run(&["--stanza=db", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}
