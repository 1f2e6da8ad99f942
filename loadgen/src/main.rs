//! `loadgen`: a load generator for servers that speak the etcd v3 gRPC API
//! (etcd itself, basalt, anything wire-compatible).
//!
//! It runs etcd-benchmark workloads (`put`, `range`, `txn-put`,
//! `txn-mixed`, `watch`, `watch-latency`, `lease-keepalive`) or a traffic
//! profile (`--profile kubernetes`, `--profile list-storm`), bounded by
//! `--total`, `--rate` and `--duration`, and prints a table of latency
//! percentiles per operation (JSON with `--json`, a plot with `--plot`).
//!
//! It also checks what the server answers: revisions never go back on one
//! connection, watchers see their own writes in order and without gaps,
//! LIST pages at one revision agree. Violations count as errors.
//!
//! Exit status: 0 for a clean run, 1 when the report counts failed requests
//! or violations, 2 when no report could be made (bad flags, unreachable
//! endpoints, a failed load phase).
//!
//! ```text
//! loadgen --endpoints http://127.0.0.1:2379 --conns 10 --clients 100 \
//!     put --key-size 8 --val-size 256 --total 100000 --json put.json
//! loadgen --profile kubernetes --nodes 500 --duration 5m --json k8s.json
//! ```

mod cli;
mod connection;
mod error;
mod grpc;
mod incidents;
mod keys;
mod pacing;
mod plot;
mod profile;
mod report;
mod run;
mod shutdown;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Profile};
use crate::connection::Connection;
use crate::error::{LoadgenError, Result};
use crate::incidents::Incidents;
use crate::run::{Bounds, Run};
use crate::shutdown::Shutdown;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime_threads(&cli) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Incidents) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Threads of the async runtime: `--threads`, or one for put and range
/// (their per-request work is a few microseconds on the lean path; one
/// thread drives a server far past what it serves here, and a single
/// thread spares the cross-thread wake-ups that cost a multi-threaded
/// runtime about a quarter of its CPU), or one per CPU for the rest (the
/// profiles decode large LISTs).
fn runtime_threads(cli: &Cli) -> usize {
    match (cli.threads, &cli.workload) {
        (Some(n), _) => n.max(1),
        (None, Some(cli::Workload::Put(_) | cli::Workload::Range(_))) if cli.profile.is_none() => 1,
        (None, _) => std::thread::available_parallelism().map_or(2, usize::from),
    }
}

/// How a run that produced a report went.
enum Outcome {
    /// No failed request, no violation.
    Clean,
    /// The report counts failed requests or violations (exit status 1).
    Incidents,
}

/// What to run.
enum Job<'a> {
    Profile(Profile),
    Workload(&'a cli::Workload),
}

async fn execute(cli: Cli) -> Result<Outcome> {
    validate(&cli)?;
    let job = match (cli.profile, &cli.workload) {
        (Some(p), None) => Job::Profile(p),
        (None, Some(w)) => Job::Workload(w),
        (Some(_), Some(_)) => {
            return Err(LoadgenError::InvalidArgs(
                "give either a workload or --profile, not both".into(),
            ))
        }
        (None, None) => {
            return Err(LoadgenError::InvalidArgs(
                "give a workload (put, range, …) or --profile kubernetes|list-storm".into(),
            ))
        }
    };
    // The apiserver sends `hasleader=true` with its watches; etcd-client
    // sets it per client, so the profile sets it on every connection.
    let require_leader = matches!(job, Job::Profile(Profile::Kubernetes));
    let tls = (cli.cacert.is_some() || cli.cert.is_some()).then(|| connection::TlsFiles {
        cacert: cli.cacert.clone(),
        cert: cli.cert.clone().zip(cli.tls_key.clone()),
    });
    // The KV workloads, which measure a server's peak rate, go through the
    // lean path so that the client's CPU does not cap it.
    let path = match job {
        Job::Workload(
            cli::Workload::Put(_)
            | cli::Workload::Range(_)
            | cli::Workload::TxnPut(_)
            | cli::Workload::TxnMixed(_),
        ) => connection::Path::Lean,
        _ => connection::Path::Client,
    };
    let conns = Connection::open_many(
        &cli.endpoints,
        cli.conns,
        require_leader,
        tls.as_ref(),
        path,
    )
    .await?;
    let interrupt = Shutdown::new();
    {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("loadgen: interrupted, stopping and reporting what was measured");
                interrupt.trigger();
            }
        });
    }
    let run = Arc::new(Run {
        conns,
        clients: cli.clients,
        bounds: Bounds {
            total: cli.total,
            rate: cli.rate,
            duration: cli.duration,
        },
        incidents: Arc::new(Incidents::new()),
        interrupt: interrupt.clone(),
        show_progress: !cli.no_progress,
    });
    let (name, (rec, elapsed)) = match job {
        Job::Profile(Profile::Kubernetes) => (
            "kubernetes",
            profile::kubernetes::run(&run, &cli.kubernetes, cli.compact_interval).await?,
        ),
        Job::Profile(Profile::ListStorm) => (
            "list-storm",
            profile::list_storm::run(&run, &cli.list_storm).await?,
        ),
        Job::Workload(w) => (
            w.name(),
            workload::run(&run, w, cli.compact_interval).await?,
        ),
    };
    let report = rec.report(name, elapsed);
    print!("{}", report.table());
    for line in run.incidents.kept() {
        eprintln!("{line}");
    }
    let (errors, violations) = (run.incidents.errors(), run.incidents.violations());
    if errors + violations > 0 {
        eprintln!("loadgen: {errors} failed requests, {violations} violations");
    }
    if interrupt.is_triggered() {
        eprintln!("loadgen: partial report (interrupted)");
    }
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").map_err(|source| LoadgenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(path) = &cli.plot {
        plot::draw(
            &rec,
            &format!("loadgen {name}: latency by percentile"),
            path,
        )?;
    }
    let recorded_errors: u64 = report.ops.values().map(|o| o.errors).sum();
    Ok(if recorded_errors + errors + violations == 0 {
        Outcome::Clean
    } else {
        Outcome::Incidents
    })
}

fn validate(cli: &Cli) -> Result<()> {
    if cli.endpoints.is_empty() {
        return Err(LoadgenError::InvalidArgs("--endpoints is empty".into()));
    }
    if cli.conns == 0 || cli.clients == 0 {
        return Err(LoadgenError::InvalidArgs(
            "--conns and --clients must be at least 1".into(),
        ));
    }
    if cli.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(LoadgenError::InvalidArgs(
            "--rate must be a positive number".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(args: &[&str]) -> usize {
        let mut all = vec!["loadgen"];
        all.extend_from_slice(args);
        runtime_threads(&Cli::try_parse_from(all).expect("parse"))
    }

    /// Catches put or range losing their single-threaded runtime (which
    /// measured faster) or another workload being confined to one thread.
    #[test]
    fn put_and_range_run_on_one_thread_unless_told() {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        assert_eq!(threads(&["put"]), 1);
        assert_eq!(threads(&["range", "k"]), 1);
        assert_eq!(threads(&["txn-put"]), cpus);
        assert_eq!(threads(&["--profile", "kubernetes"]), cpus);
        assert_eq!(threads(&["--threads", "3", "put"]), 3);
        assert_eq!(threads(&["--threads", "0", "put"]), 1);
    }
}
