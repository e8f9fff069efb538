//! `help` and `help <command>`.

use crate::config::Config;
use crate::config::options::{COMMANDS, Group, OPTIONS, command};
use crate::error::{CliError, CliResult, ErrorCode};

pub fn run(config: &Config) -> CliResult<()> {
    let name = crate::program_name(config.flavor);
    let Some(topic) = config.params.first() else {
        println!("{}\n\nUsage:\n    {name} [options] [command]\n\nCommands:", crate::identity_line(config.flavor));
        for c in COMMANDS.iter().filter(|c| !c.name.contains(':')) {
            let note = if c.implemented { "" } else { " (not yet available)" };
            println!("    {:<16}{}{note}", c.name, c.help);
        }
        println!("\nUse '{name} help [command]' for more information.");
        return Ok(());
    };
    let c =
        command(topic).ok_or_else(|| CliError::new(ErrorCode::CommandInvalid, format!("invalid command '{topic}'")))?;
    println!("{} - '{}' command\n\n{}\n\nOptions:", crate::identity_line(config.flavor), c.name, c.help);
    for o in OPTIONS {
        let shown = match o.group {
            Group::None => o.name.to_string(),
            Group::Repo => format!("repo-{}", o.name),
            Group::Pg => format!("pg-{}", o.name),
        };
        let default = o.default.map(|d| format!(" [default={d}]")).unwrap_or_default();
        let secure = if o.secure { " (secret: config file or environment only)" } else { "" };
        println!("    --{shown:<28}{}{default}{secure}", o.help);
    }
    Ok(())
}
