//! What an attacker or a careless umask could do to what pgstrata writes: modes of the
//! repository, logs and spool under a permissive umask.

use super::*;

/// Runs pgstrata as postgres under `umask 022` (a shell's usual one).
fn under_umask_022(s: &Setup, args: &[&str]) -> std::process::Output {
    let all = s.args(args);
    let mut refs: Vec<&str> = vec!["-c", "umask 022 && exec \"$0\" \"$@\"", support::bin()];
    refs.extend(all.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_as_postgres(Path::new("/bin/sh"), &refs, &env)
}

/// Every directory under `root` at most 0750 and every file at most 0640 (links skipped).
fn loose_modes(root: &Path) -> Vec<String> {
    let mut loose = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if m.is_dir() {
            if mode & 0o027 != 0 {
                loose.push(format!("{} {mode:o}", p.display()));
            }
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if m.is_file() && mode & 0o137 != 0 {
            loose.push(format!("{} {mode:o}", p.display()));
        }
    }
    loose
}

#[test]
fn what_pgstrata_writes_is_not_readable_by_others_under_umask_022() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-modes-");
    let (repo, log, spool) = (scratch.path("repo"), scratch.path("log"), scratch.path("spool"));
    let lines = format!(
        "repo1-path={}/repo\nlog-path={}/pgstrata\nspool-path={}/pgstrata\n",
        repo.display(),
        log.display(),
        spool.display()
    );
    let (cluster, mut s) = archiving_cluster_on(&scratch, "src", &lines, Some(PASS));
    let conf = std::fs::read_to_string(&s.config).unwrap().replace("log-level-file=off", "log-level-file=info");
    s.config = scratch.write("src.conf", &conf);
    for args in [&["--stanza=db", "stanza-create"][..], &["--stanza=db", "backup", "--type=full", "--start-fast"]] {
        let o = under_umask_022(&s, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    // An asynchronous get (spool, prefetch worker, its log) of a segment archived.
    let seg = cluster.archive_now();
    let dest = scratch.path("fetched").join(&seg);
    let o = under_umask_022(&s, &["--stanza=db", "--archive-async", "archive-get", &seg, dest.to_str().unwrap()]);
    assert!(o.status.success(), "async archive-get: {}", text(&o));
    let o = under_umask_022(&s, &["--stanza=db", "info"]);
    assert!(o.status.success(), "info: {}", text(&o));
    // Directories pgstrata created itself (their parents are the test's).
    for dir in [repo.join("repo"), log.join("pgstrata"), spool.join("pgstrata")] {
        assert!(std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()), "nothing in {dir:?}");
        let loose = loose_modes(&dir);
        assert!(loose.is_empty(), "readable by others or writable by the group: {loose:#?}");
    }
}

/// `archive_command` as a pgBackRest user writes it, values after a space (`--config /path`),
/// through a `pgbackrest` link with asynchronous archiving: the worker it starts must get the
/// same options, or every push fails and archiving stalls.
#[test]
fn the_async_worker_gets_options_given_as_name_space_value() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-spaced-");
    let bindir = scratch.path("bin");
    let link = bindir.join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let (repo, spool) = (scratch.path("repo"), scratch.path("spool"));
    let cluster = Cluster::init(&scratch, "src");
    let s = setup(&scratch, "src.conf", &cluster, &repo, Some(PASS));
    let command = format!(
        "{} --config {} --stanza db --archive-async --spool-path {} --archive-timeout 20 --process-max 2 \
         archive-push %p",
        link.display(),
        s.config.display(),
        spool.display()
    );
    cluster.configure(&format!("archive_mode = on\narchive_command = '{command}'\nwal_level = replica\n"));
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    cluster.sql("create table t as select g from generate_series(1, 1000) g");
    let seg = cluster.archive_now();
    let listed = list_archive(&s);
    assert!(listed.iter().any(|k| k.starts_with(&format!("{seg}-"))), "{seg} not in {listed:?}");
    // Asynchronously, through the spool the spaced --spool-path named.
    assert!(!support::snapshot(&spool).is_empty(), "nothing in the spool {}", spool.display());
}

/// Two `archive-push` processes with different bytes under one segment name (a split brain: two
/// primaries on one timeline archiving into one stanza), started together, 20 times: exactly one
/// wins each time, the other fails with 45 naming the conflict (its PostgreSQL keeps the segment),
/// and `archive-get` returns the winner's bytes.
fn racing_pushes_of_different_bytes(backend: Backend) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-race-");
    let repo = scratch.path("repo");
    let Some(lines) = repo_options(backend, &repo) else { return };
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, Some(PASS));
    s.ok(&["--stanza=db", "stanza-create"]);
    let seg = cluster.archive_now();
    let ours = std::fs::read(cluster.data.join("pg_wal").join(&seg)).unwrap();
    let mut theirs = ours.clone();
    let last = theirs.len() - 1;
    theirs[last] ^= 0xff;
    let (dir_a, dir_b) = (scratch.path("a"), scratch.path("b"));
    for round in 0..20u32 {
        let name = format!("0000000100000001000000{:02X}", round);
        let (a, b) = (dir_a.join(&name), dir_b.join(&name));
        std::fs::write(&a, &ours).unwrap();
        std::fs::write(&b, &theirs).unwrap();
        support::chown_postgres(&a);
        support::chown_postgres(&b);
        let env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let push = |wal: &Path| {
            let args = s.args(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            support::postgres_command(Path::new(support::bin()), &refs, &env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (push(&a), push(&b));
        let (oa, ob) = (pa.wait_with_output().unwrap(), pb.wait_with_output().unwrap());
        let (won, lost, winner) = match (oa.status.success(), ob.status.success()) {
            (true, false) => (oa, ob, &ours),
            (false, true) => (ob, oa, &theirs),
            _ => panic!("round {round}: not exactly one winner:\n{}\n{}", text(&oa), text(&ob)),
        };
        assert_eq!(lost.status.code(), Some(45), "round {round}: {}", text(&lost));
        assert!(text(&lost).contains(&name) && text(&lost).contains("different"), "round {round}: {}", text(&lost));
        drop(won);
        let fetched = scratch.path("fetched").join(&name);
        s.ok(&["--stanza=db", "archive-get", &name, fetched.to_str().unwrap()]);
        assert!(std::fs::read(&fetched).unwrap() == *winner, "round {round}: archive-get returned the loser's bytes");
    }
}

#[test]
fn racing_pushes_of_different_bytes_local() {
    racing_pushes_of_different_bytes(Backend::Local);
}

#[test]
fn racing_pushes_of_different_bytes_s3() {
    racing_pushes_of_different_bytes(Backend::S3);
}

/// Files pgstrata writes as root where others can write (the log directory here) are never
/// opened through a link planted at their name.
#[test]
fn a_root_command_does_not_write_its_log_through_a_planted_link() {
    if !postgres_available() || !support::is_root() {
        return;
    }
    let scratch = Scratch::new("pgstrata-loglink-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    drop(cluster);
    let log = scratch.path("log");
    let victim = scratch.dir.path().join("root-file");
    std::fs::write(&victim, "root's\n").unwrap();
    // Planted by the directory's owner.
    let script = format!("ln -s '{}' '{}'", victim.display(), log.join("db-info.log").display());
    let o = run_as_postgres(Path::new("/bin/sh"), &["-c", &script], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = s.run_as_self(&["--stanza=db", "info", "--log-level-file=info", &format!("--log-path={}", log.display())]);
    assert!(o.status.success(), "info as root: {}", text(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's\n", "the log was written through the link");
}
