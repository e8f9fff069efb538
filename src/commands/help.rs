//! `help`, `help COMMAND` (the options that command takes, grouped) and `help COMMAND OPTION`
//! (what it does, its values, default and where it may be set), read from the option table with
//! the defaults of the name the binary was invoked as.

use crate::config::options::{COMMANDS, Group, Kind, OPTIONS, OptionDef, Support, command, resolve};
use crate::config::{Config, Flavor};
use crate::error::{CliError, CliResult, ErrorCode};

pub fn run(config: &Config) -> CliResult<()> {
    let name = crate::identity::program_name(config.flavor);
    match config.params.as_slice() {
        [] => {
            println!(
                "{}\n\nUsage:\n    {name} [options] [command]\n\nCommands:",
                crate::identity::identity_line(config.flavor)
            );
            for c in COMMANDS.iter().filter(|c| !c.name.contains(':')) {
                let note = if c.implemented { "" } else { " (not yet available)" };
                println!("    {:<16}{}{note}", c.name, c.help);
            }
            println!("\nUse '{name} help [command]' for more information.");
            Ok(())
        }
        [topic] => {
            print!("{}", command_help(config.flavor, known_command(topic)?.name));
            Ok(())
        }
        [topic, option] => {
            print!("{}", option_help(config.flavor, known_command(topic)?.name, option)?);
            Ok(())
        }
        [_, _, extra, ..] => Err(CliError::new(
            ErrorCode::ParamInvalid,
            format!("help takes a command and an option: '{extra}' is one too many"),
        )),
    }
}

fn known_command(topic: &str) -> CliResult<&'static crate::config::options::CommandDef> {
    command(topic).filter(|c| !c.name.contains(':')).ok_or_else(|| {
        CliError::new(ErrorCode::CommandInvalid, format!("invalid command '{topic}'"))
            .hint("run 'help' to list the commands")
    })
}

/// The heading an option is listed under in a command's help.
fn section(def: &OptionDef) -> &'static str {
    match def.group {
        Group::Repo => "Repository Options",
        Group::Pg => "Stanza Options",
        Group::None if def.name == "stanza" => "Stanza Options",
        Group::None if def.name.starts_with("log-") => "Log Options",
        Group::None if def.commands().is_some_and(|c| c.len() <= 8) => "Command Options",
        Group::None => "General Options",
    }
}

const SECTIONS: [&str; 5] =
    ["Command Options", "General Options", "Log Options", "Repository Options", "Stanza Options"];

/// `help COMMAND`: the options the command takes, by section, with their defaults.
pub fn command_help(flavor: Flavor, command_name: &str) -> String {
    let c = command(command_name).map_or("", |c| c.help);
    let mut out = format!("{} - '{command_name}' command help\n\n{c}\n", crate::identity::identity_line(flavor));
    let taken: Vec<&OptionDef> = OPTIONS
        .iter()
        .filter(|o| o.valid_for(command_name) && !matches!(o.support, Support::Accepted(m) if m.contains("internal")))
        .collect();
    for heading in SECTIONS {
        let mut listed: Vec<&&OptionDef> = taken.iter().filter(|o| section(o) == heading).collect();
        if listed.is_empty() {
            continue;
        }
        listed.sort_by_key(|o| o.documented_name());
        out.push_str(&format!("\n{heading}:\n\n"));
        for o in listed {
            let default = shown_default(flavor, o).map(|d| format!(" [default={d}]")).unwrap_or_default();
            let status = match o.support {
                Support::Yes => "",
                Support::Accepted(_) => " (accepted)",
                Support::Refused(_) => " (not supported)",
                Support::Ignored(_) => " (not applied)",
            };
            out.push_str(&format!("  --{:<32}{}{default}{status}\n", o.documented_name(), o.help));
        }
    }
    out.push_str(&format!(
        "\nUse '{} help {command_name} [option]' for more information.\n",
        crate::identity::program_name(flavor)
    ));
    out
}

/// The default shown for an option under the name invoked (the configuration file is found at
/// the flavor's path even though `config` itself has no default).
fn shown_default(flavor: Flavor, def: &OptionDef) -> Option<String> {
    match (def.name, def.group) {
        ("config", Group::None) => Some(flavor.default_config_file()),
        ("config-path", Group::None) => {
            Some(flavor.default_config_file().rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string()))
        }
        _ => crate::config::default_of(flavor, def).map(str::to_string),
    }
}

/// The values `type` takes for a command, each with what it means.
fn type_values(command_name: &str) -> &'static [(&'static str, &'static str)] {
    match command_name {
        "backup" | "info" => &[
            ("full", "every file of the cluster is copied; the backup needs no other"),
            ("diff", "what changed since the last full backup is stored; restoring it needs that full"),
            ("incr", "what changed since the last backup of any type is stored (the default for backup)"),
        ],
        "restore" | "restore-test" => &[
            ("default", "recover to the end of the archived WAL"),
            ("immediate", "recover only until the backup is consistent (along its own timeline)"),
            ("time", "recover to --target, a time"),
            ("lsn", "recover to --target, a WAL position"),
            ("xid", "recover to --target, a transaction id"),
            ("name", "recover to --target, a restore point made by pg_create_restore_point"),
            ("standby", "start as a standby that keeps replaying from the archive"),
            ("preserve", "keep the recovery settings the data directory had"),
            ("none", "write no recovery settings"),
        ],
        _ => &[],
    }
}

