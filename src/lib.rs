//! # pgstrata
//!
//! The engine and command line of pgstrata, a backup and WAL-archiving tool for PostgreSQL.
//! The bytes it stores are defined in `pgstrata-repo-format`; the storage it talks to is
//! `pgstrata-storage`. This crate holds:
//!
//! - [`config`]: pgBackRest's option model — command line, environment, INI files, indexed
//!   `repoN-*` / `pgN-*` options, secrets refused on the command line.
//! - [`log`]: pgBackRest-shaped logging to stdout, stderr and a file, each with its own level.
//! - [`commands`]: one module per command.
//! - [`error`]: the error that ends a command, with pgBackRest's exit codes.
//!
//! `docs/architecture.md` maps the rest of the house.

pub mod accounts;
pub mod anchor;
pub mod annotate;
pub mod archive;
pub mod backup;
pub mod chain;
pub mod commands;
pub mod config;
pub mod control;
pub mod durable;
pub mod error;
pub mod expire;
pub mod identity;
pub mod info;
pub mod lease;
pub mod log;
pub mod manifest;
pub mod pages;
pub mod pgbackrest;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod remote;
pub mod repo;
pub mod request;
pub mod restore;
pub mod restore_test;
pub mod runtime;
pub mod server;
pub mod stanza;
pub mod termination;
pub mod verify;
pub mod wal;
pub mod walg;

use std::time::Instant;

use config::{Config, Flavor};
use error::CliError;
use identity::reported_version;

/// Runs one command line; returns the process exit code.
pub fn run(argv: &[String], env: &[(String, String)]) -> u8 {
    process::restrict_umask();
    if let Some(argv0) = argv.first() {
        process::remember_argv0(argv0);
        if Flavor::from_argv0(argv0) == Flavor::WalG {
            return walg::run(argv, env);
        }
    }
    let config = match Config::load(argv, env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR: {e}");
            // The command may still be known (archive-get's exit codes matter to PostgreSQL).
            let command = argv.iter().skip(1).find(|a| config::options::command(a).is_some());
            return e.exit_code_for(command.map(String::as_str).unwrap_or(""));
        }
    };
    let quiet = matches!(config.command.name, "version" | "help");
    // Read-only commands log begin/end at debug, so `info --output=json` prints only JSON.
    let chatty = !matches!(config.command.name, "info" | "repo-ls" | "repo-get");
    log::init(&request::log_settings(&config, !quiet));
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let start = Instant::now();
    if !quiet && chatty {
        tracing::info!(
            "{} command begin {}: {}",
            config.command.name,
            reported_version(config.flavor),
            config.summary()
        );
    } else if !quiet {
        tracing::debug!(
            "{} command begin {}: {}",
            config.command.name,
            reported_version(config.flavor),
            config.summary()
        );
    }
    let result: Result<(), CliError> = commands::dispatch(&config);
    let ms = start.elapsed().as_millis();
    match result {
        Ok(()) => {
            if !quiet && chatty {
                tracing::info!("{} command end: completed successfully ({ms}ms)", config.command.name);
            } else if !quiet {
                tracing::debug!("{} command end: completed successfully ({ms}ms)", config.command.name);
            }
            0
        }
        Err(e) if e.code == error::ErrorCode::NotInArchive => {
            tracing::info!("{}", e.message);
            tracing::info!("{} command end: completed successfully ({ms}ms)", config.command.name);
            e.exit_code_for(config.command.name)
        }
        Err(e) => {
            // The error itself goes to stderr whatever the levels; the file gets it too.
            eprintln!("ERROR: {e}");
            tracing::info!(
                "{} command end: aborted with exception [{:03}] ({ms}ms): {}",
                config.command.name,
                e.exit_code(),
                e.message
            );
            e.exit_code_for(config.command.name)
        }
    }
}
