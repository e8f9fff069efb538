//! Restore's guards on a real backup, each refusal shown to leave every file in place, and a
//! cluster with tens of thousands of files backed up and restored under a low open-file limit.

use super::*;
use support::{chown_postgres, snapshot};

fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    chown_postgres(root);
}

#[test]
fn restore_guards_refuse_and_touch_nothing() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-guards-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    let ts_dir = scratch.path("ts1");
    cluster.sql(&format!("create tablespace ts1 location '{}'", ts_dir.display()));
    cluster
        .sql("create table in_ts tablespace ts1 as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    let ts_oid = cluster.sql("select oid from pg_tablespace where spcname = 'ts1'");

    // 1. --delta (or --force) into a directory that is not a data directory: refused, kept.
    let precious = scratch.path("precious");
    write_tree(&precious, &[("README", "do not delete"), ("precious/sub/file.txt", "mine")]);
    let before = snapshot(&precious);
    let new_ts = scratch.path("ts-new");
    let map = format!("--tablespace-map={ts_oid}={}", new_ts.display());
    for flag in ["--delta", "--force"] {
        let o = s.run(&["--stanza=db", "restore", &format!("--pg1-path={}", precious.display()), &map, flag]);
        assert_eq!(o.status.code(), Some(40), "{}", text(&o));
        let out = text(&o);
        assert!(out.contains("PG_VERSION") && out.contains("not a PostgreSQL data directory"), "{out}");
        assert_eq!(snapshot(&precious), before, "{flag} touched a directory it refused");
        assert!(snapshot(&new_ts).is_empty(), "{flag} wrote into the tablespace location");
    }

    // A proper restore, then 2. postmaster.pid present (the server may run in another pid
    // namespace, where its pid means nothing here): refused, nothing touched.
    let target = scratch.path("restored");
    let pg1 = format!("--pg1-path={}", target.display());
    s.ok(&["--stanza=db", "restore", &pg1, &map]);
    assert!(!target.join("pgstrata.restore").exists(), "the in-progress marker stayed after success");
    std::fs::write(target.join("postmaster.pid"), "4194000\n/elsewhere\n").unwrap();
    chown_postgres(&target);
    let (data_before, ts_before) = (snapshot(&target), snapshot(&new_ts));
    let o = s.run(&["--stanza=db", "restore", &pg1, &map, "--delta"]);
    assert_eq!(o.status.code(), Some(38), "{}", text(&o));
    assert!(text(&o).contains("postmaster.pid"), "{}", text(&o));
    assert_eq!((snapshot(&target), snapshot(&new_ts)), (data_before, ts_before), "refused restore touched files");
    std::fs::remove_file(target.join("postmaster.pid")).unwrap();

    // 3. Another cluster's directory in the tablespace location survives a delta restore;
    // junk in our own directory and in the data directory does not.
    let own = std::fs::read_dir(&new_ts).unwrap().next().unwrap().unwrap().file_name();
    write_tree(&new_ts, &[("PG_16_202307071/5/16384", "other cluster"), ("lost+found/x", "fs")]);
    write_tree(&new_ts.join(&own), &[("5/999999", "junk")]);
    write_tree(&target, &[("base/1/999999", "junk"), ("stray.conf", "junk")]);
    s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta"]);
    assert_eq!(std::fs::read_to_string(new_ts.join("PG_16_202307071/5/16384")).unwrap(), "other cluster");
    assert!(new_ts.join("lost+found/x").exists());
    assert!(!new_ts.join(&own).join("5/999999").exists() && !target.join("base/1/999999").exists());
    assert!(!target.join("stray.conf").exists());

    // 4. Without --delta, a non-empty own directory in a tablespace location is refused,
    // before anything is written into the (empty) data directory.
    let fresh = scratch.path("fresh");
    let o = s.run(&["--stanza=db", "restore", &format!("--pg1-path={}", fresh.display()), &map]);
    assert_eq!(o.status.code(), Some(40), "{}", text(&o));
    assert!(text(&o).contains(&own.to_string_lossy().into_owned()), "{}", text(&o));
    assert!(snapshot(&fresh).is_empty(), "a refused restore wrote into the data directory");

    // 5. An interrupted restore (marker left, no PG_VERSION yet) may be finished with --delta.
    let half = scratch.path("half");
    write_tree(&half, &[("pgstrata.restore", "interrupted"), ("base/1/1259", "partial")]);
    let half_ts = scratch.path("half-ts");
    let half_map = format!("--tablespace-map={ts_oid}={}", half_ts.display());
    s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", half.display()), &half_map, "--delta"]);
    let restored = Cluster::existing(&scratch, half, "half");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert_eq!(restored.sql("select count(*) from in_ts"), "5000");
    restored.stop();

    // 6. A restore that fails while it writes files (here: the packs cannot be read) leaves a
    // directory PostgreSQL refuses to start — pg_control is put in place last, and a delta
    // restore withdraws the one in place first — and --delta finishes it once the repository
    // is readable again.
    use std::os::unix::fs::PermissionsExt;
    let packs: Vec<std::path::PathBuf> =
        snapshot(&repo).iter().filter(|l| l.ends_with("/pack/")).map(|l| repo.join(l.trim_end_matches('/'))).collect();
    assert!(!packs.is_empty(), "no pack directory in {}", repo.display());
    let set_packs = |mode: u32| {
        packs.iter().for_each(|p| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap())
    };
    let broken = scratch.path("broken");
    let broken_ts = scratch.path("broken-ts");
    let broken_map = format!("--tablespace-map={ts_oid}={}", broken_ts.display());
    let broken_pg1 = format!("--pg1-path={}", broken.display());
    let control = broken.join("global/pg_control");
    set_packs(0o000);
    let o = s.run(&["--stanza=db", "restore", &broken_pg1, &broken_map]);
    assert!(!o.status.success() && text(&o).contains("pack"), "{}", text(&o));
    assert!(broken.join("pgstrata.restore").exists(), "the failed restore left no marker");
    assert!(!control.exists(), "a failed restore put pg_control in place");
    set_packs(0o755);
    s.ok(&["--stanza=db", "restore", &broken_pg1, &broken_map, "--delta"]);
    assert!(control.exists() && !broken.join("pgstrata.restore").exists());
    set_packs(0o000);
    let o = s.run(&["--stanza=db", "restore", &broken_pg1, &broken_map, "--delta"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!control.exists(), "a failed delta restore left the old pg_control in place");
    let half_done = Cluster::existing(&scratch, broken.clone(), "broken");
    half_done.configure("archive_mode = off");
    let refused = scratch.path("refused-start");
    let opts = format!("-c listen_addresses='' -c unix_socket_directories='{}'", refused.display());
    let log = refused.join("server.log");
    let started = run_as_postgres(
        &support::pg_bin().join("pg_ctl"),
        &["-D", broken.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "20", "start"],
        &[],
    );
    assert!(!started.status.success(), "PostgreSQL started a half-restored directory");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("pg_control"), "PostgreSQL refused for another reason: {said}");
    set_packs(0o755);
    s.ok(&["--stanza=db", "restore", &broken_pg1, &broken_map, "--delta"]);
    half_done.start();
    half_done.wait_promoted();
    assert_eq!(half_done.sql("select count(*) from in_ts"), "5000");
}

