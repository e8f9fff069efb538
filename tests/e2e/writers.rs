//! One writer per repository across machines (the lease in the repository, not a lock file),
//! killed backups leaving nothing behind, and a backup that cannot get its WAL archived
//! returning within archive-timeout.

use std::time::{Duration, Instant};

use super::*;
use support::postgres_command;

/// The same configuration with its own lock path: another "machine" sharing the repository.
fn other_machine(scratch: &Scratch, s: &Setup, name: &str) -> Setup {
    let conf = std::fs::read_to_string(&s.config).unwrap();
    let lock_a = format!("lock-path={}", scratch.path("lock").display());
    assert!(conf.contains(&lock_a));
    let conf = conf.replace(&lock_a, &format!("lock-path={}", scratch.path(&format!("lock-{name}")).display()));
    Setup { config: scratch.write(&format!("{name}.conf"), &conf), env: vec![] }
}

fn info_json(s: &Setup) -> serde_json::Value {
    let o = s.ok(&["--stanza=db", "info", "--output=json"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn labels(s: &Setup) -> Vec<String> {
    let info = info_json(s);
    info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect()
}

fn lease_held(s: &Setup) -> bool {
    info_json(s)[0]["status"]["lock"]["backup"]["held"].as_bool().unwrap()
}

/// Kills a process started through runuser and everything below it.
fn kill9_tree(pid: u32) {
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for c in children {
        kill9_tree(c);
    }
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
}

fn two_writers(backend: Backend) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-writers-");
    let repo = scratch.path("repo");
    let Some(lines) = repo_options(backend, &repo) else { return };
    let (cluster, a) = archiving_cluster_on(&scratch, "src", &lines, None);
    // A backup without start-fast waits for a checkpoint: it holds the lease until we make one.
    cluster.sql("alter system set checkpoint_timeout = '1h'");
    cluster.sql("select pg_reload_conf()");
    a.ok(&["--stanza=db", "stanza-create"]);
    let b = other_machine(&scratch, &a, "b");

    let args = a.args(&["--stanza=db", "backup", "--type=full"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = postgres_command(Path::new(support::bin()), &refs, &[]).spawn().unwrap();
    let began = Instant::now();
    while !lease_held(&b) {
        assert!(began.elapsed() < Duration::from_secs(60), "the first backup never took the lease");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = b.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(50), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("held by backup (pid") && err.contains("on host"), "{err}");
    let shown = b.ok(&["--stanza=db", "info"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("backup (pid"), "{}", text(&shown));

    cluster.sql("checkpoint");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "first backup: {}", text(&first));
    let winner = labels(&a);
    assert_eq!(winner.len(), 1, "the catalog lists more than the winner: {winner:?}");
    assert!(!lease_held(&a), "the lease stayed after the backup");
    // Released: the other machine may write now, under a label of its own.
    b.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let both = labels(&b);
    assert_eq!(both.len(), 2);
    assert_ne!(both[0], both[1]);
}

#[test]
fn one_writer_per_repository_local() {
    two_writers(Backend::Local);
}

#[test]
fn one_writer_per_repository_s3() {
    two_writers(Backend::S3);
}

#[test]
fn killed_backups_leave_nothing_and_stale_leases_are_taken_over() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-killed-");
    let repo = scratch.path("repo");
    let lines = format!("repo1-path={}\nlease-time=3\n", repo.display());
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    let init = cluster.tool("pgbench", &["-i", "-s", "5", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "stanza-create"]);

    let seed: u64 = std::env::var("PGSTRATA_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ 0x9e37_79b9);
    eprintln!("kill points seed {seed} (PGSTRATA_TEST_SEED replays)");
    let mut x = seed | 1;
    let args = s.args(&["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=2"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    for round in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(200 + x % 1500);
        let child = postgres_command(Path::new(support::bin()), &refs, &[]).spawn().unwrap();
        std::thread::sleep(delay);
        kill9_tree(child.id());
        let out = child.wait_with_output().unwrap();
        eprintln!("round {round}: killed after {delay:?} ({:?})", out.status);
        // The dead backup's lease expires by itself.
        std::thread::sleep(Duration::from_secs(4));
    }
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let listed = labels(&s);
    let on_disk: Vec<String> = std::fs::read_dir(repo.join("stanza/db/backup"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut on_disk_sorted = on_disk.clone();
    on_disk_sorted.sort();
    assert_eq!(on_disk_sorted, listed, "objects of killed backups were left in the repository");
    for label in &listed {
        for f in support::snapshot(&repo.join("stanza/db/backup").join(label)) {
            assert!(!f.contains('#') && !f.contains(".tmp"), "temporary object left: {label}/{f}");
        }
    }

    // A lease held on another machine (not expired) refuses; once expired it is taken over.
    let lease = repo.join("stanza/db/lock/writer-0000000099");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let holder = |expires: u64| {
        format!(
            "{{\"host\":\"other-pod\",\"pid\":7,\"command\":\"backup\",\"acquired\":{},\"expires\":{expires}}}",
            now - 10
        )
    };
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    std::fs::write(&lease, holder(now + 600)).unwrap();
    support::chown_postgres(&repo);
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(50), "{}", text(&o));
    assert!(text(&o).contains("other-pod"), "{}", text(&o));
    assert_eq!(labels(&s), listed, "a refused backup changed the catalog");
    std::fs::write(&lease, holder(now - 1)).unwrap();
    let o = s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--log-level-console=warn"]);
    assert!(text(&o).contains("taking over the expired lease"), "{}", text(&o));
    assert_eq!(labels(&s).len(), listed.len() + 1);
}

#[test]
fn backup_returns_within_archive_timeout_when_archiving_fails() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-archfail-");
    let repo = scratch.path("repo");
    let cluster = Cluster::init(&scratch, "src");
    let s = setup(&scratch, "src.conf", &cluster, &repo, None);
    cluster.configure("archive_mode = on\narchive_command = 'false'\nwal_level = replica\n");
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    let began = Instant::now();
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-timeout=5"]);
    let took = began.elapsed();
    assert_eq!(o.status.code(), Some(82), "{}", text(&o));
    assert!(took < Duration::from_secs(5 + 20), "backup took {took:?} with archive-timeout=5");
    assert!(text(&o).contains("was not archived"), "{}", text(&o));
    assert!(labels(&s).is_empty(), "a failed backup is listed");
    let left = support::snapshot(&repo.join("stanza/db/backup"));
    assert!(left.is_empty(), "a failed backup left objects: {left:?}");
    // archive-check=n: the same backup completes (its WAL is then the operator's business).
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--no-archive-check"]);
    assert_eq!(labels(&s).len(), 1);
}
