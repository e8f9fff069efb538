//! Shared helpers for end-to-end tests: a throwaway PostgreSQL cluster run as the `postgres` OS
//! user on a private socket and free port, and the pgstrata binary run the same way.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BUILT: &str = env!("CARGO_BIN_EXE_pgstrata");

/// The pgstrata binary, copied once per test process to a directory the postgres user can reach
/// (the checkout itself may not be readable by it).
pub fn bin() -> &'static str {
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pgstrata-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("pgstrata");
        let _ = std::fs::remove_file(&dest);
        // A hard link costs no space; copy when the checkout is on another filesystem.
        if std::fs::hard_link(BUILT, &dest).is_err() {
            std::fs::copy(BUILT, &dest).unwrap();
        }
        let _ = Command::new("chmod").args(["-R", "a+rx"]).arg(&dir).status();
        dest.display().to_string()
    })
}

pub fn pg_bin() -> PathBuf {
    PathBuf::from(std::env::var("PGSTRATA_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

/// The server programs (`initdb`, `pg_ctl`, `postgres`) of a major version:
/// `PGSTRATA_PG_BIN_<major>` (written by scripts/postgres.sh into .pg/env), for 15 also
/// `PGSTRATA_PG_BIN`. `None` (a skip) when not installed; a failure when servers are required.
pub fn server_bin(major: u32) -> Option<PathBuf> {
    let found = std::env::var(format!("PGSTRATA_PG_BIN_{major}"))
        .ok()
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| (major == 15).then(pg_bin))
        .filter(|bin| bin.join("initdb").exists());
    if found.is_none() {
        assert!(
            !required(),
            "PostgreSQL {major} not installed (PGSTRATA_PG_BIN_{major}) but PGSTRATA_REQUIRE_SERVERS=1: run scripts/postgres.sh"
        );
        loud_skip(&format!("PostgreSQL {major} not installed: scripts/postgres.sh installs it"));
    }
    found
}

/// The server programs for a data directory: those of the major its `PG_VERSION` names (a
/// restored cluster runs on the server that wrote it), else PostgreSQL 15's.
fn server_bin_for(data: &Path) -> PathBuf {
    std::fs::read_to_string(data.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|major| *major != 15)
        .and_then(|major| std::env::var(format!("PGSTRATA_PG_BIN_{major}")).ok())
        .map(PathBuf::from)
        .unwrap_or_else(pg_bin)
}

fn required() -> bool {
    std::env::var("PGSTRATA_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Reports a skipped server test where it cannot be missed: straight to the terminal (the test
/// harness captures `eprintln!` of passing tests, not writes to the stderr handle), with the
/// count so far, so a plain `cargo test` says how much it did not run.
fn loud_skip(reason: &str) {
    use std::io::Write;
    static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED server test {test} ({reason}); {n} skipped so far in this binary: scripts/test.sh runs them all"
    );
}

/// True when PostgreSQL can be used; a skip message otherwise (a failure when required).
pub fn postgres_available() -> bool {
    if pg_bin().join("initdb").exists() {
        return true;
    }
    assert!(!required(), "PostgreSQL binaries not found in {} but PGSTRATA_REQUIRE_SERVERS=1", pg_bin().display());
    loud_skip(&format!("no PostgreSQL binaries in {}", pg_bin().display()));
    false
}

/// An emulator endpoint from the environment (set by scripts/test.sh); `None` is a skip under a
/// plain `cargo test` and a failure when servers are required.
pub fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(!required(), "{var} not set but PGSTRATA_REQUIRE_SERVERS=1: the emulator did not start");
            loud_skip(&format!("{var} not set"));
            None
        }
    }
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs `program args` as the postgres OS user (when we are root) with exactly `env`.
pub fn run_as_postgres(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    postgres_command(program, args, env).output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

/// The command [`run_as_postgres`] runs, to spawn it instead.
pub fn postgres_command(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]);
    in_clean_env(if is_root() { cmd } else { Command::new("env") }, program, args, env)
}

