//! The command line and configuration, through the built binary: precedence of command line,
//! environment and config files; errors that name the problem; secrets kept out of argv and logs;
//! the `repoN-*` options reaching real storage emulators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use pgstrata_storage::{
    AzureAuth, AzureConfig, GcsAuth, GcsConfig, RetryPolicy, S3Config, Secret, StorageConfig, UriStyle,
};

const BIN: &str = env!("CARGO_BIN_EXE_pgstrata");

/// Runs the binary with a clean environment plus `env`.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_as(Path::new(BIN), args, env)
}

fn run_as(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A repository directory holding one marker object, so `repo-ls` shows which repo was used.
fn marked_repo(root: &Path, marker: &str) -> PathBuf {
    let dir = root.join(marker);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(marker), b"x").unwrap();
    dir
}

#[test]
fn precedence_is_command_line_then_environment_then_files() {
    let t = tempfile::tempdir().unwrap();
    let global = marked_repo(t.path(), "from-global");
    let global_cmd = marked_repo(t.path(), "from-global-command");
    let stanza = marked_repo(t.path(), "from-stanza");
    let stanza_cmd = marked_repo(t.path(), "from-stanza-command");
    let env_repo = marked_repo(t.path(), "from-env");
    let cli_repo = marked_repo(t.path(), "from-cli");
    let conf_dir = t.path().join("etc");
    std::fs::create_dir_all(conf_dir.join("conf.d")).unwrap();
    std::fs::write(
        conf_dir.join("pgstrata.conf"),
        format!(
            "[global]\nrepo1-path={}\nlog-level-file=off\n\n[global:repo-ls]\nrepo1-path={}\n",
            global.display(),
            global_cmd.display()
        ),
    )
    .unwrap();
    std::fs::write(
        conf_dir.join("conf.d/db.conf"),
        format!("[db]\nrepo1-path={}\n[db:repo-ls]\nrepo1-path={}\n", stanza.display(), stanza_cmd.display()),
    )
    .unwrap();
    let cp = format!("--config-path={}", conf_dir.display());
    let ls = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![cp.as_str(), "repo-ls"];
        args.extend_from_slice(extra);
        let o = run(&args, env);
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).0.trim().to_string()
    };
    assert_eq!(ls(&[], &[]), "from-global-command");
    assert_eq!(ls(&["--stanza=other"], &[]), "from-global-command");
    assert_eq!(ls(&["--stanza=db"], &[]), "from-stanza-command");
    let env_path = env_repo.display().to_string();
    assert_eq!(ls(&["--stanza=db"], &[("PGSTRATA_REPO1_PATH", &env_path)]), "from-env");
    let cli_arg = format!("--repo1-path={}", cli_repo.display());
    assert_eq!(ls(&["--stanza=db", &cli_arg], &[("PGSTRATA_REPO1_PATH", &env_path)]), "from-cli");
    // `[global]` alone applies to other commands.
    std::fs::remove_file(conf_dir.join("conf.d/db.conf")).unwrap();
    let o = run(&[&cp, "repo-get", "from-global"], &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(o.stdout, b"x");
}

#[test]
fn installed_as_pgbackrest_it_reads_pgbackrest_variables() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("pgbackrest");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let repo = marked_repo(t.path(), "compat");
    let empty_conf = t.path().join("none");
    std::fs::create_dir_all(&empty_conf).unwrap();
    let cp = format!("--config-path={}", empty_conf.display());
    let path = repo.display().to_string();
    let o = run_as(&link, &[&cp, "repo-ls"], &[("PGBACKREST_REPO1_PATH", &path), ("PGBACKREST_LOG_LEVEL_FILE", "off")]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0.trim(), "compat");
    // As pgbackrest: the line monitoring clients parse; what it really is in JSON and help.
    let o = run_as(&link, &["version"], &[]);
    assert_eq!(text(&o).0, format!("pgBackRest {}\n", pgstrata::identity::PGBACKREST_COMPAT));
    assert_eq!(pgstrata::identity::PGBACKREST_COMPAT, "2.59.1");
    let o = run_as(&link, &["version", "--output=num"], &[]);
    assert_eq!(text(&o).0, "2059001\n", "{:?}", text(&o));
    let o = run_as(&link, &["version", "--output=json"], &[]);
    let about: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(about["program"], "pgstrata");
    assert_eq!(about["invoked-as"], "pgbackrest");
    let o = run_as(&link, &["help"], &[]);
    assert!(text(&o).0.starts_with("pgstrata ") && text(&o).0.contains("compatible mode"), "{:?}", text(&o));
    // Under its own name, PGBACKREST_* is not ours.
    let o = run(&[&cp, "repo-ls"], &[("PGBACKREST_REPO1_PATH", &path), ("PGSTRATA_LOG_LEVEL_FILE", "off")]);
    assert!(!text(&o).0.contains("compat"));
}

#[test]
fn installed_as_wal_g_it_reads_wal_g_variables_only() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("wal-g");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let code = |o: &Output| o.status.code();
    // No storage: named; wal-fetch fails above 125 (PostgreSQL must not end recovery on it).
    let o = run_as(&link, &["backup-list"], &[("PGSTRATA_REPO1_PATH", "/tmp")]);
    assert_eq!(code(&o), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("no storage is configured") && text(&o).1.contains("WALG_S3_PREFIX"), "{:?}", text(&o));
    let o = run_as(&link, &["wal-fetch", "000000010000000000000001", "/tmp/x"], &[]);
    assert_eq!(code(&o), Some(255), "{:?}", text(&o));
    let prefix = t.path().join("repo").display().to_string();
    let env = [("WALG_FILE_PREFIX", prefix.as_str()), ("WALG_SOMETHING", "1")];
    // Nothing there yet: an empty list, and the unknown variable warned about.
    let o = run_as(&link, &["backup-list"], &env);
    assert_eq!(code(&o), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.is_empty() && text(&o).1.contains("WALG_SOMETHING"), "{:?}", text(&o));
    // A prefix nothing was ever written to is more likely a mistake than an empty archive:
    // fatal to recovery, not "not found".
    let o = run_as(&link, &["wal-fetch", "000000010000000000000001", "/tmp/x"], &env);
    assert_eq!(code(&o), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("repository directory not found"), "{:?}", text(&o));
    for (args, says) in [
        (&["backup-fetch", "/tmp/x"][..], "backup-fetch takes"),
        (&["delete", "retain", "zero"], "usage: delete"),
        (&["backup-pull"], "not a WAL-G command"),
    ] {
        let o = run_as(&link, args, &env);
        assert_eq!(code(&o), Some(1), "{args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(says), "{args:?}: {:?}", text(&o));
    }
    let o = run_as(&link, &["backup-list"], &[("WALG_FILE_PREFIX", &prefix), ("WALG_COMPRESSION_METHOD", "brotli")]);
    assert!(code(&o) == Some(1) && text(&o).1.contains("brotli"), "{:?}", text(&o));
    // A PGP key is refused, never taken as a passphrase (wal-fetch: 255, recovery stops).
    let pgp = [("WALG_FILE_PREFIX", prefix.as_str()), ("WALG_PGP_KEY", "-----BEGIN PGP PUBLIC KEY BLOCK-----")];
    let o = run_as(&link, &["wal-push", "/nonexistent/000000010000000000000001"], &pgp);
    assert!(code(&o) == Some(1) && text(&o).1.contains("WALG_LIBSODIUM_KEY"), "{:?}", text(&o));
    let o = run_as(&link, &["wal-fetch", "000000010000000000000001", "/nonexistent/x"], &pgp);
    assert!(code(&o) == Some(255) && text(&o).1.contains("WALG_PGP_KEY"), "{:?}", text(&o));
    assert!(!t.path().join("repo").exists(), "nothing was written");
}

