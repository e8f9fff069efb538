//! `restore-test`: proves a backup restores, as the Job an operator schedules after each backup.
//! Restores the latest backup (or `--set`) into a scratch directory (`restore-test-path`; its
//! tablespaces and links mapped inside it), starts PostgreSQL there on a private socket with no
//! TCP listener and archiving off, lets it recover to consistency (or `--type`/`--target`) and
//! promote, checks every database with amcheck through SQL (`bt_index_check` with
//! `heapallindexed` on every B-tree index, `verify_heapam` on every heap where amcheck has it),
//! stops it, checks every page of every relation file with pgstrata's own page code (as
//! `pg_checksums --check` does), reports each step with its time (text or `--output=json`), records the
//! result in the repository (`info --output=prometheus` shows it), removes the scratch directory,
//! and exits non-zero when any step failed.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pgstrata_repo_format::meta::ManifestEntry;
use serde::Serialize;

use crate::error::{CliError, CliResult, ErrorCode};
use crate::manifest::ManifestStream;
use crate::repo::RepoTarget;
use crate::repo::open_repo;
use crate::restore::RestoreRequest;

#[derive(Debug, Serialize)]
struct Step {
    step: &'static str,
    ok: bool,
    seconds: f64,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    stanza: String,
    repo: u32,
    backup: String,
    status: &'static str,
    steps: Vec<Step>,
}

/// A PostgreSQL program to run on the restored cluster, without the secrets of our environment
/// (passphrases, storage credentials): it needs none of them.
fn child(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if ["PGSTRATA_", "PGBACKREST_", "WALG_", "WALE_", "AWS_", "AZURE_", "GOOGLE_"].iter().any(|p| k.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The scratch directory; removed when dropped, whatever happened.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("unable to remove the scratch directory {}: {e}", self.0.display());
        }
    }
}

/// How the front end makes the restore of one backup into a scratch data directory: the
/// directory, the backup's label, and the tablespace and link maps (`tablespace-map`/`link-map`,
/// `name=path`) that keep everything inside the scratch directory.
pub type RestoreFactory =
    dyn Fn(&std::path::Path, &str, &[(&'static str, String)]) -> CliResult<RestoreRequest> + Send + Sync;

/// What `restore-test` was asked for, resolved once by a front end.
pub struct RestoreTestRequest {
    pub stanza: String,
    pub repo: RepoTarget,
    /// `--set`, else the newest backup.
    pub set: Option<String>,
    /// `pg-bin`: the server's programs (default Debian's for the backup's major).
    pub pg_bin: Option<PathBuf>,
    /// `restore-test-path`: where the scratch directory is made (default the temporary one).
    pub base: Option<PathBuf>,
    /// `restore-test-timeout`: how long recovery may take.
    pub timeout: Duration,
    /// The database user the checks connect as (`pg1-user`, else the OS user).
    pub user: String,
    /// `--output=json`.
    pub json: bool,
    pub restore: Box<RestoreFactory>,
}

impl std::fmt::Debug for RestoreTestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreTestRequest").field("stanza", &self.stanza).field("set", &self.set).finish()
    }
}

pub fn run(request: &RestoreTestRequest) -> CliResult<()> {
    let stanza = request.stanza.clone();
    if crate::restore::owner::am_root() {
        return Err(CliError::new(
            ErrorCode::CommandInvalid,
            "restore-test starts PostgreSQL, which does not run as root",
        )
        .hint("run it as the database's OS user (postgres), as the backup runs"));
    }
    let (repo_index, label, pg_version, maps) = crate::runtime::runtime()?.block_on(async {
        let repo = open_repo(&request.repo, &stanza).await?;
        let catalog = repo.load_catalog().await?;
        let backup = match request.set.as_deref() {
            Some(set) => catalog.backups.iter().find(|b| b.label.as_str() == set),
            None => catalog.backups.last(),
        }
        .ok_or_else(|| {
            CliError::new(ErrorCode::BackupSetInvalid, format!("no backup to test in {}", repo.name()))
                .hint("take a backup first, or name one with --set")
        })?;
        let pg_version = repo.info.db_history.iter().find(|d| d.id == backup.db_id).map_or(0, |d| d.pg_version);
        // Where the backup's tablespaces and links go: inside the scratch directory.
        let mut stream = ManifestStream::open(&repo, backup).await?;
        let mut maps: Vec<(&'static str, String)> = stream
            .header()?
            .targets
            .iter()
            .filter_map(|t| t.tablespace_oid)
            .map(|oid| ("tablespace-map", oid.to_string()))
            .collect();
        while let Some(entry) = stream.next().await? {
            if let ManifestEntry::Link(l) = entry
                && !l.path.starts_with("pg_data/pg_tblspc/")
            {
                maps.push(("link-map", l.path.trim_start_matches("pg_data/").to_string()));
            }
        }
        Ok::<_, CliError>((repo.index, backup.label.to_string(), pg_version, maps))
    })?;
    let bin = request.pg_bin.clone().unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{pg_version}/bin")));
    let base = request.base.clone().unwrap_or_else(std::env::temp_dir);
    // A name no one can guess or plant in advance, created 0700 (by mkdir, which never follows
    // a link at the name).
    let dir = std::fs::create_dir_all(&base)
        .and_then(|()| tempfile::Builder::new().prefix(&format!("pgstrata-restore-test-{stanza}-")).tempdir_in(&base))
        .map_err(|e| {
            CliError::new(
                ErrorCode::FileRead,
                format!("unable to create a scratch directory in {}: {e}", base.display()),
            )
        })?
        .keep();
    let scratch = Scratch(dir);
    let mut report =
        Report { stanza: stanza.clone(), repo: repo_index, backup: label.clone(), status: "ok", steps: Vec::new() };
    let test = Test { request, bin, dir: scratch.0.clone(), runtime: crate::runtime::runtime()? };
    test.all(&mut report, &label, &maps);
    if report.steps.iter().any(|s| !s.ok) {
        report.status = "error";
    }
    drop(scratch);
    let failed = report.steps.iter().filter(|s| !s.ok).count() as u64;
    crate::runtime::runtime()?.block_on(async {
        match open_repo(&request.repo, &stanza).await {
            Ok(repo) => {
                let detail = serde_json::json!({"backup": label, "steps": &report.steps});
                crate::verify::record(&repo, "restore-test", failed, detail).await;
            }
            Err(e) => tracing::warn!("unable to record the restore-test result: {}", e.message),
        }
    });
    if request.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("stanza: {}\n    repo{}: backup {}: {}", report.stanza, report.repo, report.backup, report.status);
        for s in &report.steps {
            println!(
                "        {}: {} ({:.1}s){}",
                s.step,
                if s.ok { "ok" } else { "FAILED" },
                s.seconds,
                if s.detail.is_empty() { String::new() } else { format!(": {}", s.detail) }
            );
        }
    }
    if failed > 0 {
        let first = report.steps.iter().find(|s| !s.ok).map_or(String::new(), |s| format!("{}: {}", s.step, s.detail));
        return Err(CliError::new(ErrorCode::RepoInvalid, format!("restore-test of backup {label} failed at {first}")));
    }
    Ok(())
}

struct Test<'a> {
    request: &'a RestoreTestRequest,
    bin: PathBuf,
    dir: PathBuf,
    /// Carries every SQL statement the test runs (recovery is polled every 200 ms).
    runtime: tokio::runtime::Runtime,
}

