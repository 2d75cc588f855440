//! Operators' tools beside the services: the DCR saga's parked requests (`appreg saga parked`,
//! `appreg saga retry`) and the vault's re-seal after a master-key rotation (`appreg vault
//! reseal`).

use anyhow::bail;
use appreg_config::Config;
use appreg_eventstore::Database;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// Lists the requests the DCR saga parked (they failed `dcr.park_after` times in a row),
    /// oldest first, with the reason of their last failure.
    Parked {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Hands the parked requests to the saga once more (after the cause was fixed): the handled
    /// ones leave the list, the others stay with their new reason (exit status 1).
    Retry {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// After a master-key rotation (the new key in secrets_master_key, the old ones in
    /// secrets_previous_keys): seals every stored secret again under the current key, so that
    /// the previous keys can be removed. Idempotent and resumable (run it again after a stop);
    /// safe beside running services. Exit status 1 while a value still needs an old key.
    Reseal {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
}

/// `appreg vault reseal`.
pub(crate) async fn vault_reseal(config: &Config, db: &Database) -> anyhow::Result<()> {
    let keyring = appreg_api::state::keyring(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let current = keyring.current().id().to_string();
    let vault = appreg_secrets::SecretStore::new(db.clone(), std::sync::Arc::new(keyring));
    let summary = vault.reseal().await?;
    println!(
        "{} value(s) re-sealed under {current}, {} already under it, {} changed meanwhile, {} cannot be opened",
        summary.resealed, summary.current, summary.raced, summary.failed
    );
    if !summary.complete() {
        bail!(
            "{} value(s) still need a previous key (see the log): keep secrets_previous_keys",
            summary.failed
        );
    }
    println!("every value is under {current}: the previous keys can be removed");
    Ok(())
}

/// `appreg saga parked`.
pub(crate) async fn saga_parked(db: &Database, limit: i64) -> anyhow::Result<()> {
    let (parked, total) = appreg_dcr_saga::parked(db, limit.clamp(1, 10_000)).await?;
    if parked.is_empty() {
        println!("no parked requests");
    }
    for p in &parked {
        println!(
            "{}  {}  {} v{}  {}  attempts={}  parked_at={}  reason: {}",
            p.position,
            p.event_id,
            p.stream_id,
            p.version,
            p.event_type,
            p.attempts,
            p.parked_at,
            p.reason
        );
    }
    if total > parked.len() as i64 {
        println!("… {} more", total - parked.len() as i64);
    }
    Ok(())
}

/// `appreg saga retry`.
pub(crate) async fn saga_retry(config: &Config, db: &Database) -> anyhow::Result<()> {
    let (saga, store) = crate::build_saga(config, db).await?;
    let summary = appreg_dcr_saga::retry_parked(saga, db, store.as_ref()).await?;
    println!(
        "{} parked requests handled, {} still parked",
        summary.handled, summary.still_parked
    );
    if summary.still_parked > 0 {
        bail!("{} requests are still parked", summary.still_parked);
    }
    Ok(())
}
