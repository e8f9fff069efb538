//! `info`: backups and archive of each stanza, as text or as pgBackRest's JSON (the schema
//! pgMonitor and PGO read: an array of stanzas, `backup[]` oldest first).

use std::collections::BTreeMap;

use pgstrata_repo_format::BackupType;
use pgstrata_repo_format::layout::{StanzaLayout, archive_id, parse_wal_object};
use pgstrata_repo_format::meta::{BackupCatalog, CipherInfo, StanzaInfo};
use pgstrata_repo_format::pg::WalFileKind;
use pgstrata_storage::RetryPolicy;
use serde_json::{Value, json};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::identity::Flavor;
use crate::repo::RepoTarget;
use crate::repo::{Repo, load_stanza_info};

/// How `info` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoOutput {
    Text,
    Json,
    /// The text exposition format (pgMonitor's `ccp_backrest_*` series).
    Prometheus,
}

/// What `info` was asked for, resolved once by a front end.
#[derive(Clone, Debug)]
pub struct InfoRequest {
    /// `--stanza`, or every stanza the repositories hold.
    pub stanza: Option<String>,
    pub repos: Vec<RepoTarget>,
    /// `--set`: one backup, with the details of its manifest.
    pub set: Option<String>,
    pub output: InfoOutput,
    /// The name invoked (the version `info` JSON reports follows it).
    pub flavor: Flavor,
}

/// What `info --set` adds for the one backup: read from its manifest.
struct SetDetail {
    databases: Vec<pgstrata_repo_format::meta::DatabaseRef>,
    tablespaces: Vec<pgstrata_repo_format::meta::Target>,
    /// Files: all, stored whole, referenced (unchanged since the prior), copied by page, empty.
    files: [u64; 5],
    /// Where the files were read (primary, standby), as the manifest records it.
    read_from: Vec<pgstrata_repo_format::meta::ReadFrom>,
}

/// The manifest of backup `label` in repository `index`, summed up.
async fn set_detail(target: &RepoTarget, stanza: &str, label: &str) -> CliResult<Option<SetDetail>> {
    use pgstrata_repo_format::meta::{FileData, ManifestEntry};
    let repo = crate::repo::open_repo(target, stanza).await?;
    let catalog = repo.load_catalog().await?;
    let Some(entry) = catalog.backups.iter().find(|b| b.label.as_str() == label) else { return Ok(None) };
    let mut manifest = crate::manifest::ManifestStream::open(&repo, entry).await?;
    let header = manifest.header()?.clone();
    let mut files = [0u64; 5];
    while let Some(entry) = manifest.next().await? {
        if let ManifestEntry::File(f) = entry {
            files[0] += 1;
            let kind = match f.data {
                FileData::Stored { .. } => 1,
                FileData::Same { .. } => 2,
                FileData::Pages { .. } => 3,
                FileData::Empty => 4,
            };
            files[kind] += 1;
        }
    }
    let tablespaces = header.targets.into_iter().filter(|t| t.tablespace_oid.is_some()).collect();
    Ok(Some(SetDetail { databases: header.databases, tablespaces, files, read_from: header.read_from }))
}

/// What one repository says about one stanza.
struct RepoView {
    index: u32,
    status: (i64, String),
    info: Option<StanzaInfo>,
    catalog: BackupCatalog,
    /// (archive id, db id, min, max)
    archives: Vec<(String, u32, Option<String>, Option<String>)>,
    /// Per archive id and timeline: (min, max) segment.
    timelines: BTreeMap<(String, u32), (String, String)>,
    /// The writer holding the repository's lease now.
    lease: Option<crate::lease::LeaseHolder>,
    /// `--set`: the one backup shown, with the details of its manifest.
    set: Option<(String, SetDetail)>,
    /// When the newest archived segment was stored (unix seconds).
    newest_archived: Option<i64>,
    /// The last `verify` and `restore-test` results recorded in the repository.
    reports: BTreeMap<&'static str, Value>,
    /// What `cipher` says of the repository.
    cipher: &'static str,
}

/// Widens a (min, max) range of segment names to take in `name`.
fn widen((min, max): &mut (String, String), name: &str) {
    if name < min.as_str() {
        *min = name.to_string();
    }
    if name > max.as_str() {
        *max = name.to_string();
    }
}

