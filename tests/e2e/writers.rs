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

pub(super) fn labels(s: &Setup) -> Vec<String> {
    let info = info_json(s);
    info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect()
}

pub(super) fn lease_held(s: &Setup) -> bool {
    info_json(s)[0]["status"]["lock"]["backup"]["held"].as_bool().unwrap()
}

/// Waits until the lease a killed writer left has expired, as `info` reports it.
fn wait_lease_free(s: &Setup) {
    let began = Instant::now();
    while lease_held(s) {
        assert!(began.elapsed() < Duration::from_secs(30), "the dead writer's lease never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A lease of stanza `db` held by "other-pod" (a writer on another machine), expiring
/// `expires_in` seconds from now (negative: already expired).
fn fake_lease(repo: &Path, expires_in: i64) {
    let lease = repo.join("stanza/db/lock/writer-0000000099");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let holder = format!(
        "{{\"host\":\"other-pod\",\"pid\":7,\"command\":\"backup\",\"acquired\":{},\"expires\":{}}}",
        now - 10,
        now + expires_in
    );
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    std::fs::write(&lease, holder).unwrap();
    support::chown_postgres(repo);
}

/// The children of a process.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).collect::<Vec<_>>())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills a process started through runuser and everything below it.
pub(super) fn kill9_tree(pid: u32) {
    for c in children(pid) {
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

    let seed = support::test_seed(0x9e37_79b9);
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
        wait_lease_free(&s);
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
    fake_lease(&repo, 600);
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(50), "{}", text(&o));
    assert!(text(&o).contains("other-pod"), "{}", text(&o));
    assert_eq!(labels(&s), listed, "a refused backup changed the catalog");
    fake_lease(&repo, -1);
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
    // Encrypted: the checkpoints a resume reads are sealed with the stanza's key.
    let s = setup(&scratch, "src.conf", &cluster, &repo, Some(PASS));
    cluster.configure("archive_mode = on\narchive_command = 'false'\nwal_level = replica\n");
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    // A resume reuses a file only when its time is before the attempt's start (to the second):
    // a cluster made the same second as the first attempt would have nothing to reuse, by luck.
    let aged = std::process::Command::new("find")
        .arg(&cluster.data)
        .args(["-type", "f", "-exec", "touch", "-d", "1 hour ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(aged.success());
    let began = Instant::now();
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-timeout=5"]);
    let took = began.elapsed();
    assert_eq!(o.status.code(), Some(82), "{}", text(&o));
    assert!(took < Duration::from_secs(5 + 20), "backup took {took:?} with archive-timeout=5");
    assert!(text(&o).contains("was not archived"), "{}", text(&o));
    assert!(labels(&s).is_empty(), "a failed backup is listed");
    // What it stored stays for the next backup to resume (all of it was checkpointed).
    assert!(!checkpoints(&repo).is_empty(), "the failed backup left no checkpoint");
    // archive-check=n: the same backup completes (its WAL is then the operator's business),
    // reusing what the failed one stored.
    let o = s.ok(&[
        "--stanza=db",
        "backup",
        "--type=full",
        "--start-fast",
        "--no-archive-check",
        "--log-level-console=info",
    ]);
    assert!(text(&o).contains("resuming backup") && resumed_files(&text(&o)) > 0, "{}", text(&o));
    assert_eq!(labels(&s).len(), 1);
    assert!(checkpoints(&repo).is_empty());
    // With --no-resume, a failed backup's objects are removed and the next one starts over.
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast", "--archive-timeout=2"]);
    assert_eq!(o.status.code(), Some(82), "{}", text(&o));
    let o = s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--no-archive-check", "--no-resume"]);
    assert!(text(&o).contains("objects of the unfinished backup") && !text(&o).contains("resum"), "{}", text(&o));
    assert_eq!(labels(&s).len(), 2);
    let dirs = std::fs::read_dir(repo.join("stanza/db/backup")).unwrap().count();
    assert_eq!(dirs, 2, "a failed backup's objects are left");
}

#[test]
fn stop_start_and_stanza_delete_are_guarded_as_pgbackrest_guards_them() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-stanza-delete-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();
    let before = support::snapshot(&repo);

    // Not stopped: refused, nothing removed.
    let o = s.run(&["--stanza=db", "stanza-delete"]);
    assert_eq!(o.status.code(), Some(55), "{}", text(&o));
    assert!(text(&o).contains("stop file does not exist"), "{}", text(&o));
    assert_eq!(support::snapshot(&repo), before, "a refused stanza-delete changed the repository");

    // Stopped: the writers refuse (62) and archive_command fails until start; a second stop warns.
    s.ok(&["--stanza=db", "stop"]);
    let o = s.ok(&["--stanza=db", "stop", "--log-level-console=warn"]);
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(62), "{}", text(&o));
    assert!(text(&o).contains("stop file exists for stanza db"), "{}", text(&o));
    let failed = |c: &Cluster| c.sql("select failed_count from pg_stat_archiver").parse::<u64>().unwrap();
    let failed_before = failed(&cluster);
    cluster.sql("create table while_stopped as select g from generate_series(1, 100) g");
    let seg = cluster.sql("select pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while failed(&cluster) == failed_before {
        assert!(Instant::now() < deadline, "archive_command did not fail while stopped");
        std::thread::sleep(Duration::from_millis(200));
    }

    // PostgreSQL running in pg1-path: refused, nothing removed.
    let o = s.run(&["--stanza=db", "stanza-delete"]);
    assert_eq!(o.status.code(), Some(38), "{}", text(&o));
    assert!(text(&o).contains("postmaster.pid"), "{}", text(&o));
    assert_eq!(support::snapshot(&repo), before, "a refused stanza-delete changed the repository");

    // start: archiving catches up.
    s.ok(&["--stanza=db", "start"]);
    cluster.sql("create table after_start as select 1 as one");
    let after = cluster.archive_now();
    assert!(after > seg, "{after} <= {seg}");
    let before = support::snapshot(&repo);
    cluster.stop();
    s.ok(&["--stanza=db", "stop"]);

    // Another machine's writer holds the lease: refused naming it, nothing removed.
    fake_lease(&repo, 600);
    let o = s.run(&["--stanza=db", "stanza-delete"]);
    assert_eq!(o.status.code(), Some(50), "{}", text(&o));
    assert!(text(&o).contains("other-pod"), "{}", text(&o));
    let unchanged: Vec<String> =
        support::snapshot(&repo).into_iter().filter(|l| !l.contains("writer-0000000099")).collect();
    assert_eq!(unchanged, before, "a refused stanza-delete changed the repository");

    // Stopped, PostgreSQL down, the lease free: everything of the stanza goes but the lease
    // objects, and the stop file with it.
    fake_lease(&repo, -1);
    s.ok(&["--stanza=db", "stanza-delete"]);
    let left: Vec<String> = support::snapshot(&repo).into_iter().filter(|l| !l.ends_with('/')).collect();
    assert!(!left.is_empty() && left.iter().all(|l| l.starts_with("stanza/db/lock/writer-")), "{left:?}");
    let o = s.run(&["--stanza=db", "info"]);
    assert!(text(&o).contains("missing stanza path"), "{}", text(&o));
    let o = s.ok(&["--stanza=db", "start", "--log-level-console=warn"]);
    assert!(text(&o).contains("stop file does not exist"), "{}", text(&o));
    // Again: nothing to delete, not an error.
    s.ok(&["--stanza=db", "stanza-delete"]);

    // The stanza can be created anew and backed up.
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(labels(&s).len(), 1);
}

/// The first process below `pid` (itself included) whose name is `name`.
fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name) {
        return Some(pid);
    }
    children(pid).into_iter().find_map(|c| descendant_named(c, name))
}

/// Starts a backup and returns it once it is copying files (its log said so).
fn backup_in_copy(s: &Setup) -> std::process::Child {
    use std::io::BufRead;
    let args = s.args(&["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=1"]);
    let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
    refs.push("--log-level-console=info");
    let mut child = postgres_command(Path::new(support::bin()), &refs, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let copying = lines.by_ref().map_while(Result::ok).any(|l| l.contains("copying with"));
    assert!(copying, "the backup ended before it copied");
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_millis(700));
    child
}

/// A backup asked to stop — SIGTERM, as Kubernetes sends it, or `stop --force` — ends at once
/// with exit 63, aborts its open upload, removes what it wrote and releases the lease (another
/// writer need not wait for it to expire). On S3 a backup killed with SIGKILL cannot abort its
/// upload; the next backup does, from the upload's record.
fn terminated_backup(backend: Backend) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-term-");
    let repo = scratch.path("repo");
    let Some(lines) = repo_options(backend, &repo) else { return };
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &format!("{lines}lease-time=3\n"), None);
    let init = cluster.tool("pgbench", &["-i", "-s", "20", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "stanza-create"]);
    // The bucket, asked directly (S3 only): open multipart uploads and objects of the backups.
    let ask = |query: &str| {
        let endpoint = support::emulator("PGSTRATA_TEST_S3_ENDPOINT").unwrap();
        let prefix = format!("{}/stanza/db/backup/", repo.display().to_string().trim_start_matches('/'));
        let url = format!("{endpoint}/test-bucket?{query}&prefix={prefix}");
        let o = std::process::Command::new("curl").args(["-sf", &url]).output().unwrap();
        assert!(o.status.success(), "curl {url}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let open_uploads = || {
        let uploads = ask("uploads");
        assert!(uploads.contains("ListMultipartUploadsResult"), "{uploads}");
        uploads.matches("<Upload>").count()
    };

    let child = backup_in_copy(&s);
    let began = Instant::now();
    match backend {
        Backend::Local => {
            s.ok(&["--stanza=db", "stop", "--force"]);
        }
        _ => {
            let pid = descendant_named(child.id(), "pgstrata").expect("the backup process");
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(63), "{}", text(&out));
    assert!(text(&out).contains("terminated by a signal"), "{}", text(&out));
    assert!(began.elapsed() < Duration::from_secs(30), "the backup took {:?} to stop", began.elapsed());
    assert!(!lease_held(&s), "the lease stayed after the backup was terminated");
    assert!(labels(&s).is_empty());
    match backend {
        Backend::Local => {
            let left = support::snapshot(&repo.join("stanza/db/backup"));
            assert!(left.is_empty(), "the terminated backup left {left:?}");
            let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
            assert_eq!(o.status.code(), Some(62), "{}", text(&o));
            s.ok(&["--stanza=db", "start"]);
        }
        _ => {
            assert_eq!(open_uploads(), 0, "the terminated backup left its upload open");
            let objects = ask("list-type=2");
            assert!(objects.contains("ListBucketResult") && !objects.contains("<Key>"), "{objects}");
            // Killed outright, a backup leaves its upload open (and its lease until it expires).
            let child = backup_in_copy(&s);
            kill9_tree(child.id());
            let _ = child.wait_with_output();
            assert!(open_uploads() > 0, "the killed backup left no open upload: the check below proves nothing");
            wait_lease_free(&s);
        }
    }
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let listed = labels(&s);
    assert_eq!(listed.len(), 1);
    if backend != Backend::Local {
        assert_eq!(open_uploads(), 0, "the next backup did not abort the killed backup's upload");
        let objects = ask("list-type=2");
        let foreign: Vec<&str> = objects
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .filter(|k| !k.contains(&format!("/backup/{}/", listed[0])))
            .collect();
        assert!(foreign.is_empty(), "objects of the killed backup are left: {foreign:?}");
    }
}

#[test]
fn terminated_backup_cleans_up_at_once_local_with_stop_force() {
    terminated_backup(Backend::Local);
}

#[test]
fn terminated_backup_aborts_its_multipart_upload_s3() {
    terminated_backup(Backend::S3);
}

/// The checkpoints of unfinished backups in a local repository (complete objects only, read
/// while a backup writes them).
fn checkpoints(repo: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    };
    let complete = |name: &str| name.len() == 17 && name.bytes().enumerate().all(|(i, b)| b.is_ascii_digit() || i == 8);
    let backups = repo.join("stanza/db/backup");
    names(&backups)
        .into_iter()
        .flat_map(|label| names(&backups.join(&label).join("resume")).into_iter().map(move |c| format!("{label}/{c}")))
        .filter(|c| c.rsplit('/').next().is_some_and(complete))
        .collect()
}