/// `program args` as `user:group` (exec'd through setpriv, so the pid is the program's: it can
/// be signalled) when we are root, else as ourselves; with exactly `env`.
pub fn command_as(user: &str, group: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([&format!("--reuid={user}"), &format!("--regid={group}"), "--init-groups", "--"]);
    in_clean_env(if is_root() { cmd } else { Command::new("env") }, program, args, env)
}

/// `prefix` then `env -i PATH=/usr/bin:/bin LC_ALL=C <env> program args` (a bare `env` prefix
/// needs no second `env`).
fn in_clean_env(mut cmd: Command, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    if cmd.get_program() != "env" {
        cmd.arg("env");
    }
    cmd.arg("-i").arg("PATH=/usr/bin:/bin").arg("LC_ALL=C");
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(program).args(args);
    cmd
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A scratch directory the postgres user can use.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        chown_postgres(dir.path());
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if !p.exists() {
            std::fs::create_dir_all(&p).unwrap();
            chown_postgres(&p);
        }
        p
    }

    /// Writes a file the postgres user can read.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        chown_postgres(&p);
        p
    }
}

pub fn chown_postgres(p: &Path) {
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(p).status().unwrap().success();
        assert!(ok, "chown {}", p.display());
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL cluster on a private socket directory and a free port.
pub struct Cluster {
    pub data: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Cluster {
    /// `initdb --data-checksums` into `scratch/<name>`.
    pub fn init(scratch: &Scratch, name: &str) -> Self {
        Self::init_with(scratch, name, &[])
    }

    /// `initdb --data-checksums <extra>` into `scratch/<name>`.
    pub fn init_with(scratch: &Scratch, name: &str, extra: &[&str]) -> Self {
        Self::init_on(&pg_bin(), scratch, name, extra)
    }

    /// `initdb --data-checksums <extra>` of the server programs in `bin`.
    pub fn init_on(bin: &Path, scratch: &Scratch, name: &str, extra: &[&str]) -> Self {
        let data = scratch.dir.path().join(name);
        let socket = scratch.path(&format!("{name}-socket"));
        let mut args = vec!["--data-checksums", "-A", "trust", "-U", "postgres", "-D", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run_as_postgres(&bin.join("initdb"), &args, &[]);
        assert!(out.status.success(), "initdb: {}", text(&out));
        let log = scratch.dir.path().join(format!("{name}.log"));
        Self { data, socket, port: free_port(), log }
    }

    /// A cluster over an existing data directory (a restore target).
    pub fn existing(scratch: &Scratch, data: PathBuf, name: &str) -> Self {
        let socket = scratch.path(&format!("{name}-socket"));
        let log = scratch.dir.path().join(format!("{name}.log"));
        Self { data, socket, port: free_port(), log }
    }

    /// Appends settings to postgresql.auto.conf... no: to postgresql.conf.
    pub fn configure(&self, settings: &str) {
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push('\n');
        text.push_str(settings);
        text.push('\n');
        std::fs::write(&conf, text).unwrap();
        chown_postgres(&conf);
    }

    pub fn start(&self) {
        self.start_with_env(&[]);
    }

    /// Starts the server with these environment variables (what its `archive_command` and
    /// `restore_command` see, as a container's environment would give them).
    pub fn start_with_env(&self, env: &[(&str, &str)]) {
        let opts =
            format!("-c listen_addresses='' -c unix_socket_directories='{}' -p {}", self.socket.display(), self.port);
        let out = run_as_postgres(
            &server_bin_for(&self.data).join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
            env,
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\nserver log:\n{}",
            text(&out),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn stop(&self) {
        let _ = run_as_postgres(
            &server_bin_for(&self.data).join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
            &[],
        );
    }

    /// Runs SQL with psql (unaligned, tuples only), whatever the outcome.
    pub fn try_sql(&self, sql: &str) -> Output {
        self.try_sql_in("postgres", sql)
    }

    /// Runs SQL with psql in database `db`.
    pub fn try_sql_in(&self, db: &str, sql: &str) -> Output {
        let port = self.port.to_string();
        let socket = self.socket.to_str().unwrap();
        let args = [
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            socket,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ];
        run_as_postgres(&pg_bin().join("psql"), &args, &[])
    }

    /// Runs SQL with psql; returns trimmed unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.try_sql(sql);
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes a row and switches WAL, `n` times: `n` more segments for the archiver (not waited
    /// for).
    pub fn switch_wal(&self, n: usize) {
        for _ in 0..n {
            self.sql("insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 1, 1); select pg_switch_wal()");
        }
    }

    /// Switches WAL and waits until the archiver reports that segment archived.
    pub fn archive_now(&self) -> String {
        let seg = self.sql("select pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&seg);
        seg
    }

    pub fn wait_archived(&self, seg: &str) {
        let start = Instant::now();
        loop {
            let (last, failed) = {
                let row = self
                    .sql("select coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') from pg_stat_archiver");
                let mut parts = row.split('|');
                (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string())
            };
            if !last.is_empty() && last.as_str() >= seg {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "segment {seg} not archived after 60 s (last {last:?}, failed {failed:?}); server log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn control_sysid(&self) -> String {
        let out = run_as_postgres(&pg_bin().join("pg_controldata"), &[self.data.to_str().unwrap()], &[]);
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        t.lines().find_map(|l| l.strip_prefix("Database system identifier:")).unwrap().trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            self.stop();
        }
    }
}

/// A pgstrata configuration for tests: a config file (readable by postgres) plus env.
pub struct Setup {
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<String> {
        let mut v = vec![format!("--config={}", self.config.display())];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Runs pgstrata as postgres with this setup.
    pub fn run(&self, args: &[&str]) -> Output {
        let all = self.args(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_as_postgres(Path::new(bin()), &refs, &env)
    }

    /// Runs pgstrata as the user running the tests (root in CI: as restore Jobs run), with this
    /// setup and nothing else of our environment.
    pub fn run_as_self(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(self.args(args))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin()))
    }

    /// Runs pgstrata as postgres with at most `nofile` open descriptors (`ulimit -n`).
    pub fn run_limited(&self, nofile: u32, args: &[&str]) -> Output {
        let all = self.args(args);
        let script = format!("ulimit -n {nofile} && exec \"$0\" \"$@\"");
        let mut refs: Vec<&str> = vec!["-c", &script, bin()];
        refs.extend(all.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_as_postgres(Path::new("/bin/sh"), &refs, &env)
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(o.status.success(), "pgstrata {args:?}: {}", text(&o));
        o
    }

    /// The archive_command / restore_command prefix for this setup.
    pub fn command_prefix(&self) -> String {
        format!("{} --config={} --stanza=db", bin(), self.config.display())
    }
}

impl Cluster {
    /// Runs a PostgreSQL client tool against this cluster as postgres.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut all = vec!["-h", self.socket.to_str().unwrap(), "-p", &port, "-U", "postgres"];
        all.extend_from_slice(args);
        run_as_postgres(&pg_bin().join(tool), &all, &[])
    }

    /// `pg_dumpall`, without the per-run `\restrict` lines.
    pub fn dumpall(&self) -> String {
        let out = self.tool("pg_dumpall", &[]);
        assert!(out.status.success(), "pg_dumpall: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `sql` answers `expected` (a standby replaying what the primary wrote).
    pub fn wait_for(&self, sql: &str, expected: &str, what: &str) {
        let start = Instant::now();
        loop {
            let out = self.try_sql(sql);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == expected {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{what} in 90 s; server log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until recovery has finished and the cluster accepts writes.
    pub fn wait_promoted(&self) {
        let start = Instant::now();
        loop {
            let out = self.try_sql("select pg_is_in_recovery()");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "f" {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "recovery did not finish in 120 s; server log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every path under `dir` with its kind, size and modification time (or link target): equal
/// snapshots mean nothing was written, removed or replaced.
pub fn snapshot(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                let t = m.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
                out.push(format!("{rel} {} {t}", m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The seed of a test's random choices: `PGSTRATA_TEST_SEED` (to replay a run), else from the
/// process id and `salt`; printed so a failure can be replayed.
pub fn test_seed(salt: u64) -> u64 {
    let seed = std::env::var("PGSTRATA_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ salt);
    eprintln!("random choices seed {seed} (PGSTRATA_TEST_SEED replays)");
    seed
}
