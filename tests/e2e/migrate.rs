//! Taking over a pgBackRest repository (issue 25), as a user does it: a cluster archived and
//! backed up by real pgBackRest — 2.59.1 configured as PGO configures it (aes-256-cbc, the
//! default gz, bundles, block incremental, asynchronous archiving, retention-full=2), and
//! Debian's 2.45 (no bundles, no block incremental, unencrypted) — then the `pgbackrest` link
//! pointed at pgstrata and nothing else changed.

use crate::support::{Cluster, Scratch, postgres_available, run_as_postgres, text};
use std::path::{Path, PathBuf};

/// The pgBackRest to build a repository with: `PGSTRATA_TEST_PGBACKREST_<which>` (set by
/// scripts/tools.sh). Missing is a failure where servers are required.
pub(crate) fn pgbackrest_binary(which: &str) -> Option<PathBuf> {
    let var = format!("PGSTRATA_TEST_PGBACKREST_{which}");
    match std::env::var(&var) {
        Ok(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var("PGSTRATA_REQUIRE_SERVERS").is_err(),
                "{var} is not set to a pgBackRest binary (scripts/tools.sh sets it)"
            );
            None
        }
    }
}

struct Site {
    link: PathBuf,
    conf: PathBuf,
}

impl Site {
    /// Points the `pgbackrest` name at `program`, as an image upgrade (or a roll back) does.
    fn point_at(&self, program: &Path) {
        let _ = std::fs::remove_file(&self.link);
        std::os::unix::fs::symlink(program, &self.link).unwrap();
    }

    fn try_run(&self, args: &[&str]) -> std::process::Output {
        let cfg = format!("--config={}", self.conf.display());
        run_as_postgres(&self.link, &[&[cfg.as_str(), "--stanza=db"], args].concat(), &[])
    }

    fn run(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(o.status.success(), "pgbackrest {args:?} ({}): {}", self.link.display(), text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `info --output=json`, without the warnings about the configuration printed before it.
    fn info(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[&["info", "--output=json"], args].concat());
        let json = out.lines().skip_while(|l| !l.starts_with('[')).collect::<Vec<_>>().join("\n");
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("info: {e}: {out}"))
    }

    fn labels(&self) -> Vec<String> {
        let info = self.info(&[]);
        info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect()
    }
}

fn site(scratch: &Scratch, primary: &Cluster, extra: &str) -> Site {
    let link = scratch.path("bin").join("pgbackrest");
    let conf = scratch.write(
        "pgbackrest.conf",
        &format!(
            "[global]\nrepo1-path={repo}\nrepo1-retention-full=2\n{extra}log-path={log}\nlock-path={lock}\n\
             spool-path={spool}\nlog-level-console=info\nlog-level-file=off\nstart-fast=y\nprocess-max=2\n\n\
             [db]\npg1-path={data}\npg1-port={port}\npg1-socket-path={socket}\n",
            repo = scratch.path("repo").display(),
            log = scratch.path("log").display(),
            lock = scratch.path("lock").display(),
            spool = scratch.path("spool").display(),
            data = primary.data.display(),
            port = primary.port,
            socket = primary.socket.display(),
        ),
    );
    let site = Site { link, conf };
    primary.configure(&format!(
        "archive_mode = on\narchive_command = '{} --config={} --stanza=db archive-push \"%p\"'\nwal_level = replica\n",
        site.link.display(),
        site.conf.display()
    ));
    site
}

/// Restores with `args` into a new directory, starts it and waits for recovery to end.
fn restored(scratch: &Scratch, site: &Site, name: &str, args: &[&str]) -> Cluster {
    let dir = scratch.dir.path().join(name);
    let target = format!("--pg1-path={}", dir.display());
    site.run(&[&["restore", target.as_str(), "--archive-mode=off"], args].concat());
    let copy = Cluster::existing(scratch, dir, name);
    copy.start();
    copy.wait_promoted();
    copy
}

