//! `restore` from its options: the target, the maps, the selection, the recovery settings and
//! the `restore_command` PostgreSQL will run.

use std::path::{Path, PathBuf};

use pgstrata_repo_format::label::parse_timestamp;
use pgstrata_repo_format::pg::TimelineId;

use crate::config::{Config, Source, pg_path};
use crate::error::{CliError, CliResult, ErrorCode};
use crate::restore::{Goal, Placement, Recovery, RestoreRequest, TimelineChoice};

use super::repos::{chosen_repo, repo_targets, stanza_name};

pub fn restore(config: &Config) -> CliResult<RestoreRequest> {
    if let Some(host) = config.get("pg1-host") {
        return Err(CliError::new(
            ErrorCode::HostInvalid,
            format!("restore command must be run on the PostgreSQL host: pg1-host is set ({host})"),
        )
        .hint("run restore on the database host, with the repository reached through repoN-host"));
    }
    let stanza = stanza_name(config)?;
    let data = pg_path(config)?;
    let recovery_options = config
        .list("recovery-option")
        .iter()
        .map(|opt| match opt.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(invalid(format!("'{opt}' is not valid for 'recovery-option': use key=value"))),
        })
        .collect::<CliResult<Vec<_>>>()?;
    Ok(RestoreRequest {
        repos: repo_targets(config),
        set: config.get("set").map(str::to_string),
        delta: config.bool("delta"),
        force: config.bool("force"),
        workers: super::process_max(config),
        recovery: recovery(config)?,
        placement: Placement {
            tablespace_map: config.list("tablespace-map").to_vec(),
            tablespace_map_all: config.get("tablespace-map-all").map(PathBuf::from),
            link_map: config.list("link-map").to_vec(),
            link_all: config.bool("link-all"),
        },
        db_include: config.list("db-include").to_vec(),
        db_exclude: config.list("db-exclude").to_vec(),
        recovery_options,
        archive_mode_off: config.get("archive-mode") == Some("off"),
        restore_command: restore_command(config, &stanza, &data)?,
        data_from_command_line: config.source("pg1-path") == Some(&Source::CommandLine),
        stanza,
        data,
    })
}

fn invalid(message: String) -> CliError {
    CliError::new(ErrorCode::OptionInvalidValue, message)
}

