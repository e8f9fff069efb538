//! Retention: `expire` after every backup and on its own agree, point-in-time recovery within
//! what is kept still works, `--dry-run` changes nothing, `--set`, keep and annotations; and an
//! `expire` killed at any moment leaves a repository a rerun completes, with nothing
//! unreferenced and every retained backup restorable.

use super::*;
use std::time::{Duration, Instant};

fn pgbench(cluster: &Cluster, transactions: &str) {
    let o = cluster.tool("pgbench", &["-t", transactions, "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
}

/// The cluster's dump now, and a recovery target time that has it all and nothing after (the
/// next write must follow this call).
fn moment(cluster: &Cluster) -> (String, String) {
    let dump = cluster.dumpall();
    std::thread::sleep(Duration::from_millis(1100));
    let target = cluster.sql("select now()");
    std::thread::sleep(Duration::from_millis(1100));
    (dump, target)
}

/// (label, type, WAL start) of the backups in repository `repo`, oldest first.
fn backups(s: &Setup, repo: u32) -> Vec<(String, String, String)> {
    let info = info_json_with(s, &[&format!("--repo={repo}")]);
    info[0]["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let field = |v: &serde_json::Value| v.as_str().unwrap().to_string();
            (field(&b["label"]), field(&b["type"]), field(&b["archive"]["start"]))
        })
        .collect()
}

fn types(list: &[(String, String, String)]) -> Vec<&str> {
    list.iter().map(|b| b.1.as_str()).collect()
}

/// The backup directories on disk.
fn backup_dirs(repo: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo.join("stanza/db/backup"))
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The archived segments (24-digit names; `.backup` files under theirs), sorted.
fn archived(repo: &Path) -> Vec<String> {
    let root = repo.join("stanza/db/archive/15-1");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap().flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.contains('#') && !name.contains(".backup") {
                out.push(name[..24].to_string());
            }
        }
    }
    out.sort();
    out
}

/// Every object of the repository but the lease, which every writer command rewrites.
fn objects(repo: &Path) -> Vec<String> {
    support::snapshot(repo).into_iter().filter(|o| !o.starts_with("stanza/db/lock")).collect()
}

fn segment_number(name: &str) -> u64 {
    u64::from_str_radix(&name[8..16], 16).unwrap() * 0x100 + u64::from_str_radix(&name[16..24], 16).unwrap()
}

/// WAL from `start` on is all there, without a gap, and nothing older.
fn assert_archive_starts_at(repo: &Path, start: &str) {
    let names = archived(repo);
    assert_eq!(names.first().map(String::as_str), Some(start), "oldest archived segment of {}", repo.display());
    let numbers: Vec<u64> = names.iter().map(|n| segment_number(n)).collect();
    for w in numbers.windows(2) {
        assert!(w[1] == w[0] + 1 || w[1] == w[0], "gap in the archive after {:x}: {names:?}", w[0]);
    }
}