/// What else a pgBackRest user's configuration holds (each accepted by pgBackRest 2.59.1, and
/// one it does not know): after the switch none of it may stop archiving — at worst a warning.
const INHERITED: &str = "archive-push-queue-max=1GiB\narchive-header-check=y\nbuffer-size=1MiB\n\
    compress-level-network=1\nio-timeout=60\nprotocol-timeout=1830\ndb-timeout=1800\nneutral-umask=y\n\
    log-level-stderr=warn\nlog-subprocess=n\nsck-keep-alive=y\ntcp-keep-alive-count=3\ntcp-keep-alive-idle=60\n\
    tcp-keep-alive-interval=10\ntls-cipher-12=HIGH:MEDIUM:+3DES:!aNULL\ntls-cipher-13=TLS_AES_256_GCM_SHA384\n\
    cmd-ssh=/usr/bin/ssh\nrepo1-storage-verify-tls=y\nrepo1-bundle-size=20MiB\nrepo1-bundle-limit=2MiB\n\
    repo1-retention-history=365\nrepo1-retention-archive-type=full\nexpire-auto=y\nresume=y\nchecksum-page=y\n\
    manifest-save-threshold=1GiB\njob-retry=2\njob-retry-interval=15\nsome-future-option=whatever\n";

/// The whole switch against pgBackRest 2.59.1: archiving goes on, `info` lists the old
/// backups, a new full works, the old incr restores to a time with the data of that time, the
/// old full replays through WAL archived by both tools to the end, `verify` passes, pgBackRest
/// itself still reads the repository (roll back), and retention retires the old backups with
/// their WAL — pgBackRest's backup.info rewritten so pgBackRest still reads it.
#[test]
fn a_pgbackrest_2_59_repository_is_taken_over_in_place() {
    if !postgres_available() {
        return;
    }
    let Some(current) = pgbackrest_binary("CURRENT") else { return };
    let scratch = Scratch::new("pgstrata-migrate-");
    let primary = Cluster::init(&scratch, "primary");
    let site = site(
        &scratch,
        &primary,
        &format!(
            "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=taken over\nrepo1-bundle=y\nrepo1-block=y\narchive-async=y\n{INHERITED}"
        ),
    );
    site.point_at(&current);
    primary.start();
    site.run(&["stanza-create"]);
    primary.tool("pgbench", &["-i", "-s", "3", "postgres"]);
    site.run(&["backup", "--type=full"]);
    primary.tool("pgbench", &["-t", "500", "-n", "postgres"]);
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    site.run(&["backup", "--type=incr"]);
    let old = site.labels();
    assert_eq!(old.len(), 2, "{old:?}");
    primary.sql("insert into t select g, 'at target' from generate_series(20001, 20100) g");
    let at_target = primary.dumpall();
    primary.archive_now();
    let target = primary.sql("select now()");
    primary.sql("insert into t select g, 'after target' from generate_series(20101, 20200) g");
    primary.archive_now();

    // The switch: the same configuration, the name now pgstrata.
    site.point_at(Path::new(crate::support::bin()));
    let failed_before = primary.sql("select failed_count from pg_stat_archiver");
    primary.sql("insert into t select g, 'after switch' from generate_series(20201, 20300) g");
    primary.archive_now();
    primary.archive_now();
    site.run(&["check"]);
    assert_eq!(
        primary.sql("select failed_count from pg_stat_archiver"),
        failed_before,
        "archiving failed after the switch"
    );
    assert_eq!(site.labels(), old, "info does not list pgBackRest's backups");
    let info = site.info(&[]);
    assert_eq!(info[0]["cipher"], "aes-256-cbc", "info reports another cipher than pgBackRest did");
    site.run(&["backup", "--type=full"]);
    let all = site.labels();
    assert_eq!(all.len(), 3, "{all:?}");
    primary.sql("insert into t select g, 'after new full' from generate_series(20301, 20400) g");
    primary.archive_now();
    let at_end = primary.dumpall();

    // The old incr to a time before the new full: chosen by the target, data of that time.
    let copy = restored(
        &scratch,
        &site,
        "to-time",
        &["--type=time", &format!("--target={target}"), "--target-action=promote"],
    );
    assert_eq!(copy.dumpall(), at_target, "the pgBackRest incr restored to a time differs from the source then");
    copy.stop();
    // The old full, to the end of the WAL both tools archived.
    let copy = restored(&scratch, &site, "to-end", &[&format!("--set={}", old[0])]);
    assert_eq!(copy.dumpall(), at_end, "the pgBackRest full replayed to the end differs from the source");
    copy.stop();
    site.run(&["verify"]);

    // Roll back: pgBackRest reads what pgstrata left of its repository.
    site.point_at(&current);
    let info = site.run(&["info", "--output=json"]);
    assert!(old.iter().all(|l| info.contains(l.as_str())), "pgBackRest lost its backups: {info}");
    site.point_at(Path::new(crate::support::bin()));

    // Retention (full=2) after one more full: pgBackRest's full and incr go, with their WAL.
    site.run(&["backup", "--type=full"]);
    let left = site.labels();
    assert!(left.iter().all(|l| !old.contains(l)), "pgBackRest's backups outlived retention: {left:?}");
    assert_eq!(left.len(), 2, "{left:?}");
    site.point_at(&current);
    let info = site.run(&["info", "--output=json"]);
    assert!(old.iter().all(|l| !info.contains(l.as_str())), "pgBackRest still lists expired backups: {info}");
    let repo = scratch.dir.path().join("repo");
    assert!(!repo.join(format!("backup/db/{}", old[0])).exists(), "the expired full's directory stayed");
}

