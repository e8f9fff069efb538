//! WAL under stress: `archive-push` killed with SIGKILL at random moments (synchronous, and
//! asynchronous foreground and worker), and a standby built from the repository following the
//! primary through asynchronous push and prefetching get.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// A small pseudo-random sequence (xorshift), seeded from the clock; the seed is printed so a
/// failure can be replayed with PGSTRATA_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("PGSTRATA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("PGSTRATA_TEST_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A stopped cluster with 1 MiB segments whose `pg_wal` holds `count` ready segments (its
/// archive_command always failed), and a stanza for it.
fn ready_segments(scratch: &Scratch, extra_conf: &str, count: usize) -> (Cluster, Setup, Vec<String>) {
    let cluster = Cluster::init_with(scratch, "src", &["--wal-segsize=1"]);
    let repo = scratch.path("repo");
    let mut s = setup(scratch, "src.conf", &cluster, &repo, Some(PASS));
    let mut conf = std::fs::read_to_string(&s.config).unwrap();
    conf = conf.replacen("[global]\n", &format!("[global]\n{extra_conf}"), 1);
    s.config = scratch.write("src.conf", &conf);
    cluster.configure("archive_mode = on\narchive_command = 'false'\nwal_level = replica\nmax_wal_size = 1GB");
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table t (id int)");
    for i in 0..count {
        cluster.sql(&format!("insert into t values ({i}); select pg_switch_wal()"));
    }
    cluster.stop();
    let status = cluster.data.join("pg_wal/archive_status");
    let mut ready: Vec<String> = std::fs::read_dir(&status)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().unwrap().strip_suffix(".ready").map(str::to_string))
        .filter(|n| n.len() == 24)
        .collect();
    ready.sort();
    assert!(ready.len() >= count, "only {} ready segments", ready.len());
    (cluster, s, ready)
}

/// Kills every process of the test's config whose command line contains `pattern`.
fn kill_matching(s: &Setup, pattern: &str) {
    let _ = Command::new("pkill").args(["-9", "-f", &format!("{}.*{pattern}", s.config.display())]).status();
}

/// Runs `archive-push` on `wal` and kills it (its whole process group) after `delay_ms`;
/// returns whether it had already succeeded.
fn push_killed(s: &Setup, wal: &Path, delay_ms: u64) -> bool {
    use std::os::unix::process::CommandExt;
    let args = s.args(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = support::postgres_command(Path::new(support::bin()), &refs, &[])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms));
    if let Some(status) = child.try_wait().unwrap() {
        return status.success();
    }
    let _ = Command::new("kill").args(["-9", "--", &format!("-{}", child.id())]).status();
    let _ = child.wait();
    false
}

/// Every acknowledged segment comes back from the repository byte for byte, and the archive
/// holds nothing but whole, readable WAL objects and the claims of their names (a push killed
/// between its claim and its object leaves a claim alone: the segment was not acknowledged).
fn check_archive(scratch: &Scratch, s: &Setup, cluster: &Cluster, acknowledged: &[String]) {
    let out = scratch.path("fetched");
    for seg in acknowledged {
        let dest = out.join(seg);
        s.ok(&["--stanza=db", "archive-get", seg, dest.to_str().unwrap()]);
        let got = std::fs::read(&dest).unwrap();
        let want = std::fs::read(cluster.data.join("pg_wal").join(seg)).unwrap();
        assert!(got == want, "{seg} differs in the repository");
    }
    let listed = s.ok(&["--stanza=db", "repo-ls", "stanza/db/archive/15-1", "--recurse", "--output=json"]);
    let listed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    for key in listed.iter().filter(|(_, v)| v["type"] == "file").map(|(k, _)| k) {
        let file = key.rsplit('/').next().unwrap();
        let (name, sha) = file.split_once('-').unwrap_or_else(|| panic!("stray object {key}"));
        assert!(name.len() == 24 && (sha.len() == 64 || sha == "claim"), "stray object {key}");
    }
}

