//! Operators' tools beside the services: the DCR saga's parked requests (`appreg saga parked`,
//! `appreg saga retry`) and the vault's re-seal after a master-key rotation (`appreg vault
//! reseal`), and the read side's: `appreg projections rebuild` and `appreg history`.

use super::*;
use crate::cli::StoreArgs;
use anyhow::bail;
use appreg_config::Config;
use appreg_eventstore::Database;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// Lists the requests the DCR saga parked (they failed `dcr.park_after` times in a row),
    /// oldest first, with the reason of their last failure.
    Parked {
        #[command(flatten)]
        store: StoreArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Hands the parked requests to the saga once more (after the cause was fixed): the handled
    /// ones leave the list, the others stay with their new reason (exit status 1).
    Retry {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// After a master-key rotation (the new key in secrets_master_key, the old ones in
    /// secrets_previous_keys): seals every stored secret again under the current key, so that
    /// the previous keys can be removed. Idempotent and resumable (run it again after a stop);
    /// safe beside running services. Exit status 1 while a value still needs an old key.
    Reseal {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `appreg migrate`'s one rewrite of the log (README "Personal data"): seals the personal values
/// of events recorded before sealing, once (recorded in `log_rewrites`), then rebuilds the read
/// models from the rewritten log and vacuums the old row versions away. Needs the vault's key;
/// without one nothing is rewritten (and it says so).
pub(crate) async fn seal_personal_data(config: &Config, db: &Database) -> anyhow::Result<()> {
    use appreg_api::personal_rewrite::{seal_personal_data, vacuum, Rewrite};
    let Ok(keyring) = appreg_api::state::keyring(config) else {
        println!("personal data: not sealed yet (no secrets_master_key configured); run `appreg migrate` with it");
        return Ok(());
    };
    let vault = appreg_secrets::SecretStore::new(db.clone(), std::sync::Arc::new(keyring));
    let keys = appreg_secrets::PersonalKeys::new(vault);
    match seal_personal_data(db, &keys).await? {
        Rewrite::AlreadyDone => println!("personal data: sealed (the log's rewrite is recorded)"),
        Rewrite::Done { events } => {
            if events > 0 {
                rebuild(db, appreg_api::readmodel::PROJECTION).await?;
                vacuum(db).await?;
            }
            println!(
                "personal data: sealed, {events} event(s) rewritten (recorded in log_rewrites)"
            );
        }
    }
    Ok(())
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
    print_parked(&parked, total, "requests");
    Ok(())
}

/// Prints parked events (or requests), oldest first, and how many more there are.
pub(crate) fn print_parked(parked: &[appreg_worker::parked::ParkedEvent], total: i64, what: &str) {
    if parked.is_empty() {
        println!("no parked {what}");
    }
    for p in parked {
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
}

/// `appreg saga retry`.
pub(crate) async fn saga_retry(config: &Config, db: &Database) -> anyhow::Result<()> {
    let service = appreg_dcr_saga::service::build(config, &Start::shared(db)).await?;
    let summary =
        appreg_dcr_saga::retry_parked(service.saga().clone(), db, service.store().as_ref()).await?;
    println!(
        "{} parked requests handled, {} still parked",
        summary.handled, summary.still_parked
    );
    if summary.still_parked > 0 {
        bail!("{} requests are still parked", summary.still_parked);
    }
    Ok(())
}

/// `appreg projections rebuild`: a progress line on stderr (rewritten with `\r` at most every
/// 200 ms), then a summary on stdout.
pub(crate) async fn rebuild(db: &Database, projection: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut last_print: Option<std::time::Instant> = None;
    let summary = appreg_api::readmodel::rebuild(db, |p| {
        let finished = p.done >= p.total;
        if !finished && last_print.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        last_print = Some(std::time::Instant::now());
        let percent = if p.total == 0 {
            100.0
        } else {
            p.done as f64 * 100.0 / p.total as f64
        };
        let eta = match p.eta() {
            Some(eta) => format!("{}s", eta.as_secs()),
            None => "?".into(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rrebuilding {projection}: {}/{} events ({percent:.0}%), {:.0} events/s, ETA {eta}   ",
            p.done,
            p.total,
            p.rate()
        );
        let _ = err.flush();
    })
    .await
    .map_err(|e| anyhow::anyhow!("rebuild of {projection} failed: {e}"))?;
    eprintln!();
    let secs = summary.elapsed.as_secs_f64();
    let events = summary.replayed + summary.caught_up;
    println!(
        "rebuilt {projection}: {events} events ({} replayed, {} caught up in the swap) in {secs:.2}s \
         ({:.0} events/s), {} applications, checkpoint {}, swap held the tables {} ms",
        summary.replayed,
        summary.caught_up,
        if secs > 0.0 { events as f64 / secs } else { 0.0 },
        summary.applications,
        summary.position,
        summary.swap.as_millis()
    );
    Ok(())
}

/// `appreg history`: the audit trail as JSON lines, or the state at a point (`--as-of`,
/// `--version`). Reads the stream `page_size` events at a time, never all at once, and stops at
/// the point asked for.
pub(crate) async fn history(
    db: &Database,
    id: ApplicationId,
    as_of: Option<String>,
    version: Option<i64>,
    page_size: i64,
) -> anyhow::Result<()> {
    use std::io::Write;
    let store = db.event_store().await?;
    let at = as_of
        .map(|t| chrono::DateTime::parse_from_rfc3339(&t).context("--as-of is an RFC 3339 time"))
        .transpose()?;
    let point = at.is_some() || version.is_some();
    let stream = id.stream_id();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut app: Option<Application> = None;
    let mut after = 0;
    'pages: loop {
        let events = store
            .read_stream(&stream, after, page_size)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if after == 0 && events.is_empty() {
            bail!("no application {}", id);
        }
        for e in &events {
            if !point {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&HistoryEntry::from_event(e))?
                )?;
                continue;
            }
            let keep = match at {
                Some(at) => e.recorded_at <= at,
                None => e.version <= version.unwrap_or_default(),
            };
            if !keep {
                break 'pages;
            }
            let event = decode_app(e).map_err(|e| anyhow::anyhow!("{e}"))?;
            app = Application::evolve(app, &event, e.recorded_at, e.version);
        }
        match events.last() {
            Some(last) if events.len() as i64 == page_size => after = last.version,
            _ => break,
        }
    }
    out.flush()?;
    if !point {
        return Ok(());
    }
    let app = app.context("the application did not exist at that point")?;
    let auditor = Actor {
        user: UserId::parse("appreg-cli").map_err(|(_, m)| anyhow::anyhow!("{m}"))?,
        admin: true,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&ApplicationView::new(&app, &auditor))?
    );
    Ok(())
}
