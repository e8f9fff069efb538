//! Monitoring clients as users run them against pgBackRest, pointed at pgstrata installed as
//! `pgbackrest`: Dalibo's check_pgbackrest (Debian's check-pgbackrest, unpacked by
//! scripts/tools.sh) reads `version`, `info --output=json`, and the WAL archive through
//! `repo-ls --recurse --output=json` and `repo-get` on pgBackRest's archive paths.

use super::*;

/// check_pgbackrest from Debian's package; `None` (a skip) when scripts/tools.sh did not run.
fn check_pgbackrest() -> Option<String> {
    support::emulator("PGSTRATA_TEST_CHECK_PGBACKREST")
}

/// Runs a check_pgbackrest service; returns (exit code, output).
fn service(tool: &str, link: &Path, conf: &Path, args: &[&str]) -> (i32, String) {
    let command = format!("--command={}", link.display());
    let config = format!("--config={}", conf.display());
    let o = std::process::Command::new(tool)
        .args(["--stanza=db", &command, &config, "--output=human"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

#[test]
fn check_pgbackrest_retention_and_archives_services() {
    if !postgres_available() {
        return;
    }
    let Some(tool) = check_pgbackrest() else { return };
    let scratch = Scratch::new("pgstrata-monitoring-");
    let link = scratch.path("bin").join("pgbackrest");
    std::os::unix::fs::symlink(support::bin(), &link).unwrap();
    let repo = scratch.path("repo");
    let cluster = Cluster::init(&scratch, "src");
    let conf = scratch.write(
        "pgbackrest.conf",
        &format!(
            "[global]\nrepo1-path={}\nlock-path={}\nlog-level-file=off\nrepo1-retention-full=2\n\n[db]\npg1-path={}\n\
             pg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
            repo.display(),
            scratch.path("lock").display(),
            cluster.data.display(),
            cluster.socket.display(),
            cluster.port
        ),
    );
    let run = |args: &[&str]| {
        let config = format!("--config={}", conf.display());
        let o = run_as_postgres(&link, &[&[config.as_str(), "--stanza=db"], args].concat(), &[]);
        assert!(o.status.success(), "pgbackrest {args:?}: {}", text(&o));
        o
    };
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} --config={} --stanza=db archive-push %p'\nwal_level = replica\n",
        link.display(),
        conf.display()
    ));
    cluster.start();
    run(&["stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    run(&["backup", "--type=full", "--start-fast"]);
    let o = cluster.tool("pgbench", &["-t", "200", "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
    for _ in 0..3 {
        cluster.sql("insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 1, 1); select pg_switch_wal()");
    }
    run(&["backup", "--type=incr", "--start-fast"]);
    for _ in 0..3 {
        cluster.sql("insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 1, 1); select pg_switch_wal()");
    }
    cluster.archive_now();

    let (code, out) =
        service(&tool, &link, &conf, &["--service=retention", "--retention-full=1", "--retention-incr=1"]);
    assert_eq!(code, 0, "retention: {out}");
    assert!(out.contains("BACKUPS_RETENTION") && out.contains("(OK)"), "{out}");
    let (code, out) = service(&tool, &link, &conf, &["--service=retention", "--retention-full=2"]);
    assert_eq!(code, 2, "one full where two are required: {out}");
    assert!(out.contains("(CRITICAL)") && out.contains("full"), "{out}");

    let (code, out) = service(&tool, &link, &conf, &["--service=archives"]);
    assert_eq!(code, 0, "archives: {out}");
    assert!(out.contains("WAL_ARCHIVES") && out.contains("(OK)"), "{out}");

    // A segment after the latest backup (recovery to now needs it) removed from the archive.
    let info = info_json(&Setup { config: conf.clone(), env: vec![] });
    let incr_stop = info[0]["backup"][1]["archive"]["stop"].as_str().unwrap().to_string();
    let dir = repo.join("stanza/db/archive/15-1").join(&incr_stop[..16]);
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() > 24 && n.as_bytes()[24] == b'-' && n[..24] > *incr_stop)
        .min()
        .expect("a segment after the incr");
    std::fs::rename(dir.join(&victim), scratch.path("aside").join("segment")).unwrap();
    let (code, out) = service(&tool, &link, &conf, &["--service=archives"]);
    assert_eq!(code, 2, "archives after removing {victim}: {out}");
    assert!(out.contains("(CRITICAL)") && out.contains("missing file(s)") && out.contains(&victim[..24]), "{out}");
}
