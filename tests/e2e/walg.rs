//! As Spilo deploys WAL-G: pgstrata linked as `wal-g` on `PATH`, configured only through an
//! `envdir` directory of one-variable files, the S3 emulator as the bucket. Spilo's scripts are
//! reproduced as `../shared/notes/anchors.md` §2.2 lists them (invocations, environment, how the
//! output is parsed): `archive_command`, `postgres_backup.sh`'s backup and list, `wale_restore.sh`,
//! `restore_command.sh` behind `restore_command`, and `clone_with_wale.py`'s choice of backup.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::*;
use support::chown_postgres;

/// Spilo's `restore_command.sh`, its core as the notes quote it.
const RESTORE_COMMAND_SH: &str = r#"#!/bin/bash
readonly wal_filename=$1 wal_destination=$2
readonly wal_dir=$(dirname "$wal_destination")
wal_fast_source=$(dirname "$(dirname "$(realpath "$wal_dir")")")/wal_fast/$wal_filename
[[ -f $wal_fast_source ]] && exec mv "${wal_fast_source}" "${wal_destination}"
if [[ "$wal_destination" =~ /$wal_filename$ ]]; then  # Patroni fetching missing files for pg_rewind
    export WALG_DOWNLOAD_CONCURRENCY=1
    POOL_SIZE=0
else
    POOL_SIZE=$WALG_DOWNLOAD_CONCURRENCY
fi
[[ "$USE_WALG_RESTORE" == "true" ]] && exec wal-g wal-fetch "${wal_filename}" "${wal_destination}"
exit 1
"#;

/// `postgres_backup.sh`'s backup and the list it parses (name and modified, newest first).
const POSTGRES_BACKUP_SH: &str = r#"#!/bin/bash
PGDATA=$1
export PGHOST=$SPILO_SOCKET
[[ -z $WALG_BACKUP_COMPRESSION_METHOD ]] || export WALG_COMPRESSION_METHOD=$WALG_BACKUP_COMPRESSION_METHOD
nice -n 5 wal-g backup-push "$PGDATA" || exit 1
mapfile -t backup_records < <(wal-g backup-list 2>/dev/null |
    sed '0,/^\(backup_\)\?name\s*\(last_\)\?modified\s*/d' | awk '{ print $1, $2 }' | sort -k2r)
printf '%s\n' "${backup_records[@]}"
"#;

/// `wale_restore.sh`: the latest backup's start segment out of the list, then the fetch.
const WALE_RESTORE_SH: &str = r#"#!/bin/bash
DATA_DIR=$1
wal_segment_backup_start=$(wal-g backup-list 2> /dev/null \
    | sed '0,/^\(backup_\)\?name\s*\(last_\)\?modified\s*/d' | sort -bk2 | tail -n1 | awk '{print $3;}' | sed 's/_.*$//')
[[ -n $wal_segment_backup_start ]] || exit 2
echo "$wal_segment_backup_start"
wal-g backup-fetch "$DATA_DIR" LATEST || exit 1
"#;

/// `clone_with_wale.py`: the list read as tab-separated fields after the header, the latest
/// backup modified before the target time, fetched.
const CLONE_WITH_WALE_PY: &str = r#"import csv, os, re, subprocess, sys
from dateutil.parser import parse

def fix_output(output):
    """WAL-G is using spaces instead of tabs and writes some garbage before the actual header"""
    started = None
    for line in output.decode('utf-8').splitlines():
        if not started:
            started = re.match(r'^(backup_)?name\s+(last_)?modified\s+', line)
            if started:
                line = line.replace(' modified ', ' last_modified ')
        if started:
            yield '\t'.join(line.split())

def list_backups(env):
    output = subprocess.check_output(['wal-g', 'backup-list'], env=env)
    reader = csv.DictReader(fix_output(output), dialect='excel-tab')
    return list(reader)

def choose_backup(backup_list, recovery_target_time):
    """ pick up the latest backup file starting before time recovery_target_time"""
    match_timestamp = match = None
    for backup in backup_list:
        last_modified = parse(backup['last_modified'])
        if last_modified < recovery_target_time:
            if match is None or last_modified > match_timestamp:
                match = backup
                match_timestamp = last_modified
    if match is not None:
        return match.get('name', match.get('backup_name'))

