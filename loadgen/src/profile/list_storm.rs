//! `--profile list-storm`: what a fleet of kube-apiservers re-initialising
//! their watch caches does to etcd. `--storm-keys` values of
//! `--storm-val-size` bytes are written under one prefix (80 MB by
//! default), then `--lists` tasks LIST the whole prefix over and over, in
//! pages of `--page-size`, each list at one revision.
//!
//! Reported: `list` (one whole LIST, all pages), bytes/s over all lists.
//! The loading puts are not part of the report.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::listing::{list, ListFailure, ListSpec};
use crate::cli::ListStormArgs;
use crate::error::{LoadgenError, Result};
use crate::keys::{prefix_end, random_value, KeySpace};
use crate::report::Recorder;
use crate::run::{gather, Bounds, Run};

/// The prefix listed.
pub const PREFIX: &str = "/list-storm/";

/// Tasks writing the keys before the storm.
const LOADERS: u64 = 16;

/// Without `--total` or `--duration`, each listing task lists this often.
const DEFAULT_ROUNDS: u64 = 3;

/// Runs the profile.
pub async fn run(run: &Run, args: &ListStormArgs) -> Result<(Recorder, Duration)> {
    if args.lists == 0 || args.storm_keys == 0 || args.page_size < 0 {
        return Err(LoadgenError::InvalidArgs(
            "--lists and --storm-keys must be at least 1, --page-size not negative".into(),
        ));
    }
    if args.storm_reuse {
        check_loaded(run, args).await?;
    } else {
        load(run, args).await?;
    }
    if run.interrupt.is_triggered() {
        return Ok((Recorder::new(), Duration::ZERO));
    }
    let phase = Arc::new(run.phase(Some(args.lists as u64 * DEFAULT_ROUNDS)));
    let end = prefix_end(PREFIX.as_bytes());
    let mut tasks = Vec::new();
    for task in 0..args.lists {
        let conn = run.conn(task).clone();
        let (phase, end, page, keys) =
            (phase.clone(), end.clone(), args.page_size, args.storm_keys);
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            tally.rec.declare("list");
            let mut kv = conn.kv();
            let spec = ListSpec {
                start: PREFIX.as_bytes(),
                end: &end,
                page,
                op: "list",
            };
            while phase.pacer.next().await.is_some() {
                let start = Instant::now();
                match list(&mut kv, &conn, &phase, &mut tally, &spec).await {
                    Ok(listing) => {
                        tally.ok("list", start.elapsed());
                        tally.rec.add_bytes(listing.bytes);
                        if listing.keys != keys {
                            tally.violation(
                                "list",
                                format!("listed {} keys of {keys} written", listing.keys),
                            );
                        }
                    }
                    Err(ListFailure::Stopped) => break,
                    Err(ListFailure::Expired) => {
                        tally.fail("list", "list revision compacted mid-list")
                    }
                    Err(ListFailure::Failed) => {}
                }
            }
            tally.rec
        }));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}

/// Checks that an earlier run left exactly the keys to list.
async fn check_loaded(run: &Run, args: &ListStormArgs) -> Result<()> {
    let options = etcd_client::GetOptions::new()
        .with_range(prefix_end(PREFIX.as_bytes()))
        .with_count_only();
    let found = run
        .conn(0)
        .kv()
        .get(PREFIX, Some(options))
        .await
        .map_err(|source| LoadgenError::Setup {
            phase: "counting the list-storm keys".into(),
            source,
        })?
        .count();
    if found != args.storm_keys as i64 {
        return Err(LoadgenError::Dirty(format!(
            "--storm-reuse: {found} keys under {PREFIX}, expected {}; run once without --storm-reuse",
            args.storm_keys
        )));
    }
    Ok(())
}

/// Writes the listed keys (overwriting those of an earlier run, so the
/// prefix always holds exactly `--storm-keys` keys).
async fn load(run: &Run, args: &ListStormArgs) -> Result<()> {
    let keys = Arc::new(KeySpace::new(
        PREFIX,
        PREFIX.len() + 8,
        args.storm_keys,
        true,
    ));
    let value = Arc::new(random_value(args.storm_val_size, &mut fastrand::Rng::new()));
    eprintln!(
        "list-storm: loading {} keys of {} bytes under {PREFIX}",
        args.storm_keys, args.storm_val_size
    );
    let conn = run.conn(0).clone();
    let mut kv = conn.kv();
    let end = prefix_end(PREFIX.as_bytes());
    // A bigger earlier load would leave extra keys behind: clear them.
    let mut past_last = keys.nth(args.storm_keys - 1);
    past_last.push(0);
    kv.delete(
        past_last,
        Some(etcd_client::DeleteOptions::new().with_range(end.clone())),
    )
    .await
    .map_err(|source| LoadgenError::Setup {
        phase: "clearing the list-storm prefix".into(),
        source,
    })?;
    let phase = Arc::new(run.phase_with(Bounds {
        total: Some(args.storm_keys),
        rate: None,
        duration: None,
    }));
    let mut loaders = Vec::new();
    for i in 0..LOADERS {
        let conn = run.conn(i as usize).clone();
        let (phase, keys, value) = (phase.clone(), keys.clone(), value.clone());
        loaders.push(tokio::spawn(async move {
            let mut kv = conn.kv();
            while let Some(n) = phase.pacer.next().await {
                kv.put(keys.nth(n), value.as_slice(), None).await?;
            }
            Ok::<(), etcd_client::Error>(())
        }));
    }
    for loader in loaders {
        match loader.await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(LoadgenError::Setup {
                    phase: "loading the list-storm keys".into(),
                    source,
                })
            }
            Err(e) => return Err(LoadgenError::Task(e.to_string())),
        }
    }
    let took = phase.finish();
    eprintln!("list-storm: loaded in {:.1} s", took.as_secs_f64());
    Ok(())
}