#[test]
fn sync_push_survives_kill_9() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-kill-sync-");
    let (cluster, s, ready) = ready_segments(&scratch, "compress-level=9\n", 30);
    let mut rng = Rng::new();
    let mut acknowledged = Vec::new();
    let mut killed = 0usize;
    for seg in &ready {
        let wal = cluster.data.join("pg_wal").join(seg);
        if !push_killed(&s, &wal, rng.below(60)) {
            killed += 1;
        }
        // The next run succeeds, whatever the killed one left.
        s.ok(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
        acknowledged.push(seg.clone());
    }
    eprintln!("{killed} of {} pushes killed", ready.len());
    assert!(killed > 0, "no push was ever interrupted");
    check_archive(&scratch, &s, &cluster, &acknowledged);
}

#[test]
fn async_push_survives_kill_9_of_foreground_and_worker() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-kill-async-");
    let spool = scratch.path("spool");
    let extra = format!("archive-async=y\nspool-path={}\nprocess-max=2\ncompress-level=9\n", spool.display());
    let (cluster, s, ready) = ready_segments(&scratch, &extra, 40);
    let status = cluster.data.join("pg_wal/archive_status");
    let mut rng = Rng::new();
    let mut acknowledged = Vec::new();
    let mut killed = 0usize;
    for seg in &ready {
        let wal = cluster.data.join("pg_wal").join(seg);
        let done = push_killed(&s, &wal, rng.below(80));
        killed += usize::from(!done);
        if !done && rng.below(2) == 0 {
            kill_matching(&s, "archive-push:async");
        }
        s.ok(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
        acknowledged.push(seg.clone());
        // As PostgreSQL does once archive_command succeeded.
        std::fs::rename(status.join(format!("{seg}.ready")), status.join(format!("{seg}.done"))).unwrap();
        if rng.below(4) == 0 {
            kill_matching(&s, "archive-push:async");
        }
    }
    // Let the last worker finish lingering before the scratch goes.
    kill_matching(&s, "archive-push:async");
    eprintln!("{killed} of {} foreground pushes killed", ready.len());
    assert!(killed > 0, "no push was ever interrupted");
    check_archive(&scratch, &s, &cluster, &acknowledged);
    // Acknowledgements of segments PostgreSQL is done with (all of them now) are removed by the
    // next worker: run one to the end of its idle time and look.
    let acks = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ok") || n.ends_with(".error"))
            .collect()
    };
    let out = spool.join("archive/db/out");
    let wal_dir = cluster.data.join("pg_wal");
    s.ok(&["--stanza=db", "archive-push:async", wal_dir.to_str().unwrap()]);
    let left = acks(&out);
    assert!(left.is_empty(), "acknowledgements of archived segments were not cleaned: {left:?}");
}