/// Names the server's socket in the private directory (there is no TCP listener), so it cannot
/// collide with another server's.
const PORT: u16 = 5432;

impl Test<'_> {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs the steps in order, stopping at the first that fails (PostgreSQL stopped if started).
    fn all(&self, report: &mut Report, label: &str, maps: &[(&'static str, String)]) {
        let mut run = |name: &'static str, f: &dyn Fn() -> Result<String, String>| {
            let began = Instant::now();
            let result = f();
            let seconds = began.elapsed().as_secs_f64();
            tracing::info!("restore-test {name}: {} in {seconds:.1}s", if result.is_ok() { "ok" } else { "failed" });
            let ok = result.is_ok();
            report.steps.push(Step { step: name, ok, seconds, detail: result.unwrap_or_else(|e| e) });
            ok
        };
        if !run("restore", &|| self.restore(label, maps)) || !run("start", &|| self.start()) {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
            return;
        }
        let recovered = run("recovery", &|| self.recover());
        let checked = recovered && run("amcheck", &|| self.amcheck());
        let stopped = run("stop", &|| self.pg_ctl(&["stop", "-m", "fast", "-w"]).map(|_| String::new()));
        if checked && stopped {
            run("checksums", &|| self.checksums());
        }
    }

    fn restore(&self, label: &str, maps: &[(&'static str, String)]) -> Result<String, String> {
        let mapped: Vec<(&'static str, String)> = maps
            .iter()
            .map(|(opt, name)| {
                (*opt, format!("{name}={}", self.dir.join("mapped").join(name.replace('/', "_")).display()))
            })
            .collect();
        let restore = (self.request.restore)(&self.data(), label, &mapped).map_err(|e| e.message)?;
        crate::restore::run(&restore).map_err(|e| e.message)?;
        // Private: no TCP, a socket only this user can reach, no archiving, our own hba.
        let hba = self.dir.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\n").map_err(|e| e.to_string())?;
        let settings = format!(
            "\n# restore-test\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = off\n\
             hba_file = '{}'\n",
            PORT,
            self.dir.display(),
            hba.display()
        );
        let auto = self.data().join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&settings);
        std::fs::write(&auto, text).map_err(|e| e.to_string())?;
        Ok(format!("backup {label} into {}", self.data().display()))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data().display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        let o = child(self.bin.join("pg_ctl"))
            .args(["-D", data.as_str(), "-l", log.as_str()])
            .args(args)
            .output()
            .map_err(|e| format!("unable to run {}: {e}", self.bin.join("pg_ctl").display()))?;
        if o.status.success() { Ok(o) } else { Err(format!("pg_ctl {}: {}{}", args[0], stderr(&o), self.log_tail())) }
    }

    fn start(&self) -> Result<String, String> {
        let timeout = self.timeout().as_secs().to_string();
        self.pg_ctl(&["start", "-w", "-t", &timeout]).map(|_| format!("port {} on {}", PORT, self.dir.display()))
    }

    /// Waits until recovery has ended and the cluster was promoted.
    fn recover(&self) -> Result<String, String> {
        let began = Instant::now();
        loop {
            let answer = self
                .sql("postgres", "select pg_is_in_recovery()")
                .map(|rows| rows.first().and_then(|r| r.first()).cloned().unwrap_or_default());
            match answer {
                Ok(out) if out == "f" => return Ok(String::new()),
                Ok(_) | Err(_) if began.elapsed() < self.timeout() => std::thread::sleep(Duration::from_millis(200)),
                Ok(out) => {
                    return Err(format!("still in recovery after {:?} ({out}){}", self.timeout(), self.log_tail()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// amcheck through SQL in every database that takes connections: `bt_index_check` with
    /// `heapallindexed` on each valid B-tree index and, where amcheck has it (14 and later),
    /// `verify_heapam` on each table, materialized view and TOAST table. No client program is
    /// needed: a server alone is enough on every major.
    fn amcheck(&self) -> Result<String, String> {
        let dbs = self.sql("postgres", "select datname from pg_database where datallowconn order by 1")?;
        let (mut indexes, mut heaps) = (0u64, 0u64);
        for db in dbs.iter().filter_map(|row| row.first()) {
            self.sql(db, "create extension if not exists amcheck")?;
            let checked = self.sql(
                db,
                "select count(bt_index_check(c.oid, true)) from pg_index i join pg_class c on c.oid = i.indexrelid \
                 join pg_am a on a.oid = c.relam \
                 where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready",
            )?;
            indexes += first_number(&checked);
            let has_heapam = self.sql(db, "select exists (select 1 from pg_proc where proname = 'verify_heapam')")?;
            if has_heapam.first().and_then(|r| r.first()).map(String::as_str) == Some("t") {
                let problems = self.sql(
                    db,
                    "select c.relname, v.blkno, v.offnum, v.msg from pg_class c, \
                     lateral verify_heapam(c.oid, on_error_stop => false) v \
                     where c.relkind in ('r', 'm', 't') and c.relpersistence <> 't' limit 5",
                )?;
                if let Some(row) = problems.first() {
                    return Err(format!("{db}: verify_heapam found corruption: {}", row.join(" ")));
                }
                heaps += first_number(&self.sql(
                    db,
                    "select count(*) from pg_class where relkind in ('r', 'm', 't') and relpersistence <> 't'",
                )?);
            }
        }
        Ok(format!("{indexes} B-tree indexes (heapallindexed) and {heaps} heaps checked in {} databases", dbs.len()))
    }

    /// Every page of every relation file of the stopped cluster checked by pgstrata's own page
    /// code (header and data checksum), as `pg_checksums --check` would, without needing it.
    fn checksums(&self) -> Result<String, String> {
        let data = self.data();
        let control = crate::postgres::read_control(&data).map_err(|e| e.message)?;
        if control.data_checksum_version == 0 {
            return Ok("skipped: data checksums are not enabled in this cluster".into());
        }
        let mut walker = crate::backup::walk::Walker::new(&data, control.relseg_size.max(1));
        let (mut files, mut pages, mut bad) = (0u64, 0u64, Vec::new());
        while let Some(item) = walker.next_item().map_err(|e| e.message)? {
            let crate::backup::walk::Item::File(file) = item else { continue };
            let Some(first_block) = file.first_block else { continue };
            files += 1;
            let (checked, failed) = check_pages(&file.fs_path, first_block)?;
            pages += checked;
            bad.extend(failed.into_iter().map(|(block, why)| format!("{} block {block}: {why}", file.path)));
        }
        if bad.is_empty() {
            Ok(format!("{pages} pages in {files} relation files, 0 bad"))
        } else {
            let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
            Err(format!("{} bad pages of {pages}: {}", bad.len(), shown.join("; ")))
        }
    }

    /// Runs one statement in `db` through pgstrata's own client (no psql), on the private
    /// socket; the rows as text.
    fn sql(&self, db: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let mut pg = tokio_postgres::Config::new();
        pg.host_path(&self.dir)
            .port(PORT)
            .user(&self.request.user)
            .dbname(db)
            .application_name("pgstrata restore-test");
        self.runtime.block_on(async {
            let (client, connection) =
                pg.connect(tokio_postgres::NoTls).await.map_err(|e| format!("{db}: unable to connect: {e}"))?;
            let task = tokio::spawn(connection);
            let messages = client.simple_query(sql).await.map_err(|e| format!("{db}: {e}"));
            drop(client);
            let _ = task.await;
            let rows = messages?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).unwrap_or("").to_string()).collect())
                    }
                    _ => None,
                })
                .collect();
            Ok(rows)
        })
    }

    fn timeout(&self) -> Duration {
        self.request.timeout
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        // The server's own errors first, else its last words.
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("FATAL:") || l.contains("PANIC:")).take(3).collect();
        let tail: Vec<&str> =
            if errors.is_empty() { log.lines().rev().take(5).collect() } else { errors.into_iter().rev().collect() };
        if tail.is_empty() {
            String::new()
        } else {
            format!(" (server log: {})", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        }
    }
}

/// The number in the first column of the first row (0 when there is none).
fn first_number(rows: &[Vec<String>]) -> u64 {
    rows.first().and_then(|r| r.first()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Reads a relation file page by page; the pages checked and each bad one (block number, why).
/// A short last page is bad (a relation file is whole pages).
fn check_pages(path: &std::path::Path, first_block: u32) -> Result<(u64, Vec<(u64, String)>), String> {
    use pgstrata_repo_format::pg::{BLCKSZ, PageVerdict, verify_page};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("unable to read {}: {e}", path.display()))?;
    let mut page = [0u8; BLCKSZ];
    let (mut checked, mut bad) = (0u64, Vec::new());
    loop {
        let mut filled = 0;
        while filled < BLCKSZ {
            match file.read(&mut page[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("unable to read {}: {e}", path.display())),
            }
        }
        if filled == 0 {
            return Ok((checked, bad));
        }
        let block = u64::from(first_block) + checked;
        checked += 1;
        if filled < BLCKSZ {
            bad.push((block, format!("a partial page of {filled} bytes")));
            return Ok((checked, bad));
        }
        // Block numbers of a relation fit in 32 bits; a file claiming more is itself bad.
        let Ok(blkno) = u32::try_from(block) else {
            bad.push((block, "block number beyond any relation".into()));
            return Ok((checked, bad));
        };
        match verify_page(&page, blkno, true) {
            PageVerdict::New | PageVerdict::Valid(_) => {}
            PageVerdict::BadHeader => bad.push((block, "page header is not valid".into())),
            PageVerdict::ChecksumMismatch { stored, computed } => {
                bad.push((block, format!("checksum {stored:#06x}, computed {computed:#06x}")));
            }
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgstrata_repo_format::pg::{BLCKSZ, page_checksum};

    /// A page with a sane header and its checksum for block `blkno`.
    fn page(blkno: u32) -> Vec<u8> {
        let mut p = [0u8; BLCKSZ];
        p[12..14].copy_from_slice(&32u16.to_le_bytes());
        p[14..16].copy_from_slice(&8000u16.to_le_bytes());
        p[16..18].copy_from_slice(&8192u16.to_le_bytes());
        p[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
        for (i, b) in p[8000..].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let sum = page_checksum(&p, blkno);
        p[8..10].copy_from_slice(&sum.to_le_bytes());
        p.to_vec()
    }

    #[test]
    fn pages_are_checked_with_their_block_numbers_across_segments() {
        let dir = tempfile::tempdir().expect("temp");
        let file = dir.path().join("16384.1");
        // The second segment of a relation: its pages are blocks 131072 and on.
        let first = 131_072;
        let mut bytes = [page(first), page(first + 1), vec![0u8; BLCKSZ]].concat();
        std::fs::write(&file, &bytes).expect("write");
        assert_eq!(check_pages(&file, first).expect("read"), (3, vec![]));
        // Checked as the first segment, the same pages are wrong.
        assert_eq!(check_pages(&file, 0).expect("read").1.len(), 2);
        bytes[BLCKSZ + 8100] ^= 1;
        bytes.extend_from_slice(&[1u8; 100]);
        std::fs::write(&file, &bytes).expect("write");
        let (checked, bad) = check_pages(&file, first).expect("read");
        assert_eq!(checked, 4);
        assert_eq!(bad.iter().map(|(b, _)| *b).collect::<Vec<_>>(), [u64::from(first) + 1, u64::from(first) + 3]);
        assert!(bad[0].1.contains("checksum") && bad[1].1.contains("partial page"), "{bad:?}");
    }
}