/// WAL-G's own storage (issue 25): pgstrata does not read WAL-G's format, so it neither writes
/// beside it nor answers "not in the archive" for a segment that is there in WAL-G's format.
#[test]
fn wal_g_storage_is_refused_never_written_beside() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("wal-g");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let prefix = t.path().join("walg");
    std::fs::create_dir_all(prefix.join("wal_005")).unwrap();
    std::fs::create_dir_all(prefix.join("basebackups_005/base_000000010000000000000002")).unwrap();
    std::fs::write(prefix.join("wal_005/000000010000000000000001.br"), b"walg").unwrap();
    std::fs::write(prefix.join("basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json"), b"{}")
        .unwrap();
    let env = [("WALG_FILE_PREFIX", prefix.to_str().unwrap())];
    let o = run_as(&link, &["wal-fetch", "000000010000000000000001", t.path().join("x").to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("WAL-G's archive"), "{:?}", text(&o));
    let segment = t.path().join("000000010000000000000002");
    std::fs::write(&segment, vec![0u8; 16 << 20]).unwrap();
    let o = run_as(&link, &["wal-push", segment.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("WAL-G's own objects") && text(&o).1.contains("new prefix"), "{:?}", text(&o));
    let mut names: Vec<String> =
        std::fs::read_dir(&prefix).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["basebackups_005", "wal_005"], "something was written beside WAL-G's objects");
}

