//! The server side of a backup: start and stop, over one connection (a non-exclusive backup
//! lives as long as the session that started it).

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::pg::{ControlFile, Lsn, TimelineId, WalFileName};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::postgres::ClusterTarget;
use crate::postgres::column;
use crate::postgres::{connect, identify};

fn query_err(what: &str, e: tokio_postgres::Error) -> CliError {
    CliError::new(ErrorCode::DbQuery, format!("unable to {what}: {e}"))
}

/// Where the backup starts.
#[derive(Clone, Debug)]
pub struct Started {
    pub lsn: Lsn,
    pub timeline: TimelineId,
    pub wal: WalFileName,
}

/// What `pg_backup_stop` answered.
#[derive(Clone, Debug)]
pub struct Stopped {
    pub lsn: Lsn,
    pub wal: WalFileName,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
}

/// A connection to the cluster being backed up.
#[derive(Debug)]
pub struct BackupServer {
    client: tokio_postgres::Client,
    version_num: i32,
    seg_size: u64,
}

impl BackupServer {
    /// Connects to pg1 and checks that it is the cluster whose `pg_control` was read.
    pub async fn connect(cluster: &ClusterTarget, control: &ControlFile) -> CliResult<Self> {
        let client = connect(cluster).await?;
        let server = identify(&client).await?;
        if server.system_identifier != control.system_identifier {
            return Err(CliError::new(ErrorCode::DbMismatch, "the server on pg1 is not the cluster in pg1-path"));
        }
        let version_num = i32::try_from(server.version_num).unwrap_or(0);
        Ok(Self { client, version_num, seg_size: u64::from(control.wal_segment_size) })
    }

    /// The main-fork changes from `from` (the prior's start) to `to` (this backup's start) on
    /// `timeline`, from the server's WAL summaries; `Err` says why they cannot be used.
    pub async fn summary_changes(
        &self,
        timeline: TimelineId,
        range: (Lsn, Lsn),
    ) -> CliResult<Result<super::summary::Changes, super::summary::NotUsed>> {
        super::summary::changes(&self.client, self.version_num, timeline, range).await
    }

    /// PostgreSQL 15 or later (`pg_backup_start`, no exclusive backups).
    fn v15(&self) -> bool {
        self.version_num >= 150_000
    }

    pub fn seg_size(&self) -> u64 {
        self.seg_size
    }

    /// The size of every database (what a backup will read, roughly: tablespaces included,
    /// WAL not), for its progress.
    pub async fn cluster_size(&self) -> CliResult<u64> {
        let row = self
            .client
            .query_one("select coalesce(sum(pg_database_size(oid)), 0)::int8 from pg_database", &[])
            .await
            .map_err(|e| query_err("read the databases' size", e))?;
        Ok(u64::try_from(column::<i64>(&row, 0)?).unwrap_or(0))
    }

    /// Starts the backup; returns after the checkpoint (immediate with `fast`).
    pub async fn start(&self, label: &BackupLabel, fast: bool) -> CliResult<Started> {
        tracing::info!(
            "execute {} backup start: backup begins after the {} checkpoint completes",
            if self.v15() { "pg_backup_start" } else { "pg_start_backup" },
            if fast { "requested immediate" } else { "next regular" }
        );
        let sql = if self.v15() {
            "select lsn::text, (select timeline_id from pg_control_checkpoint())::int4 from pg_backup_start($1, $2) as lsn"
        } else {
            "select lsn::text, (select timeline_id from pg_control_checkpoint())::int4 from pg_start_backup($1, $2, false) as lsn"
        };
        let row = self
            .client
            .query_one(sql, &[&format!("pgstrata backup {label}"), &fast])
            .await
            .map_err(|e| query_err("start the backup", e))?;
        let lsn: Lsn = column::<String>(&row, 0)?.parse()?;
        let timeline = TimelineId(u32::try_from(column::<i32>(&row, 1)?).unwrap_or(1));
        let wal = WalFileName::for_lsn(timeline, lsn, self.seg_size)?;
        tracing::info!("backup start archive = {wal}, lsn = {lsn}");
        Ok(Started { lsn, timeline, wal })
    }

    /// Stops the backup without the server waiting for WAL archiving (it would wait without
    /// limit when archiving is broken); the caller checks the archive, bounded by
    /// `archive-timeout`.
    /// The cluster's databases (name and oid), for the manifest.
    pub async fn databases(&self) -> CliResult<Vec<pgstrata_repo_format::meta::DatabaseRef>> {
        self.rows("select datname::text, oid from pg_database order by oid", "list the databases", |r| {
            Ok(pgstrata_repo_format::meta::DatabaseRef { name: r.try_get(0)?, oid: r.try_get(1)? })
        })
        .await
    }

