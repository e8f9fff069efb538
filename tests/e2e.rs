//! End to end with a real PostgreSQL: stanza creation, WAL archiving through `archive_command`,
//! fetching through `archive-get`, and every bad input refused with a clear error that leaves the
//! repository unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/expire.rs"]
mod expire;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/guards.rs"]
mod guards;
#[path = "e2e/hosts.rs"]
mod hosts;
#[path = "e2e/incremental.rs"]
mod incremental;
#[path = "e2e/majors.rs"]
mod majors;
#[path = "e2e/migrate.rs"]
mod migrate;
#[path = "e2e/monitoring.rs"]
mod monitoring;
#[path = "e2e/pitr.rs"]
mod pitr;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/selective.rs"]
mod selective;
#[path = "e2e/standby.rs"]
mod standby;
#[path = "e2e/verify.rs"]
mod verify;
#[path = "e2e/wal.rs"]
mod wal;
#[path = "e2e/walg.rs"]
mod walg;
#[path = "e2e/writers.rs"]
mod writers;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{Cluster, Scratch, Setup, postgres_available, run_as_postgres, text};

const PASS: &str = "correct horse battery staple";

/// Where a test's repository lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
    Azure,
    Gcs,
}

const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `repo1-*` lines for a backend; `None` (a skip) when its emulator is not configured.
fn repo_options(backend: Backend, repo: &Path) -> Option<String> {
    let env = support::emulator;
    // A unique path inside the bucket per test run.
    let unique = repo.display().to_string();
    Some(match backend {
        Backend::Local => format!("repo1-path={}\n", repo.display()),
        Backend::S3 => format!(
            "repo1-type=s3\nrepo1-path={unique}\nrepo1-s3-bucket=test-bucket\nrepo1-s3-endpoint={}\n\
             repo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\nrepo1-s3-key=test\nrepo1-s3-key-secret=test\n",
            env("PGSTRATA_TEST_S3_ENDPOINT")?
        ),
        Backend::Azure => format!(
            "repo1-type=azure\nrepo1-path={unique}\nrepo1-azure-account=devstoreaccount1\nrepo1-azure-container=test-bucket\n\
             repo1-azure-key={AZURITE_KEY}\nrepo1-azure-endpoint={}\n",
            env("PGSTRATA_TEST_AZURE_ENDPOINT")?
        ),
        Backend::Gcs => format!(
            "repo1-type=gcs\nrepo1-path={unique}\nrepo1-gcs-bucket=test-bucket\nrepo1-gcs-key-type=token\n\
             repo1-gcs-key=test\nrepo1-gcs-endpoint={}\n",
            env("PGSTRATA_TEST_GCS_ENDPOINT")?
        ),
    })
}

/// `info --output=json` of stanza `db`.
fn info_json(s: &Setup) -> serde_json::Value {
    info_json_with(s, &[])
}

