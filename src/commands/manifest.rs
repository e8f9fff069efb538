//! `manifest`: one backup's manifest as pgBackRest 2.57+ prints it — the backup's label,
//! references, type, times, then its files (size, stored size, checksum, where stored), as text
//! or JSON; `--filter` shows one file, `--reference` the files stored in one backup (`latest`:
//! in this one).
//!
//! What differs from pgBackRest, by the format: a file's `checksum` is its SHA-256 (pgBackRest's
//! is SHA-1); every file is in a pack (`bundle`: the pack's number and offset), and a relation
//! stored by page shows its page runs instead of pgBackRest's block map. JSON carries one key of
//! pgstrata's own, `pgstrata`, with the backup's LSNs, WAL range and settings (compression,
//! cipher, page checksums).

use std::fmt::Write as _;
use std::io::Write as _;

use pgstrata_repo_format::meta::{BackupSettings, FileData, FileEntry, ManifestEntry, ManifestHeader};
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::progress::human;

/// Which files `manifest` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileFilter {
    All,
    /// One file by its manifest name (`pg_data/PG_VERSION`).
    Name(String),
    /// The files stored in this backup (`--reference=latest`).
    StoredHere,
    /// The files stored in the backup with this label.
    StoredIn(String),
}

/// What `manifest` was asked for, resolved once from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRequest {
    pub stanza: String,
    pub repo: u32,
    pub set: String,
    pub files: FileFilter,
    pub json: bool,
}

impl ManifestRequest {
    pub fn from_config(config: &Config) -> CliResult<Self> {
        let files = match (config.get("filter"), config.get("reference")) {
            (Some(name), _) => FileFilter::Name(name.to_string()),
            (None, Some("latest")) => FileFilter::StoredHere,
            (None, Some(label)) => FileFilter::StoredIn(label.to_string()),
            (None, None) => FileFilter::All,
        };
        Ok(Self {
            stanza: crate::request::repos::stanza_name(config)?,
            repo: config.repo_index(),
            set: config.require("set")?.to_string(),
            files,
            json: config.get("output") == Some("json"),
        })
    }
}

pub fn run(config: &Config) -> CliResult<()> {
    let request = ManifestRequest::from_config(config)?;
    crate::runtime::runtime()?.block_on(render(config, &request))
}

/// Streams the manifest to stdout as it is read (a file at a time: memory does not grow with
/// the number of files); one `--filter`ed file is printed only once found.
async fn render(config: &Config, request: &ManifestRequest) -> CliResult<()> {
    let repo =
        crate::repo::open_repo(&crate::request::repos::repo_target(config, request.repo), &request.stanza).await?;
    let catalog = repo.load_catalog().await?;
    let entry = catalog.backups.iter().find(|b| b.label.as_str() == request.set).ok_or_else(|| {
        CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("backup set {} is not valid for stanza '{}' in repo{}", request.set, request.stanza, request.repo),
        )
    })?;
    let mut stream = crate::manifest::ManifestStream::open(&repo, entry).await?;
    let header = stream.header()?.clone();
    let streaming = !matches!(request.files, FileFilter::Name(_));
    let mut out = Rendered::new(&header, request.json, streaming);
    let mut found = false;
    // archive-copy's WAL, kept in the header, is listed after the other files.
    let mut wal_copy = header.wal_copy.clone().into_iter();
    loop {
        let file = match stream.next().await? {
            Some(ManifestEntry::File(file)) => file,
            Some(_) => continue,
            None => match wal_copy.next() {
                Some(file) => file,
                None => break,
            },
        };
        let shown = match &request.files {
            FileFilter::All => true,
            FileFilter::Name(name) => &file.path == name,
            FileFilter::StoredHere => reference(&file).is_none(),
            FileFilter::StoredIn(label) => reference(&file) == Some(label.as_str()),
        };
        if shown {
            found = true;
            out.file(&file)?;
        }
    }
    if let (FileFilter::Name(name), false) = (&request.files, found) {
        return Err(CliError::new(
            ErrorCode::FileMissing,
            format!("'{name}' is not in the manifest of {} (names start with pg_data/ or pg_tblspc/)", request.set),
        ));
    }
    out.finish()
}

/// The backup storing the file's content when it is not this one.
fn reference(file: &FileEntry) -> Option<&str> {
    match &file.data {
        FileData::Same { backup, .. } => Some(backup.as_str()),
        _ => None,
    }
}

/// The manifest as text or JSON, written one file at a time.
struct Rendered {
    json: bool,
    /// What is not written yet (a file's lines, or everything until a filtered file is found).
    text: String,
    /// Written to stdout as it comes (else held until the end).
    streaming: bool,
    /// JSON: files written so far (for the separating commas).
    files: u64,
}

/// Bytes held before they are written out.
const FLUSH: usize = 64 << 10;

