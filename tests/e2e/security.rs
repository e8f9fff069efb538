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
