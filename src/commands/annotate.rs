//! `annotate --set=LABEL [--annotation=key=value]... [--keep|--no-keep]`: changes a backup's
//! annotations (pgBackRest 2.41's command; an empty value removes the key) and its keep mark,
//! which `expire` honours. Under the repository's lease, in every repository holding the set
//! (or `--repo`).

use pgstrata_repo_format::BackupLabel;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::repo::open_repo;
use crate::request::repos::stanza_name;

pub fn run(config: &Config) -> CliResult<()> {
    let stanza = stanza_name(config)?;
    let label: BackupLabel = config
        .require("set")?
        .parse()
        .map_err(|e| CliError::new(ErrorCode::OptionInvalidValue, format!("--set is not a backup label: {e}")))?;
    let changes = crate::config::annotations(config)?;
    let keep = config.get("keep").map(|v| v == "y");
    if changes.is_empty() && keep.is_none() {
        return Err(CliError::new(
            ErrorCode::ParamRequired,
            "annotate needs --annotation=key=value, --keep or --no-keep",
        ));
    }
    crate::runtime::runtime()?.block_on(async {
        let mut found = false;
        for index in crate::request::repos::repo_indexes(config) {
            let repo = open_repo(&crate::request::repos::repo_target(config, index), &stanza).await?;
            if !repo.load_catalog().await?.backups.iter().any(|b| b.label == label) {
                continue;
            }
            let lease =
                Lease::acquire(&repo.store, &repo.layout, index, "annotate", crate::request::lease_time(config))
                    .await?;
            let saved = async {
                let (mut catalog, read) = repo.load_catalog_for_update().await?;
                let Some(entry) = catalog.backups.iter_mut().find(|b| b.label == label) else { return Ok(()) };
                for (k, v) in &changes {
                    if v.is_empty() {
                        entry.annotation.remove(k);
                    } else {
                        entry.annotation.insert(k.clone(), v.clone());
                    }
                }
                if let Some(keep) = keep {
                    entry.keep = keep;
                }
                lease.check()?;
                repo.save_catalog(&catalog, crate::request::repos::blob_settings(config)?, &read).await.map(drop)
            }
            .await;
            lease.release().await;
            saved?;
            found = true;
            tracing::info!("repo{index}: backup set {label} annotated");
        }
        if found {
            Ok(())
        } else {
            Err(CliError::new(ErrorCode::BackupSetInvalid, format!("backup set {label} does not exist"))
                .hint("run info to see the backups in the repository"))
        }
    })
}