impl Rendered {
    fn new(h: &ManifestHeader, json: bool, streaming: bool) -> Self {
        let references: Vec<&str> = h.references.iter().map(|l| l.as_str()).collect();
        let head = json!({
            "label": h.label.as_str(),
            "reference": references,
            "type": h.backup_type.as_str(),
            "time": {"start": h.timestamp_start, "copy": h.timestamp_start, "stop": h.timestamp_stop},
            "bundle": {"bundle": true, "raw": false},
            "block": {"block": true},
            "pgstrata": {
                "lsn": {"start": h.lsn_start.to_string(), "stop": h.lsn_stop.to_string()},
                "wal": {"start": h.wal_start, "stop": h.wal_stop},
                "timeline": h.timeline.0,
                "option": settings_json(&h.settings),
            },
        });
        let mut text = String::new();
        if json {
            // The head object, left open for the file list.
            let head = head.to_string();
            text.push_str(head.strip_suffix('}').unwrap_or(&head));
            text.push_str(",\"fileList\":[");
        } else {
            let duration = (h.timestamp_stop - h.timestamp_start).max(0);
            let _ = write!(
                text,
                "label: {}\nreference: {}\ntype: {}\ntime: start: {}, stop: {}, duration: {}:{:02}:{:02}\n\
                 bundle: true\nblock: true\ncompress: {}, cipher: {}\n\nfile list:\n",
                h.label,
                references.join(", "),
                h.backup_type.as_str(),
                clock(h.timestamp_start),
                clock(h.timestamp_stop),
                duration / 3600,
                duration % 3600 / 60,
                duration % 60,
                h.settings.compress_type,
                h.settings.cipher,
            );
        }
        Self { json, text, streaming, files: 0 }
    }

    fn flush(&mut self, at_least: usize) -> CliResult<()> {
        if self.text.len() < at_least {
            return Ok(());
        }
        std::io::stdout()
            .lock()
            .write_all(self.text.as_bytes())
            .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))?;
        self.text.clear();
        Ok(())
    }

    fn file(&mut self, f: &FileEntry) -> CliResult<()> {
        let stored = f.data.stored();
        let pack = match &f.data {
            FileData::Stored { parts } | FileData::Pages { parts, .. } => parts.first().map(|p| (p.pack, p.offset)),
            _ => None,
        };
        let runs = match &f.data {
            FileData::Pages { runs, .. } => Some(runs.len()),
            _ => None,
        };
        if self.json {
            let checksum = whole_digest(f).map(|d| d.to_string());
            let mut v = json!({"name": f.path, "size": f.size, "checksum": checksum, "repo": {"size": stored}});
            if let Some(label) = reference(f) {
                v["reference"] = json!(label);
            }
            if let Some((id, offset)) = pack {
                v["bundle"] = json!({"id": id, "offset": offset});
            }
            if let Some(runs) = runs {
                v["block"] = json!({"size": pgstrata_repo_format::pg::BLCKSZ, "runs": runs});
            }
            if self.files > 0 {
                self.text.push(',');
            }
            self.text.push_str(&v.to_string());
        } else {
            if self.files > 0 {
                self.text.push('\n');
            }
            self.text_lines(f, stored, pack, runs);
        }
        self.files += 1;
        if self.streaming { self.flush(FLUSH) } else { Ok(()) }
    }

    fn text_lines(&mut self, f: &FileEntry, stored: u64, pack: Option<(u32, u64)>, runs: Option<usize>) {
        let _ = writeln!(self.text, "  - {}", f.path);
        if let Some(label) = reference(f) {
            let _ = writeln!(self.text, "      reference: {label}");
        }
        let _ = writeln!(self.text, "      size: {}, repo {}", human(f.size), human(stored));
        match whole_digest(f) {
            Some(d) => writeln!(self.text, "      checksum: {d}"),
            None => writeln!(self.text, "      checksum: - (pages read from WAL summaries; each page has its digest)"),
        }
        .ok();
        if let Some((id, _)) = pack {
            let _ = writeln!(self.text, "      bundle: {id}");
        }
        if let Some(runs) = runs {
            let _ = writeln!(self.text, "      block: size {}, page runs {runs}", human(8192));
        }
    }

    fn finish(mut self) -> CliResult<()> {
        if self.json {
            self.text.push_str("]}\n");
        }
        self.flush(0)
    }
}

fn settings_json(s: &BackupSettings) -> Value {
    json!({
        "compress-type": s.compress_type,
        "compress-level": s.compress_level,
        "cipher-type": s.cipher,
        "checksum-page": s.checksum_page,
        "buffer-size": s.frame_size,
    })
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn clock(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = pgstrata_repo_format::label::civil_time(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// A file's SHA-256, when the backup has one: a file read only where WAL summaries name
/// changed blocks has none (not every byte was read; its pages have digests of their own).
fn whole_digest(f: &FileEntry) -> Option<&pgstrata_repo_format::Sha256Digest> {
    (f.size == 0 || !f.chunks.is_empty()).then_some(&f.sha256)
}
