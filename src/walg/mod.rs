//! The WAL-G front end: the program invoked as `wal-g` (a link to pgstrata), configured only by
//! WAL-G's environment variables ([`env`]), with WAL-G's commands over the same engine and
//! repository as the pgBackRest front end. Each command becomes an engine [`Config`] for one of
//! the engine's commands (`archive-push`, `archive-get`, `backup`, `restore`, `annotate`,
//! `expire`); nothing of backup or restore is implemented twice.
//!
//! | WAL-G | engine |
//! |---|---|
//! | `wal-push PATH` | `archive-push PATH` (the stanza is created on first use) |
//! | `wal-fetch NAME DEST` | `archive-get NAME DEST` (prefetching when `WALG_DOWNLOAD_CONCURRENCY` > 1) |
//! | `backup-push PGDATA [--full] [--permanent]` | `backup --type=full\|incr\|diff [--keep]` |
//! | `backup-fetch DIR NAME\|LATEST` | `restore --set=… --type=none` into DIR |
//! | `backup-list [--detail] [--json] [--pretty]` | the catalog, named as WAL-G names backups |
//! | `backup-mark [-i] NAME` | `annotate --keep` / `--no-keep` |
//! | `delete retain\|before\|everything … [--confirm]` | `expire` of the chosen backups |
//!
//! Exit codes: 0 on success; `wal-fetch` exits 1 only when the segment is in no archive and 255
//! for every other failure (so PostgreSQL stops recovery rather than ending it early); every
//! other command exits 1 on failure, as WAL-G does.

pub mod delete;
pub mod env;
pub mod names;

use std::path::{Path, PathBuf};

use pgstrata_repo_format::BackupType;
use pgstrata_repo_format::layout::StanzaLayout;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::request;
use env::{DeltaOrigin, STANZA, WalgSettings};

const USAGE: &str = "usage: wal-g wal-push PATH | wal-fetch NAME DEST | backup-push PGDATA [--full] [--permanent] | \
                     backup-fetch DIR NAME|LATEST | backup-list [--detail] [--json] [--pretty] | \
                     backup-mark [-i] NAME | delete retain|before|everything ... [--confirm]";

/// Runs the engine command a WAL-G verb became, through its request (never through the
/// pgBackRest front end).
fn engine(config: &Config) -> CliResult<()> {
    match config.command.name {
        "archive-push" => crate::archive::push(&request::archive::archive(config)?),
        "archive-get" => crate::archive::get(&request::archive::archive(config)?),
        "archive-get:async" => crate::archive::get_async::worker(&request::archive::archive(config)?),
        "backup" => crate::backup::run(&request::backup::backup(config)?),
        "restore" => crate::restore::run(&request::restore::restore(config)?),
        "annotate" => crate::annotate::run(&request::stanza::annotate(config)?),
        other => Err(CliError::new(ErrorCode::CommandInvalid, format!("'{other}' is not run by the WAL-G front end"))),
    }
}