#[test]
fn standby_from_repository_follows_primary_with_async_archiving() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-standby-");
    let repo = scratch.path("repo");
    let spool = scratch.path("spool");
    let logs = scratch.path("log");
    let primary = Cluster::init(&scratch, "primary");
    let mut s = setup(&scratch, "db.conf", &primary, &repo, None);
    let conf = std::fs::read_to_string(&s.config)
        .unwrap()
        .replacen(
            "[global]\n",
            &format!("[global]\narchive-async=y\nspool-path={}\nprocess-max=2\n", spool.display()),
            1,
        )
        .replace("log-level-file=off", &format!("log-level-file=info\nlog-path={}", logs.display()));
    s.config = scratch.write("db.conf", &conf);
    primary.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        s.command_prefix()
    ));
    primary.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = primary.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "backup", "--start-fast"]);

    let dir = scratch.path("standby");
    s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", dir.display()), "--type=standby"]);
    let standby = Cluster::existing(&scratch, dir, "standby");
    standby.configure("archive_mode = off\nhot_standby = on");
    // Junk queued under the names recovery will ask for (a stale queue, another cluster's
    // spool): it must never be served.
    let queue = spool.join("archive/db/in");
    std::fs::create_dir_all(&queue).unwrap();
    for seg in 1..=0x20 {
        std::fs::write(queue.join(format!("0000000100000000000000{seg:02X}")), vec![0x5a; 8192]).unwrap();
    }
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&spool).status();
    standby.start();

    // New WAL on the primary reaches the standby through the archive.
    for round in 1..=3 {
        primary.sql(&format!("create table follow_{round} as select g as id from generate_series(1, {round}000) g"));
        primary.archive_now();
        let start = Instant::now();
        loop {
            let o = standby.try_sql(&format!("select count(*) from follow_{round}"));
            if o.status.success() {
                assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("{round}000"));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "standby did not replay round {round}: {}\nlog:\n{}",
                text(&o),
                std::fs::read_to_string(&standby.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(standby.sql("select pg_is_in_recovery()"), "t");
    // Segments were served from the prefetch queue, not only fetched directly.
    assert!(queue.join("want").exists(), "archive-get never queued anything");
    // Whether a segment reached the queue before the standby asked for it depends on timing:
    // more WAL, until one is served from the queue (or a minute passes).
    let read_log = || std::fs::read_to_string(logs.join("db-archive-get.log")).unwrap_or_default();
    let start = Instant::now();
    let mut round = 3;
    while !read_log().contains("in the archive-get queue") && start.elapsed() < Duration::from_secs(60) {
        round += 1;
        primary.sql(&format!("create table follow_{round} as select g as id from generate_series(1, 1000) g"));
        primary.archive_now();
        while !standby.try_sql(&format!("select count(*) from follow_{round}")).status.success()
            && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let get_log = read_log();
    let served = get_log.matches("in the archive-get queue").count();
    assert!(served > 0, "no segment was served from the prefetch queue; archive-get log:\n{get_log}");

    // Promoted, it takes writes.
    let o = run_as_postgres(
        &support::pg_bin().join("pg_ctl"),
        &["-D", standby.data.to_str().unwrap(), "promote", "-w"],
        &[],
    );
    assert!(o.status.success(), "promote: {}", text(&o));
    standby.wait_promoted();
    standby.sql("create table after_promotion (id int)");
    kill_matching(&s, ":async");
}

#[test]
fn check_verifies_archiving_end_to_end() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-check-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    // Before stanza-create: the stanza is missing, and check says so.
    let o = s.run(&["--stanza=db", "check"]);
    assert!(!o.status.success() && text(&o).contains("stanza-create"), "{}", text(&o));
    s.ok(&["--stanza=db", "stanza-create"]);
    let o = s.ok(&["--stanza=db", "check"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("archiving works"), "{}", text(&o));

    // A failing archive_command: the segment never arrives, and the archiver's failure is named.
    cluster.sql("alter system set archive_command = 'false'");
    cluster.sql("select pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let o = s.run(&["--stanza=db", "check", "--archive-timeout=3"]);
    assert_eq!(o.status.code(), Some(87), "{}", text(&o));
    assert!(text(&o).contains("does not run archive-push"), "{}", text(&o));
    cluster.sql(&format!(
        "alter system set archive_command = '{} --archive-timeout=1 archive-push %p'",
        s.command_prefix().replace("--stanza=db", "--stanza=other")
    ));
    cluster.sql("select pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let o = s.run(&["--stanza=db", "check", "--archive-timeout=3"]);
    assert_eq!(o.status.code(), Some(82), "{}", text(&o));
    assert!(text(&o).contains("last failed on"), "{}", text(&o));

    // archive_mode off.
    cluster.sql("alter system reset archive_command");
    cluster.sql("alter system set archive_mode = off");
    cluster.stop();
    cluster.start();
    let o = s.run(&["--stanza=db", "check"]);
    assert_eq!(o.status.code(), Some(87), "{}", text(&o));
    assert!(text(&o).contains("archive_mode is off"), "{}", text(&o));

    // A repository of another cluster.
    let other = Cluster::init(&scratch, "other");
    let s2 = setup(&scratch, "other.conf", &other, &repo, None);
    other.configure(&format!("archive_mode = on\narchive_command = '{} archive-push %p'", s2.command_prefix()));
    other.start();
    let o = s2.run(&["--stanza=db", "check"]);
    assert_eq!(o.status.code(), Some(58), "{}", text(&o));
    assert!(text(&o).contains("system id"), "{}", text(&o));
}

#[test]
fn async_push_reports_worker_errors_and_drops_past_queue_max() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-async-errors-");
    let spool = scratch.path("spool");
    let extra = format!("archive-async=y\nspool-path={}\narchive-timeout=20\n", spool.display());
    let (cluster, s, ready) = ready_segments(&scratch, &extra, 6);
    let wal = |seg: &str| cluster.data.join("pg_wal").join(seg).display().to_string();

    // A backlog beyond archive-push-queue-max: dropped with a loud warning, not archived.
    let o = s.ok(&["--stanza=db", "archive-push", "--archive-push-queue-max=2MiB", &wal(&ready[0])]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("POINT-IN-TIME RECOVERY IS BROKEN") && err.contains("dropped"), "{}", text(&o));
    kill_matching(&s, "archive-push:async");
    let dest = scratch.path("fetched").join(&ready[0]);
    let o = s.run(&["--stanza=db", "archive-get", &ready[0], dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a dropped segment is in the archive: {}", text(&o));

    // A fresh spool: nothing acknowledged yet.
    let spool_b = format!("--spool-path={}", scratch.path("spool-b").display());
    // The worker cannot write: the foreground fails with the worker's own message, and once the
    // repository is writable again the next call succeeds.
    let archive = scratch.path("repo").join("stanza/db/archive");
    std::fs::create_dir_all(&archive).unwrap();
    let _ = Command::new("chown").args(["-R", "root:root"]).arg(&archive).status();
    let _ = Command::new("chmod").args(["0555"]).arg(&archive).status();
    let o = s.run(&["--stanza=db", "archive-push", &spool_b, &wal(&ready[0])]);
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&archive).status();
    let _ = Command::new("chmod").args(["0755"]).arg(&archive).status();
    if support::is_root() {
        assert!(!o.status.success(), "push into a read-only repository succeeded");
        assert!(text(&o).to_lowercase().contains("permission denied"), "{}", text(&o));
    }
    s.ok(&["--stanza=db", "archive-push", &spool_b, &wal(&ready[0])]);
    kill_matching(&s, "archive-push:async");
    s.ok(&["--stanza=db", "archive-get", &ready[0], dest.to_str().unwrap()]);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(wal(&ready[0])).unwrap());

    // A worker that dies before its first result (here: it cannot open the repository, which
    // holds no stanza): the waiting foreground reports it at once with the worker's reason,
    // not after archive-timeout (20 s here).
    let spool_c = format!("--spool-path={}", scratch.path("spool-c").display());
    let empty = format!("--repo1-path={}", scratch.path("no-stanza-here").display());
    let started = std::time::Instant::now();
    let o = s.run(&["--stanza=db", "archive-push", &spool_c, &empty, &wal(&ready[1])]);
    let took = started.elapsed();
    assert!(!o.status.success(), "a push whose worker cannot start succeeded: {}", text(&o));
    assert!(took < std::time::Duration::from_secs(12), "the foreground waited {took:?} for a dead worker");
    assert!(text(&o).contains("stanza"), "the worker's reason is not reported: {}", text(&o));
}

/// repo1 unreadable, repo2 fine: archive-get warns and serves from repo2, recovery completes;
/// absent everywhere that answered is "not in the archive" (1); every repository failing is an
/// error (255) so recovery stops instead of ending early.
#[test]
fn archive_get_falls_back_to_the_next_repository() {
    use std::os::unix::fs::PermissionsExt;
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-fallback-");
    let (r1, r2) = (scratch.path("repo1"), scratch.path("repo2"));
    let lines = format!("repo1-path={}\nrepo2-path={}\n", r1.display(), r2.display());
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table kept as select g from generate_series(1, 1000) g");
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.sql("create table after_backup as select g from generate_series(1, 777) g");
    let seg = cluster.archive_now();
    let target = scratch.path("restored");
    s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", target.display())]);

    let dest = scratch.path("fetched").join("seg");
    let absent = "0000000100000000000000FE";
    let o = s.run(&["--stanza=db", "archive-get", absent, dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let set_mode = |mode: u32| std::fs::set_permissions(&r1, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mode(0o000);
    let o = s.run(&["--stanza=db", "archive-get", &seg, dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("repo1") && text(&o).contains("trying the next repository"), "{}", text(&o));
    let o = s.run(&["--stanza=db", "archive-get", absent, dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Only repo1, and it fails: an error, never "not in the archive".
    let o = s.run(&["--stanza=db", "--repo=1", "archive-get", absent, dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));

    let restored = Cluster::existing(&scratch, target, "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert_eq!(restored.sql("select count(*) from after_backup"), "777");
    restored.stop();
    set_mode(0o755);
}

/// PostgreSQL runs archive_command in its data directory with `%p` relative to it: a copy
/// running elsewhere with the original's configuration (a clone restored into another path) is
/// refused with 32 naming both directories and nothing is archived; the original archives.
#[test]
fn archive_push_refuses_a_cluster_that_is_not_the_stanzas() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-cwd-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table t as select g from generate_series(1, 1000) g");
    // The segment being written: never recycled while the server runs.
    let seg = cluster.sql("select pg_walfile_name(pg_current_wal_lsn())");
    let clone = scratch.path("clone");
    std::fs::create_dir_all(clone.join("pg_wal")).unwrap();
    std::fs::copy(cluster.data.join("pg_wal").join(&seg), clone.join("pg_wal").join(&seg)).unwrap();
    support::chown_postgres(&clone);
    let push_from = |dir: &Path| {
        let script = format!("cd '{}' && exec \"$0\" \"$@\"", dir.display());
        let config = format!("--config={}", s.config.display());
        let wal = format!("pg_wal/{seg}");
        run_as_postgres(
            Path::new("/bin/sh"),
            &["-c", &script, support::bin(), &config, "--stanza=db", "archive-push", &wal],
            &[],
        )
    };
    let o = push_from(&clone);
    assert_eq!(o.status.code(), Some(32), "{}", text(&o));
    let said = text(&o);
    assert!(said.contains(&format!("working directory '{}'", clone.display())), "{said}");
    assert!(said.contains(&cluster.data.display().to_string()) && said.contains("--archive-mode=off"), "{said}");
    let o = s.ok(&["--stanza=db", "repo-ls", "--recurse", "stanza/db/archive"]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    // The original's archiver may have pushed it already; what matters is the clone's refusal.
    let before = listed.matches(&seg).count();
    let o = push_from(&cluster.data);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.ok(&["--stanza=db", "repo-ls", "--recurse", "stanza/db/archive"]);
    assert!(String::from_utf8_lossy(&o.stdout).matches(&seg).count() >= before.max(1));
}

/// `restore --archive-mode=off`: the copy, started with the original's configuration and
/// promoted, does not archive (no timeline 2 in the stanza); a restore into a path given on the
/// command line says how to get that.
#[test]
fn a_copy_restored_with_archive_mode_off_does_not_archive() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-archive-off-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    let hinted = scratch.path("hinted");
    let o = s.ok(&["--stanza=db", "restore", &format!("--pg1-path={}", hinted.display()), "--log-level-console=info"]);
    assert!(text(&o).contains("restore it with --archive-mode=off"), "{}", text(&o));
    let copy = scratch.path("copy");
    s.ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", copy.display()),
        "--archive-mode=off",
        "--type=immediate",
        "--target-action=promote",
    ]);
    let c = Cluster::existing(&scratch, copy, "copy");
    c.start();
    c.wait_promoted();
    assert_eq!(c.sql("show archive_mode"), "off");
    c.sql("create table t as select g from generate_series(1, 1000) g; select pg_switch_wal()");
    c.sql("checkpoint");
    c.stop();
    let o = s.ok(&["--stanza=db", "repo-ls", "--recurse", "stanza/db/archive"]);
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    let timeline_2 = listed.lines().filter_map(|l| l.rsplit('/').next()).any(|name| name.starts_with("00000002"));
    assert!(!timeline_2, "the copy archived into the stanza: {listed}");
}

/// `archive-copy`: the WAL from the backup's start to its stop is stored in the backup, so with
/// the whole archive gone the restore still reaches consistency and starts with the data; the
/// manifest lists the segments as `pg_data/pg_wal/...`. Without `archive-check` it is refused.
#[test]
fn archive_copy_restores_to_consistency_without_the_archive() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-archive-copy-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    let expected = cluster.sql("select count(*), md5(string_agg(v, ',' order by id)) from t");
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-copy", "--no-archive-check"]);
    assert_eq!(o.status.code(), Some(31), "{}", text(&o));
    assert!(text(&o).contains("not valid without option 'archive-check'"), "{}", text(&o));
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-copy"]);
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["--stanza=db", "info", "--output=json"]).stdout).unwrap();
    let label = info[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&s.ok(&["--stanza=db", "manifest", &format!("--set={label}"), "--output=json"]).stdout)
            .unwrap();
    let copied: Vec<&str> = manifest["fileList"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|n| n.starts_with("pg_data/pg_wal/"))
        .collect();
    assert!(!copied.is_empty(), "no WAL in the backup's file list");
    cluster.stop();
    // The whole archive goes.
    s.ok(&["--stanza=db", "repo-rm", "stanza/db/archive", "--recurse"]);
    let restored = scratch.path("restored");
    s.ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", restored.display()),
        "--type=immediate",
        "--target-action=promote",
        "--archive-mode=off",
    ]);
    for name in &copied {
        let seg = restored.join(name.trim_start_matches("pg_data/"));
        assert_eq!(std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0), 16 << 20, "{} not restored", seg.display());
    }
    let copy = Cluster::existing(&scratch, restored, "restored");
    copy.start();
    copy.wait_promoted();
    assert_eq!(copy.sql("select count(*), md5(string_agg(v, ',' order by id)) from t"), expected);
}

/// An inherited pgBackRest configuration with `repo1-cipher-type=aes-256-cbc` (the only cipher
/// pgBackRest has, the one PGO's documentation configures) does not stop archiving: the stanza
/// is encrypted under that passphrase (pgstrata's objects with AES-256-GCM), archive-push and
/// check pass, and an archived segment is stored encrypted.
#[test]
fn an_aes_256_cbc_configuration_archives_encrypted() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-cbc-");
    let repo = scratch.path("repo");
    let lines = format!("repo1-path={}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PASS}\n", repo.display());
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    let o = s.ok(&["--stanza=db", "stanza-create", "--log-level-console=warn"]);
    assert!(text(&o).contains("aes-256-cbc is pgBackRest's cipher"), "{}", text(&o));
    s.ok(&["--stanza=db", "check"]);
    let seg = cluster.archive_now();
    let key = list_archive(&s).into_iter().find(|k| k.contains(&seg)).expect("the segment is archived");
    let raw = s.ok(&["--stanza=db", "repo-get", &format!("stanza/db/archive/15-1/0000000100000000/{key}")]).stdout;
    assert_eq!(&raw[..4], b"PGSB", "not a pgstrata object");
    assert_eq!(raw[5], 1, "the archived segment is not encrypted");
    // And it reads back through archive-get with the same configuration.
    let dest = scratch.path("fetched").join(&seg);
    s.ok(&["--stanza=db", "archive-get", &seg, dest.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
}
