//! The live cluster: its `pg_control` on disk and a connection to the server.

use std::path::{Path, PathBuf};

use pgstrata_repo_format::pg::ControlFile;

use crate::error::{CliError, CliResult, ErrorCode};
use crate::remote::client::Endpoint;
use crate::remote::data::RemoteCluster;

/// A cluster as a front end resolved it from its `pgN-*` options: where its data directory is,
/// how to reach its server (a socket here, or the server of a database host), as whom.
#[derive(Clone, Debug)]
pub struct ClusterTarget {
    /// N of `pgN`.
    pub index: u32,
    /// `pgN-path`.
    pub data: PathBuf,
    /// `pgN-host` and its endpoint (or why the options describe none: reported on use, so one
    /// misconfigured candidate of several is a warning).
    pub host: Option<(String, Result<Endpoint, CliError>)>,
    /// `pgN-socket-path`, `pgN-port`, `pgN-user`, `pgN-database`.
    pub socket: PathBuf,
    pub port: u16,
    pub user: Option<String>,
    pub database: String,
    /// The stanza whose cluster this is (a database host's server serves it by stanza).
    pub stanza: Option<String>,
    /// Connections to a database host's server (`process-max`).
    pub workers: usize,
}

impl ClusterTarget {
    /// The endpoint of its database host's server, when it has one.
    pub fn endpoint(&self) -> CliResult<Option<Endpoint>> {
        match &self.host {
            None => Ok(None),
            Some((_, endpoint)) => endpoint.clone().map(Some),
        }
    }
}

/// Reads and checks `global/pg_control` of a data directory.
pub fn read_control(data_dir: &Path) -> CliResult<ControlFile> {
    let file = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&file).map_err(|e| {
        CliError::new(ErrorCode::FileMissing, format!("unable to read {}: {e}", file.display()))
            .hint("is pg1-path the data directory of a PostgreSQL cluster?")
    })?;
    Ok(ControlFile::parse(&bytes, &file.display().to_string())?)
}

/// The cluster of pg1 when it is on a database host (`pg1-host`), read through its server.
/// Call inside the runtime that will carry its reads.
pub fn remote_cluster(cluster: &ClusterTarget) -> CliResult<Option<std::sync::Arc<RemoteCluster>>> {
    match cluster.endpoint()? {
        Some(endpoint) => {
            Ok(Some(std::sync::Arc::new(RemoteCluster::new(endpoint, cluster.workers, cluster.stanza.clone())?)))
        }
        None => Ok(None),
    }
}

/// `global/pg_control` of pg1's data directory, here or on its database host.
pub async fn control(cluster: &ClusterTarget, remote: Option<&RemoteCluster>) -> CliResult<ControlFile> {
    let data = &cluster.data;
    match remote {
        None => read_control(data),
        Some(remote) => {
            let file = data.join("global/pg_control");
            let bytes = remote.read_all(&file, 8192).await.map_err(|e| {
                CliError::new(
                    ErrorCode::FileMissing,
                    format!("unable to read {} on {}: {e}", file.display(), remote.describe()),
                )
                .hint("is pg1-path the data directory of the cluster on pg1-host?")
            })?;
            Ok(ControlFile::parse(&bytes, &format!("{}:{}", remote.describe(), file.display()))?)
        }
    }
}

/// The primary. With several clusters (`pg1-*`, `pg2-*`, ...: PGO lists every instance), the
/// one that answers and is not in recovery, found as [`primary_and_standby`] finds it (each
/// cluster that does not answer is a warning, none or two primaries an error).
pub async fn primary_first(clusters: &[ClusterTarget]) -> CliResult<ClusterTarget> {
    match clusters {
        [] => Err(CliError::new(ErrorCode::OptionRequired, "the command requires option: pg1-path")),
        [one] => Ok(one.clone()),
        _ => Ok(primary_and_standby(clusters, false).await?.primary),
    }
}

/// The clusters a backup from a standby uses: the primary and, when one answers, the first
/// standby in index order.
#[derive(Debug)]
pub struct PrimaryAndStandby {
    pub primary: ClusterTarget,
    pub standby: Option<ClusterTarget>,
}