/// Starts a backup and kills it (SIGKILL) once it has written `more` checkpoints beyond those
/// already there, then waits out its lease.
fn kill_after_checkpoints(s: &Setup, repo: &Path, args: &[&str], more: usize) {
    let before = checkpoints(repo).len();
    let args = s.args(args);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = postgres_command(Path::new(support::bin()), &refs, &[]).spawn().unwrap();
    let began = Instant::now();
    while checkpoints(repo).len() < before + more {
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before {more} checkpoints");
        assert!(began.elapsed() < Duration::from_secs(60), "no checkpoint within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    kill9_tree(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the backup finished before it was killed: {}", text(&out));
    eprintln!("killed after {} checkpoints: {}", checkpoints(repo).len() - before, text(&out).trim());
    wait_lease_free(s);
}

/// The pack numbers a backup's manifest names as its own, and those in its directory.
pub(super) fn packs_named_and_present(
    repo: &Path,
    label: &str,
) -> (std::collections::BTreeSet<u32>, std::collections::BTreeSet<u32>) {
    use pgstrata_repo_format::meta::{FileData, ManifestEntry, read_manifest};
    let dir = repo.join("stanza/db/backup").join(label);
    let stored = std::fs::read(dir.join("backup.manifest")).unwrap();
    let text = pgstrata_repo_format::frame::decode_blob(&stored, "manifest", None).unwrap();
    let (_, entries) = read_manifest(&text, "manifest").unwrap();
    let named = entries
        .iter()
        .filter_map(|e| match e {
            ManifestEntry::File(f) => match &f.data {
                FileData::Stored { parts } | FileData::Pages { parts, .. } => Some(parts.iter().map(|p| p.pack)),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .collect();
    let present = std::fs::read_dir(dir.join("pack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| n.parse::<u32>().unwrap_or_else(|_| panic!("not a pack: {n}")))
        .collect();
    (named, present)
}

/// `resumed: N files (...)` from a backup's output.
fn resumed_files(out: &str) -> u64 {
    let at = out.find("resumed: ").unwrap_or_else(|| panic!("nothing was resumed: {out}"));
    out[at + 9..].split_whitespace().next().unwrap().parse().unwrap()
}

/// Backups killed with SIGKILL at random points are resumed by the next backup of the same type
/// and prior: what they stored is reused, the result restores to the cluster's data, the dead
/// attempts are never listed, and nothing they left stays in the repository.
#[test]
fn killed_backups_are_resumed() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-resume-");
    let repo = scratch.path("repo");
    // Small packs, so checkpoints come often; lz4 keeps the copy fast.
    let lines = format!("repo1-path={}\nlease-time=3\nrepo1-bundle-size=1MiB\ncompress-type=lz4\n", repo.display());
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, None);
    let init = cluster.tool("pgbench", &["-i", "-s", "5", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    // Several tables an incr stores a few MiB of each: a checkpoint after each.
    let tables = 8;
    for t in 0..tables {
        cluster.sql(&format!("create table t{t} as select g, md5(g::text) as v from generate_series(1, 100000) g"));
    }
    let change = |parity: u32| {
        for t in 0..tables {
            cluster.sql(&format!("update t{t} set v = upper(v) where g % 2 = {parity}"));
        }
        cluster.sql("checkpoint");
        std::thread::sleep(Duration::from_millis(1100));
    };
    cluster.sql("checkpoint");
    s.ok(&["--stanza=db", "stanza-create"]);
    std::thread::sleep(Duration::from_millis(1100));
    let seed = support::test_seed(0x5bd1_e995);
    let more = |round: u64| 1 + usize::try_from((seed >> (round * 8)) % 4).unwrap();

    let full = ["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=1"];
    kill_after_checkpoints(&s, &repo, &full, more(0));
    kill_after_checkpoints(&s, &repo, &full, more(1));
    assert!(labels(&s).is_empty(), "a dead backup is listed");
    let o = s.ok(&[&full[..], &["--log-level-console=info"]].concat());
    let out = text(&o);
    assert!(out.contains("resuming backup"), "{out}");
    let reused = resumed_files(&out);
    eprintln!("full: {reused} files reused: {}", out.lines().find(|l| l.contains("resumed: ")).unwrap());
    assert!(reused > 0);
    let listed = labels(&s);
    assert_eq!(listed.len(), 1);
    assert!(out.contains(&format!("resuming backup {}", listed[0])), "{out}");
    assert!(checkpoints(&repo).is_empty(), "checkpoints left: {:?}", checkpoints(&repo));
    let (named, present) = packs_named_and_present(&repo, &listed[0]);
    assert_eq!(named, present, "packs on disk differ from those the manifest names");
    let full_dump = cluster.dumpall();

    // An incr killed and resumed; a killed incr is not resumed by a diff (it is removed).
    change(0);
    let incr = ["--stanza=db", "backup", "--start-fast", "--process-max=1"];
    kill_after_checkpoints(&s, &repo, &incr, more(2));
    let o = s.ok(&["--stanza=db", "backup", "--type=diff", "--start-fast", "--log-level-console=warn"]);
    assert!(
        text(&o).contains("cannot be resumed: new backup type 'diff' does not match its type 'incr'"),
        "{}",
        text(&o)
    );
    assert!(checkpoints(&repo).is_empty(), "the refused backup's checkpoints are left");
    change(1);
    kill_after_checkpoints(&s, &repo, &incr, more(3));
    let o = s.ok(&[&incr[..], &["--log-level-console=info"]].concat());
    assert!(resumed_files(&text(&o)) > 0, "{}", text(&o));
    let dump = cluster.dumpall();
    let listed = labels(&s);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let on_disk: Vec<String> = std::fs::read_dir(repo.join("stanza/db/backup"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk.len(), 3, "{on_disk:?}");
    let (named, present) = packs_named_and_present(&repo, &listed[2]);
    assert_eq!(named, present, "packs on disk differ from those the manifest names");

    // The resumed full and the resumed incr restore to the cluster as each left it.
    for (label, expected) in [(&listed[0], &full_dump), (&listed[2], &dump)] {
        let dir = scratch.path(&format!("restored-{label}"));
        let pg1 = format!("--pg1-path={}", dir.display());
        let set = format!("--set={label}");
        s.ok(&["--stanza=db", "restore", &pg1, &set, "--type=immediate", "--target-action=promote"]);
        let restored = Cluster::existing(&scratch, dir, &format!("r-{label}"));
        restored.configure("archive_mode = off");
        restored.start();
        restored.wait_promoted();
        assert!(restored.dumpall() == *expected, "{label} restored differs from the cluster it was taken of");
        restored.stop();
    }
}

/// A backup stopped (SIGSTOP) past its lease, just before it commits, while another writer takes
/// the lease over and completes a backup: resumed, it must commit nothing — no manifest over
/// the other's, no catalog without the other's backup — and fail with 50.
/// A running cluster archiving into `repo` through a gate the test opens and closes (the file
/// the returned path names): closed, a backup waits for its WAL after its data.
fn gated_cluster(scratch: &Scratch, repo: &Path) -> (Cluster, Setup, std::path::PathBuf) {
    let cluster = Cluster::init(scratch, "src");
    let s = setup(scratch, "src.conf", &cluster, repo, None);
    let gate = scratch.path("gate").join("open");
    std::fs::write(&gate, "").unwrap();
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = 'test -f {} && {} archive-push %p'\nwal_level = replica\n",
        gate.display(),
        s.command_prefix()
    ));
    cluster.start();
    (cluster, s, gate)
}

#[test]
fn a_writer_stopped_past_its_lease_commits_nothing_when_resumed() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-sigstop-");
    let repo = scratch.path("repo");
    let (_cluster, s, gate) = gated_cluster(&scratch, &repo);
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    std::fs::remove_file(&gate).unwrap();

    // W1: a backup with a 3 s lease, stopped once it waits for its WAL (after its data, before
    // its manifest and catalog entry).
    let log = scratch.path("w1-log");
    let args = s.args(&[
        "--stanza=db",
        "backup",
        "--type=full",
        "--start-fast",
        "--lease-time=3",
        "--archive-timeout=120",
        "--log-level-file=info",
    ]);
    let mut refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let log_path = format!("--log-path={}", log.display());
    refs.push(&log_path);
    let w1 = support::command_as("postgres", "postgres", Path::new(support::bin()), &refs, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = w1.id().to_string();
    let log_file = log.join("db-backup.log");
    let began = Instant::now();
    while !std::fs::read_to_string(&log_file).unwrap_or_default().contains("backup stop archive") {
        assert!(began.elapsed() < Duration::from_secs(60), "W1 never reached its WAL wait");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Its lease runs out (read from the lease object itself).
    let lease_expiry = || {
        let dir = repo.join("stanza/db/lock");
        let newest = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).max().unwrap();
        let holder: serde_json::Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
        holder["expires"].as_i64().unwrap()
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    while now() <= lease_expiry() {
        assert!(began.elapsed() < Duration::from_secs(90), "W1's lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    // W2, on another machine (its own lock directory), takes the lease over and completes a
    // backup.
    std::fs::write(&gate, "").unwrap();
    other_machine(&scratch, &s, "w2").ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let after_w2 = labels(&s);
    assert_eq!(after_w2.len(), 2, "{after_w2:?}");
    let manifests = support::snapshot(&repo.join("stanza/db/backup"));

    // W1 resumes: it finds its WAL archived and must not commit.
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let o = w1.wait_with_output().unwrap();
    // 50 — or, when a write was in flight at the stop (a checkpoint into the directory W2 took
    // over), that write's failure; either way it says it lost the lease.
    assert!(!o.status.success() && text(&o).contains("lost the"), "W1 after SIGCONT: {}", text(&o));
    assert_eq!(labels(&s), after_w2, "W1 changed the catalog after losing its lease");
    let listed: Vec<String> = support::snapshot(&repo.join("stanza/db/backup"))
        .into_iter()
        .filter(|l| l.ends_with("backup.manifest") || l.ends_with("backup.manifest.copy"))
        .collect();
    let before: Vec<String> = manifests
        .into_iter()
        .filter(|l| l.ends_with("backup.manifest") || l.ends_with("backup.manifest.copy"))
        .collect();
    assert_eq!(listed, before, "W1 wrote a manifest after losing its lease");
    // What the catalog lists restores.
    s.ok(&["--stanza=db", "verify"]);
}

/// A running backup's progress, as `info` shows it (pgBackRest 2.59's `status: ok (backup/expire
/// running - N% complete)`, JSON `lock.backup.size` / `size-cplt`): published in the repository
/// lease at each renewal. The backup is held at its WAL wait (archiving gated) so it is
/// certainly running while `info` looks; its log has steady progress lines.
#[test]
fn info_shows_a_running_backups_progress() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-progress-");
    let repo = scratch.path("repo");
    let (cluster, s, gate) = gated_cluster(&scratch, &repo);
    cluster.sql("create table t as select g, md5(g::text) from generate_series(1, 200000) g");
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    std::fs::remove_file(&gate).unwrap();
    let args =
        s.args(&["--stanza=db", "backup", "--type=full", "--start-fast", "--lease-time=3", "--log-level-console=info"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let backup = support::command_as("postgres", "postgres", Path::new(support::bin()), &refs, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let lock = loop {
        let lock = info_json(&s)[0]["status"]["lock"]["backup"].clone();
        if lock["size-cplt"].as_u64().is_some_and(|d| d > 0) {
            break lock;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "no progress published: {lock}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (size, done) = (lock["size"].as_u64().unwrap(), lock["size-cplt"].as_u64().unwrap());
    assert!(lock["held"] == true && done <= size && size > 10_000_000, "{lock}");
    assert_eq!(lock["repo"][0]["key"], 1, "{lock}");
    let shown = String::from_utf8_lossy(&s.ok(&["--stanza=db", "info"]).stdout).into_owned();
    assert!(shown.contains("status: ok (backup/expire running - ") && shown.contains("% complete)"), "{shown}");
    std::fs::write(&gate, "").unwrap();
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup progress: "), "{}", text(&out));
    let lock = &info_json(&s)[0]["status"]["lock"]["backup"];
    assert_eq!(lock["held"], false, "{lock}");
}