/// An older format, from Debian's pgBackRest 2.45: no bundles, no block incremental, files
/// stored whole and gz-compressed, unencrypted. After the switch its incr restores to the end
/// (through WAL of both tools), and `verify` reads every file of both backups; a damaged file
/// is found by verify and refuses the restore.
#[test]
fn a_pgbackrest_2_45_repository_restores_and_verifies() {
    if !postgres_available() {
        return;
    }
    let Some(debian) = pgbackrest_binary("DEBIAN") else { return };
    let scratch = Scratch::new("pgstrata-migrate-245-");
    let primary = Cluster::init(&scratch, "primary");
    let site = site(&scratch, &primary, "");
    site.point_at(&debian);
    primary.start();
    site.run(&["stanza-create"]);
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 50000) g");
    site.run(&["backup", "--type=full"]);
    primary.sql("update t set v = 'changed' where id % 7 = 0");
    site.run(&["backup", "--type=incr"]);
    primary.archive_now();
    let (at_time, at_time_sum) = (primary.sql("select now()"), primary.sql(SUM));
    primary.sql("insert into t select g, 'after the time' from generate_series(50001, 50010) g");
    primary.archive_now();
    site.point_at(Path::new(crate::support::bin()));
    // Before pgstrata has written anything (a restore Job first): info and a restore read
    // pgBackRest's stanza as it is, and leave the repository as they found it.
    let old = site.labels();
    let info = site.info(&[]);
    assert_eq!(info[0]["cipher"], "none");
    let copy = restored(&scratch, &site, "first", &[]);
    copy.stop();
    // To a time: the archive that reaches it is pgBackRest's alone.
    let copy = restored(
        &scratch,
        &site,
        "to-time",
        &["--type=time", &format!("--target={at_time}"), "--target-action=promote"],
    );
    assert_eq!(copy.sql(SUM), at_time_sum, "restored to a time");
    copy.stop();
    assert!(!scratch.dir.path().join("repo/stanza").exists(), "a reader wrote into the repository");
    // stanza-create on the live pgBackRest stanza continues it: the same database id, so one
    // archive id, not a second archive beside it.
    site.run(&["stanza-create"]);
    primary.sql("insert into t select g, 'after switch' from generate_series(50011, 50100) g");
    primary.archive_now();
    let at_end = primary.dumpall();
    let ids = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(scratch.dir.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("archive.info"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids("repo/stanza/db/archive"), ids("repo/archive/db"), "a second archive id was started");
    let copy = restored(&scratch, &site, "to-end", &[]);
    assert_eq!(copy.dumpall(), at_end);
    copy.stop();
    // --delta over that copy, one relation file damaged in place: pgBackRest's backup is
    // compared file by file (SHA-1), the damaged file rewritten, the rest kept.
    let rel = copy.data.join(primary.sql("select pg_relation_filepath('t')"));
    let mut bytes = std::fs::read(&rel).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&rel, bytes).unwrap();
    let target = format!("--pg1-path={}", copy.data.display());
    let said = site.run(&["restore", &target, "--delta", "--archive-mode=off", "--log-level-console=info"]);
    let kept: u64 = said
        .split("delta restore: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delta summary: {said}"));
    assert!(kept > 100, "the delta restore kept {kept} files: {said}");
    copy.start();
    copy.wait_promoted();
    assert_eq!(copy.dumpall(), at_end, "after --delta");
    copy.stop();
    site.run(&["verify"]);

    // A rolling change: a pod still on pgBackRest restores a copy that promotes onto timeline 2;
    // pgBackRest archives its history file, and pgstrata's archive-get finds it there.
    site.point_at(&debian);
    let dir = scratch.dir.path().join("timeline-2");
    site.run(&["restore", &format!("--pg1-path={}", dir.display()), "--type=immediate", "--target-action=promote"]);
    let fork = Cluster::existing(&scratch, dir.clone(), "timeline-2");
    fork.configure(&format!(
        "archive_command = '{} --config={} --stanza=db --pg1-path={} archive-push \"%p\"'\n",
        site.link.display(),
        site.conf.display(),
        dir.display()
    ));
    fork.start();
    fork.wait_promoted();
    let archived = scratch.dir.path().join("repo/archive/db/15-1/00000002.history");
    let since = std::time::Instant::now();
    while !archived.exists() {
        assert!(since.elapsed() < std::time::Duration::from_secs(60), "pgBackRest did not archive 00000002.history");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fork.stop();
    site.point_at(Path::new(crate::support::bin()));
    let fetched = scratch.path("fetched").join("00000002.history");
    site.run(&["archive-get", "00000002.history", fetched.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(dir.join("pg_wal/00000002.history")).unwrap(),
        "the history file pgBackRest archived"
    );
    // Recovery told to follow timeline 2: the backup is chosen by that history, found in
    // pgBackRest's archive only.
    let copy = restored(&scratch, &site, "on-timeline-2", &["--target-timeline=2"]);
    let timeline: u32 = copy.sql("select timeline_id from pg_control_checkpoint()").parse().unwrap();
    assert!(timeline > 2, "recovery did not follow timeline 2 (now on {timeline})");
    copy.stop();

    // A damaged file of the full (stored whole, gz): verify names it; a restore refuses.
    let dir = scratch.dir.path().join(format!("repo/backup/db/{}/pg_data/base", old[0]));
    let victim = walk(&dir).into_iter().max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let o = site.try_run(&["verify"]);
    assert!(!o.status.success(), "verify passed a damaged file");
    let rel = victim.strip_prefix(scratch.dir.path().join(format!("repo/backup/db/{}", old[0]))).unwrap();
    let name = rel.to_string_lossy().trim_end_matches(".gz").to_string();
    assert!(text(&o).contains(&name), "verify did not name {name}: {}", text(&o));
    let dir = scratch.dir.path().join("damaged");
    let o = site.try_run(&["restore", &format!("--pg1-path={}", dir.display()), &format!("--set={}", old[0])]);
    assert!(!o.status.success(), "a restore of a damaged backup succeeded");
    assert!(!dir.join("global/pg_control").exists(), "a failed restore left a startable directory");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// What the data tests compare: the table's rows and a digest of their values.
const SUM: &str = "select count(*), md5(string_agg(v, ',' order by id)) from t";

/// A stanza whose pgBackRest history spans a major upgrade (PostgreSQL 17, then 18 after
/// pgBackRest's `stanza-upgrade`: two database ids in its info files), taken over with a second
/// repository added for pgstrata alone (repo1 pgBackRest's, encrypted, bundles, block; repo2
/// pgstrata's): archiving goes on into both, `info` lists the backups of both databases and
/// both repositories, a restore without `--repo` finds each backup where it is — the 17 backup
/// started by PostgreSQL 17 with the data of 17, replaying pgBackRest's 17 archive — and
/// retention retires both of pgBackRest's backups with the 17 archive's WAL, pgBackRest still
/// reading what is left.
#[test]
fn an_upgraded_pgbackrest_stanza_and_a_second_repository_are_taken_over() {
    if !postgres_available() {
        return;
    }
    let Some(current) = pgbackrest_binary("CURRENT") else { return };
    let (Some(bin17), Some(bin18)) = (crate::support::server_bin(17), crate::support::server_bin(18)) else { return };
    let extra = "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=upgraded\nrepo1-bundle=y\nrepo1-block=y\n";
    let scratch = Scratch::new("pgstrata-migrate-upgrade-");
    let old = Cluster::init_on(&bin17, &scratch, "primary", &[]);
    let site = site(&scratch, &old, extra);
    site.point_at(&current);
    old.start();
    site.run(&["stanza-create"]);
    old.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    site.run(&["backup", "--type=full"]);
    old.sql("update t set v = 'on 17' where id % 10 = 0");
    old.archive_now();
    let on_17 = old.sql(SUM);
    old.stop();
    // The upgrade: the same data loaded into a new 18 cluster at the same path (a dump and
    // restore), then pgBackRest's stanza-upgrade and a full of 18.
    std::fs::rename(&old.data, scratch.dir.path().join("primary-17")).unwrap();
    let mut primary = Cluster::init_on(&bin18, &scratch, "primary", &[]);
    primary.port = old.port;
    let site = self::site(&scratch, &primary, extra);
    primary.start();
    primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    primary.sql("update t set v = 'on 17' where id % 10 = 0");
    site.run(&["stanza-upgrade"]);
    site.run(&["backup", "--type=full"]);
    let theirs = site.labels();
    assert_eq!(theirs.len(), 2, "{theirs:?}");

    // The switch, and repo2 for pgstrata alone.
    site.point_at(Path::new(crate::support::bin()));
    let mut conf = std::fs::read_to_string(&site.conf).unwrap();
    conf.push_str(&format!("repo2-path={}\nrepo2-retention-full=2\n", scratch.path("repo2").display()));
    std::fs::write(&site.conf, conf).unwrap();
    site.run(&["stanza-create"]);
    primary.sql("insert into t select g, 'after switch' from generate_series(20001, 20100) g");
    primary.archive_now();
    assert_eq!(primary.sql("select failed_count from pg_stat_archiver"), "0", "archiving failed after the switch");
    site.run(&["backup", "--repo=2", "--type=full"]);
    primary.sql("insert into t select g, 'after the repo2 full' from generate_series(20101, 20200) g");
    primary.archive_now();
    let at_end = primary.sql(SUM);
    let info = site.info(&[]);
    let listed: Vec<(String, u64, u64)> = info[0]["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let db = &b["database"];
            (b["label"].as_str().unwrap().to_string(), db["id"].as_u64().unwrap(), db["repo-key"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0], (theirs[0].clone(), 1, 1), "the 17 backup: {listed:?}");
    assert_eq!(listed[1], (theirs[1].clone(), 2, 1), "the 18 backup: {listed:?}");
    // repo2 has its own database ids: the 18 cluster is its first.
    assert_eq!((listed[2].1, listed[2].2), (1, 2), "pgstrata's full in repo2: {listed:?}");

    // No --repo: each backup is found where it is.
    let copy = restored(&scratch, &site, "from-17", &[&format!("--set={}", theirs[0])]);
    assert_eq!(copy.sql("show server_version_num").get(..2), Some("17"), "restored by another major");
    assert_eq!(copy.sql(SUM), on_17, "the 17 backup replayed through pgBackRest's 17 archive");
    copy.stop();
    let copy = restored(&scratch, &site, "from-repo2", &[&format!("--set={}", listed[2].0)]);
    assert_eq!(copy.sql(SUM), at_end, "pgstrata's full in repo2, replayed to the end");
    copy.stop();

    // Retention in repo1 after a full of pgstrata's there: pgBackRest's backups go, and the
    // 17 archive's WAL with them.
    site.run(&["backup", "--repo=1", "--type=full"]);
    site.run(&["expire", "--repo=1", "--repo1-retention-full=1"]);
    let left: Vec<String> = site.labels();
    assert!(left.iter().all(|l| !theirs.contains(l)), "pgBackRest's backups outlived retention: {left:?}");
    let archive_17 = scratch.dir.path().join("repo/archive/db/17-1");
    let segments_17 = if archive_17.exists() { walk(&archive_17) } else { Vec::new() }
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.file_name().is_some_and(|n| n.len() == 16)))
        .count();
    assert_eq!(segments_17, 0, "WAL of the 17 archive outlived every backup that needed it");
    site.point_at(&current);
    let info = site.run(&["info", "--repo=1", "--output=json"]);
    assert!(theirs.iter().all(|l| !info.contains(l.as_str())), "pgBackRest still lists expired backups: {info}");
    // Read, with the history of both databases, and no backup of its own left.
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["repo"][0]["status"]["message"], "no valid backups", "pgBackRest does not read repo1: {info}");
    assert_eq!(info[0]["db"].as_array().map(Vec::len), Some(2), "pgBackRest lost the history: {info}");
}

