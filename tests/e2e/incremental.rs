//! Differential and incremental backups: pgBackRest's types and priors, unchanged files
//! referenced without being opened, and every backup of a chain restoring to the cluster as it
//! was when that backup ended.

use super::*;

fn pgbench(cluster: &Cluster, transactions: &str) {
    let o = cluster.tool("pgbench", &["-t", transactions, "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
}

/// The data file of a table, in the data directory.
fn relation_file(cluster: &Cluster, table: &str) -> std::path::PathBuf {
    cluster.data.join(cluster.sql(&format!("select pg_relation_filepath('{table}')")))
}

#[test]
fn full_diff_incr_chain_restores_every_backup_local() {
    chain(Backend::Local, None);
}

#[test]
fn full_diff_incr_chain_restores_every_backup_s3_encrypted() {
    chain(Backend::S3, Some("incremental passphrase"));
}

fn chain(backend: Backend, encrypted: Option<&str>) {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-incr-");
    let repo = scratch.path("repo");
    let Some(lines) = repo_options(backend, &repo) else { return };
    let (cluster, s) = archiving_cluster_on(&scratch, "src", &lines, encrypted);
    let init = cluster.tool("pgbench", &["-i", "-s", "2", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    cluster.sql("create table cold as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
    cluster.sql("create table shrinking as select g as id, repeat('x', 200) as v from generate_series(1, 20000) g");
    cluster.sql("create table recreated as select g as id from generate_series(1, 1000) g");
    // Settled (hint bits, visibility map), so nothing writes the cold table's file again.
    cluster.sql("vacuum freeze");
    cluster.sql("checkpoint");
    s.ok(&["--stanza=db", "stanza-create"]);
    // A file written in the second a backup starts is read again by the next one (its time
    // cannot tell a write before the copy from one after): let the cold file's second pass.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // No --type: pgBackRest's default is incr, and the first one becomes a full.
    let o = s.ok(&["--stanza=db", "backup", "--start-fast", "--log-level-console=warn"]);
    assert!(text(&o).contains("no prior backup exists, incr backup has been changed to full"), "{}", text(&o));
    let mut dumps = vec![cluster.dumpall()];

    // An unchanged file is not even opened: the cold table's file made unreadable (its size
    // and time kept) does not trouble an incr, while a full could not read it.
    let cold = relation_file(&cluster, "cold");
    std::fs::set_permissions(&cold, std::fs::Permissions::from_mode(0o000)).unwrap();
    pgbench(&cluster, "300");
    let o = s.run(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    assert_eq!(o.status.code(), Some(42), "a full backup read past an unreadable file: {}", text(&o));
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    s.ok(&["--stanza=db", "backup", "--type=diff", "--start-fast"]);
    std::fs::set_permissions(&cold, std::fs::Permissions::from_mode(0o600)).unwrap();
    dumps.push(cluster.dumpall());

    // Between backups: a table dropped and made again, a relation truncated by VACUUM, a new
    // database and a tablespace.
    let ts_dir = scratch.path("ts1");
    cluster.sql(&format!("create tablespace ts1 location '{}'", ts_dir.display()));
    cluster
        .sql("create table in_ts tablespace ts1 as select g as id, md5(g::text) as v from generate_series(1, 5000) g");
    cluster.sql("drop table recreated");
    cluster.sql("create table recreated as select g as id, g * 2 as twice from generate_series(1, 3000) g");
    cluster.sql("delete from shrinking where id > 2000");
    cluster.sql("vacuum shrinking");
    cluster.sql("create database second");
    pgbench(&cluster, "300");
    s.ok(&["--stanza=db", "backup", "--start-fast"]);
    dumps.push(cluster.dumpall());

    pgbench(&cluster, "300");
    cluster.sql("insert into in_ts select g, 'later' from generate_series(5001, 6000) g");
    s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast"]);
    dumps.push(cluster.dumpall());
    cluster.archive_now();

    // The catalog: types, priors and references as pgBackRest reports them.
    let info = info_json(&s);
    let backups = info[0]["backup"].as_array().unwrap();
    let kinds: Vec<&str> = backups.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["full", "diff", "incr", "incr"]);
    let labels: Vec<String> = backups.iter().map(|b| b["label"].as_str().unwrap().to_string()).collect();
    assert!(backups[0]["prior"].is_null() && backups[0]["reference"].is_null());
    for (i, prior) in [(1, 0), (2, 1), (3, 2)] {
        assert_eq!(backups[i]["prior"].as_str(), Some(labels[prior].as_str()), "prior of {}", labels[i]);
        assert!(labels[i].starts_with(&labels[0]), "{} is not named after its full", labels[i]);
    }
    let refs: Vec<&str> = backups[3]["reference"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(refs, [labels[0].as_str(), labels[1].as_str(), labels[2].as_str()]);
    for b in &backups[1..] {
        let (size, delta) = (b["info"]["size"].as_u64().unwrap(), b["info"]["delta"].as_u64().unwrap());
        let (repo, repo_delta) =
            (b["info"]["repository"]["size"].as_u64().unwrap(), b["info"]["repository"]["delta"].as_u64().unwrap());
        eprintln!("{}: copied {delta} of {size} bytes, stored {repo_delta} of {repo}", b["label"]);
        // Page-level: of the pgbench tables only the pages pgbench changed.
        assert!(delta * 3 < size, "{} copied {delta} of {size} bytes", b["label"]);
        assert!(repo_delta < repo, "{}: repository delta {repo_delta}, size {repo}", b["label"]);
    }

    // One backup in detail: its databases, tablespaces and how its files were taken.
    let set = format!("--set={}", labels[2]);
    let o = s.ok(&["--stanza=db", "info", &set]);
    let detail = text(&o);
    assert!(detail.contains(&labels[2]) && !detail.contains(&format!("backup: {}\n", labels[1])), "{detail}");
    assert!(detail.contains("database list: ") && detail.contains("second ("), "{detail}");
    assert!(detail.contains("ts1 (") && detail.contains("backup reference list: "), "{detail}");
    let o = s.run(&["--stanza=db", "info", "--set=20990101-000000F"]);
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(text(&o).contains("backup set 20990101-000000F is not in any repository"), "{}", text(&o));
    let detail = info_json_with(&s, &[&set]);
    let only = &detail[0]["backup"];
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    let file = &only[0]["file"];
    assert!(file["page"].as_u64().unwrap() > 0 && file["referenced"].as_u64().unwrap() > 500, "{file}");
    assert!(only[0]["database-ref"].as_array().unwrap().iter().any(|d| d["name"] == "second"), "{only}");

    // Each backup restores to the cluster as that backup left it.
    let ts_oid = cluster.sql("select oid from pg_tablespace where spcname = 'ts1'");
    for (i, label) in labels.iter().enumerate() {
        let dir = scratch.path(&format!("restored-{i}"));
        let ts = scratch.path(&format!("ts1-restored-{i}"));
        let pg1 = format!("--pg1-path={}", dir.display());
        let map = format!("--tablespace-map={ts_oid}={}", ts.display());
        let set = format!("--set={label}");
        let mut args = vec!["--stanza=db", "restore", &pg1, &set, "--type=immediate", "--target-action=promote"];
        if i >= 2 {
            args.push(&map);
        }
        s.ok(&args);
        if i == 1 {
            // The diff recorded the cold file's mode as it was then, and restored it so.
            let cold_copy = dir.join(cold.strip_prefix(&cluster.data).unwrap());
            let mode = std::fs::metadata(&cold_copy).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0, "the diff's record of the cold file's mode");
            std::fs::set_permissions(&cold_copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let restored = Cluster::existing(&scratch, dir, &format!("restored-{i}"));
        restored.configure("archive_mode = off");
        restored.start();
        restored.wait_promoted();
        let got = restored.dumpall().replace(ts.to_str().unwrap(), ts_dir.to_str().unwrap());
        assert!(got == dumps[i], "backup {label} ({}) restored differently from the cluster it was taken of", kinds[i]);
        let checked = restored.tool("pg_amcheck", &["--all", "--install-missing", "--heapallindexed"]);
        assert!(checked.status.success(), "amcheck after restoring {label}: {}", text(&checked));
        restored.stop();
        let sums = run_as_postgres(
            &support::pg_bin().join("pg_checksums"),
            &["--check", "-D", restored.data.to_str().unwrap()],
            &[],
        );
        assert!(sums.status.success(), "pg_checksums after restoring {label}: {}", text(&sums));
    }

    // Delta restore of the last incr over the cluster restored from it, which has since run
    // (promoted, checkpointed), with one page damaged behind PostgreSQL's back (size and time
    // kept), a file deleted and a stray one added: byte for byte what a clean restore writes,
    // and only what differs is rewritten.
    let last = labels.last().unwrap();
    let (target, ts) = (scratch.path("restored-3"), scratch.path("ts1-restored-3"));
    let accounts = target.join(relation_file(&cluster, "pgbench_accounts").strip_prefix(&cluster.data).unwrap());
    let mtime = std::fs::metadata(&accounts).unwrap().modified().unwrap();
    let mut damaged = std::fs::read(&accounts).unwrap();
    damaged[5 * 8192..6 * 8192].fill(0x5a);
    std::fs::write(&accounts, &damaged).unwrap();
    std::fs::File::options().write(true).open(&accounts).unwrap().set_modified(mtime).unwrap();
    std::fs::remove_file(target.join(cold.strip_prefix(&cluster.data).unwrap())).unwrap();
    std::fs::write(target.join("base/5/999999"), b"stray").unwrap();
    support::chown_postgres(&target);
    let args = |extra: &[&str], dir: &Path, ts: &Path| {
        let mut all: Vec<String> = vec![
            "--stanza=db".into(),
            "restore".into(),
            format!("--pg1-path={}", dir.display()),
            format!("--tablespace-map={ts_oid}={}", ts.display()),
            format!("--set={last}"),
            "--type=immediate".into(),
        ];
        all.extend(extra.iter().map(|a| a.to_string()));
        all
    };
    let delta = args(&["--delta", "--log-level-console=info"], &target, &ts);
    let o = s.ok(&delta.iter().map(String::as_str).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = said.lines().find(|l| l.contains("delta restore: ")).unwrap_or_default().to_string();
    eprintln!("{line}");
    let (clean, clean_ts) = (scratch.path("clean"), scratch.path("ts1-clean"));
    let plain = args(&[], &clean, &clean_ts);
    s.ok(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    let (got, want) = (tree_contents(&target, &ts), tree_contents(&clean, &clean_ts));
    let differ: Vec<&String> = want.keys().chain(got.keys()).filter(|k| got.get(*k) != want.get(*k)).collect();
    assert!(differ.is_empty(), "the delta restore differs from a clean one at {differ:?}");
    assert_eq!(tree_contents(&ts, &ts), tree_contents(&clean_ts, &clean_ts), "the tablespace differs");
    assert!(!line.contains(" 0 files were already"), "{line}");

    // Over a clean restore with only one page damaged, a delta restore rewrites that one page
    // (compared page by page with the digests the manifest has of a relation's pages).
    let accounts = clean.join(relation_file(&cluster, "pgbench_accounts").strip_prefix(&cluster.data).unwrap());
    let mut damaged = std::fs::read(&accounts).unwrap();
    damaged[9 * 8192..10 * 8192].fill(0xa5);
    std::fs::write(&accounts, &damaged).unwrap();
    support::chown_postgres(&accounts);
    let delta = args(&["--delta", "--log-level-console=info"], &clean, &clean_ts);
    let o = s.ok(&delta.iter().map(String::as_str).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = said.lines().find(|l| l.contains("delta restore: ")).unwrap_or_default().to_string();
    eprintln!("{line}");
    // The damaged page, and the few small files restore writes anew each time (pg_control,
    // held back and put in place; tablespace_map, rewritten for the new location).
    let written = line
        .split("rewritten: ")
        .nth(1)
        .and_then(|rest| rest.split(" written").next())
        .and_then(|human| {
            let digits = human.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = match &human[digits.len()..] {
                "B" => 1.0,
                "KB" => 1e3,
                "MB" => 1e6,
                _ => return None,
            };
            digits.parse::<f64>().ok().map(|n| n * unit)
        })
        .unwrap_or(f64::MAX);
    assert!(written < 40e3, "a one-page repair wrote more than its page: {line}");
    assert_eq!(tree_contents(&clean, &clean_ts), want, "the repaired restore differs from the clean one");

    // pgBackRest's shortcut, `--delta --force`, trusts size and time: a page damaged with both
    // kept stays damaged (why the docs call it unsafe). `--force` alone rewrites every file.
    let mtime = std::fs::metadata(&accounts).unwrap().modified().unwrap();
    std::fs::write(&accounts, &damaged).unwrap();
    std::fs::File::options().write(true).open(&accounts).unwrap().set_modified(mtime).unwrap();
    let shortcut = args(&["--delta", "--force"], &clean, &clean_ts);
    s.ok(&shortcut.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(std::fs::read(&accounts).unwrap(), damaged, "--delta --force read a file of the right size and time");
    let force = args(&["--force", "--log-level-console=info"], &clean, &clean_ts);
    let o = s.ok(&force.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text(&o).contains("delta restore: 0 files were already up to date"), "{}", text(&o));
    assert_eq!(tree_contents(&clean, &clean_ts), want, "--force did not rewrite the damaged file");
}

/// Every file under `dir` with a digest of its content and its mode, and every link but the
/// tablespace links with its target. The paths of `dir` and of the tablespace `ts` are taken out
/// of the content first (the recovery settings and `tablespace_map` name them).
fn tree_contents(dir: &Path, ts: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let (p, m) = (e.path(), std::fs::symlink_metadata(e.path()).unwrap());
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if m.is_dir() {
                todo.push(p);
            } else if m.is_file() {
                let mut content = std::fs::read(&p).unwrap();
                if let Ok(text) = std::str::from_utf8(&content) {
                    let text = text.replace(ts.to_str().unwrap(), "<ts>").replace(dir.to_str().unwrap(), "<dir>");
                    content = text.into_bytes();
                }
                let digest = pgstrata_repo_format::Sha256Digest::of(&content);
                out.insert(rel, format!("{digest} {:o}", m.permissions().mode() & 0o7777));
            } else if !rel.starts_with("pg_tblspc/") {
                out.insert(rel, std::fs::read_link(&p).unwrap().display().to_string());
            }
        }
    }
    out
}

/// After a promotion the cluster is on a new timeline and file times cannot be trusted (the
/// files of a restore carry the backup's times): the next incr compares every file by content
/// with its prior, and still stores only what differs.
#[test]
fn an_incr_after_a_timeline_change_compares_by_content() {
    if !postgres_available() {
        return;
    }
    let scratch = Scratch::new("pgstrata-incr-tli-");
    let repo = scratch.path("repo");
    let (cluster, s) = archiving_cluster(&scratch, "src", &repo, None);
    let init = cluster.tool("pgbench", &["-i", "-s", "2", "-q", "postgres"]);
    assert!(init.status.success(), "pgbench -i: {}", text(&init));
    s.ok(&["--stanza=db", "stanza-create"]);
    s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);
    cluster.archive_now();

    // The backup restored and promoted: timeline 2, archiving into the same stanza.
    let dir = scratch.path("promoted");
    let pg1 = format!("--pg1-path={}", dir.display());
    s.ok(&["--stanza=db", "restore", &pg1, "--type=immediate", "--target-action=promote"]);
    let promoted = Cluster::existing(&scratch, dir, "promoted");
    let p = setup(&scratch, "promoted.conf", &promoted, &repo, None);
    // The clone takes the stanza over with its own configuration (its pg1-path is here).
    promoted.configure(&format!("archive_command = '{} archive-push %p'", p.command_prefix()));
    promoted.start();
    promoted.wait_promoted();
    cluster.stop();
    let o = promoted.tool("pgbench", &["-t", "200", "-c", "2", "-n", "postgres"]);
    assert!(o.status.success(), "pgbench: {}", text(&o));
    let o = p.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast", "--log-level-console=warn"]);
    assert!(text(&o).contains("timeline changed since backup"), "{}", text(&o));
    let expected = promoted.dumpall();
    promoted.archive_now();

    let info = info_json(&p);
    let incr = &info[0]["backup"][1];
    assert_eq!(incr["type"], "incr");
    let (size, delta) = (incr["info"]["size"].as_u64().unwrap(), incr["info"]["delta"].as_u64().unwrap());
    eprintln!("incr after the promotion: copied {delta} of {size} bytes");
    // Page by page (the prior's page digests): pgbench's random updates touch every 1 MiB chunk
    // of pgbench_accounts, but only a few hundred of its pages.
    assert!(delta * 5 < size, "compared by content, the incr still copied {delta} of {size} bytes");
    // Every file was read; those with the prior's content are referenced, not stored.
    let set = format!("--set={}", incr["label"].as_str().unwrap());
    let detail = info_json_with(&p, &[&set]);
    let file = &detail[0]["backup"][0]["file"];
    assert!(file["referenced"].as_u64().unwrap() > 500, "{file}");

    let target = scratch.path("restored");
    let label = format!("--set={}", incr["label"].as_str().unwrap());
    let pg1 = format!("--pg1-path={}", target.display());
    p.ok(&["--stanza=db", "restore", &pg1, &label, "--type=immediate", "--target-action=promote"]);
    let restored = Cluster::existing(&scratch, target, "restored");
    restored.configure("archive_mode = off");
    restored.start();
    restored.wait_promoted();
    assert!(restored.dumpall() == expected, "the incr taken after the promotion restored differently");
}

/// Every permanent user table of every database (an unlogged one is empty after a restore, as
/// after a crash), each as (database, table, rows and a digest of its rows):
/// what a restored cluster must equal (any major: no pg_dump of another version needed).
fn contents(cluster: &Cluster) -> Vec<(String, String, String)> {
    let dbs = cluster.sql("select string_agg(datname, ' ' order by datname) from pg_database where datallowconn");
    let mut out = Vec::new();
    for db in dbs.split_whitespace() {
        let o = cluster.try_sql_in(
            db,
            "select string_agg(format('%I.%I', n.nspname, c.relname), ' ' order by n.nspname, c.relname) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'r' and c.relpersistence = 'p' and n.nspname not in ('pg_catalog', 'information_schema')",
        );
        assert!(o.status.success(), "{db}: {}", text(&o));
        for table in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let o = cluster.try_sql_in(
                db,
                &format!("select count(*) || ' ' || coalesce(md5(string_agg(md5(t::text), '' order by md5(t::text))), '') from {table} t"),
            );
            assert!(o.status.success(), "{db}.{table}: {}", text(&o));
            out.push((db.to_string(), table.to_string(), String::from_utf8_lossy(&o.stdout).trim().to_string()));
        }
    }
    out
}

/// The bytes the last backup's log says it read from the primary (`read 831 files (42.3MB)`).
fn read_bytes(said: &str) -> f64 {
    let line = said.lines().find(|l| l.contains("from the primary")).unwrap_or_else(|| panic!("no read line: {said}"));
    let amount = line.split('(').nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
    let digits = amount.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(amount.len());
    let n: f64 = amount[..digits].parse().unwrap_or_else(|_| panic!("{line}"));
    n * match amount[digits..].trim() {
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    }
}

/// On PostgreSQL 17 and 18 with `summarize_wal = on`, an incr reads only the blocks the WAL
/// summaries name (and new and truncated pages); after every kind of change a workload makes —
/// updates, deletes with a truncating VACUUM, VACUUM FULL, a table dropped and made again,
/// CREATE DATABASE by both strategies, ALTER TABLE SET TABLESPACE, an unlogged table — and with
/// the summarizer switched off and on between backups (then the summaries have a gap and the
/// incr reads changed files whole, saying why), every backup of the chain restores to the
/// cluster's contents, and verify passes.
#[test]
fn incrementals_from_wal_summaries_read_only_what_changed() {
    if !postgres_available() {
        return;
    }
    for major in [17, 18] {
        let Some(server) = crate::support::server_bin(major) else { return };
        let scratch = Scratch::new(&format!("pgstrata-summary-{major}-"));
        let repo = scratch.path("repo");
        let cluster = Cluster::init_on(&server, &scratch, "src", &[]);
        let s = setup(&scratch, "src.conf", &cluster, &repo, None);
        cluster.configure(&format!(
            "archive_mode = on\narchive_command = '{} archive-push %p'\nwal_level = replica\nsummarize_wal = on\n",
            s.command_prefix()
        ));
        cluster.start();
        let ts = scratch.path("ts");
        cluster.sql(&format!("create tablespace ts location '{}'", ts.display()));
        let init = cluster.tool("pgbench", &["-i", "-s", "3", "-q", "postgres"]);
        assert!(init.status.success(), "pgbench -i: {}", text(&init));
        cluster.sql("create table big as select g as id, md5(g::text) as v from generate_series(1, 200000) g");
        cluster.sql("create table shrinks as select g as id, md5(g::text) as v from generate_series(1, 50000) g");
        cluster.sql("create table rewritten as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
        cluster.sql("create table dropped as select g as id from generate_series(1, 20000) g");
        cluster.sql("create table moved as select g as id, md5(g::text) as v from generate_series(1, 20000) g");
        cluster.sql("create unlogged table scratchpad as select g as id from generate_series(1, 1000) g");
        // Hint bits set before the full (with checksums, setting them is WAL-logged: a first
        // scan after the full would change every page of a freshly loaded table).
        cluster.sql("vacuum");
        s.ok(&["--stanza=db", "stanza-create"]);
        s.ok(&["--stanza=db", "backup", "--type=full", "--start-fast"]);

        // Updates scattered over the two large tables: only their changed pages are read.
        cluster.sql("update big set v = 'changed' where id % 500 = 0");
        pgbench(&cluster, "300");
        let o = s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast", "--log-level-console=info"]);
        let said = text(&o);
        assert!(said.contains("incremental from WAL summaries"), "PostgreSQL {major}: {said}");
        let read = read_bytes(&said);
        let tables: f64 = cluster
            .sql("select pg_total_relation_size('big') + pg_total_relation_size('pgbench_accounts')")
            .parse()
            .unwrap();
        // The changed pages (a few per hundred) and little else; without the summaries every
        // changed file of both tables is read whole.
        assert!(read * 3.0 < tables, "PostgreSQL {major}: the incr read {read} of {tables} bytes: {said}");
        let scattered = contents(&cluster);
        // A file read only where the summaries say has no whole-file checksum to show: `-`,
        // not the SHA-256 of nothing (which `verify` or a script would take for a digest).
        let info: serde_json::Value =
            serde_json::from_slice(&s.ok(&["--stanza=db", "info", "--output=json"]).stdout).unwrap();
        let label = info[0]["backup"].as_array().and_then(|b| b.last()).unwrap()["label"].as_str().unwrap().to_string();
        let m = s.ok(&["--stanza=db", "manifest", &format!("--set={label}"), "--output=json"]);
        let m: serde_json::Value = serde_json::from_slice(&m.stdout).unwrap();
        let files = m["fileList"].as_array().expect("files in the manifest");
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let nothing = |f: &&serde_json::Value| f["size"] != 0 && f["checksum"] == empty;
        assert!(!files.iter().any(|f| nothing(&f)), "PostgreSQL {major}: a checksum of nothing shown");
        assert!(files.iter().any(|f| f["checksum"].is_null()), "PostgreSQL {major}: no summary-read file shown");

        // Every kind of change, then an incr by the summaries.
        cluster.sql("delete from shrinks where id > 20000");
        cluster.sql("vacuum shrinks");
        cluster.sql("insert into shrinks select g, 'again' from generate_series(20001, 20100) g");
        cluster.sql("vacuum full rewritten");
        cluster.sql("drop table dropped");
        cluster.sql("create table dropped as select g as id from generate_series(1, 30000) g");
        cluster.sql("alter table moved set tablespace ts");
        cluster.sql("update moved set v = 'moved' where id % 3 = 0");
        cluster.sql("insert into scratchpad select g from generate_series(1, 1000) g");
        cluster.sql("create database by_wal strategy wal_log");
        cluster.sql("create database by_copy strategy file_copy");
        let o = cluster.try_sql_in("by_copy", "create table c as select g as id from generate_series(1, 5000) g");
        assert!(o.status.success(), "{}", text(&o));
        let o = cluster.try_sql_in("by_wal", "create table w as select g as id from generate_series(1, 5000) g");
        assert!(o.status.success(), "{}", text(&o));
        pgbench(&cluster, "300");
        let o = s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast", "--log-level-console=info"]);
        assert!(text(&o).contains("incremental from WAL summaries"), "PostgreSQL {major}: {}", text(&o));
        let first = contents(&cluster);

        // The summarizer off, changes, on again: the range has a gap — files are read whole.
        cluster.sql("alter system set summarize_wal = off");
        cluster.sql("select pg_reload_conf()");
        cluster.sql("update big set v = 'while off' where id % 700 = 0");
        cluster.sql("checkpoint");
        cluster.sql("alter system set summarize_wal = on");
        cluster.sql("select pg_reload_conf()");
        cluster.sql("update big set v = 'on again' where id % 900 = 0");
        let o = s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast", "--log-level-console=info"]);
        let said = text(&o);
        assert!(said.contains("WAL summaries not used"), "PostgreSQL {major}: {said}");
        // And the next one by the summaries again.
        cluster.sql("update big set v = 'last' where id % 1100 = 0");
        cluster.sql("truncate scratchpad");
        let o = s.ok(&["--stanza=db", "backup", "--type=incr", "--start-fast", "--log-level-console=info"]);
        assert!(text(&o).contains("incremental from WAL summaries"), "PostgreSQL {major}: {}", text(&o));
        let last = contents(&cluster);
        cluster.archive_now();
        s.ok(&["--stanza=db", "verify"]);

        let info = info_json(&s);
        let labels: Vec<String> =
            info[0]["backup"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap().to_string()).collect();
        for (label, expected) in [(&labels[1], &scattered), (&labels[2], &first), (&labels[4], &last)] {
            let target = scratch.dir.path().join(format!("restored-{label}"));
            let pg1 = format!("--pg1-path={}", target.display());
            let map = format!("--tablespace-map-all={}", scratch.path(&format!("ts-{label}")).display());
            let set = format!("--set={label}");
            s.ok(&["--stanza=db", "restore", &pg1, &set, &map, "--type=immediate", "--target-action=promote"]);
            let restored = Cluster::existing(&scratch, target, &format!("restored-{label}"));
            restored.configure("archive_mode = off");
            restored.start();
            restored.wait_promoted();
            let got = contents(&restored);
            let differs: Vec<_> = got.iter().zip(expected.iter()).filter(|(a, b)| a != b).collect();
            assert!(
                got.len() == expected.len() && differs.is_empty(),
                "PostgreSQL {major}: backup {label} restored differently: {differs:?} ({} tables, {} expected)",
                got.len(),
                expected.len()
            );
            restored.stop();
        }
        cluster.stop();
    }
}