/// `help COMMAND OPTION`.
pub fn option_help(flavor: Flavor, command_name: &str, option: &str) -> CliResult<String> {
    let r = resolve(option.trim_start_matches("--")).filter(|r| r.def.valid_for(command_name)).ok_or_else(|| {
        CliError::new(ErrorCode::OptionInvalid, format!("option '{option}' is not valid for command '{command_name}'"))
            .hint(format!("run 'help {command_name}' to list its options"))
    })?;
    let def = r.def;
    let what = match def.support {
        Support::Yes => def.help.to_string(),
        Support::Accepted(meaning) => format!("pgBackRest's option, accepted: {meaning}."),
        Support::Refused(reason) => format!("pgBackRest's option, refused unless left at its default: {reason}."),
        Support::Ignored(instead) => format!("pgBackRest's option, set: a warning; {instead}."),
    };
    let mut out = format!(
        "{} - '{command_name}' command - '{}' option help\n\n{what}\n",
        crate::identity::identity_line(flavor),
        def.documented_name()
    );
    let values = type_values(command_name);
    if def.name == "type" && def.group == Group::None && !values.is_empty() {
        out.push_str("\nValues:\n\n");
        for (value, meaning) in values {
            out.push_str(&format!("* {value} - {meaning}\n"));
        }
    } else {
        match def.kind {
            Kind::Enum(allowed) => out.push_str(&format!("\nAllowed values: {}\n", allowed.join(", "))),
            Kind::Bool => out.push_str("\nAllowed values: y, n (on the command line --name or --no-name)\n"),
            Kind::Int { min, max } => out.push_str(&format!("\nAllowed values: {min} to {max}\n")),
            Kind::Size { min, max } => {
                out.push_str(&format!("\nAllowed values: sizes from {min} to {max} bytes (KiB, MiB, GiB suffixes)\n"))
            }
            Kind::Duration => out.push_str("\nAllowed values: seconds, or a number with ms, s, m, h, d\n"),
            Kind::List => out.push_str("\nMay be given more than once.\n"),
            Kind::Str | Kind::Path => {}
        }
    }
    let default = match (def.name, command_name) {
        ("type", "backup") => Some("incr".to_string()),
        ("type", "restore") => Some("default".to_string()),
        _ => shown_default(flavor, def),
    };
    if let Some(d) = default {
        out.push_str(&format!("\ndefault: {d}\n"));
    }
    let indexed = match def.group {
        Group::None => String::new(),
        Group::Repo => " (repoN-: N from 1 to 256; repo- means repo1-)".to_string(),
        Group::Pg => " (pgN-: N from 1 to 256; pg- means pg1-)".to_string(),
    };
    let env = format!("{}{}", flavor.env_prefix(), def.documented_name().to_uppercase().replace('-', "_"));
    out.push_str(&format!("\nSet it{indexed}: "));
    if def.secure {
        out.push_str(&format!("in a configuration file or the environment ({env}), never on the command line\n"));
    } else if def.cli_only {
        out.push_str("on the command line\n");
    } else {
        out.push_str(&format!("on the command line, in the environment ({env}) or in a configuration file\n"));
    }
    Ok(out)
}

/// The option reference (`docs/options.md`), generated from the table: every option with the
/// commands that take it, its default and what pgstrata does with it. A test keeps the file
/// equal to this.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Option reference\n\nGenerated from pgstrata's option table (`src/config/options.rs`); \
         `tests/cli.rs` fails when this file and the table differ. Indexed options are written \
         `repo-...` / `pg-...` (`repo2-path`, `pg1-port`: N from 1 to 256). Defaults are those of \
         the `pgbackrest` name (`/etc/pgbackrest`, `/var/lib/pgbackrest`...); invoked as `pgstrata` \
         the paths say `pgstrata`. *Accepted*: pgBackRest's option, checked, with the meaning given; \
         *refused*: exit 31 when set to anything but pgBackRest's default, for the reason \
         given; *warned*: not applied, a warning when set, the command goes on.\n\n| option | commands | default | |\n|---|---|---|---|\n",
    );
    let mut all: Vec<&OptionDef> = OPTIONS.iter().collect();
    all.sort_by_key(|o| o.documented_name());
    for o in all {
        let commands = match o.commands() {
            Some(c) if c.len() < 22 => c.join(", "),
            _ => "all".to_string(),
        };
        let default = shown_default(Flavor::Pgbackrest, o).unwrap_or_default();
        let what = match o.support {
            Support::Yes => o.help.to_string(),
            Support::Accepted(meaning) => format!("*accepted*: {meaning}"),
            Support::Refused(reason) => format!("*refused*: {reason}"),
            Support::Ignored(instead) => format!("*warned*: {instead}"),
        };
        let secret = if o.secure { " (secret: never on the command line)" } else { "" };
        out.push_str(&format!(
            "| `{}` | {commands} | {} | {}{secret} |\n",
            o.documented_name(),
            if default.is_empty() { String::new() } else { format!("`{default}`") },
            what.replace('|', "\\|")
        ));
    }
    out
}
