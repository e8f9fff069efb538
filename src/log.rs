//! Logging in pgBackRest's shape: `2026-11-21 10:15:00.123 P00   INFO: message`, with separate
//! levels for stdout (`log-level-console`), stderr (`log-level-stderr`, which takes a message
//! instead of stdout) and the file `<log-path>/<stanza>-<command>.log` (`log-level-file`).
//! Under the `wal-g` name, lines are WAL-G's: `INFO: 2026/11/21 10:15:00.123456 message`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;

/// pgBackRest's levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Detail,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(text: &str) -> Self {
        match text {
            "error" => Self::Error,
            "warn" => Self::Warn,
            "info" => Self::Info,
            "detail" => Self::Detail,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => Self::Off,
        }
    }

    fn of(level: &Level) -> Self {
        match *level {
            Level::ERROR => Self::Error,
            Level::WARN => Self::Warn,
            Level::INFO => Self::Info,
            Level::DEBUG => Self::Detail,
            Level::TRACE => Self::Debug,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Off => "",
            Self::Error => "ERROR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Detail => "DETAIL",
            Self::Debug => "DEBUG",
            Self::Trace => "TRACE",
        }
    }
}

struct PgLayer {
    console: LogLevel,
    stderr: LogLevel,
    file_level: LogLevel,
    file: Option<Mutex<File>>,
    timestamp: bool,
    /// WAL-G's line shape instead of pgBackRest's.
    walg: bool,
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

/// `2026-11-21 10:15:00.123` (UTC).
pub fn now_text() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    let [y, m, d, hh, mm, ss] = pgstrata_repo_format::label::civil_time(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{:03}", now.subsec_millis())
}

/// `2026/11/21 10:15:00.123456` (UTC), as WAL-G stamps its lines.
fn walg_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or(0);
    let [y, m, d, hh, mm, ss] = pgstrata_repo_format::label::civil_time(secs);
    format!("{y:04}/{m:02}/{d:02} {hh:02}:{mm:02}:{ss:02}.{:06}", now.subsec_micros())
}

impl PgLayer {
    fn line(&self, level: LogLevel, text: &str) -> String {
        if self.walg {
            let label = match level {
                LogLevel::Warn => "WARNING",
                LogLevel::Detail | LogLevel::Trace => "DEBUG",
                other => other.label(),
            };
            return format!("{label}: {} {text}\n", walg_time());
        }
        let ts = if self.timestamp { format!("{} ", now_text()) } else { String::new() };
        format!("{ts}P00 {:>6}: {text}\n", level.label())
    }
}

impl<S: Subscriber> Layer<S> for PgLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = LogLevel::of(event.metadata().level());
        // Only our own crates' messages at detail and above; dependencies only when tracing.
        let ours = event.metadata().target().starts_with("pgstrata");
        if !ours && level < LogLevel::Debug {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let text = format!("{}{}", v.message, v.fields);
        if level <= self.stderr && self.stderr != LogLevel::Off {
            let _ = std::io::stderr().write_all(self.line(level, &text).as_bytes());
        } else if level <= self.console && self.console != LogLevel::Off {
            let _ = std::io::stdout().write_all(self.line(level, &text).as_bytes());
        }
        if level <= self.file_level
            && let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            let _ = f.write_all(self.line(level, &text).as_bytes());
        }
    }
}

/// How a command logs, resolved by its front end: levels per sink, the log file, the line shape.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// `log-level-console` (stdout), `log-level-stderr`, `log-level-file`.
    pub console: LogLevel,
    pub stderr: LogLevel,
    pub file_level: LogLevel,
    /// `<log-path>/<stanza>-<command>.log`, when the command keeps a log file.
    pub file: Option<PathBuf>,
    /// `log-timestamp`.
    pub timestamp: bool,
    /// WAL-G's line shape (invoked as `wal-g`).
    pub walg: bool,
}

/// Installs the logger for this command run. Problems opening the log file are reported on
/// stderr and do not stop the command.
pub fn init(settings: &LogSettings) {
    let mut file = None;
    if settings.file_level != LogLevel::Off
        && let Some(path) = &settings.file
    {
        let opened = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::anchor::no_follow(OpenOptions::new().create(true).append(true)).open(path));
        match opened {
            Ok(mut f) => {
                let _ = f.write_all(b"-------------------PROCESS START-------------------\n");
                file = Some(Mutex::new(f));
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "WARN: unable to open log file {}: {e} (file logging disabled; set log-path or log-level-file=off)",
                    path.display()
                );
            }
        }
    }
    let layer = PgLayer {
        console: settings.console,
        stderr: settings.stderr,
        file_level: if file.is_some() { settings.file_level } else { LogLevel::Off },
        file,
        timestamp: settings.timestamp,
        walg: settings.walg,
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