/// `info --output=json` of stanza `db` with more options.
fn info_json_with(s: &Setup, options: &[&str]) -> serde_json::Value {
    let mut args = vec!["--stanza=db", "info", "--output=json"];
    args.extend_from_slice(options);
    let o = s.ok(&args);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn setup_on(scratch: &Scratch, name: &str, cluster: &Cluster, repo_lines: &str, encrypted: Option<&str>) -> Setup {
    let mut conf = format!(
        "[global]\n{repo_lines}lock-path={}\nlog-level-file=off\nlog-level-console=warn\nlog-level-stderr=warn\n",
        scratch.path("lock").display()
    );
    if let Some(pass) = encrypted {
        conf.push_str(&format!("repo1-cipher-type=aes-256-gcm\nrepo1-cipher-pass={pass}\n"));
    }
    conf.push_str(&format!(
        "\n[db]\npg1-path={}\npg1-socket-path={}\npg1-port={}\npg1-user=postgres\n",
        cluster.data.display(),
        cluster.socket.display(),
        cluster.port
    ));
    Setup { config: scratch.write(name, &conf), env: vec![] }
}

fn setup(scratch: &Scratch, name: &str, cluster: &Cluster, repo: &Path, encrypted: Option<&str>) -> Setup {
    setup_on(scratch, name, cluster, &format!("repo1-path={}\n", repo.display()), encrypted)
}

fn archiving_cluster(scratch: &Scratch, name: &str, repo: &Path, encrypted: Option<&str>) -> (Cluster, Setup) {
    let lines = format!("repo1-path={}\n", repo.display());
    archiving_cluster_on(scratch, name, &lines, encrypted)
}

fn archiving_cluster_on(scratch: &Scratch, name: &str, repo_lines: &str, encrypted: Option<&str>) -> (Cluster, Setup) {
    let cluster = Cluster::init(scratch, name);
    let s = setup_on(scratch, &format!("{name}.conf"), &cluster, repo_lines, encrypted);
    cluster.configure(&format!(
        "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\n",
        s.command_prefix()
    ));
    cluster.start();
    (cluster, s)
}

/// The WAL objects of the first log directory (not the claims of their names).
fn list_archive(s: &Setup) -> Vec<String> {
    let o = s.ok(&["--stanza=db", "repo-ls", "stanza/db/archive/15-1/0000000100000000"]);
    String::from_utf8_lossy(&o.stdout).lines().filter(|k| !k.ends_with("-claim")).map(str::to_string).collect()
}

fn archive_round_trip(encrypted: Option<&str>) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-archive-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "main", &repo, encrypted);
    s.ok(&["--stanza=db", "stanza-create"]);
    // Again: already exists and is valid.
    s.ok(&["--stanza=db", "stanza-create"]);

    cluster.sql("create table t as select g as id, md5(g::text) as v from generate_series(1, 50000) g");
    let seg = cluster.archive_now();
    let listed = list_archive(&s);
    assert!(listed.iter().any(|k| k.starts_with(&format!("{seg}-"))), "{seg} not in {listed:?}");

    // archive-get gives back exactly the segment PostgreSQL wrote.
    let fetched = scratch.path("fetched").join(&seg);
    s.ok(&["--stanza=db", "archive-get", &seg, fetched.to_str().unwrap()]);
    let original = std::fs::read(cluster.data.join("pg_wal").join(&seg)).unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), original, "fetched segment differs");

    // Not in the archive: exit 1, PostgreSQL's "not available".
    let o = s.run(&["--stanza=db", "archive-get", "0000000100000000000000FE", "/tmp/never"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = s.run(&["--stanza=db", "archive-get", "00000002.history", "/tmp/never"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // The same segment pushed again: success with a warning, nothing added.
    let wal = cluster.data.join("pg_wal").join(&seg);
    let o = s.run(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"), "{}", text(&o));
    let before = list_archive(&s);

    // Different bytes under the same name: refused, nothing changed.
    let mut tampered = original.clone();
    tampered[100_000] ^= 0xff;
    let odd = scratch.path("odd").join(&seg);
    std::fs::write(&odd, &tampered).unwrap();
    support::chown_postgres(&odd);
    let o = s.run(&["--stanza=db", "archive-push", odd.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(45), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("different checksum"), "{}", text(&o));
    assert_eq!(list_archive(&s), before);

    // WAL of another cluster: refused, nothing changed.
    let other = Cluster::init(&scratch, "other");
    let foreign = other.data.join("pg_wal/000000010000000000000001");
    let o = s.run(&["--stanza=db", "archive-push", foreign.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(44), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("system id {}", other.control_sysid())),
        "{}",
        text(&o)
    );
    assert_eq!(list_archive(&s), before);

    // stanza-create of another cluster into this repository: refused.
    let s_other = setup(&scratch, "other.conf", &other, &repo, encrypted);
    let o = s_other.run(&["--stanza=db", "stanza-create", "--no-online"]);
    assert_eq!(o.status.code(), Some(58), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another database"), "{}", text(&o));

    // Unknown stanza: says so and how to fix it.
    let o = s.run(&["--stanza=nope", "archive-get", &seg, "/tmp/never"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("stanza 'nope' does not exist") && err.contains("stanza-create"), "{err}");

    // A damaged object aborts recovery (exit > 125), it does not look like "missing".
    let key = list_archive(&s).into_iter().find(|k| k.starts_with(&seg)).unwrap();
    let stored = repo.join("stanza/db/archive/15-1/0000000100000000").join(&key);
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&stored, &bytes).unwrap();
    let o = s.run(&["--stanza=db", "archive-get", &seg, "/tmp/never"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("corrupt"), "{}", text(&o));
    assert!(!Path::new("/tmp/never").exists());
}

#[test]
fn archive_push_and_get_unencrypted() {
    archive_round_trip(None);
}

#[test]
fn archive_push_and_get_encrypted() {
    archive_round_trip(Some(PASS));
}

#[test]
fn wrong_passphrase_is_refused_as_such() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-pass-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "main", &repo, Some(PASS));
    s.ok(&["--stanza=db", "stanza-create"]);
    let seg = cluster.archive_now();
    let wrong = setup(&scratch, "wrong.conf", &cluster, &repo, Some("not the passphrase"));
    let o = wrong.run(&["--stanza=db", "archive-get", &seg, "/tmp/never"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("wrong passphrase") && err.contains("HINT"), "{err}");
    let wal = cluster.data.join("pg_wal").join(&seg);
    let o = wrong.run(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(95), "{}", text(&o));
    let plain = setup(&scratch, "plain.conf", &cluster, &repo, None);
    let o = plain.run(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(95), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is encrypted"), "{}", text(&o));
}

/// Full backup while pgbench writes, more writes, restore into a new directory (tablespace
/// remapped), start it: recovery reaches the end of the archive and the data equals the source.
/// Mode bits of every file and directory under `dir`, by relative path.
fn modes(dir: &Path) -> std::collections::BTreeMap<String, u32> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path().strip_prefix(dir).unwrap().display().to_string(), m.permissions().mode() & 0o7777);
        }
    }
    out
}

fn backup_restore_cycle(backend: Backend, encrypted: Option<&str>) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-cycle-");
    let repo = scratch.path("repo");
    let Some(lines) = repo_options(backend, &repo) else { return };
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, encrypted);
    let ts_dir = scratch.path("ts1");
    cluster.sql(&format!("create tablespace ts1 location '{}'", ts_dir.display()));
    cluster.sql("create table in_ts (id int primary key, v text) tablespace ts1");
    cluster.sql("insert into in_ts select g, repeat(md5(g::text), 4) from generate_series(1, 20000) g");
    let init = cluster.tool("pgbench", &["-i", "-s", "3", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "stanza-create"]);
    // Modes come back as recorded, whether the umask could take bits from them or not.
    for (name, mode) in [("extra-0640.conf", 0o640), ("extra-0666.conf", 0o666), ("extra-0400.conf", 0o400)] {
        let path = cluster.data.join(name);
        std::fs::write(&path, name).unwrap();
        support::chown_postgres(&path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    // pgbench writes during the whole backup.
    let port = cluster.port.to_string();
    let socket = cluster.socket.display().to_string();
    let bench = {
        let bin = support::pg_bin().join("pgbench");
        std::thread::spawn(move || {
            support::run_as_postgres(
                &bin,
                &["-h", &socket, "-p", &port, "-U", "postgres", "-T", "8", "-c", "2", "-n", "postgres"],
                &[],
            )
        })
    };
    // The backup starts once pgbench's sessions are running (not after a guess of how long it takes).
    let began = std::time::Instant::now();
    while cluster.sql("select count(*) from pg_stat_activity where application_name = 'pgbench'") == "0" {
        assert!(began.elapsed() < std::time::Duration::from_secs(30), "pgbench never connected");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--process-max=2"]);
    let bench = bench.join().unwrap();
    assert!(bench.status.success(), "pgbench: {}", text(&bench));
    cluster.sql("insert into in_ts select g, 'after backup' from generate_series(20001, 21000) g");
    cluster.sql("create table after_backup as select * from pgbench_branches");
    cluster.archive_now();
    let expected = cluster.dumpall();

    check_info(&cluster, &s, encrypted.is_some());

    let ts_oid = cluster.sql("select oid from pg_tablespace where spcname = 'ts1'");
    let target = scratch.path("restored");
    let new_ts = scratch.path("ts1-restored");
    let pg1 = format!("--pg1-path={}", target.display());
    let map = format!("--tablespace-map={ts_oid}={}", new_ts.display());
    s.ok(&["--stanza=db", "restore", &pg1, &map, "--process-max=2"]);
    let (source_modes, restored_modes) = (modes(&cluster.data), modes(&target));
    let common: Vec<_> = source_modes.iter().filter(|(k, _)| restored_modes.contains_key(*k)).collect();
    assert!(common.len() > 500 && common.iter().any(|(k, _)| k.as_str() == "extra-0666.conf"));
    for (name, mode) in common {
        assert_eq!(restored_modes[name], *mode, "mode of {name}: {:o} restored as {:o}", mode, restored_modes[name]);
    }
    let restored = Cluster::existing(&scratch, target.clone(), "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    // The tablespace was restored elsewhere, as asked: that is the one expected difference.
    let got = restored.dumpall().replace(new_ts.to_str().unwrap(), ts_dir.to_str().unwrap());
    assert!(
        got == expected,
        "restored cluster differs from the source (dump sizes {} vs {})",
        got.len(),
        expected.len()
    );
    assert_eq!(restored.sql("select count(*) from in_ts"), "21000");
    assert_eq!(std::fs::read_link(target.join("pg_tblspc").join(&ts_oid)).unwrap(), new_ts);

    // Restoring over a running cluster is refused; over a non-empty directory without --delta too.
    let o = s.run(&["--stanza=db", "restore", &pg1, &map]);
    assert_eq!(o.status.code(), Some(38), "{}", text(&o));
    restored.stop();
    let o = s.run(&["--stanza=db", "restore", &pg1, &map]);
    assert_eq!(o.status.code(), Some(40), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--delta"), "{}", text(&o));

    if backend == Backend::Local {
        // --delta over the stopped cluster: only what differs is rewritten, and it recovers to
        // the same data again.
        let o = s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta", "--log-level-console=info"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let skipped: usize = out
            .lines()
            .find_map(|l| l.split("delta restore: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(skipped > 100, "delta rewrote almost everything: {out}");
        restored.start();
        restored.wait_promoted();
        let again = restored.dumpall().replace(new_ts.to_str().unwrap(), ts_dir.to_str().unwrap());
        assert!(again == expected, "delta-restored cluster differs from the source");
        restored.stop();

        // The recovery settings of the other types (written, not started here).
        s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta", "--type=standby"]);
        assert!(target.join("standby.signal").exists() && !target.join("recovery.signal").exists());
        let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        assert_eq!(auto.matches("restore_command = ").count(), 1, "{auto}");
        assert!(!auto.contains("recovery_target"), "{auto}");
        s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta", "--type=immediate", "--target-action=promote"]);
        assert!(target.join("recovery.signal").exists() && !target.join("standby.signal").exists());
        let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        assert_eq!(auto.matches("restore_command = ").count(), 1, "{auto}");
        assert!(
            auto.contains("recovery_target = 'immediate'") && auto.contains("recovery_target_action = 'promote'"),
            "{auto}"
        );
        // preserve: the settings and signal file the directory had survive the restore.
        s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta", "--type=preserve"]);
        assert!(target.join("recovery.signal").exists() && !target.join("standby.signal").exists());
        let kept = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        assert_eq!(kept.matches("restore_command = ").count(), 1, "{kept}");
        assert_eq!(kept.matches("recovery_target = 'immediate'").count(), 1, "{kept}");
        // An exclusive transaction target.
        s.ok(&["--stanza=db", "restore", &pg1, &map, "--delta", "--type=xid", "--target=1234", "--target-exclusive"]);
        let auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("recovery_target_xid = '1234'")
                && auto.contains("recovery_target_inclusive = 'false'")
                && auto.contains("recovery_target_action = 'pause'")
                && !auto.contains("recovery_target = 'immediate'"),
            "{auto}"
        );

        // A damaged pack: the restore names it and fails with 29 (never as a wrong passphrase);
        // the repository is left as it was. Chosen places of the pack's first part: its header
        // (magic, key id), a frame header, a frame body, the tag at the end of the first frame,
        // and the last frame's flags.
        let packs = repo.join("stanza/db/backup");
        let label = std::fs::read_dir(&packs).unwrap().next().unwrap().unwrap().path();
        let pack = label.join("pack/00000000");
        let good = std::fs::read(&pack).unwrap();
        let frame_len = |at: usize| 16 + u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        let mut last = 32;
        while good[last + 9] & 1 == 0 {
            last += frame_len(last);
        }
        let places = [
            ("header magic", 1),
            ("key id", 27),
            ("frame header", 32 + 8),
            ("frame body", 32 + 16 + 20),
            ("end of the first frame (tag)", 32 + frame_len(32) - 1),
            ("last frame's flags", last + 9),
        ];
        for (i, (place, at)) in places.into_iter().enumerate() {
            let mut bytes = good.clone();
            bytes[at] ^= 0x20;
            std::fs::write(&pack, &bytes).unwrap();
            let fresh = scratch.path(&format!("restored-from-damaged-{i}"));
            // Its own tablespace location: the one in use holds this cluster's directory already.
            let fresh_map =
                format!("--tablespace-map={ts_oid}={}", scratch.path(&format!("ts1-damaged-{i}")).display());
            let o = s.run(&["--stanza=db", "restore", &format!("--pg1-path={}", fresh.display()), &fresh_map]);
            assert_eq!(o.status.code(), Some(29), "{place}: {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(err.contains("pack/00000000"), "{place}: {err}");
            assert!(err.contains("corrupt") || err.contains("not a pgstrata object"), "{place}: {err}");
            assert!(!err.contains("cipher-pass"), "{place}: damage sent the user to their passphrase: {err}");
            assert_eq!(std::fs::read(&pack).unwrap(), bytes, "restore changed the repository");
        }
        std::fs::write(&pack, &good).unwrap();
    }
}

#[test]
fn full_backup_and_restore_local() {
    backup_restore_cycle(Backend::Local, None);
}

#[test]
fn full_backup_and_restore_local_encrypted() {
    backup_restore_cycle(Backend::Local, Some(PASS));
}

#[test]
fn full_backup_and_restore_s3() {
    backup_restore_cycle(Backend::S3, None);
}

#[test]
fn full_backup_and_restore_s3_encrypted() {
    backup_restore_cycle(Backend::S3, Some(PASS));
}

#[test]
fn full_backup_and_restore_azure_encrypted() {
    backup_restore_cycle(Backend::Azure, Some(PASS));
}

#[test]
fn full_backup_and_restore_gcs() {
    backup_restore_cycle(Backend::Gcs, None);
}

/// `info --output=json` in pgBackRest's schema, read the way pgMonitor and PGO read it: from
/// inside PostgreSQL with `COPY ... FROM PROGRAM`, then `jsonb_array_elements` over stanzas and
/// backups.
fn check_info(cluster: &Cluster, s: &Setup, encrypted: bool) {
    let o = s.ok(&["--stanza=db", "info", "--output=json", "--log-level-console=info", "--log-level-stderr=warn"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info prints only JSON");
    let stanza = &doc[0];
    assert_eq!(stanza["name"], "db");
    assert_eq!(stanza["status"]["code"], 0, "{stanza}");
    assert_eq!(stanza["cipher"], if encrypted { "aes-256-gcm" } else { "none" });
    assert_eq!(stanza["db"][0]["system-id"].as_u64().map(|v| v.to_string()), Some(cluster.control_sysid()));
    assert_eq!(stanza["db"][0]["version"], "15");
    let backup = &stanza["backup"][0];
    assert_eq!(backup["type"], "full");
    assert!(backup["label"].as_str().unwrap().ends_with('F'));
    assert!(backup["archive"]["start"].as_str().unwrap().len() == 24);
    assert!(backup["lsn"]["stop"].as_str().unwrap().contains('/'));
    let archive = &stanza["archive"][0];
    assert_eq!(archive["id"], "15-1");
    assert!(archive["min"].as_str().unwrap() <= backup["archive"]["start"].as_str().unwrap());
    assert!(archive["max"].as_str().unwrap() >= backup["archive"]["stop"].as_str().unwrap());

    let program = format!(
        "export LC_ALL=C \u{26}\u{26} printf \"\\f\" \u{26}\u{26} {} info --log-level-console=info --log-level-stderr=warn --output=json --stanza=db \u{26}\u{26} printf \"\\f\"",
        s.command_prefix().replace(" --stanza=db", "")
    );
    let sql = format!(
        "create temp table pgbackrest_info (data jsonb); \
         copy pgbackrest_info (data) from program '{program}' with (format csv, header false, quote E'\\f'); \
         with stanzas as (select jsonb_array_elements(data) s from pgbackrest_info), \
              backups as (select s->>'name' as stanza, jsonb_array_elements(s->'backup') b from stanzas) \
         select stanza, b->>'type', (b->'database'->>'repo-key')::int, \
                extract(epoch from now())::bigint - (b->'timestamp'->>'stop')::bigint, \
                (b->'timestamp'->>'stop')::bigint - (b->'timestamp'->>'start')::bigint, \
                (b->'info'->'repository'->>'delta')::bigint, (b->'info'->'repository'->>'size')::bigint, \
                (b->>'error')::boolean \
         from backups"
    );
    let out = cluster.sql(&sql);
    let row = out.lines().last().unwrap_or_default();
    let cols: Vec<&str> = row.split('|').collect();
    assert_eq!(cols.len(), 8, "{row}");
    assert_eq!(&cols[..3], ["db", "full", "1"], "{row}");
    let since: i64 = cols[3].parse().unwrap();
    let runtime: i64 = cols[4].parse().unwrap();
    let delta: i64 = cols[5].parse().unwrap();
    let size: i64 = cols[6].parse().unwrap();
    assert!((0..600).contains(&since) && runtime >= 0, "{row}");
    assert!(delta > 100_000 && size >= delta, "{row}");
    assert_eq!(cols[7], "f", "{row}");

    let text_out = s.ok(&["--stanza=db", "info"]);
    let t = String::from_utf8_lossy(&text_out.stdout).into_owned();
    assert!(t.contains("stanza: db") && t.contains("status: ok") && t.contains("full backup: "), "{t}");
    assert!(t.contains("wal archive min/max (15-1): "), "{t}");
}

/// Two repositories: a segment is acknowledged only once it is in both. Then `stanza-upgrade`
/// records a new database (as after pg_upgrade), after which that cluster's WAL is accepted.
#[test]
fn two_repositories_and_stanza_upgrade() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-multi-");
    let (r1, r2) = (scratch.path("repo1"), scratch.path("repo2"));
    let lines = format!("repo1-path={}\nrepo2-path={}\n", r1.display(), r2.display());
    let (cluster, s) = archiving_cluster_on(&scratch, "main", &lines, None);
    s.ok(&["--stanza=db", "stanza-create"]);
    let seg = cluster.archive_now();
    for repo in [&r1, &r2] {
        let dir = repo.join("stanza/db/archive/15-1/0000000100000000");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(
            names.iter().any(|n| n.starts_with(&format!("{seg}-")) && !n.ends_with("-claim")),
            "{seg} missing from {}: {names:?}",
            dir.display()
        );
    }

    // A new cluster takes over the stanza: refused until stanza-upgrade records it.
    let other = Cluster::init(&scratch, "upgraded");
    let s_other = setup_on(&scratch, "upgraded.conf", &other, &lines, None);
    let wal = other.data.join("pg_wal/000000010000000000000001");
    let o = s_other.run(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(44), "{}", text(&o));
    s_other.ok(&["--stanza=db", "stanza-upgrade", "--no-online"]);
    s_other.ok(&["--stanza=db", "stanza-upgrade", "--no-online"]);
    s_other.ok(&["--stanza=db", "archive-push", wal.to_str().unwrap()]);
    let o = s_other.ok(&["--stanza=db", "info", "--output=json", "--repo=1"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dbs = doc[0]["db"].as_array().unwrap();
    assert_eq!(dbs.len(), 2, "{doc}");
    assert_eq!(dbs[1]["system-id"].as_u64().map(|v| v.to_string()), Some(other.control_sysid()));
    assert!(
        r2.join("stanza/db/archive/15-2/0000000100000000").is_dir(),
        "the upgraded db archives under 15-2 in repo2 too"
    );
}

/// A page with a bad checksum is reported and recorded, and does not stop the backup.
#[test]
fn page_checksum_errors_are_recorded_not_fatal() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-pages-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "main", &repo, None);
    cluster.sql("create table victim as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
    cluster.sql("checkpoint");
    let rel = cluster.sql("select pg_relation_filepath('victim')");
    cluster.stop();
    let file = cluster.data.join(&rel);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8192 + 5000] ^= 0x5a; // inside page 1, after its header
    std::fs::write(&file, &bytes).unwrap();
    cluster.start();
    s.ok(&["--stanza=db", "stanza-create"]);
    let o = s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("invalid page checksums") && err.contains(&rel) && err.contains("[1]"), "{err}");
    let o = s.ok(&["--stanza=db", "info", "--output=json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc[0]["backup"][0]["error"], true, "{doc}");
    // checksum-page=n (pgBackRest's option): pages are not checked, nothing is reported.
    let o = s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast", "--no-checksum-page"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("invalid page checksums"), "{err}");
    let doc = info_json(&s);
    assert_eq!(doc[0]["backup"][1]["error"], false, "{doc}");
}
