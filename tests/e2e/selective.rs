//! Restoring part of a cluster, or into other places, as pgBackRest's options ask:
//! `--db-include`/`--db-exclude` (the other databases as empty sparse files, droppable),
//! `--tablespace-map-all`, and links (`pg_wal` on another volume) restored as directories
//! unless `--link-all` or `--link-map` keeps them links. Each refusal leaves nothing written.

use std::os::unix::fs::MetadataExt;

use super::*;

/// Every file below `dir`, with its size and the bytes it takes on disk.
fn files_below(dir: &Path) -> Vec<(std::path::PathBuf, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.blocks() * 512));
            }
        }
    }
    out
}

#[test]
fn selective_restore_links_and_tablespaces_as_pgbackrest_restores_them() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-selective-");
    let repo = scratch.path("repo");
    let waldir = scratch.path("wal-volume").join("pg_wal");
    let cluster = Cluster::init_with(&scratch, "src", &["--waldir", waldir.to_str().unwrap()]);
    let s = setup_on(&scratch, "src.conf", &cluster, &format!("repo1-path={}\n", repo.display()), None);
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        s.command_prefix()
    ));
    cluster.start();
    let ts_dir = scratch.path("ts-location");
    cluster.sql(&format!("create tablespace ts1 location '{}'", ts_dir.display()));
    cluster.sql("create database app");
    cluster.sql("create database other tablespace ts1");
    let in_db = |db: &str, sql: &str| {
        let o = cluster.try_sql_in(db, sql);
        assert!(o.status.success(), "{db}: {sql}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    in_db("app", "create table kept as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    in_db("other", "create table dropped as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    let expected = in_db("app", "select count(*), md5(string_agg(v, ',' order by id)) from kept");
    let other_oid = cluster.sql("select oid from pg_database where datname = 'other'");
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    cluster.stop();

    // Refusals, before anything is written.
    let target = scratch.dir.path().join("refused");
    let pg1 = format!("--pg1-path={}", target.display());
    for (args, code, says) in [
        (&["--db-include=postgres"][..], 81, "system databases (template0, postgres, etc.) are included by default"),
        (&["--db-include=nope"][..], 80, "database to include 'nope' does not exist"),
        (&["--db-exclude=nope"][..], 80, "database to exclude 'nope' does not exist"),
        (&["--db-include=app", "--db-exclude=app"][..], 81, "database to include 'app' is in the exclude list"),
        (&["--tablespace-map=nope=/tmp/x"][..], 76, "unable to remap invalid tablespace 'nope'"),
        (&["--link-map=nope=/tmp/x"][..], 78, "the backup has no link 'nope'"),
    ] {
        let o = s.run(&[&["--stanza=db", "restore", pg1.as_str()], args].concat());
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert!(
            !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
            "{args:?} wrote into the target"
        );
    }

    // --db-include=app, every tablespace into one directory, pg_wal as a directory (no
    // --link-all): the copy needs nothing of the source's places.
    let restored = scratch.path("restored");
    let all_ts = scratch.path("all-tablespaces");
    let o = s.ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", restored.display()),
        "--db-include=app",
        &format!("--tablespace-map-all={}", all_ts.display()),
        "--archive-mode=off",
        "--log-level-console=warn",
    ]);
    assert!(text(&o).contains("contents of directory link 'pg_wal' will be restored in a directory"), "{}", text(&o));
    let wal = std::fs::symlink_metadata(restored.join("pg_wal")).unwrap();
    assert!(wal.is_dir() && !wal.file_type().is_symlink(), "pg_wal was restored as a link");
    // The zeroed database: every file there, none of its bytes.
    let zeroed: Vec<_> = files_below(&all_ts.join("ts1"))
        .into_iter()
        .filter(|(p, _, _)| p.components().any(|c| c.as_os_str() == other_oid.as_str()))
        .collect();
    assert!(
        zeroed.iter().any(|(_, size, _)| *size > 100_000),
        "no sizeable file of 'other' restored: {}",
        zeroed.len()
    );
    let holding: Vec<_> = zeroed.iter().filter(|(_, _, on_disk)| *on_disk > 0).map(|(p, _, _)| p).collect();
    assert!(
        holding.is_empty(),
        "{} files of the left-out database hold data, e.g. {:?}",
        holding.len(),
        holding.first()
    );
    let copy = Cluster::existing(&scratch, restored, "restored");
    copy.start();
    copy.wait_promoted();
    let copy_db = |db: &str, sql: &str| {
        let o = copy.try_sql_in(db, sql);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string(), text(&o))
    };
    let (ok, got, all) = copy_db("app", "select count(*), md5(string_agg(v, ',' order by id)) from kept");
    assert!(ok && got == expected, "app differs: {all}");
    // What pgBackRest's users do next: drop the database left out.
    let (ok, _, all) = copy_db("postgres", "drop database other");
    assert!(ok, "the left-out database cannot be dropped: {all}");
    copy.stop();

    // --link-all: pg_wal is a link again, to where it was.
    let linked = scratch.path("linked");
    let elsewhere = scratch.path("linked-ts");
    s.ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", linked.display()),
        "--link-all",
        &format!("--tablespace-map=ts1={}", elsewhere.display()),
        "--archive-mode=off",
    ]);
    assert_eq!(std::fs::read_link(linked.join("pg_wal")).unwrap(), waldir);
}
