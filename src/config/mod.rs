//! Configuration in pgBackRest's model: command line, then environment, then INI files.
//!
//! - Command line: `pgstrata [options] <command> [options] [params]`; `--opt=value`,
//!   `--opt value`, `--opt` / `--no-opt` for booleans; secrets are refused here.
//! - Environment: `PGSTRATA_<OPTION>` (`PGBACKREST_<OPTION>` when run as `pgbackrest`), upper
//!   case with `-` as `_`.
//! - Files: `/etc/pgstrata/pgstrata.conf` and `/etc/pgstrata/conf.d/*.conf` (pgBackRest's paths
//!   when run as `pgbackrest`), or `--config`, `--config-path`, `--config-include-path`. Within
//!   them `[<stanza>:<command>]` beats `[<stanza>]` beats `[global:<command>]` beats `[global]`.

pub mod ini;
pub mod options;
pub mod pgbackrest;
pub mod value;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{CliError, CliResult, ErrorCode};
use options::{CommandDef, Kind, Resolved};

pub use crate::identity::Flavor;

/// Default of an option under the name invoked (pgBackRest's paths as `pgbackrest`).
pub fn default_of(flavor: Flavor, def: &options::OptionDef) -> Option<&'static str> {
    match (flavor, def.name, def.group) {
        (Flavor::Pgbackrest, "log-path", options::Group::None) => Some("/var/log/pgbackrest"),
        (Flavor::Pgbackrest, "lock-path", options::Group::None) => Some("/tmp/pgbackrest"),
        (Flavor::Pgbackrest, "spool-path", options::Group::None) => Some("/var/spool/pgbackrest"),
        (Flavor::Pgbackrest, "path", options::Group::Repo) => Some("/var/lib/pgbackrest"),
        _ => def.default,
    }
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Environment,
    File { path: PathBuf, section: String },
}

#[derive(Clone, Debug)]
struct Setting {
    values: Vec<String>,
    source: Source,
}

/// The resolved configuration of one command run. `Debug` shows options as `summary()` does,
/// secrets redacted.
#[derive(Clone)]
pub struct Config {
    pub flavor: Flavor,
    pub command: &'static CommandDef,
    pub params: Vec<String>,
    settings: BTreeMap<String, (Resolved, Setting)>,
    /// Problems worth a warning that did not stop the command.
    pub warnings: Vec<String>,
    /// The command line and environment it was resolved from, to resolve it again
    /// ([`reload`](Self::reload): the server on SIGHUP).
    origin: std::sync::Arc<Origin>,
}

/// A command line and an environment.
type Origin = (Vec<String>, Vec<(String, String)>);

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("command", &self.command.name)
            .field("params", &self.params)
            .field("options", &self.summary())
            .finish()
    }
}

const SFTP_REFUSED: &str =
    "SFTP repositories are not supported: use posix, s3, gcs or azure, or a repository host (repoN-host-type=tls)";

fn invalid_option(name: &str) -> CliError {
    CliError::new(ErrorCode::OptionInvalid, format!("invalid option '--{name}'"))
}

/// `pg1-path`, which must be set and absolute.
pub fn pg_path(config: &Config) -> CliResult<PathBuf> {
    let path = PathBuf::from(config.require("pg1-path")?);
    if !path.is_absolute() {
        return Err(CliError::new(
            ErrorCode::OptionInvalidValue,
            format!("'{}' is not valid for 'pg1-path' option: it must be absolute", path.display()),
        ));
    }
    Ok(path)
}

/// The `--annotation key=value` options, in order (a later one for the same key wins; an empty
/// value means "remove").
pub fn annotations(config: &Config) -> CliResult<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for item in config.list("annotation") {
        match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                out.insert(key.trim().to_string(), value.to_string());
            }
            _ => {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("annotation '{item}' is not key=value"),
                )
                .hint("give --annotation=key=value (an empty value removes the key)"));
            }
        }
    }
    Ok(out)
}