#[test]
fn secrets_are_refused_on_the_command_line_and_never_logged() {
    let t = tempfile::tempdir().unwrap();
    let repo = marked_repo(t.path(), "r");
    let rp = format!("--repo1-path={}", repo.display());
    let o = run(&["repo-ls", &rp, "--repo1-cipher-pass=hunter2-secret"], &[]);
    assert_eq!(o.status.code(), Some(31));
    let (out, err) = text(&o);
    assert!(err.contains("'repo1-cipher-pass' is not allowed on the command-line"), "{err}");
    assert!(err.contains("PGSTRATA_REPO1_CIPHER_PASS"), "{err}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
    // From the environment it is accepted, and every log sink shows it redacted.
    let logs = t.path().join("log");
    let lp = format!("--log-path={}", logs.display());
    let o = run(
        &["repo-ls", &rp, &lp, "--log-level-console=detail", "--log-level-file=debug", "--stanza=db"],
        &[("PGSTRATA_REPO1_CIPHER_PASS", "hunter2-secret"), ("PGSTRATA_REPO1_S3_KEY_SECRET", "aws-secret-value")],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, err) = text(&o);
    assert!(out.contains("--repo1-cipher-pass=<redacted>"), "{out}");
    let file = std::fs::read_to_string(logs.join("db-repo-ls.log")).unwrap();
    assert!(file.contains("repo-ls command begin") && file.contains("PROCESS START"), "{file}");
    // Debug output of the resolved configuration redacts too.
    let env = vec![("PGSTRATA_REPO1_CIPHER_PASS".to_string(), "hunter2-secret".to_string())];
    let argv = vec!["pgstrata".to_string(), "version".to_string()];
    let config = pgstrata::config::Config::load(&argv, &env).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    for sink in [&out, &err, &file] {
        assert!(!sink.contains("hunter2") && !sink.contains("aws-secret-value"), "secret leaked: {sink}");
    }
}

#[test]
fn bad_options_and_values_name_the_problem() {
    let cases: &[(&[&str], u8, &str)] = &[
        (&["version", "--no-such-option"], 31, "invalid option '--no-such-option'"),
        (&["version", "--process-max=many"], 32, "'many' is not valid for 'process-max' option"),
        (&["version", "--process-max=1000"], 33, "out of range for 'process-max'"),
        (&["version", "--buffer-size=1.5MiB"], 32, "'1.5MiB' is not valid for 'buffer-size'"),
        (&["version", "--archive-timeout=5years"], 32, "'5years' is not valid for 'archive-timeout'"),
        (&["version", "--start-fast=yes"], 32, "boolean value must be 'y' or 'n'"),
        (&["version", "--compress-type=xz"], 32, "allowed values are none, zst, lz4, gz, bz2"),
        (&["version", "--repo300-path=/x"], 31, "invalid option '--repo300-path'"),
        (&["version", "--stanza=a", "--stanza=b"], 35, "'stanza' cannot be set multiple times"),
        (&["version", "--no-process-max"], 31, "cannot be negated"),
        (&["backup", "--stanza=db", "--pg1-path=/x", "--exclude=../etc"], 32, "give a path relative to the data"),
        (&["not-a-command"], 48, "invalid command 'not-a-command'"),
        (&[], 30, "no command given"),
        (&["server"], 37, "server command requires option: tls-server-ca-file"),
        (
            &[
                "server",
                "--tls-server-ca-file=/nonexistent/ca.crt",
                "--tls-server-cert-file=/x",
                "--tls-server-key-file=/y",
            ],
            32,
            "unable to load tls-server-ca-file '/nonexistent/ca.crt'",
        ),
        (&["repo-ls", "--repo1-host=repo.example"], 32, "repo1-host-type=ssh is not supported"),
        (
            &["restore", "--stanza=db", "--pg1-path=/nonexistent/pgdata", "--pg1-host=db.example"],
            72,
            "restore command must be run on the PostgreSQL host",
        ),
        (&["repo-ls", "--repo1-host=repo.example", "--repo1-host-type=tls"], 37, "requires option: repo1-host-ca-file"),
        (&["version", "--config=/nonexistent/pgstrata.conf"], 55, "/nonexistent/pgstrata.conf does not exist"),
        (
            &["repo-ls", "--repo1-path=/nonexistent/repo"],
            55,
            "repository directory not found in posix:/nonexistent/repo",
        ),
        (&["repo-ls", "--repo1-path=relative/repo"], 32, "it must be absolute"),
    ];
    for (args, code, needle) in cases {
        let o = run(args, &[("PGSTRATA_LOG_LEVEL_FILE", "off")]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(i32::from(*code)), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Accepted forms: parsed, then the missing repository is what stops the backup.
    let o = run(
        &[
            "backup",
            "--stanza=db",
            "--repo1-path=/nonexistent/repo",
            "--pg1-path=/nonexistent/pgdata",
            "--buffer-size=2MiB",
            "--archive-timeout=90s",
            "--no-start-fast",
            "--process-max",
            "4",
            "--repo1-bundle",
            "--repo1-block",
            "--db-timeout=600",
        ],
        &[("PGSTRATA_LOG_LEVEL_FILE", "off")],
    );
    assert_eq!(o.status.code(), Some(55), "{:?}", text(&o));
}

/// pgBackRest's validity rule: an option on the command line must be one the command takes
/// (31); in a configuration file or the environment, options of other commands are left alone.
/// Deprecated names map to theirs; options pgstrata does not support are refused saying why.
#[test]
fn options_are_checked_against_the_command_as_pgbackrest_checks_them() {
    let off = [("PGSTRATA_LOG_LEVEL_FILE", "off")];
    for (args, needle) in [
        (&["backup", "--stanza=db", "--target=foo"][..], "option 'target' not valid for command 'backup'"),
        (
            &["archive-push", "--stanza=db", "--start-fast", "pg_wal/x"],
            "option 'start-fast' not valid for command 'archive-push'",
        ),
        (&["info", "--delta"], "option 'delta' not valid for command 'info'"),
        (&["version", "--process-max=2"], "option 'process-max' not valid for command 'version'"),
    ] {
        let o = run(args, &off);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(31), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // The same options in a configuration file break nothing.
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("p.conf");
    std::fs::write(
        &conf,
        "[global]
start-fast=y
target=foo
delta=y
process-max=2
log-level-file=off
",
    )
    .unwrap();
    let cfg = format!("--config={}", conf.display());
    let o = run(&[&cfg, "version"], &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    for (args, needle) in [
        (&["repo-ls", "--repo1-type=sftp"][..], "SFTP repositories are not supported"),
        (&["repo-ls", "--repo1-sftp-host=h"], "option 'repo1-sftp-host' is not supported"),
        (&["repo-ls", "--repo1-storage-host=h"], "option 'repo1-storage-host' is not supported"),
    ] {
        let o = run(args, &off);
        let (_, err) = text(&o);
        assert!(matches!(o.status.code(), Some(31 | 32)), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Set to pgBackRest's default, an unsupported option is harmless.
    let o = run(&[&cfg, "repo-ls", "--repo1-path=/nonexistent", "--repo1-storage-verify-tls=y"], &off);
    assert_eq!(o.status.code(), Some(55), "{:?}", text(&o));
}

/// Every option name of pgBackRest 2.59.1 is known: accepted for a command that takes it (no
/// "invalid option").
#[test]
fn every_pgbackrest_option_name_is_known() {
    for (name, commands) in pgstrata::config::pgbackrest::OPTIONS {
        let resolved = pgstrata::config::options::resolve(name);
        assert!(
            resolved.is_some_and(|r| commands.iter().all(|c| r.def.valid_for(c))),
            "pgBackRest's option {name} (for {commands:?}) is unknown"
        );
    }
}

#[test]
fn config_file_problems_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("p.conf");
    let cfg = format!("--config={}", conf.display());
    std::fs::write(&conf, "[global]\nlog-level-file=off\nprocess-max=zero\n").unwrap();
    let o = run(&[&cfg, "version"], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(32), "{err}");
    assert!(err.contains("p.conf, line 3") && err.contains("process-max"), "{err}");

    std::fs::write(&conf, "[global]\nlog-level-file=off\nlog-path=/a\nlog-path=/b\n").unwrap();
    let o = run(&[&cfg, "version"], &[]);
    assert_eq!(o.status.code(), Some(35), "{:?}", text(&o));

    let repo = marked_repo(t.path(), "r");
    std::fs::write(
        &conf,
        format!("[global]\nlog-level-file=off\nrepo1-path={}\nmystery-option=1\nstanza=db\n", repo.display()),
    )
    .unwrap();
    let o = run(&[&cfg, "repo-ls"], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), "r");
    assert!(err.contains("invalid option 'mystery-option'"), "{err}");
    assert!(err.contains("command-line only option 'stanza'"), "{err}");

    std::fs::write(&conf, "log-level-file=off\n").unwrap();
    let o = run(&[&cfg, "version"], &[]);
    assert_eq!(o.status.code(), Some(29), "{:?}", text(&o));
}

#[test]
fn boolean_negation_and_timestamps() {
    let t = tempfile::tempdir().unwrap();
    let repo = marked_repo(t.path(), "r");
    let rp = format!("--repo1-path={}", repo.display());
    let env = [("PGSTRATA_LOG_LEVEL_FILE", "off")];
    let o = run(&["repo-ls", &rp, "--log-level-console=detail", "--no-log-timestamp"], &env);
    let out = text(&o).0;
    assert!(out.lines().next().unwrap().starts_with("P00 DETAIL: repo-ls command begin"), "{out}");
    let o = run(&["repo-ls", &rp, "--log-level-console=detail"], &env);
    let first = text(&o).0.lines().next().unwrap().to_string();
    assert!(first.as_bytes()[4] == b'-' && first.contains(" P00 DETAIL: "), "{first}");
    // At info, a read-only command prints only its output.
    let o = run(&["repo-ls", &rp, "--log-level-console=info"], &env);
    assert_eq!(text(&o).0.trim(), "r");
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("/cli-{name}-{}-{nanos}", std::process::id())
}

/// Seeds an object through the storage crate, then lists and reads it through the binary
/// configured only by `repo1-*` environment variables.
fn check_repo_options(storage: StorageConfig, env: &[(&str, &str)]) {
    let store = storage.open(RetryPolicy::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.put("stanza/db/marker", Bytes::from_static(b"through the cli"))).unwrap();
    let mut all_env = vec![("PGSTRATA_LOG_LEVEL_FILE", "off")];
    all_env.extend_from_slice(env);
    let o = run(&["repo-ls", "stanza/db"], &all_env);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0.trim(), "marker");
    let o = run(&["repo-get", "stanza/db/marker"], &all_env);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(o.stdout, b"through the cli");
    let o = run(&["repo-get", "stanza/db/missing"], &all_env);
    assert_eq!(o.status.code(), Some(55), "{:?}", text(&o));
    rt.block_on(store.delete_prefix("")).unwrap();
}

#[test]
fn repo_options_reach_s3() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_ENDPOINT") else { return };
    let path = unique("s3");
    check_repo_options(
        StorageConfig::S3(S3Config {
            bucket: "test-bucket".into(),
            endpoint: Some(endpoint.clone()),
            region: "us-east-1".into(),
            prefix: path.clone(),
            key: Some(Secret::new("test")),
            key_secret: Some(Secret::new("test")),
            token: None,
            uri_style: UriStyle::Path,
            tls: Default::default(),
            sse: None,
            requester_pays: false,
            sts_endpoint: None,
            objects: Default::default(),
        }),
        &[
            ("PGSTRATA_REPO1_TYPE", "s3"),
            ("PGSTRATA_REPO1_PATH", &path),
            ("PGSTRATA_REPO1_S3_BUCKET", "test-bucket"),
            ("PGSTRATA_REPO1_S3_ENDPOINT", &endpoint),
            ("PGSTRATA_REPO1_S3_REGION", "us-east-1"),
            ("PGSTRATA_REPO1_S3_URI_STYLE", "path"),
            ("PGSTRATA_REPO1_S3_KEY", "test"),
            ("PGSTRATA_REPO1_S3_KEY_SECRET", "test"),
        ],
    );
}

#[test]
fn repo_options_reach_azure() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_AZURE_ENDPOINT") else { return };
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let path = unique("azure");
    check_repo_options(
        StorageConfig::Azure(AzureConfig {
            account: "devstoreaccount1".into(),
            container: "test-bucket".into(),
            prefix: path.clone(),
            auth: AzureAuth::Shared(Secret::new(key)),
            endpoint: Some(endpoint.clone()),
            tls: Default::default(),
            objects: Default::default(),
        }),
        &[
            ("PGSTRATA_REPO1_TYPE", "azure"),
            ("PGSTRATA_REPO1_PATH", &path),
            ("PGSTRATA_REPO1_AZURE_ACCOUNT", "devstoreaccount1"),
            ("PGSTRATA_REPO1_AZURE_CONTAINER", "test-bucket"),
            ("PGSTRATA_REPO1_AZURE_KEY", key),
            ("PGSTRATA_REPO1_AZURE_ENDPOINT", &endpoint),
        ],
    );
}

#[test]
fn repo_options_reach_gcs() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_GCS_ENDPOINT") else { return };
    let path = unique("gcs");
    check_repo_options(
        StorageConfig::Gcs(GcsConfig {
            bucket: "test-bucket".into(),
            prefix: path.clone(),
            auth: GcsAuth::Token(Secret::new("t")),
            endpoint: Some(endpoint.clone()),
            tls: Default::default(),
            user_project: None,
            objects: Default::default(),
        }),
        &[
            ("PGSTRATA_REPO1_TYPE", "gcs"),
            ("PGSTRATA_REPO1_PATH", &path),
            ("PGSTRATA_REPO1_GCS_BUCKET", "test-bucket"),
            ("PGSTRATA_REPO1_GCS_KEY_TYPE", "token"),
            ("PGSTRATA_REPO1_GCS_KEY", "t"),
            ("PGSTRATA_REPO1_GCS_ENDPOINT", &endpoint),
        ],
    );
}

#[test]
fn incomplete_repo_options_name_the_missing_one() {
    let o = run(
        &["repo-ls"],
        &[("PGSTRATA_LOG_LEVEL_FILE", "off"), ("PGSTRATA_REPO1_TYPE", "s3"), ("PGSTRATA_REPO1_S3_BUCKET", "b")],
    );
    assert_eq!(o.status.code(), Some(37), "{:?}", text(&o));
    assert!(text(&o).1.contains("requires option: repo1-s3-key"), "{:?}", text(&o));
}

#[test]
fn a_second_backup_of_a_stanza_is_refused_while_one_runs() {
    let t = tempfile::tempdir().unwrap();
    let locks = t.path().join("lock");
    std::fs::create_dir_all(&locks).unwrap();
    let held = std::fs::File::create(locks.join("db-backup.lock")).unwrap();
    held.lock().unwrap();
    let lp = format!("--lock-path={}", locks.display());
    let o =
        run(&["backup", "--stanza=db", "--pg1-path=/nonexistent/pgdata", &lp], &[("PGSTRATA_LOG_LEVEL_FILE", "off")]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(50), "{err}");
    assert!(err.contains("another backup is running"), "{err}");
    drop(held);
}

/// Damaged WAL objects in a repository made without PostgreSQL (a data directory holding only
/// the fixture `pg_control`, a segment whose first page is the fixture WAL page): each is refused
/// by `archive-get` with 255 and a message naming the object — never read as "missing" (1), never
/// a panic or an abort.
#[test]
fn damaged_wal_objects_are_named_and_never_read_as_missing() {
    let t = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pg");
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::copy(fixtures.join("pg_control-15"), data.join("global/pg_control")).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let repo = t.path().join("repo");
    let opts = [
        format!("--repo1-path={}", repo.display()),
        format!("--pg1-path={}", data.display()),
        format!("--lock-path={}", t.path().join("lock").display()),
        "--stanza=db".to_string(),
        "--log-level-file=off".to_string(),
    ];
    let pgstrata = |args: &[&str]| {
        let all: Vec<&str> = opts.iter().map(String::as_str).chain(args.iter().copied()).collect();
        run(&all, &[])
    };
    let o = pgstrata(&["--no-online", "stanza-create"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let name = "000000010000000000000001";
    let mut segment = std::fs::read(fixtures.join("wal-first-page-15")).unwrap();
    segment.resize(16 << 20, 0);
    segment[100_000] = 1;
    let wal = t.path().join(name);
    std::fs::write(&wal, &segment).unwrap();
    let o = pgstrata(&["archive-push", wal.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let dir = repo.join("stanza/db/archive/15-1/0000000100000000");
    let object = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            file.starts_with(&format!("{name}-")) && !file.ends_with("-claim")
        })
        .expect("the segment's object");
    let good = std::fs::read(&object).unwrap();
    let fetched = t.path().join("fetched");
    let get = || pgstrata(&["archive-get", name, fetched.to_str().unwrap()]);
    let o = get();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(std::fs::read(&fetched).unwrap() == segment);
    std::fs::remove_file(&fetched).unwrap();

    let frame_at = 32; // the first frame header, after the blob header
    let frames = {
        let mut at = frame_at;
        let mut v = Vec::new();
        while at + 16 <= good.len() {
            v.push(at);
            at += 16 + u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        }
        v
    };
    let other_digest = format!("{name}-{}", "0".repeat(64));
    type Damage<'a> = Box<dyn Fn() -> PathBuf + 'a>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a wrong digest in its name",
            Box::new(|| {
                let to = dir.join(&other_digest);
                std::fs::write(&to, &good).unwrap();
                std::fs::remove_file(&object).unwrap();
                to
            }),
            "checksum",
        ),
        (
            "truncated",
            Box::new(|| {
                std::fs::write(&object, &good[..good.len() / 2]).unwrap();
                object.clone()
            }),
            "truncated",
        ),
        (
            "every frame claiming the largest plain length",
            Box::new(|| {
                let mut bad = good.clone();
                for &at in &frames {
                    bad[at + 4..at + 8].copy_from_slice(&(16u32 << 20).to_le_bytes());
                }
                std::fs::write(&object, &bad).unwrap();
                object.clone()
            }),
            "corrupt",
        ),
        (
            "a flipped byte in a frame body",
            Box::new(|| {
                let mut bad = good.clone();
                bad[frame_at + 16 + 3] ^= 0x40;
                std::fs::write(&object, &bad).unwrap();
                object.clone()
            }),
            "corrupt",
        ),
    ];
    for (what, damage, says) in cases {
        let damaged = damage();
        let o = get();
        let (_, err) = text(&o);
        let key = damaged.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(o.status.code(), Some(255), "{what}: {err}");
        assert!(err.contains(&key) && err.contains(says), "{what}: {err}");
        assert!(!err.contains("panicked") && !fetched.exists(), "{what}: {err}");
        let left: Vec<_> = std::fs::read_dir(fetched.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{what}: a temporary file was left: {left:?}");
        std::fs::remove_file(&damaged).unwrap();
        std::fs::write(&object, &good).unwrap();
    }
    assert!(get().status.success(), "the repaired object is fetched again");
}

/// `docs/options.md` is the option table as `help` reads it: regenerated with
/// `PGSTRATA_WRITE_DOCS=1 cargo test --test cli option_reference`.
#[test]
fn option_reference_matches_the_table() {
    let generated = pgstrata::commands::help::reference_markdown();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/options.md");
    if std::env::var("PGSTRATA_WRITE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/options.md differs from the option table: regenerate it (PGSTRATA_WRITE_DOCS=1)"
    );
}

/// `help COMMAND` lists what the command takes; `help COMMAND OPTION` describes one option with
/// its values and the default of the name invoked; an unknown command or option is an error.
#[test]
fn help_is_per_command_and_per_option() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pgbackrest");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pgstrata"), &link).unwrap();
    let o = run_as(&link, &["help", "backup"], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("--start-fast") && out.contains("--repo-path") && out.contains("/var/lib/pgbackrest"),
        "{out}"
    );
    assert!(
        !out.contains("--target ") && !out.contains("--target-timeline"),
        "restore's options listed for backup: {out}"
    );
    let o = run_as(&link, &["help", "backup", "type"], &[]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in ["full", "diff", "incr", "default: incr"] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let o = run_as(&link, &["help", "restore", "type"], &[]);
    assert!(text(&o).0.contains("immediate") && text(&o).0.contains("default: default"), "{:?}", text(&o));
    let o = run_as(&link, &["help", "archive-push", "config"], &[]);
    assert!(text(&o).0.contains("/etc/pgbackrest/pgbackrest.conf"), "{:?}", text(&o));
    let o = run_as(&link, &["help", "backup", "target"], &[]);
    assert_eq!(o.status.code(), Some(31), "{:?}", text(&o));
    let o = run_as(&link, &["help", "nonsense"], &[]);
    assert_eq!(o.status.code(), Some(48), "{:?}", text(&o));
}