#[test]
fn retention_full_expires_after_backup_and_on_its_own_alike() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-expire-");
    let (r1, r2) = (scratch.path("repo1"), scratch.path("repo2"));
    let lines = format!(
        "repo1-path={}\nrepo2-path={}\nrepo1-retention-full=2\nrepo2-retention-full=2\n",
        r1.display(),
        r2.display()
    );
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    // repo1 expires after each backup (pgBackRest's default); repo2 only when told to.
    let backup = |kind: &str| {
        let kind = format!("--type={kind}");
        s.ok(&["--stanza=db", "backup", &kind, "--start-fast", "--repo=1"]);
        s.ok(&["--stanza=db", "backup", &kind, "--start-fast", "--repo=2", "--no-expire-auto"]);
    };
    backup("full");
    pgbench(&cluster, "200");
    backup("diff");
    pgbench(&cluster, "200");
    backup("full");
    pgbench(&cluster, "200");
    cluster.sql("create table between_f2_i2 as select g from generate_series(1, 1234) g");
    let (between, target) = moment(&cluster);
    pgbench(&cluster, "200");
    backup("incr");
    pgbench(&cluster, "200");
    let before_f3 = [backups(&s, 1), backups(&s, 2)];
    assert_eq!(types(&before_f3[1]), ["full", "diff", "full", "incr"]);
    backup("full");
    cluster.archive_now();

    // repo1: the backup expired F1 and D1 itself, and the WAL before F2.
    let after1 = backups(&s, 1);
    assert_eq!(types(&after1), ["full", "incr", "full"]);
    assert_eq!(after1[..2], before_f3[0][2..], "F2 and I2 kept");
    let listed: Vec<String> = after1.iter().map(|b| b.0.clone()).collect();
    assert_eq!(backup_dirs(&r1), listed);
    assert_archive_starts_at(&r1, &after1[0].2);
    // Their manifests are kept as history (repo1-retention-history, 365 days by default).
    for expired in &before_f3[0][..2] {
        assert!(r1.join(format!("stanza/db/history/{}.manifest", expired.0)).exists(), "no history of {}", expired.0);
    }

    // repo2: --dry-run names what would go and changes nothing.
    let untouched = objects(&r2);
    let o = s.ok(&["--stanza=db", "expire", "--repo=2", "--dry-run", "--log-level-console=info"]);
    let said = text(&o);
    assert!(
        said.contains("[DRY-RUN]") && said.contains(&before_f3[1][0].0) && said.contains(&before_f3[1][1].0),
        "{said}"
    );
    assert!(said.contains("remove archive 15-1"), "{said}");
    assert_eq!(objects(&r2), untouched, "--dry-run changed the repository");
    // expire on its own reaches what the backup's expire reached on repo1.
    s.ok(&["--stanza=db", "expire", "--repo=2"]);
    let after2 = backups(&s, 2);
    assert_eq!(types(&after2), ["full", "incr", "full"]);
    assert_eq!(after2[..2], before_f3[1][2..4]);
    assert_eq!(backup_dirs(&r2), after2.iter().map(|b| b.0.clone()).collect::<Vec<_>>());
    assert_archive_starts_at(&r2, &after2[0].2);
    // A second expire has nothing left to do.
    let settled = objects(&r1);
    s.ok(&["--stanza=db", "expire", "--repo=1"]);
    assert_eq!(objects(&r1), settled);

    // Point-in-time recovery between F2 and I2, from what retention kept.
    let restored = super::pitr::restore_and_start(
        &scratch,
        &s,
        "pitr",
        &["--repo=1", "--type=time", &format!("--target={target}"), "--target-action=promote"],
    );
    assert_eq!(restored.dumpall(), between, "point-in-time restore after expiry differs");
    restored.stop();

    // keep and annotations: a kept backup survives retention and --set until released.
    let f2 = after2[0].0.clone();
    let set = format!("--set={f2}");
    s.ok(&[
        "--stanza=db",
        "annotate",
        "--repo=2",
        &set,
        "--keep",
        "--annotation=reason=audit",
        "--annotation=ticket=42",
    ]);
    let info = info_json_with(&s, &["--repo=2", &set]);
    assert_eq!(info[0]["backup"][0]["keep"], serde_json::json!(true), "{info}");
    assert_eq!(info[0]["backup"][0]["annotation"], serde_json::json!({"reason": "audit", "ticket": "42"}));
    let untouched = objects(&r2);
    let o = s.run(&["--stanza=db", "expire", "--repo=2", &set]);
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(text(&o).contains("is marked keep"), "{}", text(&o));
    assert_eq!(objects(&r2), untouched, "a refused expire changed the repository");
    // One rotating full with retention-full=1: F3 goes, the kept F2 (and I2 on it) stay.
    pgbench(&cluster, "100");
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--repo=2", "--repo2-retention-full=1"]);
    let now2 = backups(&s, 2);
    assert_eq!(types(&now2), ["full", "incr", "full"], "{now2:?}");
    assert_eq!(now2[..2], after2[..2]);
    assert!(!now2.iter().any(|b| b.0 == after2[2].0), "F3 was not expired");
    s.ok(&["--stanza=db", "annotate", "--repo=2", &set, "--no-keep", "--annotation=reason="]);
    let info = info_json_with(&s, &["--repo=2", &set]);
    assert!(info[0]["backup"][0]["keep"].is_null(), "{info}");
    assert_eq!(info[0]["backup"][0]["annotation"], serde_json::json!({"ticket": "42"}));
    let o = s.ok(&["--stanza=db", "expire", "--repo=2", &set, "--log-level-console=info"]);
    assert!(text(&o).contains(&f2), "{}", text(&o));
    assert_eq!(types(&backups(&s, 2)), ["full"], "F2 and its incr went with --set");
    assert_eq!(backup_dirs(&r2).len(), 1);
    // The last full is never expired by --set.
    let last = format!("--set={}", backups(&s, 2)[0].0);
    let o = s.run(&["--stanza=db", "expire", "--repo=2", &last]);
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(text(&o).contains("at least one full backup must remain"), "{}", text(&o));

    // stanza-delete removes the stanza from both repositories (their lease objects stay).
    cluster.stop();
    s.ok(&["--stanza=db", "stop"]);
    s.ok(&["--stanza=db", "stanza-delete"]);
    for r in [&r1, &r2] {
        let left: Vec<String> = support::snapshot(r).into_iter().filter(|l| !l.ends_with('/')).collect();
        assert!(!left.is_empty() && left.iter().all(|l| l.starts_with("stanza/db/lock/")), "{left:?}");
    }
}