#[test]
fn tens_of_thousands_of_files_under_a_low_descriptor_limit() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-manyfiles-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    // 5 000 tables with a primary key and a TOAST table: four files each.
    for batch in 0..10 {
        cluster.sql(&format!(
            "do $$ begin for i in {}..{} loop \
             execute format('create table t%s (id int primary key, v text); insert into t%s values (%s, md5(%s::text))', i, i, i, i); \
             end loop; end $$",
            batch * 500,
            batch * 500 + 499
        ));
    }
    let files = walkdir_count(&cluster.data);
    assert!(files >= 20_000, "only {files} files in the source cluster");
    s.ok(&["--stanza=db", "stanza-create"]);
    let o = s.run_limited(256, &["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=4"]);
    assert!(o.status.success(), "backup with ulimit -n 256: {}", text(&o));
    cluster.archive_now();
    let expected = cluster.dumpall();

    let target = scratch.path("restored");
    let o =
        s.run_limited(256, &["--stanza=db", "restore", &format!("--pg1-path={}", target.display()), "--process-max=4"]);
    assert!(o.status.success(), "restore with ulimit -n 256: {}", text(&o));
    let restored = Cluster::existing(&scratch, target.clone(), "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert!(restored.dumpall() == expected, "restored cluster differs from the source");
    let check = restored.tool("pg_amcheck", &["--all", "--install-missing"]);
    assert!(check.status.success(), "pg_amcheck: {}", text(&check));
    restored.stop();
    let sums =
        run_as_postgres(&support::pg_bin().join("pg_checksums"), &["--check", "-D", target.to_str().unwrap()], &[]);
    assert!(sums.status.success(), "pg_checksums: {}", text(&sums));
}

