//! Backups from a streaming standby (`backup-standby`, as PGO sets it): the standby listed first
//! and the primary second (pgstrata finds which is which), `check` accepting both, the backup
//! reading replicated files from the standby (its own counters say so), the restored cluster
//! holding what the primary wrote; with the standby down, `y` fails naming the standby and
//! `prefer` falls back to the primary with a warning.

use super::*;

/// A streaming standby of `primary` made with pg_basebackup (`-R`: standby.signal and
/// primary_conninfo), started and caught up.
fn streaming_standby(scratch: &Scratch, primary: &Cluster, name: &str) -> Cluster {
    let dir = scratch.dir.path().join(name);
    let o = primary.tool("pg_basebackup", &["-D", dir.to_str().unwrap(), "-R", "-X", "stream", "-c", "fast"]);
    assert!(o.status.success(), "pg_basebackup: {}", text(&o));
    let standby = Cluster::existing(scratch, dir, name);
    // Not archiving: only the primary archives (archive_mode=on does nothing in recovery).
    standby.configure("hot_standby = on");
    standby.start();
    standby.wait_for("select pg_is_in_recovery()", "t", "the standby did not start in recovery");
    standby
}

/// The `read N files (...) from the <role>` lines of a backup's log: (files, role) pairs.
fn reads(said: &str) -> Vec<(u64, String)> {
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
    let standby = streaming_standby(&scratch, &primary, "standby");
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
    drop(s_primary);
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
}