/// The cipher `info` reports for a repository: pgBackRest's name where the configuration
/// names it (`aes-256-cbc`: pgBackRest's objects are, pgstrata's own are AES-256-GCM under the
/// same passphrase), so a repository taken over reports what it reported before.
fn cipher_name(info: &StanzaInfo, configured: &str, seen_only: bool) -> &'static str {
    match (&info.cipher, configured) {
        (CipherInfo::Aes256Gcm { .. }, "aes-256-cbc") => "aes-256-cbc",
        (CipherInfo::Aes256Gcm { .. }, _) => "aes-256-gcm",
        // Seen only through pgBackRest's files, which were read with the configured cipher.
        (CipherInfo::None, "aes-256-cbc") if seen_only => "aes-256-cbc",
        (CipherInfo::None, _) => "none",
    }
}

async fn view(request: &InfoRequest, target: &RepoTarget, stanza: &str) -> CliResult<RepoView> {
    let index = target.index;
    let mut v = RepoView {
        index,
        status: (0, "ok".into()),
        info: None,
        catalog: BackupCatalog::default(),
        archives: vec![],
        timelines: BTreeMap::new(),
        lease: None,
        set: None,
        newest_archived: None,
        reports: BTreeMap::new(),
        cipher: "none",
    };
    let store = match target.storage()?.open(RetryPolicy::default()) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            v.status = (1, "missing stanza path".into());
            return Ok(v);
        }
        Err(e) => return Err(e.into()),
    };
    let layout = StanzaLayout::new(stanza)?;
    // Read, never taken: looking cannot make a starting backup fail.
    v.lease = crate::lease::current_holder(&store, &layout).await?;
    let (info, seen) = match load_stanza_info(&store, &layout).await? {
        Some(info) => (info, None),
        // A stanza only pgBackRest has written: seen as it is (nothing of pgstrata's to unlock).
        None => match crate::repo::adopt(target, store.clone(), layout.clone(), false).await? {
            Some(repo) => (repo.info, Some(repo.key)),
            None => {
                v.status = (1, "missing stanza path".into());
                return Ok(v);
            }
        },
    };
    v.cipher = cipher_name(&info, &target.cipher.kind, seen.is_some());
    let key = match seen.map_or_else(|| crate::repo::unlock(target, &info), Ok) {
        Ok(k) => k,
        Err(e) => {
            v.status = (99, e.message);
            v.info = Some(info);
            return Ok(v);
        }
    };
    let repo = Repo { index, store, layout, info, key, foreign: target.foreign() };
    match repo.load_catalog().await {
        Ok(c) => v.catalog = c,
        Err(e) => v.status = (3, format!("missing stanza data: {}", e.message)),
    }
    // pgBackRest's backups and archive in the same repository: one catalog of both.
    let access = repo.pgbackrest();
    if let Some(foreign) = crate::pgbackrest::backup_info(access, stanza).await? {
        crate::pgbackrest::merge_catalog(&mut v.catalog, &foreign, &repo.info);
    }
    for db in &repo.info.db_history {
        let id = archive_id(db.pg_version, db.id);
        // The whole range of this archive id, and of each timeline in it: pgBackRest's archive
        // of the same id first (a repository taken over), then pgstrata's.
        let mut range: Option<(String, String)> = None;
        let mut note = |v: &mut RepoView, name: &pgstrata_repo_format::pg::WalFileName| {
            let n = name.to_string();
            widen(range.get_or_insert_with(|| (n.clone(), n.clone())), &n);
            widen(v.timelines.entry((id.clone(), name.timeline.0)).or_insert_with(|| (n.clone(), n.clone())), &n);
        };
        crate::pgbackrest::archive::for_each_segment(access, stanza, &id, |name| note(&mut v, &name)).await?;
        for dir in repo.store.list_dirs(&repo.layout.archive_dir(&id)).await? {
            if dir.len() != 16 {
                continue;
            }
            let objects = repo.store.list_all(&format!("{}{dir}/", repo.layout.archive_dir(&id))).await?;
            for o in objects {
                if let Some((name, _)) = parse_wal_object(&o.key)
                    && name.kind == WalFileKind::Segment
                {
                    v.newest_archived = v.newest_archived.max(Some(o.last_modified));
                    note(&mut v, &name);
                }
            }
        }
        let (min, max) = range.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        v.archives.push((id, db.id, min, max));
    }
    // Only the Prometheus output shows them: `info` JSON, which PGO's collector runs from SQL on
    // a schedule, makes no extra request.
    let names: &[&'static str] =
        if request.output == InfoOutput::Prometheus { &["verify", "restore-test"] } else { &[] };
    for &name in names {
        match repo.store.get(&repo.layout.report(&format!("{name}.json"))).await {
            Ok(bytes) => {
                if let Ok(report) = serde_json::from_slice::<Value>(&bytes) {
                    v.reports.insert(name, report);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if v.status.0 == 0 && v.catalog.backups.is_empty() {
        v.status = (2, "no valid backups".into());
    }
    v.info = Some(repo.info);
    Ok(v)
}

fn stanza_json(stanza: &str, views: &[RepoView], flavor: Flavor) -> Value {
    let mut backups = Vec::new();
    let mut archives = Vec::new();
    let mut dbs = Vec::new();
    let mut repos = Vec::new();
    let mut ciphers = std::collections::BTreeSet::new();
    for v in views {
        let cipher = v.cipher;
        ciphers.insert(cipher);
        repos.push(json!({"cipher": cipher, "key": v.index, "status": {"code": v.status.0, "message": v.status.1}}));
        if let Some(info) = &v.info {
            for db in &info.db_history {
                dbs.push(json!({"id": db.id, "repo-key": v.index, "system-id": db.system_id, "version": db.pg_version.to_string()}));
            }
        }
        for (id, db_id, min, max) in &v.archives {
            archives.push(json!({"database": {"id": db_id, "repo-key": v.index}, "id": id, "max": max, "min": min}));
        }
        for b in &v.catalog.backups {
            let reference: Value = if b.references.is_empty() { Value::Null } else { json!(b.references) };
            let detail = v.set.as_ref().filter(|(label, _)| label == b.label.as_str()).map(|(_, d)| d);
            if v.set.is_some() && detail.is_none() {
                continue;
            }
            let mut backup = json!({
                "archive": {"start": b.wal_start, "stop": b.wal_stop},
                "backrest": {"format": 5, "version": crate::identity::reported_version(flavor)},
                "database": {"id": b.db_id, "repo-key": v.index},
                "error": b.error,
                "info": {"delta": b.delta, "repository": {"delta": b.repo_delta, "size": b.repo_size}, "size": b.size},
                "label": b.label,
                "lsn": {"start": b.lsn_start.to_string(), "stop": b.lsn_stop.to_string()},
                "prior": b.prior,
                "reference": reference,
                "timestamp": {"start": b.timestamp_start, "stop": b.timestamp_stop},
                "type": b.backup_type.as_str(),
            });
            if !b.annotation.is_empty() {
                backup["annotation"] = json!(b.annotation);
            }
            if b.keep {
                backup["keep"] = json!(true);
            }
            if let Some(d) = detail {
                backup["database-ref"] = json!(d.databases);
                if !d.read_from.is_empty() {
                    // pgstrata's own key (pgBackRest has none): the read load per host.
                    backup["read-from"] = json!(d.read_from);
                }
                backup["tablespace"] = json!(
                    d.tablespaces
                        .iter()
                        .map(|t| json!({
                            "name": t.tablespace_name, "oid": t.tablespace_oid, "path": t.path,
                        }))
                        .collect::<Vec<_>>()
                );
                let [total, stored, referenced, by_page, empty] = d.files;
                backup["file"] = json!({"total": total, "stored": stored, "referenced": referenced, "page": by_page, "empty": empty});
            }
            backups.push((b.timestamp_stop, backup));
        }
    }
    backups.sort_by_key(|(stop, _)| *stop);
    let codes: std::collections::BTreeSet<i64> = views.iter().map(|v| v.status.0).collect();
    let (code, message) = match (codes.len(), views.first()) {
        (1, Some(v)) => v.status.clone(),
        _ => (4, "different across repos".to_string()),
    };
    let cipher = if ciphers.len() > 1 { "mixed" } else { ciphers.into_iter().next().unwrap_or("none") };
    json!({
        "archive": archives,
        "backup": backups.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        "cipher": cipher,
        "db": dbs,
        "name": stanza,
        "repo": repos,
        "status": {
            "code": code,
            "lock": {"backup": backup_lock(views), "restore": {"held": false}},
            "message": message,
        },
    })
}

/// `status.lock.backup` as pgBackRest 2.59 prints it: held, and for a running backup its
/// progress (`size`, `size-cplt`, summed over the repositories, and per repository), read from
/// the repository lease the backup renews.
fn backup_lock(views: &[RepoView]) -> Value {
    let held = views.iter().any(|v| v.lease.is_some());
    let running: Vec<(u32, crate::lease::LeaseProgress)> =
        views.iter().filter_map(|v| Some((v.index, v.lease.as_ref()?.progress?))).collect();
    if running.is_empty() {
        return json!({"held": held});
    }
    let (size, done) =
        running.iter().fold((0u64, 0u64), |(s, d), (_, p)| (s.saturating_add(p.size), d.saturating_add(p.size_cplt)));
    let repos: Vec<Value> =
        running.iter().map(|(key, p)| json!({"key": key, "size": p.size, "size-cplt": p.size_cplt})).collect();
    json!({"held": held, "repo": repos, "size": size, "size-cplt": done})
}

fn ts(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = pgstrata_repo_format::label::civil_time(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}+00")
}

fn stanza_text(stanza: &str, views: &[RepoView], json: &Value) -> String {
    let mut out = format!("stanza: {stanza}\n");
    let status = json["status"]["message"].as_str().unwrap_or("");
    let code = json["status"]["code"].as_i64().unwrap_or(99);
    // pgBackRest's words for a running backup (or expire), with its progress when known.
    let lock = &json["status"]["lock"]["backup"];
    let running = match (lock["held"].as_bool(), lock["size"].as_u64(), lock["size-cplt"].as_u64()) {
        (Some(true), Some(size), Some(done)) if size > 0 => {
            format!(" (backup/expire running - {:.2}% complete)", (done.min(size) as f64) * 100.0 / size as f64)
        }
        (Some(true), _, _) => {
            let who: Vec<String> = views
                .iter()
                .filter_map(|v| v.lease.as_ref().map(|h| format!("repo{}: {}", v.index, h.describe())))
                .collect();
            format!(" (backup/expire running: {})", who.join("; "))
        }
        _ => String::new(),
    };
    out.push_str(&format!(
        "    status: {}{running}\n",
        if code == 0 { "ok".to_string() } else { format!("error ({status})") }
    ));
    out.push_str(&format!("    cipher: {}\n", json["cipher"].as_str().unwrap_or("none")));
    for v in views {
        let Some(info) = &v.info else { continue };
        let current = info.current_db().map(|d| d.id);
        for db in info.db_history.iter().rev() {
            let tag = if Some(db.id) == current { " (current)" } else { "" };
            out.push_str(&format!("\n    db{tag}\n"));
            for (id, db_id, min, max) in &v.archives {
                if *db_id == db.id {
                    let range = match (min, max) {
                        (Some(a), Some(b)) => format!("{a}/{b}"),
                        _ => "none present".into(),
                    };
                    out.push_str(&format!("        wal archive min/max ({id}): {range}\n"));
                    for ((tid, tli), (a, b)) in &v.timelines {
                        if tid == id {
                            out.push_str(&format!("            timeline {tli}: {a} / {b}\n"));
                        }
                    }
                }
            }
            let shown = |b: &&pgstrata_repo_format::meta::CatalogEntry| {
                v.set.as_ref().is_none_or(|(label, _)| label == b.label.as_str())
            };
            for b in v.catalog.backups.iter().filter(|b| b.db_id == db.id).filter(shown) {
                out.push_str(&format!("\n        {} backup: {}\n", b.backup_type.as_str(), b.label));
                out.push_str(&format!(
                    "            timestamp start/stop: {} / {}\n",
                    ts(b.timestamp_start),
                    ts(b.timestamp_stop)
                ));
                out.push_str(&format!("            wal start/stop: {} / {}\n", b.wal_start, b.wal_stop));
                out.push_str(&format!(
                    "            database size: {}, database backup size: {}\n",
                    crate::progress::human(b.size),
                    crate::progress::human(b.delta)
                ));
                out.push_str(&format!(
                    "            repo{}: backup set size: {}, backup size: {}\n",
                    v.index,
                    crate::progress::human(b.repo_size),
                    crate::progress::human(b.repo_delta)
                ));
                if b.error {
                    out.push_str("            error: page checksum errors found (see the backup's manifest)\n");
                }
                if b.keep {
                    out.push_str(
                        "            keep: expire does not remove this backup (annotate --no-keep to release it)\n",
                    );
                }
                if v.set.is_some() && !b.annotation.is_empty() {
                    out.push_str("            annotation(s)\n");
                    for (k, val) in &b.annotation {
                        out.push_str(&format!("                {k}: {val}\n"));
                    }
                }
                if let Some((_, d)) = &v.set {
                    if !b.references.is_empty() {
                        let refs: Vec<&str> = b.references.iter().map(|r| r.as_str()).collect();
                        out.push_str(&format!("            backup reference list: {}\n", refs.join(", ")));
                    }
                    let dbs: Vec<String> = d.databases.iter().map(|db| format!("{} ({})", db.name, db.oid)).collect();
                    out.push_str(&format!("            database list: {}\n", dbs.join(", ")));
                    let [total, stored, referenced, by_page, empty] = d.files;
                    out.push_str(&format!(
                        "            file total: {total} (stored whole {stored}, unchanged and referenced {referenced}, \
                         by page {by_page}, empty {empty})\n"
                    ));
                    for r in &d.read_from {
                        out.push_str(&format!(
                            "            read from the {} {}{}: {} files, {} bytes\n",
                            r.role,
                            r.host.as_deref().map(|h| format!("{h}:")).unwrap_or_default(),
                            r.path,
                            r.files,
                            r.bytes
                        ));
                    }
                    if !d.tablespaces.is_empty() {
                        out.push_str("            tablespaces:\n");
                        for t in &d.tablespaces {
                            out.push_str(&format!(
                                "                {} ({}) => {}\n",
                                t.tablespace_name.as_deref().unwrap_or("?"),
                                t.tablespace_oid.unwrap_or(0),
                                t.path
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The stanzas to show: `--stanza`, or every stanza found in the repositories.
async fn stanzas(request: &InfoRequest) -> CliResult<Vec<String>> {
    if let Some(s) = &request.stanza {
        return Ok(vec![s.clone()]);
    }
    let mut all = std::collections::BTreeSet::new();
    for target in &request.repos {
        match target.storage()?.open(RetryPolicy::default()) {
            Ok(store) => {
                all.extend(store.list_dirs("stanza").await?);
                // Stanzas only pgBackRest has written.
                all.extend(store.list_dirs("archive").await?);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(all.into_iter().collect())
}

/// Prints what `request` asks for.
pub fn run(request: &InfoRequest) -> CliResult<()> {
    let rt = crate::runtime::runtime()?;
    let (json_out, text_out, metrics) = rt.block_on(async {
        let mut arr = Vec::new();
        let mut text = String::new();
        let mut metrics = Metrics::default();
        for stanza in stanzas(request).await? {
            let mut views = Vec::new();
            for target in &request.repos {
                let mut v = view(request, target, &stanza).await?;
                if let Some(label) = request.set.as_deref() {
                    if v.catalog.backups.iter().any(|b| b.label.as_str() == label)
                        && let Some(d) = set_detail(target, &stanza, label).await?
                    {
                        v.set = Some((label.to_string(), d));
                    } else {
                        // Not in this repository: nothing of it to show.
                        v.catalog.backups.clear();
                    }
                }
                views.push(v);
            }
            if let Some(label) = &request.set
                && views.iter().all(|v| v.set.is_none())
            {
                return Err(CliError::new(
                    ErrorCode::BackupSetInvalid,
                    format!("backup set {label} is not in any repository of stanza {stanza}"),
                ));
            }
            let j = stanza_json(&stanza, &views, request.flavor);
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&stanza_text(&stanza, &views, &j));
            arr.push(j);
            metrics.add(&stanza, &views, crate::runtime::unix_now());
        }
        Ok::<_, CliError>((Value::Array(arr), text, metrics.render()))
    })?;
    let rendered = if request.output == InfoOutput::Prometheus {
        metrics.trim_end().to_string()
    } else if request.output == InfoOutput::Json {
        serde_json::to_string(&json_out).map_err(|e| CliError::new(ErrorCode::Format, e.to_string()))?
    } else if text_out.is_empty() {
        "No stanzas exist in the repository.".to_string()
    } else {
        text_out.trim_end().to_string()
    };
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{rendered}")
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))
}

/// `info --output=prometheus`: the text exposition format, for a textfile collector. The
/// `ccp_backrest_*` series are those pgMonitor computes from `info --output=json` (same names,
/// labels and meaning, so its dashboards and alert rules apply); `pgstrata_*` add the archive's
/// lag and the last recorded `verify` and `restore-test`.
#[derive(Default)]
struct Metrics {
    /// In the order first added.
    families: Vec<Family>,
}

/// A metric family: name, help, and its samples as (rendered labels, value).
type Family = (&'static str, &'static str, Vec<(String, f64)>);

impl Metrics {
    fn sample(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
            .collect();
        let labels = format!("{{{}}}", labels.join(","));
        match self.families.iter_mut().find(|f| f.0 == name) {
            Some(f) => f.2.push((labels, value)),
            None => self.families.push((name, help, vec![(labels, value)])),
        }
    }

    fn add(&mut self, stanza: &str, views: &[RepoView], now: i64) {
        for v in views {
            let repo = v.index.to_string();
            let base = [("stanza", stanza), ("repo", repo.as_str())];
            let backups = &v.catalog.backups;
            let newest = |types: &[BackupType]| {
                backups.iter().filter(|b| types.contains(&b.backup_type)).map(|b| b.timestamp_stop).max()
            };
            use BackupType::{Diff, Full, Incr};
            for (name, help, types) in [
                (
                    "ccp_backrest_last_full_backup_time_since_completion_seconds",
                    "Seconds since the last full backup completed.",
                    &[Full][..],
                ),
                (
                    "ccp_backrest_last_diff_backup_time_since_completion_seconds",
                    "Seconds since the last full or differential backup completed.",
                    &[Full, Diff][..],
                ),
                (
                    "ccp_backrest_last_incr_backup_time_since_completion_seconds",
                    "Seconds since the last backup of any type completed.",
                    &[Full, Diff, Incr][..],
                ),
            ] {
                if let Some(stop) = newest(types) {
                    self.sample(name, help, &base, (now - stop) as f64);
                }
            }
            for kind in [Full, Diff, Incr] {
                let Some(b) = backups.iter().filter(|b| b.backup_type == kind).max_by_key(|b| b.timestamp_stop) else {
                    continue;
                };
                let labels = [base[0], base[1], ("backup_type", kind.as_str())];
                self.sample(
                    "ccp_backrest_last_info_backup_runtime_seconds",
                    "Run time of the latest backup of this type.",
                    &labels,
                    (b.timestamp_stop - b.timestamp_start) as f64,
                );
                self.sample(
                    "ccp_backrest_last_info_repo_backup_size_bytes",
                    "Bytes the latest backup of this type stored in the repository.",
                    &labels,
                    b.repo_delta as f64,
                );
                self.sample(
                    "ccp_backrest_last_info_repo_total_size_bytes",
                    "Repository bytes needed to restore the latest backup of this type.",
                    &labels,
                    b.repo_size as f64,
                );
                self.sample(
                    "ccp_backrest_last_info_backup_error",
                    "1 when the latest backup of this type found page checksum errors.",
                    &labels,
                    f64::from(u8::from(b.error)),
                );
            }
            if let Some(oldest) = backups.iter().filter(|b| b.backup_type == Full).map(|b| b.timestamp_stop).min() {
                self.sample(
                    "ccp_backrest_oldest_full_backup_time_seconds",
                    "Completion time of the oldest full backup (unix seconds).",
                    &base,
                    oldest as f64,
                );
            }
            self.sample(
                "pgstrata_repo_status",
                "The repository's info status code (0 ok, 1 missing stanza, 2 no valid backups, 3 missing stanza data, 99 other).",
                &base,
                v.status.0 as f64,
            );
            self.sample("pgstrata_backups", "Backups listed in the repository.", &base, backups.len() as f64);
            if let Some(t) = v.newest_archived {
                self.sample(
                    "pgstrata_archive_newest_segment_age_seconds",
                    "Seconds since the newest WAL segment was archived (archive lag).",
                    &base,
                    (now - t).max(0) as f64,
                );
            }
            for (name, report) in &v.reports {
                let (time, problems) = (report["time"].as_i64(), report["problems"].as_u64());
                let (Some(time), Some(problems)) = (time, problems) else { continue };
                let labels = [base[0], base[1], ("check", *name)];
                self.sample(
                    "pgstrata_check_last_run_timestamp_seconds",
                    "When verify or restore-test last ran on the repository (unix seconds).",
                    &labels,
                    time as f64,
                );
                self.sample(
                    "pgstrata_check_last_problems",
                    "Problems the last verify or restore-test found (0: passed).",
                    &labels,
                    problems as f64,
                );
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, samples) in &self.families {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        }
        out
    }
}