/// `--type`, `--target`, `--target-exclusive`, `--target-action`, `--target-timeline`.
pub fn recovery(config: &Config) -> CliResult<Recovery> {
    let kind = config.get("type").unwrap_or("default");
    let target = config.get("target");
    let needs_target = matches!(kind, "time" | "lsn" | "xid" | "name");
    let need = || {
        target.map(str::to_string).ok_or_else(|| {
            CliError::new(ErrorCode::OptionRequired, format!("restore --type={kind} requires option: target"))
        })
    };
    let goal = match kind {
        "default" => Goal::Default,
        "immediate" => Goal::Immediate,
        "standby" => Goal::Standby,
        "none" => Goal::None,
        "preserve" => Goal::Preserve,
        "time" => {
            let text = need()?;
            let (micros, zoned) = parse_timestamp(&text).ok_or_else(|| {
                invalid(format!("'{text}' is not a valid target time: use YYYY-MM-DD HH:MM:SS[.ffffff][+-HH[:MM]]"))
            })?;
            if !zoned {
                tracing::warn!(
                    "target time '{text}' has no time zone: pgstrata takes it as UTC to choose the backup, \
                     PostgreSQL reads it in its own timezone setting"
                );
            }
            Goal::Time { text, micros }
        }
        "lsn" => {
            let text = need()?;
            Goal::Lsn(text.parse().map_err(|_| invalid(format!("'{text}' is not a valid target LSN (X/X)")))?)
        }
        "xid" => {
            let text = need()?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("'{text}' is not a valid target transaction id")));
            }
            Goal::Xid(text)
        }
        "name" => {
            let text = need()?;
            if text.is_empty() || text.len() >= 64 {
                return Err(invalid(format!("'{text}' is not a valid restore point name (1 to 63 bytes)")));
            }
            Goal::Name(text)
        }
        other => {
            return Err(invalid(format!(
                "'{other}' is not valid for 'type' option of restore \
                 (default, immediate, standby, none, preserve, time, lsn, xid, name)"
            )));
        }
    };
    if target.is_some() && !needs_target {
        return Err(CliError::new(
            ErrorCode::OptionInvalid,
            format!("option 'target' is not valid with restore --type={kind}"),
        )
        .hint("--target goes with --type=time, lsn, xid or name"));
    }
    let exclusive = config.bool("target-exclusive");
    if exclusive && !matches!(goal, Goal::Time { .. } | Goal::Lsn(_) | Goal::Xid(_)) {
        return Err(CliError::new(
            ErrorCode::OptionInvalid,
            format!("option 'target-exclusive' is not valid with restore --type={kind}"),
        ));
    }
    let timeline = match config.get("target-timeline") {
        // Recovery that ends at consistency follows the backup's own timeline (no switch
        // can come before it), so a later timeline that left it cannot break it.
        None if goal == Goal::Immediate => Some(TimelineChoice::Current),
        None => None,
        Some("latest") => Some(TimelineChoice::Latest),
        Some("current") => Some(TimelineChoice::Current),
        Some(n) => Some(TimelineChoice::Id(TimelineId(n.parse().ok().filter(|t| *t >= 1).ok_or_else(|| {
            invalid(format!("'{n}' is not valid for 'target-timeline': use latest, current or a number"))
        })?))),
    };
    let action = config.get("target-action").unwrap_or("pause").to_string();
    Ok(Recovery { goal, exclusive, action, timeline })
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
fn restore_command(config: &Config, stanza: &str, data: &Path) -> CliResult<String> {
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

/// `restore-test`: where and how each backup is restored and checked. The restore of one
/// backup is `restore`'s request for this configuration with the scratch data directory, the
/// backup, its maps, `--type` (immediate by default) and `archive-mode=off`.
pub fn restore_test(config: &Config) -> CliResult<crate::restore_test::RestoreTestRequest> {
    let base = config.clone();
    let recovery_type = config.get("type").unwrap_or("immediate").to_string();
    let factory = move |data: &Path, label: &str, maps: &[(&'static str, String)]| -> CliResult<RestoreRequest> {
        let data = data.display().to_string();
        let mut set: Vec<(&str, &str)> = vec![
            ("pg1-path", data.as_str()),
            ("set", label),
            ("type", recovery_type.as_str()),
            ("target-action", "promote"),
            ("delta", "n"),
            ("force", "n"),
            ("archive-mode", "off"),
        ];
        set.extend(maps.iter().map(|(o, v)| (*o, v.as_str())));
        restore(&base.for_command("restore", &set)?)
    };
    Ok(crate::restore_test::RestoreTestRequest {
        stanza: stanza_name(config)?,
        repo: chosen_repo(config),
        set: config.get("set").map(str::to_string),
        pg_bin: config.get("pg-bin").map(PathBuf::from),
        base: config.get("restore-test-path").map(PathBuf::from),
        timeout: config.duration("restore-test-timeout").unwrap_or(std::time::Duration::from_secs(3600)),
        user: config
            .get("pg1-user")
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "postgres".into()),
        json: config.get("output") == Some("json"),
        restore: Box::new(factory),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore_config(kind: &str) -> Recovery {
        let empty = tempfile::NamedTempFile::new().expect("temp");
        let argv: Vec<String> = [
            "pgstrata",
            &format!("--config={}", empty.path().display()),
            "restore",
            "--stanza=db",
            &format!("--type={kind}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        recovery(&crate::config::Config::load(&argv, &[]).expect("config")).expect("recovery")
    }

    #[test]
    fn immediate_defaults_to_the_current_timeline() {
        let immediate = restore_config("immediate");
        assert_eq!(immediate.timeline, Some(TimelineChoice::Current));
        assert!(immediate.settings().contains(&("recovery_target_timeline", "current".to_string())));
        assert_eq!(restore_config("default").timeline, None);
    }
}
