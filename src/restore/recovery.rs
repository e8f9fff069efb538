//! The recovery settings a restore leaves: `restore_command` (naming the executable as it was
//! invoked, so PostgreSQL runs it under the same name and configuration), the target settings
//! in `postgresql.auto.conf`, the signal file, and `tablespace_map` naming the restored
//! locations. Every file here is written crash-safely (temporary name, fsync, rename).

use std::path::Path;

use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::restore::owner::own_like_data_dir;
use crate::restore::plan::RestorePlan;
use crate::restore::{Goal, RestoreRequest};

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

/// Writes recovery settings into `postgresql.auto.conf` and the signal file; `--type=preserve`
/// puts back what the directory had before the restore.
pub fn write_recovery(request: &RestoreRequest, preserved: Option<RecoveryState>) -> CliResult<()> {
    let (stanza, data, recovery) = (&request.stanza, request.data.as_path(), &request.recovery);
    // `--archive-mode=off`: the restored cluster must not archive (a copy beside the original,
    // which would otherwise push its WAL into the original's stanza).
    let archiving_off = request.archive_mode_off;
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
            if archiving_off {
                kept.extend([BEGIN.to_string(), "archive_mode = 'off'".to_string(), END.to_string()]);
            }
            Vec::new()
        }
        (goal, _) => {
            kept.push(BEGIN.to_string());
            kept.push(format!("restore_command = '{}'", request.restore_command.replace('\'', "''")));
            for (k, v) in recovery.settings() {
                kept.push(format!("{k} = '{}'", v.replace('\'', "''")));
            }
            for (k, v) in &request.recovery_options {
                kept.push(format!("{k} = '{}'", v.replace('\'', "''")));
            }
            if archiving_off {
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
    if archiving_off {
        tracing::info!("archive_mode = 'off' written: the restored cluster will not archive");
    } else if request.data_from_command_line {
        // A restore into a path given here is often a copy beside the original: started with
        // the original's configuration, its archive_command is refused (the working directory
        // is not the stanza's pg1-path) and its WAL piles up.
        tracing::info!(
            "restored into {} given on the command line: if this copy must not archive into stanza '{stanza}', \
             restore it with --archive-mode=off; if it takes the stanza over, configure it with pg1-path={}",
            data.display(),
            data.display()
        );
    }
    Ok(())
}