/// Kills `expire` once the repository shows `reached`, after a further random 0–2 ms; returns
/// whether it was still running then.
fn kill_expire_when(s: &Setup, x: &mut u64, reached: impl Fn() -> bool) -> bool {
    let args = s.args(&["--stanza=db", "expire"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = support::postgres_command(Path::new(support::bin()), &refs, &[]).spawn().unwrap();
    let began = Instant::now();
    while !reached() && child.try_wait().unwrap().is_none() {
        assert!(began.elapsed() < Duration::from_secs(60), "expire made no progress in 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    std::thread::sleep(Duration::from_micros(*x % 2000));
    let running = child.try_wait().unwrap().is_none();
    super::writers::kill9_tree(child.id());
    let out = child.wait_with_output().unwrap();
    eprintln!("expire {}: {}", if running { "killed" } else { "had finished" }, text(&out).trim());
    running
}

/// Between kills: every listed backup's manifest and packs are there (the catalog never points
/// at a removed object).
fn assert_listed_backups_whole(s: &Setup, repo: &Path) {
    for label in super::writers::labels(s) {
        let manifest = repo.join("stanza/db/backup").join(&label).join("backup.manifest");
        assert!(manifest.exists(), "backup {label} is listed but its manifest is gone");
        let (named, present) = super::writers::packs_named_and_present(repo, &label);
        assert!(named.is_subset(&present), "backup {label} is listed but lost packs {:?}", named.difference(&present));
    }
}

#[test]
fn expire_killed_at_any_moment_is_finished_by_a_rerun() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-expire-kill-");
    let repo = scratch.path("repo");
    let lines = format!(
        "repo1-path={}\nrepo1-retention-full=1\nlease-time=3\nrepo1-bundle-size=1MiB\ncompress-type=none\nexpire-auto=n\n",
        repo.display()
    );
    let cluster = Cluster::init_with(&scratch, "src", &["--wal-segsize=1"]);
    let s = setup_on(&scratch, "src.conf", &cluster, &lines, None);
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        s.command_prefix()
    ));
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "3", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    let seed = support::test_seed(0x2545_f491);
    let mut x = seed | 1;
    let catalog = repo.join("stanza/db/backup.catalog");
    let mut killed = 0;
    // Each round: two more fulls (and WAL between), then an expire killed at one stage:
    // the catalog rewritten, a backup directory going, the archive shrinking.
    for stage in 0..3 {
        for _ in 0..2 {
            pgbench(&cluster, "300");
            cluster.switch_wal(20);
            s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
        }
        let stamp = std::fs::metadata(&catalog).unwrap().modified().unwrap();
        let dirs = backup_dirs(&repo).len();
        let segments = archived(&repo).len();
        let reached = || match stage {
            0 => std::fs::metadata(&catalog).map(|m| m.modified().unwrap() != stamp).unwrap_or(false),
            1 => backup_dirs(&repo).len() < dirs,
            _ => archived(&repo).len() < segments,
        };
        if kill_expire_when(&s, &mut x, reached) {
            killed += 1;
        }
        while super::writers::lease_held(&s) {
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_listed_backups_whole(&s, &repo);
    }
    assert!(killed > 0, "expire finished every time before it could be killed");
    // The rerun finishes the job: one full, its directory the only one, each of its packs
    // named by its manifest, and the WAL from its start.
    s.ok(&["--stanza=db", "expire"]);
    let left = backups(&s, 1);
    assert_eq!(types(&left), ["full"]);
    assert_eq!(backup_dirs(&repo), [left[0].0.clone()]);
    let (named, present) = super::writers::packs_named_and_present(&repo, &left[0].0);
    assert_eq!(named, present, "packs nothing references, or named packs missing");
    assert_archive_starts_at(&repo, &left[0].2);
    // And it restores.
    let dump = cluster.dumpall();
    let restored =
        super::pitr::restore_and_start(&scratch, &s, "restored", &["--type=immediate", "--target-action=promote"]);
    assert_eq!(restored.dumpall(), dump);
    restored.stop();
}

/// After a promotion the stanza's WAL continues on timeline 2: expiring the timeline-1 backup
/// removes timeline 1's WAL but not the history file or anything the timeline-2 backup needs,
/// and `verify` and a point-in-time restore along timeline 2 still work.
#[test]
fn expire_across_a_timeline_switch_keeps_what_the_new_timeline_needs() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-expire-tli-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    pgbench(&cluster, "200");
    cluster.archive_now();
    cluster.stop();
    // The old primary is gone; a clone restored from the archive is promoted to timeline 2 and
    // archives into the same stanza.
    let clone_dir = scratch.path("clone");
    s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", clone_dir.display()), "--target-action=promote"]);
    let clone = Cluster::existing(&scratch, clone_dir, "clone");
    let c = setup(&scratch, "clone.conf", &clone, &repo, None);
    clone.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        c.command_prefix()
    ));
    clone.start();
    clone.wait_promoted();
    pgbench(&clone, "200");
    c.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    clone.sql("create table after_f2 as select g from generate_series(1, 4321) g");
    let (wanted, target) = moment(&clone);
    pgbench(&clone, "100");
    clone.archive_now();

    c.ok(&["--stanza=db", "expire", "--repo1-retention-full=1"]);
    let left = backups(&c, 1);
    assert_eq!(left.len(), 1);
    assert!(left[0].2.starts_with("00000002"), "the kept full is on timeline 2: {left:?}");
    let names = archived(&repo);
    assert!(names.iter().all(|n| n.starts_with("00000002")), "timeline 1 WAL left: {names:?}");
    assert_eq!(names.first(), Some(&left[0].2));
    assert!(
        std::fs::read_dir(repo.join("stanza/db/archive/15-1"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("00000002.history"))
    );
    c.ok(&["--stanza=db", "verify"]);
    let restored = super::pitr::restore_and_start(
        &scratch,
        &c,
        "pitr",
        &["--type=time", &format!("--target={target}"), "--target-action=promote"],
    );
    assert_eq!(restored.dumpall(), wanted);
    restored.stop();
}