/// A PGO-shaped configuration file against S3 on TLS with a certificate no system trusts (a
/// self-signed MinIO, as in PGO's examples): refused by default naming the certificate problem,
/// used with `repo1-storage-verify-tls=n` or with the CA in `repo1-storage-ca-file`.
#[test]
fn storage_tls_options_from_a_pgbackrest_configuration() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_TLS_ENDPOINT") else { return };
    let Some(ca) = support::emulator("PGSTRATA_TEST_S3_TLS_CA") else { return };
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("pgbackrest");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pgstrata"), &link).unwrap();
    let conf = dir.path().join("pgbackrest.conf");
    let write = |extra: &str| {
        std::fs::write(
            &conf,
            format!(
                "[global]\nlog-level-file=off\nrepo1-type=s3\nrepo1-path={}\nrepo1-s3-bucket=test-bucket\n\
                 repo1-s3-endpoint={endpoint}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n\
                 repo1-s3-key=test\nrepo1-s3-key-secret=test\nio-timeout=60\ndb-timeout=600\n\
                 repo1-bundle=y\nrepo1-block=y\n{extra}",
                unique("s3-tls")
            ),
        )
        .unwrap();
    };
    let cfg = format!("--config={}", conf.display());
    write("");
    let o = run_as(&link, &[&cfg, "repo-ls"], &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success(), "an untrusted certificate was accepted");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    for extra in ["repo1-storage-verify-tls=n\n".to_string(), format!("repo1-storage-ca-file={ca}\n")] {
        write(&extra);
        let o = run_as(&link, &[&cfg, "repo-ls"], &[]);
        assert!(o.status.success(), "{extra}: {:?}", text(&o));
    }
}