fn walkdir_count(dir: &Path) -> usize {
    snapshot(dir).iter().filter(|l| !l.ends_with('/')).count()
}

#[test]
fn a_file_name_that_is_not_utf8_stops_the_backup_and_is_named() {
    use std::os::unix::ffi::OsStrExt;
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-utf8-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    let odd = cluster.data.join(std::ffi::OsStr::from_bytes(b"notes-\xff.txt"));
    std::fs::write(&odd, "kept as it is").unwrap();
    chown_postgres(&odd);
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(42), "{}", text(&o));
    assert!(text(&o).contains("not valid UTF-8") && text(&o).contains("notes-"), "{}", text(&o));
    assert_eq!(std::fs::read(&odd).unwrap(), b"kept as it is");
    let info = s.ok(&["--stanza=db", "info", "--output=json"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"backup\":[]"), "a failed backup is listed");
}

/// A root `restore --delta` into a data directory where its owner planted links: a directory
/// link (base/1 → a root-owned directory) and file links (to a root-owned file) where the
/// backup has a directory and files. The links are replaced by what the backup has; their
/// targets keep their content, owner and mode (pgBackRest 2.59.1 does the same).
#[test]
fn a_root_delta_restore_replaces_planted_links_and_leaves_their_targets_alone() {
    use std::os::unix::fs::MetadataExt;
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-planted-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    cluster.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    let relation = cluster.sql("select pg_relation_filepath('t')");
    let target = scratch.path("restored");
    let pg1 = format!("--pg1-path={}", target.display());
    s.ok(&["--stanza=db", "restore", &pg1]);

    // Root's: a directory with one file, and a file; both 0644/0755 root.
    let victim_dir = scratch.dir.path().join("root-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("keep"), "root's").unwrap();
    let victim_file = scratch.dir.path().join("root-file");
    std::fs::write(&victim_file, "root's file\n").unwrap();
    let state = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode(), std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0))
    };
    let (dir_before, file_before) = (state(&victim_dir), state(&victim_file));

    // Planted by the directory's owner (postgres), as links.
    let plant = |link: &Path, dest: &Path| {
        let script = format!("rm -rf '{}' && ln -s '{}' '{}'", link.display(), dest.display(), link.display());
        let o = run_as_postgres(Path::new("/bin/sh"), &["-c", &script], &[]);
        assert!(o.status.success(), "plant {}: {}", link.display(), text(&o));
    };
    plant(&target.join("base/1"), &victim_dir);
    plant(&target.join(&relation), &victim_file);
    plant(&target.join("PG_VERSION"), &victim_file);
    plant(&target.join("postgresql.conf"), &victim_file);

    // The restore as root (restore Jobs run as root).
    let o = s.run_as_self(&["--stanza=db", "restore", &pg1, "--delta"]);
    assert!(o.status.success(), "root restore --delta: {}", text(&o));

    assert_eq!(state(&victim_dir), dir_before, "the planted directory link's target was changed");
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 1, "files were written into the link's target");
    assert_eq!(state(&victim_file), file_before, "the planted file link's target was changed");
    assert_eq!(std::fs::read_to_string(&victim_file).unwrap(), "root's file\n");
    for p in ["base/1", relation.as_str(), "PG_VERSION", "postgresql.conf"] {
        let m = std::fs::symlink_metadata(target.join(p)).unwrap();
        assert!(!m.file_type().is_symlink(), "{p} is still a link");
    }
    let restored = Cluster::existing(&scratch, target.clone(), "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert_eq!(restored.sql("select count(*) from t"), "20000");
}