/// Runs one `wal-g` command line; returns the exit code.
pub fn run(argv: &[String], env: &[(String, String)]) -> u8 {
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let command = args.first().copied().unwrap_or("");
    let fetching = command == "wal-fetch";
    let fail = |e: &CliError| -> u8 {
        // WAL-G's words: no pgBackRest code or option names in what a WAL-G user reads.
        eprintln!("ERROR: {}", e.message);
        for hint in e.hints.iter().filter_map(|h| walg_hint(h)) {
            eprintln!("HINT: {hint}");
        }
        if e.code == ErrorCode::Crypto {
            eprintln!("HINT: as wal-g, the key is WALG_LIBSODIUM_KEY");
        }
        // WAL-G's codes: 1 for a usage error and for any failure, except that wal-fetch's
        // failures other than "not in the archive" are above 125 (PostgreSQL must not take
        // them for the end of the archive).
        match e.code {
            ErrorCode::NotInArchive | ErrorCode::CommandInvalid => 1,
            _ if fetching => 255,
            _ => 1,
        }
    };
    match command {
        "--version" | "version" => {
            println!("wal-g (pgstrata {}) — the WAL-G front end of pgstrata", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        "" | "--help" | "help" => {
            println!("{USAGE}");
            return 0;
        }
        _ => {}
    }
    let settings = match env::translate(env) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let front = Front { settings, cwd: std::env::current_dir().ok() };
    let base = match front.config("info", &[], &[]) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    crate::log::init(&crate::request::log_settings(&base, true));
    for w in &front.settings.warnings {
        tracing::warn!("{w}");
    }
    let result = match command {
        "wal-push" => front.wal_push(&args[1..]),
        "wal-fetch" => front.wal_fetch(&args[1..]),
        "backup-push" => front.backup_push(&args[1..]),
        "backup-fetch" => front.backup_fetch(&args[1..]),
        "backup-list" => front.backup_list(&args[1..]),
        "backup-mark" => front.backup_mark(&args[1..]),
        "delete" => front.delete(&args[1..]),
        // The engine's prefetch worker, started by wal-fetch under this program's name: the
        // same options as the wal-fetch that started it.
        "archive-get:async" => {
            let set = front.fetch_options();
            let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
            front.config(command, &args[1..], &set).and_then(|c| engine(&c))
        }
        other => {
            Err(CliError::new(ErrorCode::CommandInvalid, format!("'{other}' is not a WAL-G command pgstrata knows"))
                .hint(USAGE))
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            if e.code == ErrorCode::NotInArchive && fetching {
                tracing::info!("{}", e.message);
                return 1;
            }
            fail(&e)
        }
    }
}

/// An engine hint as a WAL-G user should read it: pgBackRest's terms (stanzas, `repoN-`/`pgN-`
/// options, `--delta`, the passphrase) have no meaning under WAL-G's environment; such hints are
/// said in WAL-G's terms or left out.
fn walg_hint(hint: &str) -> Option<String> {
    if hint.contains("cipher-pass") {
        return Some("check WALG_LIBSODIUM_KEY: it must be the key the storage was written with".into());
    }
    let pgbackrest_terms = ["stanza", "--delta", "repo1-", "repoN-", "pg1-", "pgN-", "pgbackrest", "--set", "--type"];
    (!pgbackrest_terms.iter().any(|t| hint.contains(t))).then(|| hint.to_string())
}

/// The front end: the translated environment and where it runs.
struct Front {
    settings: WalgSettings,
    cwd: Option<PathBuf>,
}

fn args_error(what: &str) -> CliError {
    CliError::new(ErrorCode::CommandInvalid, what.to_string()).hint(USAGE)
}

impl Front {
    /// The data directory: `PGDATA`, else the current directory when it is one (PostgreSQL runs
    /// `archive_command` and `restore_command` there).
    fn pgdata(&self) -> Option<PathBuf> {
        self.settings.pgdata.clone().or_else(|| self.cwd.clone().filter(|d| d.join("global/pg_control").is_file()))
    }

    /// The engine's configuration for `command` with `params`, and options `set` as if given on
    /// its command line. WAL-G's settings reach it as environment (secrets included: never as
    /// arguments), no configuration file is read.
    fn config(&self, command: &str, params: &[&str], set: &[(&str, &str)]) -> CliResult<Config> {
        let mut argv = vec!["wal-g".to_string(), command.to_string()];
        argv.extend(params.iter().map(|p| (*p).to_string()));
        let var = |name: &str| format!("PGSTRATA_{}", name.to_uppercase().replace('-', "_"));
        let mut env: Vec<(String, String)> = self.settings.options.iter().map(|(k, v)| (var(k), v.clone())).collect();
        env.push((var("stanza"), STANZA.to_string()));
        if let Some(data) = self.pgdata() {
            env.push((var("pg1-path"), data.display().to_string()));
            env.push((var("spool-path"), data.join("pg_wal/.pgstrata").display().to_string()));
        }
        Config::load(&argv, &env)?.for_command(command, set)
    }

    /// Runs `command`, creating the stanza first when it does not exist yet (WAL-G has no
    /// stanza-create: the first `wal-push` or `backup-push` makes the repository).
    fn with_stanza(&self, config: &Config) -> CliResult<()> {
        match engine(config) {
            Ok(()) => Ok(()),
            Err(e) if !self.stanza_exists()? => {
                if let Some(found) = self.walg_storage()? {
                    return Err(CliError::new(
                        ErrorCode::RepoInvalid,
                        format!(
                            "the storage holds WAL-G's own objects ({found}/): pgstrata reads no WAL-G backups and does \
                             not write beside them"
                        ),
                    )
                    .hint(
                        "give pgstrata a new prefix (WALG_S3_PREFIX, WALG_FILE_PREFIX, ...) and keep WAL-G for the old \
                         backups until they age out (docs/migrating.md)",
                    ));
                }
                tracing::info!("creating stanza '{STANZA}' in the storage WAL-G's prefix names ({})", e.message);
                if let Some(dir) = self.file_prefix() {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        CliError::new(ErrorCode::FileRead, format!("unable to create {}: {e}", dir.display()))
                    })?;
                }
                crate::stanza::create(&request::stanza::stanza(&self.config("stanza-create", &[], &[])?, true)?)?;
                engine(config)
            }
            Err(e) => Err(e),
        }
    }

    /// The directory of a `WALG_FILE_PREFIX` storage, which WAL-G makes when it first writes.
    fn file_prefix(&self) -> Option<PathBuf> {
        let get = |name: &str| self.settings.options.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        (get("repo1-type") == Some("posix")).then(|| get("repo1-path").map(PathBuf::from)).flatten()
    }

    fn stanza_exists(&self) -> CliResult<bool> {
        if self.file_prefix().is_some_and(|dir| !dir.is_dir()) {
            return Ok(false);
        }
        let config = self.config("info", &[], &[])?;
        let store = crate::request::repos::repo_target(&config, 1).store()?;
        let layout = StanzaLayout::new(STANZA)?;
        crate::runtime::runtime()?
            .block_on(async { Ok(crate::repo::load_stanza_info(&store, &layout).await?.is_some()) })
    }

    /// The first of WAL-G's own top-level folders (`basebackups_005`, `wal_005`) in the storage.
    fn walg_storage(&self) -> CliResult<Option<&'static str>> {
        if self.file_prefix().is_some_and(|dir| !dir.is_dir()) {
            return Ok(None);
        }
        let config = self.config("info", &[], &[])?;
        let store = crate::request::repos::repo_target(&config, 1).store()?;
        let dirs = crate::runtime::runtime()?.block_on(async { store.list_dirs("").await })?;
        Ok(["basebackups_005", "wal_005"].into_iter().find(|d| dirs.iter().any(|x| x == d)))
    }

    /// Whether WAL-G's archive (`wal_005/`) holds `name` in its own format.
    fn in_walg_archive(&self, name: &str) -> CliResult<bool> {
        if self.file_prefix().is_some_and(|dir| !dir.is_dir()) {
            return Ok(false);
        }
        let config = self.config("info", &[], &[])?;
        let store = crate::request::repos::repo_target(&config, 1).store()?;
        let found =
            crate::runtime::runtime()?.block_on(async { store.list_files(&format!("wal_005/{name}")).await })?;
        Ok(!found.is_empty())
    }

    fn wal_push(&self, args: &[&str]) -> CliResult<()> {
        let [path] = args else { return Err(args_error("wal-push takes the path of one WAL file")) };
        let upload = self.settings.upload_concurrency.to_string();
        self.with_stanza(&self.config("archive-push", &[path], &[("process-max", &upload)])?)
    }

    fn wal_fetch(&self, args: &[&str]) -> CliResult<()> {
        let [name, dest] = args else { return Err(args_error("wal-fetch takes a WAL file name and a destination")) };
        let set = if self.run_by_recovery(dest) { self.fetch_options() } else { self.fetch_options_by_hand() };
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match engine(&self.config("archive-get", &[name, dest], &set)?) {
            // Not in pgstrata's archive, but in WAL-G's: never "not in the archive" (PostgreSQL
            // would end the recovery there).
            Err(e)
                if matches!(e.code, ErrorCode::NotInArchive | ErrorCode::FileMissing)
                    && self.in_walg_archive(name)? =>
            {
                Err(CliError::new(
                    ErrorCode::RepoInvalid,
                    format!(
                        "{name} is in WAL-G's archive (wal_005/) only, in WAL-G's format, which pgstrata does not read"
                    ),
                )
                .hint("fetch it with WAL-G, or recover with WAL-G from its own backups (docs/migrating.md)"))
            }
            other => other,
        }
    }

    /// Whether PostgreSQL itself runs this `wal-fetch` (`restore_command`): the data directory is
    /// recovering (`recovery.signal` or `standby.signal`) and the destination lies in its own
    /// `pg_wal`. Only then may segments be prefetched into that `pg_wal`; a `wal-fetch` run by
    /// hand with `PGDATA` set must not write into a cluster's directory.
    fn run_by_recovery(&self, dest: &str) -> bool {
        let Some(data) = self.pgdata() else { return false };
        let recovering = ["recovery.signal", "standby.signal"].iter().any(|s| data.join(s).is_file());
        let dest = std::path::Path::new(dest);
        let dest =
            if dest.is_absolute() { dest.to_path_buf() } else { self.cwd.clone().unwrap_or_default().join(dest) };
        let parent = dest.parent().and_then(|p| std::fs::canonicalize(p).ok());
        let pg_wal = std::fs::canonicalize(data.join("pg_wal")).ok();
        recovering && parent.is_some() && parent == pg_wal
    }

    /// A `wal-fetch` run by hand: parallel downloads, no prefetch.
    fn fetch_options_by_hand(&self) -> Vec<(&'static str, String)> {
        vec![("process-max", self.settings.download_concurrency.to_string())]
    }

    /// `WALG_DOWNLOAD_CONCURRENCY` parallel downloads and, above one with a data directory,
    /// prefetch as WAL-G does: that many segments fetched ahead into the spool in `pg_wal`.
    fn fetch_options(&self) -> Vec<(&'static str, String)> {
        let n = self.settings.download_concurrency;
        let mut set = vec![("process-max", n.to_string())];
        if n > 1 && self.pgdata().is_some() {
            set.push(("archive-async", "y".into()));
            set.push(("archive-get-queue-max", format!("{}", u64::from(n) * (16 << 20))));
        }
        set
    }

    fn backup_push(&self, args: &[&str]) -> CliResult<()> {
        let (mut data, mut full, mut permanent) = (None, false, false);
        for a in args {
            match *a {
                "--full" | "-f" => full = true,
                "--permanent" | "-p" => permanent = true,
                flag if flag.starts_with('-') => return Err(args_error(&format!("unknown backup-push flag {flag}"))),
                dir if data.is_none() => data = Some(dir),
                _ => return Err(args_error("backup-push takes one data directory")),
            }
        }
        let data = data
            .map(Path::new)
            .map(Path::to_path_buf)
            .or_else(|| self.pgdata())
            .ok_or_else(|| args_error("backup-push needs the data directory (an argument, or PGDATA)"))?;
        let kind = if full { BackupType::Full } else { self.delta_kind()? };
        let data = data.display().to_string();
        let upload = self.settings.upload_concurrency.to_string();
        let mut set = vec![
            ("type", kind.as_str()),
            ("pg1-path", data.as_str()),
            ("process-max", upload.as_str()),
            ("start-fast", "y"),
            ("expire-auto", "n"),
        ];
        if permanent {
            set.push(("keep", "y"));
        }
        tracing::info!("backup-push: a {} backup of {data}", if kind == BackupType::Full { "full" } else { "delta" });
        self.with_stanza(&self.config("backup", &[], &set)?)
    }

    /// Full, or a delta (`WALG_DELTA_MAX_STEPS`, `WALG_DELTA_ORIGIN`): incremental from the latest
    /// backup, differential from the latest full, until the chain reaches the steps allowed.
    fn delta_kind(&self) -> CliResult<BackupType> {
        if self.settings.delta_max_steps == 0 {
            return Ok(BackupType::Full);
        }
        let catalog = match self.catalog() {
            Ok(catalog) => catalog,
            // No stanza yet (or no storage directory): the first backup, full.
            Err(e) if e.code == ErrorCode::FileMissing => return Ok(BackupType::Full),
            Err(e) => return Err(e),
        };
        let named = names::named(&catalog);
        let Some((_, latest)) = named.last() else { return Ok(BackupType::Full) };
        // Deltas in the latest backup's chain, and so in the next one's.
        let mut steps = 0;
        let mut at = *latest;
        while let Some(prior) = at.prior.as_ref().and_then(|p| catalog.backups.iter().find(|b| &b.label == p)) {
            steps += 1;
            at = prior;
        }
        let next = match self.settings.delta_origin {
            DeltaOrigin::Latest => steps + 1,
            DeltaOrigin::LatestFull => 1,
        };
        Ok(match self.settings.delta_origin {
            _ if next > self.settings.delta_max_steps => BackupType::Full,
            DeltaOrigin::Latest => BackupType::Incr,
            DeltaOrigin::LatestFull => BackupType::Diff,
        })
    }

    fn catalog(&self) -> CliResult<pgstrata_repo_format::meta::BackupCatalog> {
        Ok(self.repo_state()?.0)
    }

    /// The catalog and the stanza's databases.
    fn repo_state(
        &self,
    ) -> CliResult<(pgstrata_repo_format::meta::BackupCatalog, Vec<pgstrata_repo_format::meta::DbEntry>)> {
        let config = self.config("info", &[], &[])?;
        crate::runtime::runtime()?.block_on(async {
            let repo = crate::repo::open_repo(&crate::request::repos::repo_target(&config, 1), STANZA).await?;
            Ok((repo.load_catalog().await?, repo.info.db_history.clone()))
        })
    }

    fn backup_fetch(&self, args: &[&str]) -> CliResult<()> {
        let [dir, name] = args else { return Err(args_error("backup-fetch takes a directory and a backup name")) };
        let catalog = self.catalog()?;
        let label = names::find(&catalog, name)?.label.to_string();
        let download = self.settings.download_concurrency.to_string();
        let set = [("pg1-path", *dir), ("set", label.as_str()), ("type", "none"), ("process-max", download.as_str())];
        tracing::info!("backup-fetch: {name} (backup set {label}) into {dir}");
        engine(&self.config("restore", &[], &set)?)
    }

    fn backup_list(&self, args: &[&str]) -> CliResult<()> {
        let (mut detail, mut json, mut pretty) = (false, false, false);
        for a in args {
            match *a {
                "--detail" => detail = true,
                "--json" => json = true,
                "--pretty" => pretty = true,
                other => return Err(args_error(&format!("unknown backup-list flag {other}"))),
            }
        }
        if !self.stanza_exists()? {
            tracing::info!("No backups found");
            return Ok(());
        }
        let (catalog, dbs) = self.repo_state()?;
        if catalog.backups.is_empty() {
            tracing::info!("No backups found");
            return Ok(());
        }
        print!("{}", names::list(&catalog, &dbs, detail, json, pretty)?);
        Ok(())
    }

    fn backup_mark(&self, args: &[&str]) -> CliResult<()> {
        let (keep, name) = match args {
            ["-i", name] | ["--impermanent", name] => ("n", *name),
            [name] => ("y", *name),
            _ => return Err(args_error("backup-mark takes [-i] and a backup name")),
        };
        let catalog = self.catalog()?;
        let label = names::find(&catalog, name)?.label.to_string();
        engine(&self.config("annotate", &[], &[("set", &label), ("keep", keep)])?)
    }

    fn delete(&self, args: &[&str]) -> CliResult<()> {
        let confirm = args.contains(&"--confirm");
        let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--confirm").collect();
        let what = delete::parse(&args)?;
        if !self.stanza_exists()? {
            tracing::info!("No backups found");
            return Ok(());
        }
        let catalog = self.catalog()?;
        let doomed = delete::doomed(&catalog, &what)?;
        let names: std::collections::BTreeMap<_, _> =
            names::named(&catalog).into_iter().map(|(n, b)| (b.label.clone(), n)).collect();
        let say = if confirm { "deleting" } else { "would delete (add --confirm to delete)" };
        for b in &doomed {
            let name = names.get(&b.label).map_or("", String::as_str);
            eprintln!("{say}: {name} (backup set {})", b.label);
        }
        if confirm {
            // `everything FORCE`: the permanent marks go first.
            for b in doomed.iter().filter(|b| b.keep) {
                let label = b.label.to_string();
                engine(&self.config("annotate", &[], &[("set", &label), ("keep", "n")])?)?;
            }
        }
        let labels = doomed.iter().map(|b| b.label.clone()).collect();
        let everything = matches!(what, delete::Delete::Everything { .. });
        if doomed.is_empty() && !everything {
            return Ok(());
        }
        let config = self.config("expire", &[], &[("dry-run", if confirm { "n" } else { "y" })])?;
        crate::expire::run(&crate::request::expire::expire_choice(&config, crate::expire::Choice::Labels(labels))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_said_in_walg_terms() {
        assert_eq!(
            walg_hint("check repo1-cipher-pass: it must be the passphrase the stanza was created with").as_deref(),
            Some("check WALG_LIBSODIUM_KEY: it must be the key the storage was written with")
        );
        assert_eq!(walg_hint("run stanza-create first"), None);
        assert_eq!(walg_hint("use --delta to restore over an existing directory"), None);
        assert_eq!(walg_hint("is the storage reachable?").as_deref(), Some("is the storage reachable?"));
    }
}
