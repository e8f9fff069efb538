//! The recovery settings a restore leaves: `restore_command` (naming the executable as it was
//! invoked, so PostgreSQL runs it under the same name and configuration), the target settings
//! in `postgresql.auto.conf`, the signal file, and `tablespace_map` naming the restored
//! locations. Every file here is written crash-safely (temporary name, fsync, rename).

use std::path::Path;

use crate::config::{Config, Source};
use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::restore::owner::own_like_data_dir;
use crate::restore::plan::RestorePlan;
use crate::restore::{Goal, Recovery};

/// PostgreSQL recreates tablespace links from `tablespace_map` at start: it must name the
/// restored locations, not the source's.
pub fn rewrite_tablespace_map(plan: &RestorePlan, data: &Path) -> CliResult<()> {
    let path = data.join("tablespace_map");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let mut out = String::new();
    for line in text.lines() {
        let (oid, old) = line.split_once(' ').unwrap_or((line, ""));
        match plan.roots.get(&format!("pg_tblspc/{oid}")) {
            Some(dest) => out.push_str(&format!("{oid} {}\n", dest.display())),
            None => out.push_str(&format!("{oid} {old}\n")),
        }
    }
    durable::write(&path, out.as_bytes(), 0o600)
}

fn shell_quote(arg: &str) -> String {
    if arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:%@,+".contains(&b)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The `restore_command` this restore writes: it must work on its own, so it names the
/// executable, the configuration file and the stanza, and carries options that came from the
/// environment (except secrets, which the server must have in a config file or its environment).
pub fn restore_command(config: &Config, stanza: &str, data: &Path) -> CliResult<String> {
    let exe = crate::process::invoked_exe()?;
    let mut args = vec![exe.display().to_string()];
    const CONFIG_OPTIONS: [&str; 3] = ["config", "config-path", "config-include-path"];
    for opt in CONFIG_OPTIONS {
        if let Some(v) = config.get(opt) {
            args.push(format!("--{opt}={v}"));
        }
    }
    args.push(format!("--stanza={stanza}"));
    args.push(format!("--pg1-path={}", data.display()));
    if config.get("repo").is_some() {
        args.push(format!("--repo={}", config.repo_index()));
    }
    for (name, source, secure, values) in config.settings_detail() {
        // Configuration locations are written above, whatever their source.
        if source != Source::Environment || CONFIG_OPTIONS.contains(&name.as_str()) {
            continue;
        }
        if secure {
            tracing::warn!(
                "option {name} came from the environment and cannot be written into restore_command; \
                 PostgreSQL needs it in a configuration file or in its own environment"
            );
            continue;
        }
        for v in values {
            args.push(format!("--{name}={v}"));
        }
    }
    let mut cmd: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    cmd.push("archive-get".into());
    cmd.push("%f".into());
    cmd.push("\"%p\"".into());
    Ok(cmd.join(" "))
}

const BEGIN: &str = "# pgstrata restore settings begin";
const END: &str = "# pgstrata restore settings end";

/// Recovery settings of a data directory: the lines of `postgresql.auto.conf` that drive
/// recovery (ours or another tool's) and which signal files exist.
#[derive(Debug, Default)]
pub struct RecoveryState {
    /// Lines of `postgresql.auto.conf` that are not recovery settings.
    other: Vec<String>,
    recovery: Vec<String>,
    signals: Vec<&'static str>,
}

const SIGNALS: [&str; 2] = ["recovery.signal", "standby.signal"];

impl RecoveryState {
    pub fn read(data: &Path) -> Self {
        let text = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        let mut state = Self::default();
        let mut inside = false;
        for line in text.lines() {
            if line == BEGIN || line == END {
                inside = line == BEGIN;
                continue;
            }
            let key = line.split('=').next().unwrap_or("").trim();
            if inside || key == "restore_command" || key.starts_with("recovery_target") {
                state.recovery.push(line.to_string());
            } else {
                state.other.push(line.to_string());
            }
        }
        state.signals = SIGNALS.into_iter().filter(|s| data.join(s).exists()).collect();
        state
    }
}

/// `--archive-mode=off`: the restored cluster must not archive (a copy beside the original,
/// which would otherwise push its WAL into the original's stanza).
fn archiving_off(config: &Config) -> bool {
    config.get("archive-mode") == Some("off")
}

/// Writes recovery settings into `postgresql.auto.conf` and the signal file; `--type=preserve`
/// puts back what the directory had before the restore.
pub fn write_recovery(
    config: &Config,
    stanza: &str,
    data: &Path,
    recovery: &Recovery,
    preserved: Option<RecoveryState>,
) -> CliResult<()> {
    for name in SIGNALS {
        let p = data.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::new(ErrorCode::FileRead, format!("unable to remove {}: {e}", p.display()))),
        }
    }
    let auto = data.join("postgresql.auto.conf");
    // Drop an earlier block of ours and any recovery settings a previous tool left.
    let mut kept = RecoveryState::read(data).other;
    let signal = match (&recovery.goal, &preserved) {
        (Goal::Preserve, Some(before)) => {
            kept.extend(before.recovery.iter().cloned());
            before.signals.clone()
        }
        (Goal::None, _) => {
            if archiving_off(config) {
                kept.extend([BEGIN.to_string(), "archive_mode = 'off'".to_string(), END.to_string()]);
            }
            Vec::new()
        }
        (goal, _) => {
            kept.push(BEGIN.to_string());
            let cmd = restore_command(config, stanza, data)?;
            kept.push(format!("restore_command = '{}'", cmd.replace('\'', "''")));
            for (k, v) in recovery.settings() {
                kept.push(format!("{k} = '{}'", v.replace('\'', "''")));
            }
            for opt in config.list("recovery-option") {
                let (k, v) = opt.split_once('=').ok_or_else(|| {
                    CliError::new(
                        ErrorCode::OptionInvalidValue,
                        format!("'{opt}' is not valid for 'recovery-option': use key=value"),
                    )
                })?;
                kept.push(format!("{} = '{}'", k.trim(), v.trim().replace('\'', "''")));
            }
            if archiving_off(config) {
                kept.push("archive_mode = 'off'".to_string());
            }
            kept.push(END.to_string());
            vec![if *goal == Goal::Standby { "standby.signal" } else { "recovery.signal" }]
        }
    };
    let mut text = kept.join("\n");
    text.push('\n');
    durable::write(&auto, text.as_bytes(), 0o600)?;
    own_like_data_dir(&auto, data)?;
    for name in signal {
        let p = data.join(name);
        durable::write(&p, b"", 0o600)?;
        own_like_data_dir(&p, data)?;
    }
    tracing::info!("write recovery settings ({}) into {}", recovery.describe(), auto.display());
    if archiving_off(config) {
        tracing::info!("archive_mode = 'off' written: the restored cluster will not archive");
    } else if config.source("pg1-path") == Some(&Source::CommandLine) {
        // A restore into a path given here is often a copy beside the original: started with
        // the original's configuration, its archive_command is refused (the working directory
        // is not the stanza's pg1-path) and its WAL piles up.
        tracing::info!(
            "restored into {} given on the command line: if this copy must not archive into stanza '{stanza}',              restore it with --archive-mode=off; if it takes the stanza over, configure it with pg1-path={}",
            data.display(),
            data.display()
        );
    }
    Ok(())
}