/// Finds the primary and a standby among the configured clusters, as pgBackRest does: each
/// cluster is asked whether it is in recovery; one that does not answer is a warning. No
/// primary is an error; no standby is an error when `required` (backup-standby=y), else `None`.
pub async fn primary_and_standby(clusters: &[ClusterTarget], required: bool) -> CliResult<PrimaryAndStandby> {
    let (mut primary, mut standby) = (None, None);
    let mut checked = Vec::new();
    for candidate in clusters {
        let (n, candidate) = (candidate.index, candidate.clone());
        let answer = match connect(&candidate).await {
            Ok(client) => client.query_one("select pg_is_in_recovery()", &[]).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.message),
        };
        match answer.and_then(|row| column::<bool>(&row, 0).map_err(|e| e.message)) {
            Ok(false) if primary.is_some() => {
                return Err(CliError::new(ErrorCode::DbConnect, "more than one primary cluster found")
                    .hint("only one of the pgN clusters may be out of recovery"));
            }
            Ok(false) => {
                tracing::info!("pg{n} is the primary");
                primary = Some(candidate);
            }
            Ok(true) if standby.is_none() => {
                tracing::info!("pg{n} is a standby");
                standby = Some(candidate);
            }
            Ok(true) => checked.push(format!("pg{n} is another standby")),
            Err(e) => {
                tracing::warn!("unable to check pg{n}: {e}");
                checked.push(format!("pg{n}: {e}"));
            }
        }
    }
    let Some(primary) = primary else {
        return Err(CliError::new(
            ErrorCode::DbConnect,
            format!("unable to find primary cluster - cannot proceed ({})", checked.join("; ")),
        )
        .hint("are all available clusters in recovery? Is the primary among the pgN clusters configured?"));
    };
    if standby.is_none() && required {
        return Err(CliError::new(
            ErrorCode::DbConnect,
            format!(
                "unable to find standby cluster - cannot proceed{}",
                if checked.is_empty() { String::new() } else { format!(" ({})", checked.join("; ")) }
            ),
        )
        .hint("configure the standby as another pgN (pgN-path, and pgN-host or pgN-socket-path), and check it runs")
        .hint("backup-standby=prefer takes the backup from the primary when no standby answers"));
    }
    Ok(PrimaryAndStandby { primary, standby })
}

/// What the running server says about itself.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    pub version_num: u32,
    pub system_identifier: u64,
    pub data_directory: String,
}

/// Connects to the server of a cluster (socket path, port, user, database).
pub async fn connect(cluster: &ClusterTarget) -> CliResult<tokio_postgres::Client> {
    let mut pg = tokio_postgres::Config::new();
    pg.host_path(&cluster.socket);
    let port = cluster.port;
    pg.port(port);
    let endpoint = cluster.endpoint()?;
    let remote = endpoint.is_some();
    let user = match &cluster.user {
        Some(u) => u.clone(),
        // Through a database host's server, the session is that host's: PostgreSQL's own user.
        None if remote => "postgres".to_string(),
        None => default_user(),
    };
    pg.user(&user);
    pg.dbname(&cluster.database);
    pg.application_name("pgstrata");
    pg.connect_timeout(std::time::Duration::from_secs(30));
    let n = cluster.index;
    let failed = |e: tokio_postgres::Error| {
        CliError::new(ErrorCode::DbConnect, format!("unable to connect to PostgreSQL on port {port} as '{user}': {e}"))
            .hint(format!("is PostgreSQL running, and are pg{n}-socket-path, pg{n}-port and pg{n}-user right?"))
    };
    let client = if let Some(endpoint) = endpoint {
        let stream = RemoteCluster::sql_stream(endpoint, cluster.stanza.as_deref()).await?;
        let (client, connection) = pg.connect_raw(stream, tokio_postgres::NoTls).await.map_err(failed)?;
        spawn_connection(connection);
        client
    } else {
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await.map_err(failed)?;
        spawn_connection(connection);
        client
    };
    Ok(client)
}

fn spawn_connection<T>(connection: T)
where
    T: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
}

fn default_user() -> String {
    for var in ["PGUSER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    "postgres".to_string()
}

/// Version, system identifier and data directory of the running server.
pub async fn identify(client: &tokio_postgres::Client) -> CliResult<ServerIdentity> {
    let row = client
        .query_one(
            "select current_setting('server_version_num')::int4, \
             (select system_identifier from pg_control_system())::text, \
             current_setting('data_directory')",
            &[],
        )
        .await
        .map_err(|e| CliError::new(ErrorCode::DbQuery, format!("unable to identify the server: {e}")))?;
    let version: i32 = column(&row, 0)?;
    let sysid: String = column(&row, 1)?;
    Ok(ServerIdentity {
        version_num: u32::try_from(version).unwrap_or(0),
        system_identifier: sysid
            .parse()
            .map_err(|_| CliError::new(ErrorCode::DbQuery, format!("unexpected system identifier '{sysid}'")))?,
        data_directory: column(&row, 2)?,
    })
}

/// Column `i` of a row the server sent, as `T`: an answer of another type (a server that is not
/// the PostgreSQL we expect, or a tunnel in between) is an error naming the column, never a panic.
pub fn column<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a tokio_postgres::Row, i: usize) -> CliResult<T> {
    row.try_get(i)
        .map_err(|e| CliError::new(ErrorCode::DbQuery, format!("unexpected answer from PostgreSQL (column {i}): {e}")))
}
