//! Progress of a long copy: a bar on stderr when it is a terminal, and a log line (at info, so it
//! reaches the log file whatever the console shows) every 10 % and at least every 10 seconds,
//! with bytes, files and rate; a backup also publishes it in its repository lease, where `info`
//! reads a running backup's progress.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a progress line is logged (at info), whatever the percentage.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Bytes done out of a total (for a backup, an estimate: the databases' size when it started).
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    files: u64,
    tty: bool,
    last_draw: Option<Instant>,
    logged_tenths: u64,
    started: Instant,
    last_log: Instant,
    share: Option<crate::lease::ProgressShare>,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self {
            what,
            total: total.max(1),
            done: 0,
            files: 0,
            tty: std::io::stderr().is_terminal(),
            last_draw: None,
            logged_tenths: 0,
            started: now,
            last_log: now,
            share: None,
        }
    }

    /// Progress whose total is not known in advance: a log line every 10 GB and a byte count.
    pub fn open_ended(what: &'static str) -> Self {
        Self { total: 0, ..Self::new(what, 0) }
    }

    /// Publishes the progress where others read it (the repository lease: `info`).
    pub fn shared(mut self, share: Option<crate::lease::ProgressShare>) -> Self {
        self.share = share;
        self
    }

    /// A file finished.
    pub fn add_file(&mut self) {
        self.files += 1;
    }

    /// The percentage done; an estimated total never reads 100 before the end.
    fn percent(&self) -> u64 {
        ((self.done.min(self.total) * 100) / self.total.max(1)).min(99)
    }

    /// The steady progress line: percentage (when the total is known), bytes, files, rate.
    fn log_line(&mut self) {
        self.last_log = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = human((self.done as f64 / secs) as u64);
        if self.total == 0 {
            tracing::info!("{} progress: {} copied, {} files, {rate}/s", self.what, human(self.done), self.files);
        } else {
            tracing::info!(
                "{} progress: {}% ({} of {}), {} files, {rate}/s",
                self.what,
                self.percent(),
                human(self.done),
                human(self.total),
                self.files
            );
        }
    }

    pub fn add(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if let Some(share) = &self.share {
            share.set(self.total, self.done);
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.log_line();
        }
        if self.total == 0 {
            let tens = self.done / 10_000_000_000;
            if tens > self.logged_tenths {
                self.logged_tenths = tens;
                self.log_line();
            }
            if self.tty && self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                let _ = write!(std::io::stderr(), "\r{} {} copied", self.what, human(self.done));
                let _ = std::io::stderr().flush();
                self.last_draw = Some(Instant::now());
            }
            return;
        }
        let pct = self.percent();
        if pct / 10 > self.logged_tenths {
            self.logged_tenths = pct / 10;
            self.log_line();
        }
        if self.tty && self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            self.draw(pct);
        }
    }

    fn draw(&mut self, pct: u64) {
        let filled = usize::try_from(pct / 4).unwrap_or(25);
        let bar = format!("{}{}", "#".repeat(filled), " ".repeat(25 - filled.min(25)));
        let _ =
            write!(std::io::stderr(), "\r{} [{bar}] {pct:3}% {} / {}", self.what, human(self.done), human(self.total));
        let _ = std::io::stderr().flush();
        self.last_draw = Some(Instant::now());
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.tty && self.last_draw.is_some() {
            if self.total > 0 {
                self.draw(100);
            }
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// An amount of bytes for people as pgBackRest prints them: powers of 1024, one decimal rounded,
/// a trailing `.0` left out (`512B`, `1KB`, `1.5KB`, `20.3MB`, `2GB`).
pub fn human(bytes: u64) -> String {
    let (divisor, unit) = match bytes {
        0..1024 => return format!("{bytes}B"),
        1024..1_048_576 => (1024u128, "KB"),
        1_048_576..1_073_741_824 => (1_048_576, "MB"),
        _ => (1_073_741_824, "GB"),
    };
    // Tenths, rounded half up.
    let tenths = (u128::from(bytes) * 100 / divisor + 5) / 10;
    match tenths % 10 {
        0 => format!("{}{unit}", tenths / 10),
        d => format!("{}.{d}{unit}", tenths / 10),
    }
}

#[cfg(test)]
mod human_tests {
    #[test]
    fn sizes_read_as_pgbackrest_prints_them() {
        for (bytes, text) in [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1KB"),
            (1536, "1.5KB"),
            (1_048_575, "1024KB"),
            (23_383_244, "22.3MB"),
            (2 << 30, "2GB"),
            (u64::MAX, "17179869184GB"),
        ] {
            assert_eq!(super::human(bytes), text, "{bytes}");
        }
    }
}
