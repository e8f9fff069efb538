//! `verify`: a healthy repository passes (exit 0); each kind of damage — a flipped byte in a
//! pack, a missing pack, a missing WAL segment a backup needs, a flipped byte in an archived
//! segment, a truncated manifest, a missing history file — is reported with the object it is in, and a non-zero exit.

use super::*;

/// The one object under `dir` whose file name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && !name.ends_with("-claim")
        })
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// Runs verify expecting a failure that names `object` (relative to the repository) with
/// `problem`; returns the JSON report.
#[track_caller]
fn fails_naming(s: &Setup, object: &str, problem: &str) -> serde_json::Value {
    let o = s.run(&["--stanza=db", "verify"]);
    assert_eq!(o.status.code(), Some(103), "verify did not fail: {}", text(&o));
    let said = text(&o);
    assert!(said.contains(object) && said.contains(problem), "verify did not name {object} ({problem}): {said}");
    let o = s.run(&["--stanza=db", "verify", "--output=json"]);
    assert_eq!(o.status.code(), Some(103));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["status"], "error", "{report}");
    report
}

/// An archiving cluster with pgbench data, a full backup, pgbench, `between` (SQL, if any), and
/// an incr backup.
fn full_then_incr(scratch: &Scratch, repo: &Path, encrypted: Option<&str>, between: &str) -> (Cluster, Setup) {
    let (cluster, s) = archiving_cluster(scratch, "src", repo, encrypted);
    s.ok(&["--stanza=db", "stanza-create"]);
    let init = cluster.tool("pgbench", &["-i", "-s", "2", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    let o = cluster.tool("pgbench", &["-t", "300", "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
    if !between.is_empty() {
        cluster.sql(between);
    }
    s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast"]);
    (cluster, s)
}

#[test]
fn verify_names_each_kind_of_damage_and_passes_a_healthy_repository() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-verify-");
    let repo = scratch.path("repo");
    let (cluster, s) = full_then_incr(&scratch, &repo, Some(PASS), "");
    // A second timeline: a clone restored from the full, promoted, archiving into the same stanza.
    let clone = scratch.path("clone");
    s.ok(&[
        "--stanza=db",
        "restore",
        &format!("--pg1-path={}", clone.display()),
        "--type=immediate",
        "--target-action=promote",
    ]);
    let c = Cluster::existing(&scratch, clone.clone(), "clone");
    // It archives into the stanza as its new primary would: naming its own data directory.
    c.configure(&format!("archive_command = '{} --pg1-path={} archive-push %p'", s.command_prefix(), clone.display()));
    c.start();
    c.wait_promoted();
    c.archive_now();
    c.stop();
    cluster.archive_now();

    let o = s.ok(&["--stanza=db", "verify", "--process-max=2"]);
    let said = text(&o);
    assert!(said.contains("repo1: ok (0 problems)"), "{said}");
    let info = info_json(&s);
    let labels: Vec<String> =
        info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect();
    let o = s.ok(&["--stanza=db", "verify", "--output=json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["status"], "ok");
    assert!(report[0]["backups"][0]["checked"]["parts"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report[0]["archive"][0]["timelines"].as_array().unwrap().len(), 2, "{report}");
    s.ok(&["--stanza=db", "verify", &format!("--set={}", labels[1])]);

    let backup_dir = |i: usize| repo.join("stanza/db/backup").join(&labels[i]);
    let rel = |p: &Path| p.strip_prefix(&repo).unwrap().display().to_string();

    // A flipped byte in a pack of the full.
    let pack = backup_dir(0).join("pack/00000000");
    let original = std::fs::read(&pack).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x01;
    std::fs::write(&pack, &flipped).unwrap();
    fails_naming(&s, &rel(&pack), "authentic");
    std::fs::write(&pack, &original).unwrap();
    s.ok(&["--stanza=db", "verify"]);

    // A missing pack.
    let aside = scratch.path("aside").join("object");
    std::fs::rename(&pack, &aside).unwrap();
    let report = fails_naming(&s, &rel(&pack), "is missing");
    let problems = report[0]["backups"][0]["problems"]["list"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["object"] == rel(&pack).as_str()), "{report}");
    std::fs::rename(&aside, &pack).unwrap();

    // A WAL segment the incr needs to reach consistency.
    let wal_start = info[0]["backup"][1]["archive"]["start"].as_str().unwrap().to_string();
    let seg = find(&repo.join("stanza/db/archive/15-1").join(&wal_start[..16]), &format!("{wal_start}-"));
    std::fs::rename(&seg, &aside).unwrap();
    fails_naming(&s, &wal_start, "needs it to reach consistency");
    std::fs::rename(&aside, &seg).unwrap();

    // A flipped byte in an archived segment.
    let stored = std::fs::read(&seg).unwrap();
    let mut flipped = stored.clone();
    flipped[stored.len() / 2] ^= 0x01;
    std::fs::write(&seg, &flipped).unwrap();
    fails_naming(&s, &rel(&seg), "");
    std::fs::write(&seg, &stored).unwrap();

    // A truncated manifest (its copy is whole: restore would still work, verify still says so).
    let manifest = backup_dir(1).join("backup.manifest");
    let whole = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &whole[..whole.len() / 2]).unwrap();
    fails_naming(&s, &rel(&manifest), "");
    std::fs::write(&manifest, &whole).unwrap();

    // A missing history file.
    let history = find(&repo.join("stanza/db/archive/15-1"), "00000002.history");
    std::fs::rename(&history, &aside).unwrap();
    fails_naming(&s, "00000002.history", "no history file");
    std::fs::rename(&aside, &history).unwrap();

    s.ok(&["--stanza=db", "verify"]);
}

#[test]
fn restore_test_passes_a_healthy_backup_and_fails_a_damaged_one() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-restore-test-");
    let repo = scratch.path("repo");
    let (cluster, s) = full_then_incr(&scratch, &repo, None, "create index on pgbench_history (mtime)");
    let work = scratch.path("rt");
    support::chown_postgres(&work);
    let at = format!("--restore-test-path={}", work.display());

    let o = s.ok(&["--stanza=db", "restore-test", &at, "--output=json"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["status"], "ok", "{report}");
    let steps: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["restore", "start", "recovery", "amcheck", "stop", "checksums"], "{report}");
    assert!(report["steps"][3]["detail"].as_str().unwrap().contains("heapallindexed"), "{report}");
    assert!(report["steps"][5]["detail"].as_str().unwrap().contains(" 0 bad"), "{report}");
    assert!(std::fs::read_dir(&work).unwrap().next().is_none(), "the scratch directory was left behind");
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("stanza/db/report/restore-test.json")).unwrap()).unwrap();
    assert_eq!((recorded["status"].as_str(), recorded["problems"].as_u64()), (Some("ok"), Some(0)), "{recorded}");
    // The source is untouched by the test (it ran on a private socket, in its own directory).
    assert_eq!(cluster.sql("select count(*) > 0 from pgbench_history"), "t");

    // A damaged pack of the latest backup: a clear failure, nothing left behind.
    let info = info_json(&s);
    let latest = info[0]["backup"][1]["label"].as_str().unwrap().to_string();
    let pack = repo.join("stanza/db/backup").join(&latest).join("pack/00000000");
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();
    let o = s.run(&["--stanza=db", "restore-test", &at]);
    assert_eq!(o.status.code(), Some(103), "{}", text(&o));
    let said = text(&o);
    assert!(said.contains(&format!("restore-test of backup {latest} failed at restore")), "{said}");
    assert!(said.contains("restore: FAILED"), "{said}");
    assert!(std::fs::read_dir(&work).unwrap().next().is_none(), "the scratch directory was left behind");
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("stanza/db/report/restore-test.json")).unwrap()).unwrap();
    assert_eq!(recorded["status"], "error", "{recorded}");
}