/// `repo-put` writes standard input into an object as given (large input streamed), `repo-get`
/// reads it back, and `repo-rm` removes it; its guards: a path with objects below it only with
/// `--recurse`, never the root, never the WAL archive through pgBackRest's path.
#[test]
fn repo_put_and_repo_rm_with_their_guards() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("--repo1-path={}", dir.path().display());
    let put = |path: &str, data: &[u8]| {
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PGSTRATA_LOG_LEVEL_FILE", "off")
            .args([repo.as_str(), "repo-put", path])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A refused put exits without reading: its closed pipe is not this test's failure.
        let _ = child.stdin.take().unwrap().write_all(data);
        child.wait_with_output().unwrap()
    };
    let get = |path: &str| run(&[&repo, "repo-get", path], &[("PGSTRATA_LOG_LEVEL_FILE", "off")]);
    let rm = |args: &[&str]| run(&[&[repo.as_str(), "repo-rm"], args].concat(), &[("PGSTRATA_LOG_LEVEL_FILE", "off")]);
    // 20 MiB of varied bytes: more than one upload part.
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let o = put("notes/big.bin", &big);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = put("notes/small.txt", b"hello");
    assert!(o.status.success(), "{:?}", text(&o));
    let o = get("notes/big.bin");
    assert!(o.status.success() && o.stdout == big, "read back {} bytes: {:?}", o.stdout.len(), text(&o).1);

    let o = put("archive/db/15-1/0000000100000000/000000010000000000000001", b"not a segment");
    assert_eq!(o.status.code(), Some(96), "{:?}", text(&o));
    assert!(text(&o).1.contains("archive-push"), "{:?}", text(&o));
    for (args, code, says) in [
        (&["notes"][..], 31, "recurse option must be used to delete non-empty path 'notes'"),
        (&["/"][..], 96, "not the root itself"),
        (&[][..], 43, "requires the object's path"),
        (&["notes/big.bin", "notes/small.txt"][..], 96, "only one path may be specified"),
    ] {
        let o = rm(args);
        assert_eq!(o.status.code(), Some(code), "repo-rm {args:?}: {:?}", text(&o));
        assert!(text(&o).1.contains(says), "repo-rm {args:?}: {:?}", text(&o));
    }
    assert!(get("notes/small.txt").status.success(), "a refused repo-rm removed something");
    let o = rm(&["notes/big.bin"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!get("notes/big.bin").status.success(), "repo-rm of one object left it");
    assert!(get("notes/small.txt").status.success(), "repo-rm of one object removed its neighbour");
    let o = rm(&["notes", "--recurse"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!get("notes/small.txt").status.success());
    // Nothing there: removing it again is not an error (pgBackRest's rm of a missing path).
    assert!(rm(&["notes"]).status.success());
}

/// A TCP proxy in front of an emulator that keeps every byte clients send: what shows that a
/// request carried a header (SSE, requester-pays, a billing project). Connections are served on
/// threads of their own until the test process ends.
struct RecordingProxy {
    port: u16,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl RecordingProxy {
    fn to(upstream: &str) -> Self {
        use std::io::{Read, Write};
        let addr = upstream.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = std::net::TcpStream::connect(&addr) else { return };
                let (mut client_r, mut server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n @ 1..) = client_r.read(&mut buf) {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if server_w.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = server_w.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { port, sent }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request bytes sent so far, lower-cased (header names are case-insensitive), and
    /// forgotten.
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.sent.lock().unwrap())).to_lowercase()
    }
}

/// `repo-put` to `path` with `data` on standard input, under `env`, run as `bin`.
fn put_through(bin: &Path, path: &str, data: &[u8], env: &[(&str, &str)]) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PGSTRATA_LOG_LEVEL_FILE", "off").args(["repo-put", path]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(data);
    child.wait_with_output().unwrap()
}

