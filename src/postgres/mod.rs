//! The live cluster: its `pg_control` on disk and a connection to the server.

use std::path::{Path, PathBuf};

use pgstrata_repo_format::pg::ControlFile;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

/// `pg1-path`, which must be set and absolute.
pub fn pg_path(config: &Config) -> CliResult<PathBuf> {
    let path = PathBuf::from(config.require("pg1-path")?);
    if !path.is_absolute() {
        return Err(CliError::new(
            ErrorCode::OptionInvalidValue,
            format!("'{}' is not valid for 'pg1-path' option: it must be absolute", path.display()),
        ));
    }
    Ok(path)
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

/// What the running server says about itself.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    pub version_num: u32,
    pub system_identifier: u64,
    pub data_directory: String,
}

/// Connects to the server of `pg1` (socket path, port, user, database).
pub async fn connect(config: &Config) -> CliResult<tokio_postgres::Client> {
    let mut pg = tokio_postgres::Config::new();
    match config.get("pg1-socket-path") {
        Some(dir) => pg.host_path(dir),
        None => pg.host_path("/var/run/postgresql"),
    };
    if let Some(host) = config.get("pg1-host") {
        pg.host(host);
    }
    let port = config.int("pg1-port").and_then(|p| u16::try_from(p).ok()).unwrap_or(5432);
    pg.port(port);
    let user = match config.get("pg1-user") {
        Some(u) => u.to_string(),
        None => default_user(),
    };
    pg.user(&user);
    pg.dbname(config.get("pg1-database").unwrap_or("postgres"));
    pg.application_name("pgstrata");
    pg.connect_timeout(std::time::Duration::from_secs(30));
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await.map_err(|e| {
        CliError::new(ErrorCode::DbConnect, format!("unable to connect to PostgreSQL on port {port} as '{user}': {e}"))
            .hint("is PostgreSQL running, and are pg1-socket-path, pg1-port and pg1-user right?")
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
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
    let version: i32 = row.get(0);
    let sysid: String = row.get(1);
    Ok(ServerIdentity {
        version_num: u32::try_from(version).unwrap_or(0),
        system_identifier: sysid
            .parse()
            .map_err(|_| CliError::new(ErrorCode::DbQuery, format!("unexpected system identifier '{sysid}'")))?,
        data_directory: row.get(2),
    })
}
