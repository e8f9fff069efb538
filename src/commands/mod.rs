//! Command dispatch. Each command takes the resolved [`Config`] and returns what it printed or
//! an error with its exit code.

mod check;
pub mod control;
pub mod help;
mod manifest;
mod repo;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::request;

/// Runs the configured command.
pub fn dispatch(config: &Config) -> CliResult<()> {
    match config.command.name {
        "version" if config.get("output") == Some("json") => {
            let about = serde_json::json!({
                "program": "pgstrata",
                "version": env!("CARGO_PKG_VERSION"),
                "invoked-as": crate::identity::program_name(config.flavor),
                "pgbackrest-compatible": crate::identity::PGBACKREST_COMPAT,
            });
            println!("{about}");
            Ok(())
        }
        "version" if config.get("output") == Some("num") => {
            println!("{}", crate::identity::version_num(config.flavor));
            Ok(())
        }
        "version" => {
            println!("{}", crate::identity::version_line(config.flavor));
            Ok(())
        }
        "help" => help::run(config),
        "repo-ls" => repo::ls(config),
        "repo-get" => repo::get(config),
        "repo-put" => repo::put(config),
        "repo-rm" => repo::rm(config),
        "manifest" => manifest::run(config),
        "stanza-create" => crate::stanza::create(&request::stanza::stanza(config, true)?),
        "stanza-upgrade" => crate::stanza::upgrade(&request::stanza::stanza(config, true)?),
        "stanza-delete" => crate::stanza::delete(&request::stanza::stanza(config, false)?),
        "stop" => control::stop(config),
        "start" => control::start(config),
        "archive-push" => crate::archive::push(&request::archive::archive(config)?),
        "archive-push:async" => crate::archive::push_async::worker(&request::archive::archive(config)?),
        "archive-get" => crate::archive::get(&request::archive::archive(config)?),
        "archive-get:async" => crate::archive::get_async::worker(&request::archive::archive(config)?),
        "backup" => crate::backup::run(&request::backup::backup(config)?),
        "check" => check::run(config),
        "restore" => crate::restore::run(&request::restore::restore(config)?),
        "info" => crate::info::run(&request::inspect::info(config)?),
        "expire" => crate::expire::run(&request::expire::expire(config)?),
        "verify" => crate::verify::run(&request::inspect::verify(config)?),
        "restore-test" => crate::restore_test::run(&request::restore::restore_test(config)?),
        "annotate" => crate::annotate::run(&request::stanza::annotate(config)?),
        "server" => crate::server::run(config),
        "server-ping" => crate::server::ping(config),
        other => Err(CliError::new(
            ErrorCode::NotImplemented,
            format!("command '{other}' is not available in pgstrata {} yet", env!("CARGO_PKG_VERSION")),
        )),
    }
}