/// S3 server-side encryption (SSE-KMS, SSE-C) and requester-pays are request headers: through a
/// recording proxy in front of the S3 emulator, every write carries them (SSE-C every read too),
/// and the object reads back.
#[test]
fn s3_encryption_and_requester_pays_travel_on_the_requests() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_ENDPOINT") else { return };
    let proxy = RecordingProxy::to(&endpoint);
    let proxied = proxy.endpoint();
    let path = unique("s3-sse");
    let base = [
        ("PGBACKREST_REPO1_TYPE", "s3"),
        ("PGBACKREST_REPO1_PATH", path.as_str()),
        ("PGBACKREST_REPO1_S3_BUCKET", "test-bucket"),
        ("PGBACKREST_REPO1_S3_ENDPOINT", proxied.as_str()),
        ("PGBACKREST_REPO1_S3_REGION", "us-east-1"),
        ("PGBACKREST_REPO1_S3_URI_STYLE", "path"),
        ("PGBACKREST_REPO1_S3_KEY", "test"),
        ("PGBACKREST_REPO1_S3_KEY_SECRET", "test"),
    ];
    // 32 bytes, base64: what SSE-C takes.
    let customer_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    // (options, headers on the write, headers on the read)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 2] = [
        (
            &[
                ("PGBACKREST_REPO1_S3_KMS_KEY_ID", "arn:aws:kms:us-east-1:123456789012:key/pgstrata-test"),
                ("PGBACKREST_REPO1_S3_REQUESTER_PAYS", "y"),
            ],
            &[
                "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:us-east-1:123456789012:key/pgstrata-test",
                "x-amz-request-payer: requester",
            ],
            &["x-amz-request-payer: requester"],
        ),
        (
            &[("PGBACKREST_REPO1_S3_SSE_CUSTOMER_KEY", customer_key)],
            &[
                "x-amz-server-side-encryption-customer-algorithm: aes256",
                "x-amz-server-side-encryption-customer-key-md5:",
            ],
            &["x-amz-server-side-encryption-customer-algorithm: aes256"],
        ),
    ];
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("pgbackrest");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    for (i, (extra, on_write, on_read)) in cases.iter().enumerate() {
        let env: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        let key = format!("case{i}/object");
        let o = put_through(&link, &key, b"sealed by the server", &env);
        assert!(o.status.success(), "{extra:?}: {:?}", text(&o));
        let sent = proxy.take();
        for header in *on_write {
            assert!(sent.contains(header), "{extra:?}: the write did not carry {header:?}:\n{sent}");
        }
        let o = run_as(&link, &["repo-get", &key], &env);
        assert!(o.status.success() && o.stdout == b"sealed by the server", "{extra:?}: {:?}", text(&o));
        let sent = proxy.take();
        for header in *on_read {
            assert!(sent.contains(header), "{extra:?}: the read did not carry {header:?}:\n{sent}");
        }
    }
    // The customer key itself never shows in what pgstrata prints.
    let env: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("PGBACKREST_REPO1_S3_SSE_CUSTOMER_KEY", customer_key), ("PGBACKREST_REPO1_S3_KMS_KEY_ID", "k")])
        .collect();
    let o = run_as(&link, &["repo-ls"], &env);
    assert_eq!(o.status.code(), Some(31), "both encryptions at once: {:?}", text(&o));
    assert!(text(&o).1.contains("exclude each other") && !text(&o).1.contains(customer_key), "{:?}", text(&o));
}

