//! `check`: the configuration is coherent and archiving works end to end — the server's
//! archive settings, every repository's stanza against the running cluster, then a WAL switch
//! whose segment must reach every repository within `archive-timeout`.

use std::time::{Duration, Instant};

use pgstrata_repo_format::layout::archive_id;
use pgstrata_repo_format::pg::WalFileName;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::postgres::column;
use crate::postgres::{connect, identify};
use crate::repo::open_repo;
use crate::request::repos::stanza_name;

fn query_err(what: &str, e: tokio_postgres::Error) -> CliError {
    CliError::new(ErrorCode::DbQuery, format!("unable to {what}: {e}"))
}

pub fn run(config: &Config) -> CliResult<()> {
    let stanza = stanza_name(config)?;
    let timeout = config.duration("archive-timeout").unwrap_or(Duration::from_secs(60));
    let clusters = crate::request::clusters::clusters(config)?;
    crate::runtime::runtime()?.block_on(async {
        let cluster = &crate::postgres::primary_first(&clusters).await?;
        let data = cluster.data.clone();
        let client = connect(cluster).await?;
        let server = identify(&client).await?;
        if std::path::Path::new(&server.data_directory) != data {
            return Err(CliError::new(
                ErrorCode::DbMismatch,
                format!("pg1-path is {} but the server on that port runs {}", data.display(), server.data_directory),
            )
            .hint("pg1-path, pg1-port and pg1-socket-path must name the same cluster"));
        }
        let row = client
            .query_one(
                "select current_setting('archive_mode'), current_setting('archive_command'), \
                 current_setting('wal_level'), pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(|e| query_err("read the archive settings", e))?;
        let (mode, command, level, standby): (String, String, String, bool) =
            (column(&row, 0)?, column(&row, 1)?, column(&row, 2)?, column(&row, 3)?);
        let mut problems = Vec::new();
        if mode == "off" {
            problems.push("archive_mode is off: set archive_mode = on (a restart is needed)".to_string());
        }
        if command.trim().is_empty() || command == "(disabled)" {
            problems.push(format!(
                "archive_command is not set: set archive_command = '{} --stanza={stanza} archive-push %p'",
                crate::identity::program_name(config.flavor)
            ));
        } else if !command.contains("archive-push") || !command.contains("%p") {
            problems.push(format!("archive_command '{command}' does not run archive-push %p"));
        } else if !command.contains(&format!("--stanza={stanza}")) && !command.contains("--stanza ") {
            tracing::warn!(
                "archive_command '{command}' does not name --stanza={stanza}: it must come from the configuration"
            );
        }
        if level == "minimal" {
            problems.push("wal_level is minimal: set wal_level = replica (a restart is needed)".to_string());
        }
        if !problems.is_empty() {
            return Err(CliError::new(
                ErrorCode::ArchiveDisabled,
                format!("archiving is not set up on the server of {}: {}", data.display(), problems.join("; ")),
            ));
        }

        let mut repos = Vec::new();
        for index in crate::request::repos::repo_indexes(config) {
            let repo = open_repo(&crate::request::repos::repo_target(config, index), &stanza).await?;
            let db = repo.current_db()?;
            if db.system_id != server.system_identifier || db.pg_version != server.version_num / 10000 {
                return Err(CliError::new(
                    ErrorCode::DbMismatch,
                    format!(
                        "stanza '{stanza}' in {} is PostgreSQL {} with system id {}, but the server is PostgreSQL {} \
                         with system id {}",
                        repo.name(),
                        db.pg_version,
                        db.system_id,
                        server.version_num / 10000,
                        server.system_identifier
                    ),
                )
                .hint("after pg_upgrade run stanza-upgrade; otherwise the configuration names the wrong cluster"));
            }
            repo.load_catalog().await?;
            repos.push(repo);
        }
        if standby {
            tracing::info!("the server is a standby: WAL switch skipped, configuration and repositories are valid");
            println!("stanza {stanza}: configuration and repositories valid (standby: archiving not tested)");
            return Ok(());
        }

        // Something to switch away from, then the switch itself.
        client
            .query_one("select pg_create_restore_point('pgstrata archive check')::text", &[])
            .await
            .map_err(|e| query_err("create a restore point", e))?;
        let row = client
            .query_one("select pg_walfile_name(pg_switch_wal())", &[])
            .await
            .map_err(|e| query_err("switch WAL", e))?;
        let segment: String = column(&row, 0)?;
        let name: WalFileName = segment.parse()?;
        let start = Instant::now();
        for repo in &repos {
            let db = repo.current_db()?;
            let archive = archive_id(db.pg_version, db.id);
            loop {
                if !crate::wal::copies(repo, &archive, &name).await?.is_empty() {
                    tracing::info!("WAL segment {segment} successfully archived to {}", repo.name());
                    break;
                }
                if start.elapsed() > timeout {
                    let failed: (String, String, String) = client
                        .query_one(
                            "select coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, ''), \
                             coalesce(last_archived_wal, '') from pg_stat_archiver",
                            &[],
                        )
                        .await
                        .ok()
                        .and_then(|r| Some((column(&r, 0).ok()?, column(&r, 1).ok()?, column(&r, 2).ok()?)))
                        .unwrap_or_default();
                    let detail = if failed.0.is_empty() {
                        format!("the archiver reports no failure (last archived: '{}')", failed.2)
                    } else {
                        format!("the archiver last failed on {} at {}", failed.0, failed.1)
                    };
                    return Err(CliError::new(
                        ErrorCode::ArchiveTimeout,
                        format!(
                            "WAL segment {segment} was not archived to {} within {} second(s); {detail}",
                            repo.name(),
                            timeout.as_secs()
                        ),
                    )
                    .hint("check archive_command and the PostgreSQL log; archive-push's own log says why it failed"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        println!(
            "stanza {stanza}: archiving works, WAL segment {segment} reached {} in {:.1} s",
            repos.iter().map(|r| format!("repo{}", r.index)).collect::<Vec<_>>().join(", "),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}