backup = choose_backup(list_backups(os.environ), parse(sys.argv[2]))
print(backup)
subprocess.check_call(['wal-g', 'backup-fetch', sys.argv[1], backup])
"#;

/// A directory of one-variable files, as Spilo writes `/run/etc/wal-e.d/env`.
fn envdir(scratch: &Scratch, name: &str, vars: &[(&str, &str)]) -> PathBuf {
    let dir = scratch.path(name);
    for (k, v) in vars {
        std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
    }
    chown_postgres(&dir);
    dir
}

#[test]
fn spilo_s_wal_g_commands_run_unchanged_against_pgstrata() {
    if !postgres_available() {
        return;
    }
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_ENDPOINT") else { return };
    let Some(envdir_bin) = support::emulator("PGSTRATA_TEST_ENVDIR") else { return };
    let Some(venv_python) = support::emulator("PGSTRATA_TEST_PROMETHEUS_PYTHON") else { return };
    let scratch = Scratch::new("pgstrata-walg-");
    // clone_with_wale.py runs as postgres with the system's python and dateutil (from the test
    // tools' venv, copied where postgres can read it).
    let pylib = scratch.path("pylib");
    let o = Command::new(&venv_python)
        .args(["-c", "import dateutil, six, os; print(os.path.dirname(dateutil.__file__)); print(six.__file__)"])
        .output()
        .unwrap();
    assert!(o.status.success(), "dateutil in the tools' venv: {}", text(&o));
    for module in String::from_utf8_lossy(&o.stdout).lines() {
        assert!(Command::new("cp").arg("-r").arg(module).arg(&pylib).status().unwrap().success());
    }
    chown_postgres(&pylib);
    // wal-g and envdir on PATH, as in the Spilo image.
    let bindir = scratch.path("bin");
    std::os::unix::fs::symlink(support::bin(), bindir.join("wal-g")).unwrap();
    std::os::unix::fs::symlink(&envdir_bin, bindir.join("envdir")).unwrap();
    let scripts = scratch.path("scripts");
    for (name, body) in [
        ("restore_command.sh", RESTORE_COMMAND_SH),
        ("postgres_backup.sh", POSTGRES_BACKUP_SH),
        ("wale_restore.sh", WALE_RESTORE_SH),
        ("clone_with_wale.py", CLONE_WITH_WALE_PY),
    ] {
        std::fs::write(scripts.join(name), body).unwrap();
        std::fs::set_permissions(scripts.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    chown_postgres(&scripts);
    let path = format!("{}:/usr/bin:/bin", bindir.display());
    let env = [("PATH", path.as_str())];

    let primary = Cluster::init(&scratch, "primary");
    let prefix = format!("s3://test-bucket{}/spilo/demo/wal/15", scratch.dir.path().display());
    let (port, socket) = (primary.port.to_string(), primary.socket.display().to_string());
    let key = "Wg5dIe5Kq9LzQ1m2N3b4V5c6X7z8A9s0";
    let storage = [
        ("WALG_S3_PREFIX", prefix.as_str()),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("WALG_LIBSODIUM_KEY", key),
        ("WALG_DELTA_MAX_STEPS", "6"),
        ("WALG_UPLOAD_CONCURRENCY", "2"),
        ("WALG_DOWNLOAD_CONCURRENCY", "4"),
        ("USE_WALG_BACKUP", "true"),
        ("USE_WALG_RESTORE", "true"),
        ("PGPORT", port.as_str()),
        ("PGHOST", socket.as_str()),
    ];
    let main_env = envdir(&scratch, "env", &storage);
    let run = |program: &str, args: &[&str], envd: &Path| {
        let mut all = vec![envd.to_str().unwrap(), program];
        all.extend_from_slice(args);
        run_as_postgres(&bindir.join("envdir"), &all, &env)
    };
    let ok = |program: &str, args: &[&str], envd: &Path| {
        let o = run(program, args, envd);
        assert!(o.status.success(), "{program} {args:?}: {}", text(&o));
        o
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();

    primary.configure(&format!(
        "archive_mode = on\narchive_command = 'envdir \"{}\" wal-g wal-push \"%p\"'\nwal_level = replica\n\
         archive_timeout = 1800s\n",
        main_env.display()
    ));
    primary.start_with_env(&env);
    let bench = |args: &[&str]| {
        let o = primary.tool("pgbench", &[args, &["postgres"]].concat());
        assert!(o.status.success(), "pgbench: {}", text(&o));
    };
    bench(&["-i", "-s", "2", "-q"]);

    // Backups as Spilo's cron takes them: a full one, then deltas with pgbench between.
    let backup = || {
        let script = scripts.join("postgres_backup.sh");
        let args = [main_env.to_str().unwrap(), script.to_str().unwrap(), primary.data.to_str().unwrap()];
        let o = run_as_postgres(&bindir.join("envdir"), &args, &[("PATH", path.as_str()), ("SPILO_SOCKET", &socket)]);
        assert!(o.status.success(), "postgres_backup.sh: {}", text(&o));
        stdout(&o)
    };
    let listed = backup();
    let dump_full = primary.dumpall();
    std::thread::sleep(Duration::from_millis(1100));
    let after_full = primary.sql("select clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(listed.lines().count(), 1, "{listed}");
    bench(&["-T", "2", "-c", "2", "-n"]);
    backup();
    bench(&["-T", "2", "-c", "2", "-n"]);
    let listed = backup();
    let dump_latest = primary.dumpall();
    // Newest first (sort -k2r), name and time: the two deltas, then the full.
    let names: Vec<&str> = listed.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names.len(), 3, "{listed}");
    let segment = |name: &str| name["base_".len().."base_".len() + 24].to_string();
    assert!(names[2].len() == 29 && names[2].starts_with("base_"), "a full backup's name: {listed}");
    assert!(names[1].contains("_D_") && names[1].ends_with(&segment(names[2])), "{listed}");
    assert!(names[0].ends_with(&format!("_D_{}", segment(names[1]))), "{listed}");

    // The list's header and columns as Spilo's regex and `split()` see them.
    let o = ok("wal-g", &["backup-list"], &main_env);
    let list = stdout(&o);
    let header = list.lines().next().unwrap();
    assert!(header.starts_with("name") && header.split_whitespace().nth(1) == Some("modified"), "{list}");
    for line in list.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[2], segment(fields[0]), "the start segment column: {line}");
        assert!(fields[1].ends_with('Z') && fields[1].len() == 20, "an RFC 3339 UTC time: {line}");
    }
    let o = ok("wal-g", &["backup-list", "--detail", "--json"], &main_env);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 3, "{doc}");
    assert_eq!(doc[0]["pg_version"], 15, "{doc}");
    assert_eq!(doc[2]["backup_type"], "delta", "{doc}");

    // wale_restore.sh: LATEST into a new directory; recovery through restore_command.sh; equal
    // to the source at the latest backup.
    let latest_dir = scratch.path("latest");
    std::fs::remove_dir(&latest_dir).unwrap();
    let o = ok(scripts.join("wale_restore.sh").to_str().unwrap(), &[latest_dir.to_str().unwrap()], &main_env);
    assert_eq!(stdout(&o).trim(), segment(names[0]), "wale_restore.sh's start segment");
    // The clone's own envdir (Spilo writes one per clone), without PGHOST/PGPORT of the source.
    let clone_env = envdir(&scratch, "clone-env", &storage[..12]);
    let restore_command = format!(
        "restore_command = 'envdir \"{}\" timeout \"0\" {} \"%f\" \"%p\"'",
        clone_env.display(),
        scripts.join("restore_command.sh").display()
    );
    let latest = Cluster::existing(&scratch, latest_dir.clone(), "latest");
    std::fs::write(latest_dir.join("recovery.signal"), "").unwrap();
    latest.configure(&format!(
        "archive_mode = off\n{restore_command}\nrecovery_target = 'immediate'\nrecovery_target_action = 'promote'\n"
    ));
    chown_postgres(&latest_dir);
    latest.start_with_env(&env);
    latest.wait_promoted();
    assert_eq!(latest.dumpall(), dump_latest, "backup-fetch LATEST differs from the source");
    // WALG_DOWNLOAD_CONCURRENCY=4: segments were prefetched into the spool in pg_wal, by a
    // prefetch worker started under the wal-g name that ran (it says nothing on stderr).
    let spool = latest_dir.join("pg_wal/.pgstrata");
    assert!(spool.is_dir(), "no prefetch spool in the restored pg_wal");
    let worker_err = spool.join(format!("archive/{}/in/.archive-get-worker.stderr", pgstrata::walg::env::STANZA));
    assert!(worker_err.exists(), "no prefetch worker was started");
    let said = std::fs::read_to_string(&worker_err).unwrap_or_default();
    assert!(said.trim().is_empty(), "the prefetch worker failed: {said}");
    latest.stop();

    // clone_with_wale.py: the backup before a time (the full one), to that time.
    let clone_dir = scratch.path("clone");
    std::fs::remove_dir(&clone_dir).unwrap();
    let clone_script = scripts.join("clone_with_wale.py");
    let args = [clone_env.to_str().unwrap(), "python3", clone_script.to_str().unwrap(), clone_dir.to_str().unwrap()];
    let o = run_as_postgres(
        &bindir.join("envdir"),
        &[&args[..], &[after_full.as_str()]].concat(),
        &[("PATH", path.as_str()), ("PYTHONPATH", pylib.to_str().unwrap())],
    );
    assert!(o.status.success(), "clone_with_wale.py: {}", text(&o));
    assert_eq!(stdout(&o).lines().next(), Some(names[2]), "clone_with_wale.py's choice: {}", text(&o));
    let clone = Cluster::existing(&scratch, clone_dir.clone(), "clone");
    std::fs::write(clone_dir.join("recovery.signal"), "").unwrap();
    clone.configure(&format!(
        "archive_mode = off\n{restore_command}\nrecovery_target_time = '{after_full}'\nrecovery_target_timeline = \
         'latest'\nrecovery_target_action = 'promote'\n"
    ));
    chown_postgres(&clone_dir);
    clone.start_with_env(&env);
    clone.wait_promoted();
    assert_eq!(clone.dumpall(), dump_full, "the clone to a time after the full backup differs");
    clone.stop();

    // wal-fetch: absent → 1; a wrong endpoint or a wrong key → above 125, with a message.
    let dest = scratch.path("fetched").join("RECOVERYXLOG");
    let missing = run("wal-g", &["wal-fetch", "0000000100000000000000FF", dest.to_str().unwrap()], &clone_env);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    // By hand, with PGDATA naming the running primary (not in recovery) and downloads in
    // parallel: the segment is fetched, and no prefetch worker writes into that cluster's pg_wal.
    let by_hand =
        envdir(&scratch, "by-hand-env", &[&storage[..], &[("PGDATA", primary.data.to_str().unwrap())]].concat());
    let o = run("wal-g", &["wal-fetch", &segment(names[2]), dest.to_str().unwrap()], &by_hand);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !primary.data.join("pg_wal/.pgstrata").exists(),
        "a manual wal-fetch prefetched into the running cluster's pg_wal"
    );
    let mut wrong_endpoint = storage[..12].to_vec();
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    wrong_endpoint[1] = ("AWS_ENDPOINT", dead.as_str());
    let bad_env = envdir(&scratch, "wrong-endpoint-env", &wrong_endpoint);
    let o = run("wal-g", &["wal-fetch", &segment(names[2]), dest.to_str().unwrap()], &bad_env);
    assert!(o.status.code().is_some_and(|c| c > 125), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("127.0.0.1"), "names the endpoint: {}", text(&o));
    let mut wrong_key = storage[..12].to_vec();
    wrong_key[6] = ("WALG_LIBSODIUM_KEY", "another key of thirty-two bytes!");
    let bad_env = envdir(&scratch, "wrong-key-env", &wrong_key);
    let o = run("wal-g", &["wal-fetch", &segment(names[2]), dest.to_str().unwrap()], &bad_env);
    assert!(o.status.code().is_some_and(|c| c > 125), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("passphrase") || err.contains("key"), "names the key: {}", text(&o));
    assert!(!err.contains(key) && !err.contains("thirty-two"), "a key is never printed: {}", text(&o));

    // Retention as WAL-G documents it. Another full and a delta: F1 D1 D2 F2 D3.
    let o = ok("wal-g", &["backup-push", "--full", primary.data.to_str().unwrap()], &main_env);
    // WAL-G's log lines (`INFO: 2026/12/06 10:15:00.123456 ...`), progress among them; none of
    // pgBackRest's (`P00   INFO:`).
    let err = String::from_utf8_lossy(&o.stderr);
    let walg_line = |l: &str| {
        l.strip_prefix("INFO: ").is_some_and(|r| r.len() > 27 && r.as_bytes()[4] == b'/' && r.as_bytes()[19] == b'.')
    };
    assert!(err.lines().any(|l| walg_line(l) && l.contains("backup progress: ")), "no WAL-G progress line: {err}");
    assert!(!err.contains("P00"), "pgBackRest's log format under wal-g: {err}");
    bench(&["-T", "1", "-n"]);
    ok("wal-g", &["backup-push", primary.data.to_str().unwrap()], &main_env);
    let all = |envd: &Path| -> Vec<String> {
        stdout(&ok("wal-g", &["backup-list"], envd))
            .lines()
            .skip(1)
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let five = all(&main_env);
    assert_eq!(five.len(), 5, "{five:?}");
    // Without --confirm: only said.
    let o = ok("wal-g", &["delete", "retain", "FULL", "1"], &main_env);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&five[0]), "{}", text(&o));
    assert_eq!(all(&main_env), five, "delete without --confirm deleted");
    // retain FULL 1: the newest full and what follows it stay; older WAL goes.
    ok("wal-g", &["delete", "retain", "FULL", "1", "--confirm"], &main_env);
    assert_eq!(all(&main_env), five[3..].to_vec());
    let first_wal = run("wal-g", &["wal-fetch", &segment(names[2]), dest.to_str().unwrap()], &clone_env);
    assert_eq!(first_wal.status.code(), Some(1), "WAL before the oldest backup is gone: {}", text(&first_wal));
    // backup-mark: F2 permanent survives both kinds of delete; D3 (before F3) goes.
    ok("wal-g", &["backup-mark", &five[3]], &main_env);
    let o = ok("wal-g", &["backup-list", "--detail", "--json"], &main_env);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc[0]["is_permanent"], true, "{doc}");
    ok("wal-g", &["backup-push", "--full", primary.data.to_str().unwrap()], &main_env);
    let now = all(&main_env);
    assert_eq!(now.len(), 3, "{now:?}");
    ok("wal-g", &["delete", "retain", "FULL", "1", "--confirm"], &main_env);
    assert_eq!(all(&main_env), now, "a permanent backup is neither counted nor deleted");
    ok("wal-g", &["delete", "before", "FIND_FULL", &now[2], "--confirm"], &main_env);
    assert_eq!(all(&main_env), vec![now[0].clone(), now[2].clone()], "before FIND_FULL keeps the permanent one");
    let o = run("wal-g", &["delete", "everything", "--confirm"], &main_env);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("permanent"), "{}", text(&o));
    ok("wal-g", &["backup-mark", "-i", &now[0]], &main_env);
    ok("wal-g", &["delete", "retain", "FULL", "1", "--confirm"], &main_env);
    assert_eq!(all(&main_env), vec![now[2].clone()], "unmarked, it goes");
    // backup-push --permanent: a delta marked as it is taken.
    ok("wal-g", &["backup-push", "--permanent", primary.data.to_str().unwrap()], &main_env);
    let o = ok("wal-g", &["backup-list", "--detail", "--json"], &main_env);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (doc[1]["backup_type"].as_str(), doc[1]["is_permanent"].as_bool()),
        (Some("delta"), Some(true)),
        "{doc}"
    );

    // The pgBackRest front end reads the same repository: stanza `main` under the prefix's path.
    let conf = scratch.write(
        "pgbackrest.conf",
        &format!(
            "[global]\nrepo1-type=s3\nrepo1-path={}/spilo/demo/wal/15\nrepo1-s3-bucket=test-bucket\n\
             repo1-s3-endpoint={endpoint}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\nrepo1-s3-key=test\n\
             repo1-s3-key-secret=test\nrepo1-cipher-type=aes-256-gcm\nlog-level-console=off\nlog-level-file=off\n",
            scratch.dir.path().display()
        ),
    );
    let pass = pgstrata_repo_format::hex::encode(key.as_bytes());
    let o = run_as_postgres(
        Path::new(support::bin()),
        &[&format!("--config={}", conf.display()), "--stanza=main", "info", "--output=json"],
        &[("PGSTRATA_REPO1_CIPHER_PASS", pass.as_str())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc[0]["backup"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(doc[0]["backup"][1]["type"], "incr", "{doc}");
    primary.stop();
}