/// `repoN-gcs-user-project` bills requests to a project: each request names it.
#[test]
fn gcs_user_project_travels_on_the_requests() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_GCS_ENDPOINT") else { return };
    let proxy = RecordingProxy::to(&endpoint);
    let proxied = proxy.endpoint();
    let path = unique("gcs-project");
    let env = [
        ("PGSTRATA_REPO1_TYPE", "gcs"),
        ("PGSTRATA_REPO1_PATH", path.as_str()),
        ("PGSTRATA_REPO1_GCS_BUCKET", "test-bucket"),
        ("PGSTRATA_REPO1_GCS_KEY_TYPE", "token"),
        ("PGSTRATA_REPO1_GCS_KEY", "t"),
        ("PGSTRATA_REPO1_GCS_ENDPOINT", proxied.as_str()),
        ("PGSTRATA_REPO1_GCS_USER_PROJECT", "billed-project"),
    ];
    let o = put_through(Path::new(BIN), "billed/object", b"billed", &env);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = run(&["repo-get", "billed/object"], &env);
    assert!(o.status.success() && o.stdout == b"billed", "{:?}", text(&o));
    let sent = proxy.take();
    let requests = sent.matches(" http/1.1\r\n").count();
    assert!(requests >= 2, "{sent}");
    assert_eq!(sent.matches("x-goog-user-project: billed-project").count(), requests, "{sent}");
}

/// pgBackRest's Azurite settings: the endpoint as a host, the port apart, path-style URIs.
#[test]
fn azure_path_style_from_host_and_port() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_AZURE_ENDPOINT") else { return };
    let hostport = endpoint.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let (host, port) = hostport.split_once(':').unwrap();
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let path = unique("azure-path-style");
    let host_url = format!("http://{host}");
    let mut env = vec![
        ("PGSTRATA_REPO1_TYPE", "azure"),
        ("PGSTRATA_REPO1_PATH", path.as_str()),
        ("PGSTRATA_REPO1_AZURE_ACCOUNT", "devstoreaccount1"),
        ("PGSTRATA_REPO1_AZURE_CONTAINER", "test-bucket"),
        ("PGSTRATA_REPO1_AZURE_KEY", key),
        ("PGSTRATA_REPO1_AZURE_ENDPOINT", host_url.as_str()),
        ("PGSTRATA_REPO1_STORAGE_PORT", port),
        ("PGSTRATA_REPO1_AZURE_URI_STYLE", "path"),
    ];
    let o = put_through(Path::new(BIN), "styled/object", b"path style", &env);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = run(&["repo-get", "styled/object"], &env);
    assert!(o.status.success() && o.stdout == b"path style", "{:?}", text(&o));
    // Host style puts the account into the host name, which this emulator does not serve.
    env.pop();
    let o = run(&["repo-get", "styled/object"], &env);
    assert!(!o.status.success(), "host style reached the emulator: {:?}", text(&o));
}

/// `repoN-storage-tag` tags what is written and `repoN-storage-upload-chunk-size` sets the part
/// size of streaming uploads: seen on the requests, through a recording proxy in front of moto.
#[test]
fn s3_tags_and_upload_chunk_size_travel_on_the_requests() {
    let Some(endpoint) = support::emulator("PGSTRATA_TEST_S3_ENDPOINT") else { return };
    let proxy = RecordingProxy::to(&endpoint);
    let proxied = proxy.endpoint();
    let path = unique("s3-tags");
    let base = [
        ("PGSTRATA_REPO1_TYPE", "s3"),
        ("PGSTRATA_REPO1_PATH", path.as_str()),
        ("PGSTRATA_REPO1_S3_BUCKET", "test-bucket"),
        ("PGSTRATA_REPO1_S3_ENDPOINT", proxied.as_str()),
        ("PGSTRATA_REPO1_S3_REGION", "us-east-1"),
        ("PGSTRATA_REPO1_S3_URI_STYLE", "path"),
        ("PGSTRATA_REPO1_S3_KEY", "test"),
        ("PGSTRATA_REPO1_S3_KEY_SECRET", "test"),
    ];
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    // Request lines (a body may run into the next one, so not line by line).
    let parts = |sent: &str| {
        sent.match_indices("put /")
            .filter(|(at, _)| sent[*at..].split(" http/1.1").next().is_some_and(|line| line.contains("partnumber=")))
            .count()
    };
    // Defaults: 8 MiB parts, no tags.
    let o = put_through(Path::new(BIN), "plain/big", &big, &base);
    assert!(o.status.success(), "{:?}", text(&o));
    let sent = proxy.take();
    assert_eq!(parts(&sent), 3, "20 MiB in 8 MiB parts");
    assert!(!sent.contains("x-amz-tagging"), "tags without the option");
    // Tagged, in 5 MiB parts.
    let env: Vec<(&str, &str)> = base
        .iter()
        .copied()
        .chain([("PGSTRATA_REPO1_STORAGE_TAG", "team=db"), ("PGSTRATA_REPO1_STORAGE_UPLOAD_CHUNK_SIZE", "5MiB")])
        .collect();
    let o = put_through(Path::new(BIN), "tagged/big", &big, &env);
    assert!(o.status.success(), "{:?}", text(&o));
    let sent = proxy.take();
    assert_eq!(parts(&sent), 4, "20 MiB in 5 MiB parts");
    assert!(sent.contains("x-amz-tagging: team=db"), "the upload is not tagged:\n{}", &sent[..sent.len().min(3000)]);
    let o = run(&["repo-get", "tagged/big"], &env);
    assert!(o.status.success() && o.stdout == big, "{:?}", text(&o).1);
    // A tag that is not key=value names the option.
    let bad: Vec<(&str, &str)> = base.iter().copied().chain([("PGSTRATA_REPO1_STORAGE_TAG", "team")]).collect();
    let o = run(&["repo-ls"], &bad);
    assert_eq!(o.status.code(), Some(32), "{:?}", text(&o));
    assert!(text(&o).1.contains("repo1-storage-tag"), "{:?}", text(&o));
}

