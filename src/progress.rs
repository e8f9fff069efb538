//! Progress of a long copy: a bar on stderr when it is a terminal, and a log line every 10 %
//! (at info, so it reaches the log file whatever the console shows).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Bytes done out of a total.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    tty: bool,
    last_draw: Option<Instant>,
    logged_tenths: u64,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total: total.max(1),
            done: 0,
            tty: std::io::stderr().is_terminal(),
            last_draw: None,
            logged_tenths: 0,
        }
    }

    /// Progress whose total is not known in advance: a log line every 10 GB and a byte count.
    pub fn open_ended(what: &'static str) -> Self {
        Self { total: 0, ..Self::new(what, 0) }
    }

    pub fn add(&mut self, bytes: u64) {
        self.done += bytes;
        if self.total == 0 {
            let tens = self.done / 10_000_000_000;
            if tens > self.logged_tenths {
                self.logged_tenths = tens;
                tracing::info!("{} progress: {} copied", self.what, crate::progress::human(self.done));
            }
            if self.tty && self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                let _ = write!(std::io::stderr(), "\r{} {} copied", self.what, crate::progress::human(self.done));
                let _ = std::io::stderr().flush();
                self.last_draw = Some(Instant::now());
            }
            return;
        }
        let pct = (self.done.min(self.total) * 100) / self.total;
        if pct / 10 > self.logged_tenths {
            self.logged_tenths = pct / 10;
            tracing::info!(
                "{} progress: {pct}% ({} of {})",
                self.what,
                crate::progress::human(self.done),
                crate::progress::human(self.total)
            );
        }
        if self.tty && self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            self.draw(pct);
        }
    }

    fn draw(&mut self, pct: u64) {
        let filled = usize::try_from(pct / 4).unwrap_or(25);
        let bar = format!("{}{}", "#".repeat(filled), " ".repeat(25 - filled.min(25)));
        let _ = write!(
            std::io::stderr(),
            "\r{} [{bar}] {pct:3}% {} / {}",
            self.what,
            crate::progress::human(self.done),
            crate::progress::human(self.total)
        );
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

/// An amount of bytes for people: `1.5GB`, `20.3MB`, `512B` (powers of ten, as pgBackRest prints).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}KB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}