    /// Tablespace names by oid, for the manifest's targets.
    pub async fn tablespace_names(&self) -> CliResult<std::collections::HashMap<u32, String>> {
        let rows = self
            .rows("select oid, spcname::text from pg_tablespace", "list the tablespaces", |r| {
                Ok((r.try_get(0)?, r.try_get(1)?))
            })
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Runs a query and turns each row into a `T`.
    async fn rows<T>(
        &self,
        sql: &str,
        what: &str,
        each: impl Fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
    ) -> CliResult<Vec<T>> {
        let rows = self.client.query(sql, &[]).await.map_err(|e| query_err(what, e))?;
        rows.iter().map(|r| each(r).map_err(|e| query_err(what, e))).collect()
    }

    pub async fn stop(&self, timeline: TimelineId) -> CliResult<Stopped> {
        let sql = if self.v15() {
            "select lsn::text, labelfile, spcmapfile from pg_backup_stop(false)"
        } else {
            "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, false)"
        };
        let row = self.client.query_one(sql, &[]).await.map_err(|e| query_err("stop the backup", e))?;
        let lsn: Lsn = column::<String>(&row, 0)?.parse()?;
        let wal = WalFileName::for_lsn(timeline, lsn, self.seg_size)?;
        tracing::info!("backup stop archive = {wal}, lsn = {lsn}");
        let tablespace_map: Option<String> = column(&row, 2)?;
        Ok(Stopped {
            lsn,
            wal,
            backup_label: column(&row, 1)?,
            tablespace_map: tablespace_map.filter(|m| !m.is_empty()),
        })
    }
}

/// How often a standby is asked how far it has replayed.
const STANDBY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Before files are read from a standby (`backup-standby`): it must be a copy of this primary,
/// must not be ahead of the backup's start, must have replayed past it, and a restartpoint must
/// have flushed what it replayed (its checkpoint at or after the start) on the primary's
/// timeline — as pgBackRest waits. Waiting ends after `timeout` without progress.
pub async fn standby_ready(
    standby: &ClusterTarget,
    primary: &ControlFile,
    started: &Started,
    timeout: std::time::Duration,
) -> CliResult<()> {
    let index = standby.index;
    let client = connect(standby).await?;
    let server = identify(&client).await?;
    if server.system_identifier != primary.system_identifier {
        return Err(CliError::new(
            ErrorCode::DbMismatch,
            format!(
                "the standby pg{index} has system id {}, the primary {}: it is not a copy of the primary",
                server.system_identifier, primary.system_identifier
            ),
        ));
    }
    let (at, _) = standby_checkpoint(&client).await?;
    if at > started.lsn {
        return Err(CliError::new(
            ErrorCode::DbMismatch,
            format!("standby checkpoint '{at}' is ahead of target '{}'", started.lsn),
        )
        .hint("is the standby following this primary?"));
    }
    tracing::info!("waiting for the standby pg{index} to replay past {}", started.lsn);
    let target = started.lsn.to_string();
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<Lsn> = None;
    loop {
        let row = client
            .query_one("select pg_last_wal_replay_lsn()::text", &[])
            .await
            .map_err(|e| query_err("ask the standby how far it replayed", e))?;
        let Some(replayed) = column::<Option<String>>(&row, 0)? else {
            return Err(CliError::new(
                ErrorCode::ArchiveTimeout,
                format!("unable to query the replay LSN of pg{index}: it is not in recovery"),
            )
            .hint("was the standby promoted while the backup started?"));
        };
        let replayed: Lsn = replayed.parse()?;
        if replayed > started.lsn {
            break;
        }
        if last.is_some_and(|l| replayed > l) {
            deadline = tokio::time::Instant::now() + timeout;
        }
        last = Some(replayed);
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::new(
                ErrorCode::ArchiveTimeout,
                format!("timeout before standby replayed to {target} - only reached {replayed}"),
            )
            .hint("is replication running and current on the standby?")
            .hint("set backup-standby=n (or prefer) to back up from the primary"));
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
    // A restartpoint writes out what the standby replayed: the files read next hold every
    // change from before the start.
    client.batch_execute("checkpoint").await.map_err(|e| query_err("checkpoint the standby", e))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (at, timeline) = standby_checkpoint(&client).await?;
        if at >= started.lsn {
            if timeline != started.timeline {
                return Err(CliError::new(
                    ErrorCode::DbMismatch,
                    format!("standby is on timeline {timeline} but expected {}", started.timeline),
                ));
            }
            tracing::info!("the standby pg{index} has replayed and checkpointed past the backup start");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::new(
                ErrorCode::ArchiveTimeout,
                format!("timeout before standby checkpoint lsn reached {target} - only reached {at}"),
            ));
        }
        tokio::time::sleep(STANDBY_POLL).await;
    }
}

/// The standby's last checkpoint (restartpoint) and its timeline.
async fn standby_checkpoint(client: &tokio_postgres::Client) -> CliResult<(Lsn, TimelineId)> {
    let row = client
        .query_one("select checkpoint_lsn::text, timeline_id::int4 from pg_control_checkpoint()", &[])
        .await
        .map_err(|e| query_err("read the standby's checkpoint", e))?;
    let lsn: Lsn = column::<String>(&row, 0)?.parse()?;
    Ok((lsn, TimelineId(u32::try_from(column::<i32>(&row, 1)?).unwrap_or(0))))
}