/// Where a setting came from, for messages.
fn describe_source(source: &Source) -> String {
    match source {
        Source::CommandLine => "the command line".to_string(),
        Source::Environment => "the environment".to_string(),
        Source::File { path, section } => format!("{} [{section}]", path.display()),
    }
}

/// Checks one value against its option's kind; returns the normalized text.
fn check_value(r: &Resolved, value: &str) -> CliResult<String> {
    let name = r.canonical();
    let bad = |detail: String| {
        CliError::new(ErrorCode::OptionInvalidValue, format!("'{value}' is not valid for '{name}' option: {detail}"))
    };
    match r.def.kind {
        Kind::Bool => value::parse_bool(value).map(|b| if b { "y" } else { "n" }.to_string()).map_err(bad),
        Kind::Int { min, max } => {
            let n: i64 = value.parse().map_err(|_| bad("not an integer".into()))?;
            if n < min || n > max {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidRange,
                    format!("'{value}' is out of range for '{name}' option (allowed {min} to {max})"),
                ));
            }
            Ok(n.to_string())
        }
        Kind::Size { min, max } => {
            let n = value::parse_size(value).map_err(bad)?;
            if n < min || n > max {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidRange,
                    format!("'{value}' is out of range for '{name}' option (allowed {min} to {max} bytes)"),
                ));
            }
            Ok(n.to_string())
        }
        Kind::Duration => value::parse_duration(value).map(|_| value.to_string()).map_err(bad),
        Kind::Enum(allowed) => {
            if !allowed.contains(&value) {
                return Err(bad(format!("allowed values are {}", allowed.join(", "))));
            }
            let unsupported = match (r.def.name, value) {
                ("type", "sftp") if r.def.group == options::Group::Repo => Some(SFTP_REFUSED),
                _ => None,
            };
            if let Some(why) = unsupported {
                return Err(bad(format!("not supported ({why})")));
            }
            Ok(value.to_string())
        }
        Kind::Path => {
            if value.is_empty() {
                return Err(bad("empty path".into()));
            }
            Ok(value.to_string())
        }
        Kind::Str | Kind::List => Ok(value.to_string()),
    }
}

impl Config {
    /// Resolves the configuration from the command line, an environment and the config files.
    pub fn load(argv: &[String], env: &[(String, String)]) -> CliResult<Self> {
        Self::load_as(argv, env, true)
    }

