//! Errors that end a command: a message, optional hints, and the exit code a caller may act on.
//! Codes follow pgBackRest's numbering (`build/error.yaml`) where a caller might depend on them.

use std::fmt;

/// Exit codes, numbered as pgBackRest numbers its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// `archive-get`: the file is not in the archive (PostgreSQL's "not available").
    NotInArchive = 1,
    /// A file or object is not in the expected format.
    Format = 29,
    /// No command was given.
    CommandRequired = 30,
    /// Unknown option, or an option not allowed where it was given.
    OptionInvalid = 31,
    /// An option's value is malformed.
    OptionInvalidValue = 32,
    /// An option's value is out of range.
    OptionInvalidRange = 33,
    /// An option was set more than once.
    OptionDuplicate = 35,
    /// A required option is missing.
    OptionRequired = 37,
    /// A required parameter is missing.
    ParamRequired = 43,
    /// A parameter is not valid (one too many, or not one the command takes).
    ParamInvalid = 96,
    /// The WAL file does not belong to the stanza's database.
    ArchiveMismatch = 44,
    /// The WAL file is already archived with different content.
    ArchiveDuplicate = 45,
    /// PostgreSQL is running where it must not be.
    PgRunning = 38,
    /// The target path is not empty.
    PathNotEmpty = 40,
    /// Unable to connect to PostgreSQL.
    DbConnect = 56,
    /// A query failed.
    DbQuery = 57,
    /// The repository belongs to another database.
    DbMismatch = 58,
    /// Unable to take a lock.
    LockAcquire = 50,
    /// A stop file keeps the command from running (`stop`).
    Stop = 62,
    /// Terminated by a signal.
    Term = 63,
    /// No such backup set.
    BackupSetInvalid = 75,
    /// `--tablespace-map` names a tablespace the backup does not have.
    TablespaceMap = 76,
    /// `--link-map` names a link the backup does not have.
    LinkMap = 78,
    /// A database named for a selective restore is not in the backup.
    DbMissing = 80,
    /// A selective restore's databases contradict each other or include a system database.
    DbInvalid = 81,
    /// Timed out waiting for WAL to reach the archive.
    ArchiveTimeout = 82,
    /// Unknown command.
    CommandInvalid = 48,
    /// Missing file or object.
    FileMissing = 55,
    /// A file could not be read.
    FileRead = 42,
    /// Encryption, decryption or key error (wrong passphrase included).
    Crypto = 95,
    /// The repository is invalid or corrupt.
    RepoInvalid = 103,
    /// Storage could not be reached.
    Service = 101,
    /// Access denied.
    Access = 105,
    /// The server does not archive (archive_mode, archive_command, wal_level).
    ArchiveDisabled = 87,
    /// The other side of a server connection said something this side cannot accept.
    Protocol = 39,
    /// A server could not be reached, or refused the TLS handshake.
    HostConnect = 49,
    /// The command must run on another host (restore with `pg1-host` set).
    HostInvalid = 72,
    /// The command is not available yet.
    NotImplemented = 124,
}

impl ErrorCode {
    /// The code for an exit number (as a worker writes it into the spool).
    pub fn from_number(n: i32) -> Option<Self> {
        [
            Self::NotInArchive,
            Self::Format,
            Self::CommandRequired,
            Self::OptionInvalid,
            Self::OptionInvalidValue,
            Self::OptionInvalidRange,
            Self::OptionDuplicate,
            Self::OptionRequired,
            Self::ParamRequired,
            Self::ArchiveMismatch,
            Self::ArchiveDuplicate,
            Self::PgRunning,
            Self::PathNotEmpty,
            Self::DbConnect,
            Self::DbQuery,
            Self::DbMismatch,
            Self::LockAcquire,
            Self::Stop,
            Self::Term,
            Self::BackupSetInvalid,
            Self::TablespaceMap,
            Self::LinkMap,
            Self::DbMissing,
            Self::DbInvalid,
            Self::ParamInvalid,
            Self::ArchiveDisabled,
            Self::ArchiveTimeout,
            Self::CommandInvalid,
            Self::FileMissing,
            Self::FileRead,
            Self::Crypto,
            Self::RepoInvalid,
            Self::Service,
            Self::Access,
            Self::Protocol,
            Self::HostConnect,
            Self::HostInvalid,
            Self::NotImplemented,
        ]
        .into_iter()
        .find(|c| *c as i32 == n)
    }
}

/// An error that ends the command with `code`.
#[derive(Clone, Debug)]
pub struct CliError {
    pub code: ErrorCode,
    pub message: String,
    pub hints: Vec<String>,
}

impl CliError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), hints: Vec::new() }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.code as u8
    }

    /// The process exit code for `command`. `archive-get` runs as PostgreSQL's
    /// `restore_command`, where 1..=125 means "not in the archive": every real failure there
    /// exits 255 so recovery aborts instead of ending early on a storage or integrity error.
    pub fn exit_code_for(&self, command: &str) -> u8 {
        match (command, self.code) {
            ("archive-get", ErrorCode::NotInArchive) => 1,
            ("archive-get", _) => 255,
            _ => self.exit_code(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:03}]: {}", self.exit_code(), self.message)?;
        for h in &self.hints {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<pgstrata_storage::StorageError> for CliError {
    fn from(e: pgstrata_storage::StorageError) -> Self {
        use pgstrata_storage::StorageError as S;
        let code = match &e {
            S::NotFound { .. } => ErrorCode::FileMissing,
            S::Changed { .. } => ErrorCode::LockAcquire,
            S::PermissionDenied { .. } => ErrorCode::Access,
            S::Unavailable { .. } => ErrorCode::Service,
            S::Config(_) => ErrorCode::OptionInvalidValue,
            S::AlreadyExists { .. } | S::Other { .. } => ErrorCode::RepoInvalid,
        };
        // Storage messages carry their own HINT lines.
        Self::new(code, e.to_string())
    }
}

impl From<pgstrata_repo_format::FormatError> for CliError {
    fn from(e: pgstrata_repo_format::FormatError) -> Self {
        use pgstrata_repo_format::FormatError as F;
        let code = match &e {
            F::WrongPassphrase | F::KeyRequired { .. } => ErrorCode::Crypto,
            F::Invalid { .. } => ErrorCode::OptionInvalidValue,
            _ => ErrorCode::Format,
        };
        let err = Self::new(code, e.to_string());
        match code {
            ErrorCode::Crypto => {
                err.hint("check repo1-cipher-pass: it must be the passphrase the stanza was created with")
            }
            _ => err,
        }
    }
}

/// Shorthand.
pub type CliResult<T> = Result<T, CliError>;
