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
    cluster.switch_wal(3);
    run(&["backup", "--type=incr", "--start-fast"]);
    cluster.switch_wal(3);
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

    // Metrics, read by the Prometheus project's own parser: before any verify, then after one.
    let s = Setup { config: conf.clone(), env: vec![] };
    let before = metrics(&s);
    assert!(!before.contains_key("pgstrata_check_last_problems"), "{before:?}");
    s.ok(&["--stanza=db", "verify"]);
    let m = metrics(&s);
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<f64> = m
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {m:?}"))
            .iter()
            .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0]
    };
    let info = info_json(&s);
    let full = &info[0]["backup"][0];
    let incr = &info[0]["backup"][1];
    let stop = |b: &serde_json::Value| b["timestamp"]["stop"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let base = [("stanza", "db"), ("repo", "1")];
    let since_full = one("ccp_backrest_last_full_backup_time_since_completion_seconds", &base);
    assert!((now - stop(full) - 5) as f64 <= since_full && since_full <= (now - stop(full)) as f64, "{since_full}");
    let since_incr = one("ccp_backrest_last_incr_backup_time_since_completion_seconds", &base);
    assert!(since_incr <= since_full && since_incr <= (now - stop(incr)) as f64);
    let incr_labels = [base[0], base[1], ("backup_type", "incr")];
    let runtime = one("ccp_backrest_last_info_backup_runtime_seconds", &incr_labels);
    assert_eq!(runtime, (stop(incr) - incr["timestamp"]["start"].as_i64().unwrap()) as f64);
    let size = one("ccp_backrest_last_info_repo_backup_size_bytes", &incr_labels);
    assert_eq!(size, incr["info"]["repository"]["delta"].as_u64().unwrap() as f64);
    assert_eq!(one("ccp_backrest_last_info_backup_error", &incr_labels), 0.0);
    assert_eq!(one("ccp_backrest_oldest_full_backup_time_seconds", &base), stop(full) as f64);
    let lag = one("pgstrata_archive_newest_segment_age_seconds", &base);
    assert!((0.0..120.0).contains(&lag), "archive lag {lag}");
    assert_eq!(one("pgstrata_check_last_problems", &[base[0], base[1], ("check", "verify")]), 0.0);

    // pgMonitor's and PGO's way: `info` JSON pulled into PostgreSQL by COPY FROM PROGRAM with
    // PGO's exact command (form feeds make the whole output one CSV field, so stdout must be
    // JSON only), then the ccp_backrest_* values computed in SQL from the fields they read.
    cluster.sql("create table pgbackrest_info (data jsonb)");
    cluster.sql(&format!(
        "copy pgbackrest_info (data) from program 'export LC_ALL=C && printf \"\\f\" && {} --config={} info \
         --log-level-console=info --log-level-stderr=warn --output=json --stanza=db && printf \"\\f\"' \
         with (format csv, header false, quote E'\\f')",
        link.display(),
        conf.display()
    ));
    let row = cluster.sql(
        "select extract(epoch from now())::bigint - max((b->'timestamp'->>'stop')::bigint) filter (where b->>'type' = 'full'), \
                min((b->'timestamp'->>'stop')::bigint) filter (where b->>'type' = 'full'), \
                sum((b->'info'->'repository'->>'delta')::bigint) filter (where b->>'type' = 'incr'), \
                max((b->'timestamp'->>'stop')::bigint - (b->'timestamp'->>'start')::bigint) filter (where b->>'type' = 'incr'), \
                count(*) filter (where b->>'error' = 'true'), string_agg(distinct b->'database'->>'repo-key', ',') \
         from pgbackrest_info, jsonb_array_elements(data) s, jsonb_array_elements(s->'backup') b",
    );
    let cols: Vec<&str> = row.split('|').collect();
    let full_age: f64 = cols[0].parse().unwrap();
    assert!((full_age - since_full).abs() <= 5.0, "SQL {full_age} vs exposition {since_full}");
    assert_eq!(cols[1].parse::<f64>().unwrap(), one("ccp_backrest_oldest_full_backup_time_seconds", &base));
    assert_eq!(cols[2].parse::<f64>().unwrap(), size);
    assert_eq!(cols[3].parse::<f64>().unwrap(), runtime);
    assert_eq!((cols[4], cols[5]), ("0", "1"), "{row}");

    // A segment after the latest backup (recovery to now needs it) removed from the archive.
    let info = info_json(&Setup { config: conf.clone(), env: vec![] });
    let incr_stop = info[0]["backup"][1]["archive"]["stop"].as_str().unwrap().to_string();
    let dir = repo.join("stanza/db/archive/15-1").join(&incr_stop[..16]);
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() > 24 && n.as_bytes()[24] == b'-' && n[..24] > *incr_stop && !n.ends_with("-claim"))
        .min()
        .expect("a segment after the incr");
    std::fs::rename(dir.join(&victim), scratch.path("aside").join("segment")).unwrap();
    let (code, out) = service(&tool, &link, &conf, &["--service=archives"]);
    assert_eq!(code, 2, "archives after removing {victim}: {out}");
    assert!(out.contains("(CRITICAL)") && out.contains("missing file(s)") && out.contains(&victim[..24]), "{out}");
    // verify finds it too, and the metrics say so.
    let o = s.run(&["--stanza=db", "verify"]);
    assert_eq!(o.status.code(), Some(103), "{}", text(&o));
    let m = metrics(&s);
    let problems = &m["pgstrata_check_last_problems"];
    assert!(problems.iter().any(|(l, v)| l["check"] == "verify" && *v >= 1.0), "{problems:?}");
}

type Samples = std::collections::BTreeMap<String, Vec<(std::collections::BTreeMap<String, String>, f64)>>;

/// `info --output=prometheus` as the Prometheus Python client's text parser reads it.
fn metrics(s: &Setup) -> Samples {
    let python = support::emulator("PGSTRATA_TEST_PROMETHEUS_PYTHON").expect("scripts/tools.sh sets it");
    let o = s.ok(&["--stanza=db", "info", "--output=prometheus"]);
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        out.setdefault(sample.name, []).append([sample.labels, sample.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    let parsed = child.wait_with_output().unwrap();
    assert!(parsed.status.success(), "the Prometheus parser refused the output: {}\n{}", text(&parsed), text(&o));
    serde_json::from_slice(&parsed.stdout).unwrap()
}