    /// [`Config::load`]; `check_command` false for arguments pgstrata added itself (a server's
    /// per-stanza view), which pgBackRest's validity rule is not about.
    fn load_as(argv: &[String], env: &[(String, String)], check_command: bool) -> CliResult<Self> {
        let flavor = Flavor::from_argv0(argv.first().map(String::as_str).unwrap_or("pgstrata"));
        let mut cli: BTreeMap<String, (Resolved, Setting)> = BTreeMap::new();
        let mut command: Option<&'static CommandDef> = None;
        let mut params = Vec::new();
        let mut args = argv.iter().skip(1).peekable();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                command = options::command("help");
                continue;
            }
            if arg == "--version" {
                command = options::command("version");
                continue;
            }
            let Some(body) = arg.strip_prefix("--") else {
                if command.is_none() {
                    command = Some(options::command(arg).ok_or_else(|| {
                        CliError::new(ErrorCode::CommandInvalid, format!("invalid command '{arg}'"))
                            .hint("run 'help' to list the commands")
                    })?);
                } else {
                    params.push(arg.clone());
                }
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let (resolved, value) = if let Some(r) = options::resolve(name) {
                let value = match (r.def.kind, inline) {
                    (_, Some(v)) => v,
                    (Kind::Bool, None) => "y".to_string(),
                    // A choice that includes y and n (backup-standby) is also a flag.
                    (Kind::Enum(values), None) if values.contains(&"y") && values.contains(&"n") => "y".to_string(),
                    (_, None) => args.next_if(|next| !next.starts_with("--")).cloned().ok_or_else(|| {
                        CliError::new(ErrorCode::OptionInvalidValue, format!("option '--{name}' requires a value"))
                    })?,
                };
                (r, value)
            } else if let Some(r) = name.strip_prefix("no-").and_then(options::resolve) {
                let flag_like = match r.def.kind {
                    Kind::Bool => true,
                    Kind::Enum(values) => values.contains(&"y") && values.contains(&"n"),
                    _ => false,
                };
                if !flag_like || inline.is_some() {
                    return Err(CliError::new(
                        ErrorCode::OptionInvalid,
                        format!("option '--{name}' cannot be negated"),
                    ));
                }
                (r, "n".to_string())
            } else {
                return Err(invalid_option(name));
            };
            let canonical = resolved.canonical();
            if resolved.def.secure {
                return Err(CliError::new(
                    ErrorCode::OptionInvalid,
                    format!("option '{canonical}' is not allowed on the command-line"),
                )
                .hint("this option could expose secrets in the process list")
                .hint(format!(
                    "specify the option in a configuration file or an environment variable ({}{}) instead",
                    flavor.env_prefix(),
                    canonical.to_uppercase().replace('-', "_")
                )));
            }
            let value = check_value(&resolved, &value)?;
            match cli.get_mut(&canonical) {
                Some((_, s)) if resolved.def.kind == Kind::List => s.values.push(value),
                Some(_) => {
                    return Err(CliError::new(
                        ErrorCode::OptionDuplicate,
                        format!("option '{canonical}' cannot be set multiple times"),
                    ));
                }
                None => {
                    cli.insert(canonical, (resolved, Setting { values: vec![value], source: Source::CommandLine }));
                }
            }
        }
        let command = command.ok_or_else(|| {
            CliError::new(ErrorCode::CommandRequired, "no command given").hint("run 'help' to list the commands")
        })?;
        // pgBackRest's rule: an option on the command line must be one the command takes (in
        // files and the environment, options of other commands are simply not for this one).
        for (canonical, (resolved, _)) in cli.iter().filter(|_| check_command) {
            if !resolved.def.valid_for(command.name) {
                return Err(CliError::new(
                    ErrorCode::OptionInvalid,
                    format!("option '{canonical}' not valid for command '{}'", command.name),
                )
                .hint(format!("run 'help {}' to list its options", command.name)));
            }
        }
        let origin = std::sync::Arc::new((argv.to_vec(), env.to_vec()));
        let mut config = Self { flavor, command, params, settings: cli, warnings: Vec::new(), origin };
        config.merge_env(env)?;
        config.merge_files()?;
        config.refuse_unsupported()?;
        Ok(config)
    }

    /// pgBackRest options pgstrata does not support, set (to other than pgBackRest's default)
    /// for a command that takes them: an error saying what to do, wherever they were set; those
    /// it does not apply, a warning.
    fn refuse_unsupported(&mut self) -> CliResult<()> {
        let mut warnings = Vec::new();
        for (canonical, (resolved, setting)) in &self.settings {
            let reason = match resolved.def.support {
                options::Support::Refused(reason) => reason,
                options::Support::Ignored(_) => "",
                _ => continue,
            };
            if !resolved.def.valid_for(self.command.name) {
                continue;
            }
            let default = resolved.def.default.map(|d| check_value(resolved, d)).transpose()?;
            if setting.values.len() == 1 && setting.values.first() == default.as_ref() {
                continue;
            }
            if let options::Support::Ignored(instead) = resolved.def.support {
                warnings.push(format!("option '{canonical}' ({}) is {instead}", describe_source(&setting.source)));
                continue;
            }
            return Err(CliError::new(
                ErrorCode::OptionInvalid,
                format!("option '{canonical}' is not supported: {reason}"),
            )
            .hint(format!("remove it from {}", describe_source(&setting.source))));
        }
        self.warnings.extend(warnings);
        Ok(())
    }

    fn merge_env(&mut self, env: &[(String, String)]) -> CliResult<()> {
        let prefix = self.flavor.env_prefix();
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(prefix) else { continue };
            // Variables of our own test harness are not options.
            if rest.starts_with("TEST_") || matches!(rest, "REQUIRE_SERVERS" | "PG_BIN" | "WRITE_FIXTURES") {
                continue;
            }
            let name = rest.to_lowercase().replace('_', "-");
            let Some(r) = options::resolve(&name) else {
                self.warnings.push(format!("environment contains invalid option '{name}' ({key})"));
                continue;
            };
            let canonical = r.canonical();
            if self.settings.contains_key(&canonical) {
                continue;
            }
            let values = if r.def.kind == Kind::List {
                raw.split(':').map(|v| check_value(&r, v)).collect::<CliResult<Vec<_>>>()?
            } else {
                vec![check_value(&r, raw).map_err(|e| CliError::new(e.code, format!("{} (from {key})", e.message)))?]
            };
            self.settings.insert(canonical, (r, Setting { values, source: Source::Environment }));
        }
        Ok(())
    }

    fn config_files(&self) -> CliResult<Vec<PathBuf>> {
        if self.flavor == Flavor::WalG {
            return Ok(Vec::new());
        }
        let explicit = self.get("config").map(PathBuf::from);
        let base =
            self.get("config-path").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(self.flavor.config_dir()));
        let include = self.get("config-include-path").map(PathBuf::from).unwrap_or_else(|| base.join("conf.d"));
        let mut files = Vec::new();
        match explicit {
            Some(path) => {
                if !path.is_file() {
                    return Err(CliError::new(
                        ErrorCode::FileMissing,
                        format!("configuration file {} does not exist", path.display()),
                    ));
                }
                files.push(path);
            }
            None => {
                let main = base.join(self.flavor.config_file_name());
                if main.is_file() {
                    files.push(main);
                }
            }
        }
        let include_explicit = self.get("config-include-path").is_some();
        match std::fs::read_dir(&include) {
            Ok(dir) => {
                let mut extra: Vec<PathBuf> = dir
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                    .collect();
                extra.sort();
                files.extend(extra);
            }
            Err(_) if !include_explicit => {}
            Err(e) => {
                return Err(CliError::new(
                    ErrorCode::FileMissing,
                    format!("configuration include path {} cannot be read: {e}", include.display()),
                ));
            }
        }
        Ok(files)
    }

    fn merge_files(&mut self) -> CliResult<()> {
        let stanza = self.get("stanza").map(str::to_string);
        // The async workers (`archive-push:async`) read their command's sections.
        let command = self.command.name.split(':').next().unwrap_or(self.command.name);
        // Highest precedence first.
        let mut sections = Vec::new();
        if let Some(s) = &stanza {
            sections.push(format!("{s}:{command}"));
            sections.push(s.clone());
        }
        sections.push(format!("global:{command}"));
        sections.push("global".to_string());

        let mut from_files: BTreeMap<String, (usize, Resolved, Setting)> = BTreeMap::new();
        for path in self.config_files()? {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                CliError::new(ErrorCode::FileRead, format!("unable to read configuration file {}: {e}", path.display()))
            })?;
            let file = ini::parse(&text, &path)?;
            let mut seen_here: BTreeMap<(String, String), usize> = BTreeMap::new();
            for entry in &file.entries {
                let Some(rank) = sections.iter().position(|s| *s == entry.section) else { continue };
                let Some(r) = options::resolve(&entry.key) else {
                    self.warnings.push(format!(
                        "configuration file {} contains invalid option '{}' (line {})",
                        path.display(),
                        entry.key,
                        entry.line
                    ));
                    continue;
                };
                if r.def.cli_only {
                    self.warnings.push(format!(
                        "configuration file {} contains command-line only option '{}' (ignored)",
                        path.display(),
                        entry.key
                    ));
                    continue;
                }
                let canonical = r.canonical();
                let value = check_value(&r, &entry.value).map_err(|e| {
                    CliError::new(e.code, format!("{} (in {}, line {})", e.message, path.display(), entry.line))
                })?;
                let dup_key = (entry.section.clone(), canonical.clone());
                if r.def.kind != Kind::List && seen_here.insert(dup_key, entry.line).is_some() {
                    return Err(CliError::new(
                        ErrorCode::OptionDuplicate,
                        format!(
                            "option '{canonical}' cannot be set multiple times (in {}, section [{}])",
                            path.display(),
                            entry.section
                        ),
                    ));
                }
                let source = Source::File { path: path.clone(), section: entry.section.clone() };
                match from_files.get_mut(&canonical) {
                    Some((have_rank, _, s)) if *have_rank == rank && r.def.kind == Kind::List => s.values.push(value),
                    Some((have_rank, _, _)) if *have_rank <= rank => {}
                    _ => {
                        from_files.insert(canonical, (rank, r, Setting { values: vec![value], source }));
                    }
                }
            }
        }
        for (name, (_, r, setting)) in from_files {
            self.settings.entry(name).or_insert((r, setting));
        }
        Ok(())
    }

    /// The value of an option (its default when unset).
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some((_, s)) = self.settings.get(name) {
            return s.values.first().map(String::as_str);
        }
        let r = options::resolve(name)?;
        default_of(self.flavor, r.def)
    }

    /// Where an option's value came from; `None` for defaults.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.settings.get(name).map(|(_, s)| &s.source)
    }

    /// A required option.
    pub fn require(&self, name: &str) -> CliResult<&str> {
        self.get(name).ok_or_else(|| {
            CliError::new(ErrorCode::OptionRequired, format!("{} command requires option: {name}", self.command.name))
        })
    }

    pub fn bool(&self, name: &str) -> bool {
        self.get(name) == Some("y")
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// Sizes are stored normalized to bytes.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        self.get(name).and_then(|v| value::parse_duration(v).ok())
    }

    /// All values of a list option.
    pub fn list(&self, name: &str) -> &[String] {
        self.settings.get(name).map(|(_, s)| s.values.as_slice()).unwrap_or(&[])
    }

    /// This configuration for another command, with options set as if given on its command line
    /// (`restore-test` runs `restore` into its scratch directory).
    pub fn for_command(&self, command: &str, set: &[(&str, &str)]) -> CliResult<Config> {
        let mut c = self.clone();
        c.command = options::command(command)
            .ok_or_else(|| CliError::new(ErrorCode::CommandInvalid, format!("invalid command '{command}'")))?;
        let mut given = std::collections::BTreeSet::new();
        for (name, value) in set {
            let r = options::resolve(name)
                .ok_or_else(|| CliError::new(ErrorCode::OptionInvalid, format!("invalid option '{name}'")))?;
            let key = r.canonical();
            // A list option given several times here accumulates (replacing what was set before).
            match c.settings.get_mut(&key) {
                Some((_, s)) if r.def.kind == options::Kind::List && given.contains(&key) => {
                    s.values.push((*value).to_string());
                }
                _ => {
                    let setting = Setting { values: vec![(*value).to_string()], source: Source::CommandLine };
                    c.settings.insert(key.clone(), (r, setting));
                }
            }
            given.insert(key);
        }
        Ok(c)
    }

    /// The configuration resolved again from the same command line and environment: the
    /// configuration files as they are now, plus `extra` arguments (`--stanza=db`).
    pub fn reload(&self, extra: &[String]) -> CliResult<Config> {
        let (argv, env) = &*self.origin;
        let mut argv = argv.clone();
        argv.extend(extra.iter().cloned());
        Config::load_as(&argv, env, extra.is_empty())
    }

    /// The options given on the command line as `--name=value` arguments, whatever form they
    /// were given in (`--name value`, `--name=value`, `--flag`, `--no-flag`): a process this one
    /// starts (an async worker) resolves the same configuration from them. Secrets are never
    /// among them (refused on the command line).
    pub fn command_line_args(&self) -> Vec<String> {
        self.settings
            .iter()
            .filter(|(_, (_, s))| s.source == Source::CommandLine)
            .flat_map(|(name, (_, s))| s.values.iter().map(move |v| format!("--{name}={v}")))
            .collect()
    }

    /// The repository selected by `--repo` (1 by default).
    pub fn repo_index(&self) -> u32 {
        self.int("repo").and_then(|v| u32::try_from(v).ok()).unwrap_or(1)
    }

    /// Every option that was set: name, source, whether secret, values.
    pub fn settings_detail(&self) -> Vec<(String, Source, bool, Vec<String>)> {
        self.settings.iter().map(|(n, (r, s))| (n.clone(), s.source.clone(), r.def.secure, s.values.clone())).collect()
    }

    /// Indexes of the repositories that have any `repoN-*` option set, ascending.
    pub fn repo_indexes_set(&self) -> Vec<u32> {
        let mut found: Vec<u32> =
            self.settings.values().filter(|(r, _)| r.def.group == options::Group::Repo).map(|(r, _)| r.index).collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Indexes of the clusters that have any `pgN-*` option set, ascending.
    pub fn pg_indexes_set(&self) -> Vec<u32> {
        let mut found: Vec<u32> =
            self.settings.values().filter(|(r, _)| r.def.group == options::Group::Pg).map(|(r, _)| r.index).collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// This configuration with cluster `n`'s `pgN-*` options as pg1's (pg1's own dropped): the
    /// commands that work on "the cluster" work on pg1.
    pub fn with_pg_first(&self, n: u32) -> Config {
        let mut c = self.clone();
        if n == 1 {
            return c;
        }
        c.settings.retain(|_, (r, _)| !(r.def.group == options::Group::Pg && r.index == 1));
        let moved: Vec<(Resolved, Setting)> = c
            .settings
            .values()
            .filter(|(r, _)| r.def.group == options::Group::Pg && r.index == n)
            .map(|(r, s)| {
                (Resolved { def: r.def, index: 1 }, Setting { values: s.values.clone(), source: s.source.clone() })
            })
            .collect();
        for (r, s) in moved {
            c.settings.insert(r.canonical(), (r, s));
        }
        c
    }

    /// Every option that was set, as `--name=value`, secrets redacted (for the log).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (name, (r, s)) in &self.settings {
            for v in &s.values {
                let shown = if r.def.secure { "<redacted>" } else { v.as_str() };
                parts.push(format!("--{name}={shown}"));
            }
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn another_cluster_takes_pg1s_place_whole() {
        let empty = tempfile::NamedTempFile::new().unwrap();
        let config = format!("--config={}", empty.path().display());
        let argv: Vec<String> = [
            "pgstrata",
            &config,
            "backup",
            "--stanza=db",
            "--pg1-path=/a",
            "--pg1-host=h1",
            "--pg1-port=5433",
            "--pg2-path=/b",
            "--pg2-socket-path=/s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = Config::load(&argv, &[]).unwrap();
        assert_eq!(c.pg_indexes_set(), vec![1, 2]);
        let second = c.with_pg_first(2);
        assert_eq!(second.get("pg1-path"), Some("/b"));
        assert_eq!(second.get("pg1-socket-path"), Some("/s"));
        // pg1's own options are gone, defaults apply.
        assert_eq!(second.get("pg1-host"), None);
        assert_eq!(second.get("pg1-port"), Some("5432"));
        assert_eq!(c.with_pg_first(1).get("pg1-host"), Some("h1"));
    }

    #[test]
    fn for_command_sets_options_and_accumulates_list_options() {
        let empty = tempfile::NamedTempFile::new().unwrap();
        let config = format!("--config={}", empty.path().display());
        let argv: Vec<String> = ["pgstrata", &config, "restore-test", "--stanza=db", "--tablespace-map=1=/a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = Config::load(&argv, &[]).unwrap();
        let r = c
            .for_command("restore", &[("pg1-path", "/x"), ("tablespace-map", "2=/b"), ("tablespace-map", "3=/c")])
            .unwrap();
        assert_eq!(r.command.name, "restore");
        assert_eq!(r.get("pg1-path"), Some("/x"));
        assert_eq!(r.list("tablespace-map"), ["2=/b", "3=/c"]);
        assert_eq!(r.get("stanza"), Some("db"));
        assert!(c.for_command("restore", &[("no-such-option", "1")]).is_err());
    }
}