/// A repository pgBackRest 2.59.1 archived into (the golden fixtures: unencrypted, and
/// aes-256-cbc), with no pgstrata stanza in it: `archive-get` finds the segment pgBackRest
/// archived, decrypts and decompresses it, and writes exactly the segment its name's SHA-1
/// vouches for. A segment it lacks is "not in the archive" (1); a repository with neither
/// pgstrata's stanza nor pgBackRest's archive stays an error (never 1, which would end a
/// recovery early).
#[test]
fn archive_get_reads_segments_pgbackrest_archived() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pgbackrest/2.59.1");
    let segment = "000000010000000000000002";
    let file = format!("{segment}-66d3a4d085368defd3de3cca97dd899b6a5d4af8.gz");
    // As a pgBackRest user runs it: the `pgbackrest` name, their pgbackrest.conf.
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("pgbackrest");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    for (kind, cipher) in
        [("plain", ""), ("cbc", "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=fixture passphrase\n")]
    {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        let wal_dir = repo.join("archive/db/15-1/0000000100000000");
        std::fs::create_dir_all(&wal_dir).unwrap();
        std::fs::copy(fixtures.join(kind).join("archive.info"), repo.join("archive/db/archive.info")).unwrap();
        std::fs::copy(fixtures.join(kind).join(&file), wal_dir.join(&file)).unwrap();
        let conf = t.path().join("pgbackrest.conf");
        let write_conf = |cipher: &str| {
            std::fs::write(
                &conf,
                format!(
                    "[global]\nrepo1-path={}\nlog-level-file=off\n{cipher}\n[db]\npg1-path=/nonexistent\n",
                    repo.display()
                ),
            )
            .unwrap();
        };
        write_conf(cipher);
        let cfg = format!("--config={}", conf.display());
        let dest = t.path().join("RECOVERYXLOG");
        let get = |name: &str| run_as(&link, &[&cfg, "--stanza=db", "archive-get", name, dest.to_str().unwrap()], &[]);
        let o = get(segment);
        assert!(o.status.success(), "{kind}: {:?}", text(&o));
        let wal = std::fs::read(&dest).unwrap();
        assert_eq!(wal.len(), 16 << 20, "{kind}");
        assert_eq!(pgstrata_repo_format::pgbackrest::sha1_hex(&wal), "66d3a4d085368defd3de3cca97dd899b6a5d4af8");
        let o = get("000000010000000000000003");
        assert_eq!(o.status.code(), Some(1), "{kind}: a missing segment: {:?}", text(&o));
        if kind == "cbc" {
            write_conf("repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=wrong\n");
            let o = get(segment);
            assert!(o.status.code().is_some_and(|c| c > 125), "a wrong passphrase: {:?}", text(&o));
        }
    }
    // Neither pgstrata's stanza nor pgBackRest's archive: an error, not "not in the archive".
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("RECOVERYXLOG");
    let o = run(
        &[
            &format!("--repo1-path={}", t.path().display()),
            "--stanza=db",
            "archive-get",
            segment,
            dest.to_str().unwrap(),
        ],
        &[("PGSTRATA_LOG_LEVEL_FILE", "off")],
    );
    assert!(o.status.code().is_some_and(|c| c > 125), "{:?}", text(&o));
}

/// Several pods switched at once (a rolling change): each one's first `archive-push` into a
/// stanza only pgBackRest has made takes it over. All succeed, one creates pgstrata's stanza
/// (one warning), the others find it, and the segment is stored once.
#[test]
fn pods_taking_over_a_pgbackrest_stanza_at_once_make_one_stanza() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pgbackrest/2.59.1/plain");
    let segment = "000000010000000000000002";
    let file = format!("{segment}-66d3a4d085368defd3de3cca97dd899b6a5d4af8.gz");
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let wal_dir = repo.join("archive/db/15-1/0000000100000000");
    std::fs::create_dir_all(&wal_dir).unwrap();
    std::fs::copy(fixtures.join("archive.info"), repo.join("archive/db/archive.info")).unwrap();
    std::fs::copy(fixtures.join(&file), wal_dir.join(&file)).unwrap();
    let repo_path = format!("--repo1-path={}", repo.display());
    let env = [("PGSTRATA_LOG_LEVEL_FILE", "off"), ("PGSTRATA_LOG_LEVEL_CONSOLE", "warn")];
    // The segment as PostgreSQL would hand it over, from pgBackRest's archive.
    let pg_wal = t.path().join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let wal = pg_wal.join(segment);
    let o = run(&[&repo_path, "--stanza=db", "archive-get", segment, wal.to_str().unwrap()], &env);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(!repo.join("stanza").exists(), "archive-get wrote into the repository");
    let pods: Vec<std::process::Child> = (0..12)
        .map(|_| {
            Command::new(BIN)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .envs(env)
                .args([&repo_path, "--stanza=db", "archive-push", wal.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut created = 0;
    for pod in pods {
        let o = pod.wait_with_output().unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
        let (out, err) = text(&o);
        created += format!("{out}{err}").matches("pgstrata continues it in place").count();
    }
    assert_eq!(created, 1, "pgstrata's stanza was created {created} times");
    let stored: Vec<_> = walk_files(&repo.join("stanza/db/archive"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(segment)))
        .filter(|p| !p.to_string_lossy().ends_with("-claim"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let o = run(&[&repo_path, "--stanza=db", "info", "--output=json"], &env);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info[0]["db"].as_array().map(Vec::len), Some(1), "{info}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk_files(&p)) } else { out.push(p) }
    }
    out
}