/// The users who bring pgBackRest repositories run every major: a PostgreSQL 13 and an 18
/// cluster, each with a tablespace, backed up by pgBackRest 2.59.1 as PGO configures it
/// (encrypted, bundles, block incremental), a full and an incr, then restored by pgstrata
/// through the `pgbackrest` name with the data of the source (the tablespace moved by
/// `--tablespace-map-all`), and verified.
#[test]
fn pgbackrest_backups_of_postgresql_13_and_18_restore() {
    if !postgres_available() {
        return;
    }
    let Some(current) = pgbackrest_binary("CURRENT") else { return };
    for major in [13, 18] {
        let Some(server) = crate::support::server_bin(major) else { return };
        let scratch = Scratch::new(&format!("pgstrata-migrate-{major}-"));
        let primary = Cluster::init_on(&server, &scratch, "primary", &[]);
        let site = site(
            &scratch,
            &primary,
            "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=p\nrepo1-bundle=y\nrepo1-block=y\n",
        );
        site.point_at(&current);
        primary.start();
        site.run(&["stanza-create"]);
        primary.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 30000) g");
        // A tablespace, with a table in it.
        let ts = scratch.path("tablespace");
        primary.sql(&format!("create tablespace ts location '{}'", ts.display()));
        primary
            .sql("create table u tablespace ts as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
        site.run(&["backup", "--type=full"]);
        primary.sql("update t set v = 'changed' where id % 10 = 0");
        primary.sql("update u set v = 'changed' where id % 3 = 0");
        site.run(&["backup", "--type=incr"]);
        let expected = primary.sql(SUM);
        let in_tablespace = primary.sql(&SUM.replace(" t", " u"));
        primary.archive_now();
        site.point_at(Path::new(crate::support::bin()));
        let moved = scratch.path("tablespaces-restored");
        let copy = restored(&scratch, &site, "restored", &[&format!("--tablespace-map-all={}", moved.display())]);
        assert_eq!(copy.sql(SUM), expected, "PostgreSQL {major}");
        assert_eq!(copy.sql(&SUM.replace(" t", " u")), in_tablespace, "PostgreSQL {major}: the tablespace's table");
        let location = copy.sql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts'");
        assert!(location.starts_with(moved.to_str().unwrap()), "the tablespace is at {location}");
        assert_eq!(copy.sql("show server_version_num").get(..2), Some(major.to_string().as_str()));
        copy.stop();
        site.run(&["verify"]);
    }
}
