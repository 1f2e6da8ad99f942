//! What every workload and profile shares: the connections, the bounds from
//! the command line, the incident log, the progress bar, and [`Tally`], the
//! per-task bookkeeping of outcomes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::incidents::{Incidents, Kind};
use crate::pacing::Pacer;
use crate::report::Recorder;
use crate::shutdown::Shutdown;

/// Bounds from `--total --rate --duration`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    pub total: Option<u64>,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
}

/// The shared state of one loadgen run.
pub struct Run {
    pub conns: Vec<Connection>,
    pub clients: usize,
    pub bounds: Bounds,
    pub incidents: Arc<Incidents>,
    /// Fired by Ctrl-C.
    pub interrupt: Shutdown,
    pub show_progress: bool,
}

impl Run {
    /// The connection client number `client` uses.
    pub fn conn(&self, client: usize) -> &Connection {
        &self.conns[client % self.conns.len()]
    }

    /// Starts the measured phase: the clock, the pacer and the progress bar.
    /// `default_total` applies when neither `--total` nor `--duration` is
    /// given (etcd's benchmark defaults to 10,000 requests).
    pub fn phase(&self, default_total: Option<u64>) -> Phase {
        let total = match (self.bounds.total, self.bounds.duration) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => default_total,
        };
        self.phase_with(Bounds {
            total,
            ..self.bounds
        })
    }

    /// Starts a measured phase with explicit bounds.
    pub fn phase_with(&self, bounds: Bounds) -> Phase {
        let shutdown = Shutdown::new();
        shutdown.follow(&self.interrupt);
        if let Some(d) = bounds.duration {
            let s = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                s.trigger();
            });
        }
        let pacer = Arc::new(Pacer::new(
            bounds.total,
            bounds.rate,
            bounds.duration,
            shutdown.clone(),
        ));
        let progress = if self.show_progress {
            progress_bar(bounds)
        } else {
            ProgressBar::hidden()
        };
        Phase {
            pacer,
            shutdown,
            progress,
        }
    }

    /// A fresh per-task tally.
    pub fn tally(&self, phase: &Phase) -> Tally {
        Tally::new(self.incidents.clone(), phase.progress.clone())
    }
}

fn progress_bar(bounds: Bounds) -> ProgressBar {
    match bounds.total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:40} {pos}/{len} requests, {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {spinner} {pos} requests, {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }
    }
}

/// One measured phase.
pub struct Phase {
    pub pacer: Arc<Pacer>,
    /// Fires at the deadline, on Ctrl-C, or when the phase decides to end.
    pub shutdown: Shutdown,
    pub progress: ProgressBar,
}

impl Phase {
    /// Time since the phase started.
    pub fn elapsed(&self) -> Duration {
        Instant::now().duration_since(self.pacer.start())
    }

    /// Ends the phase: stops every task still waiting on the signal and
    /// clears the progress bar. Returns the phase's length.
    pub fn finish(&self) -> Duration {
        let elapsed = self.elapsed();
        self.shutdown.trigger();
        self.progress.finish_and_clear();
        elapsed
    }

    /// Runs `request`, timing it, unless the phase ends first (then `None`).
    pub async fn timed<T, F>(&self, request: F) -> Option<(T, Duration)>
    where
        F: Future<Output = T>,
    {
        let start = Instant::now();
        tokio::select! {
            out = request => Some((out, start.elapsed())),
            _ = self.shutdown.wait() => None,
        }
    }
}

/// One task's record of what happened: latencies, errors, violations.
pub struct Tally {
    pub rec: Recorder,
    incidents: Arc<Incidents>,
    progress: ProgressBar,
}

impl Tally {
    /// A tally reporting to `incidents`, ticking `progress`.
    pub fn new(incidents: Arc<Incidents>, progress: ProgressBar) -> Self {
        Self {
            rec: Recorder::new(),
            incidents,
            progress,
        }
    }

    /// A successful `op`.
    pub fn ok(&mut self, op: &str, latency: Duration) {
        self.rec.record(op, latency);
        self.progress.inc(1);
    }

    /// A failed `op`.
    pub fn fail(&mut self, op: &str, error: impl std::fmt::Display) {
        self.rec.error(op);
        self.incidents.note(Kind::Error, op, error);
    }

    /// A response to `op` that breaks a guarantee.
    pub fn violation(&mut self, op: &str, message: impl std::fmt::Display) {
        self.rec.error(op);
        self.incidents.note(Kind::Violation, op, message);
    }

    /// Checks a header revision against the connection's floor.
    pub fn check_revision(&mut self, op: &str, conn: &Connection, floor: i64, revision: i64) {
        if let Err(message) = conn.observe(floor, revision) {
            self.violation(op, message);
        }
    }

    /// Records the outcome of a request that returns a header revision.
    /// Returns the response when it succeeded.
    pub fn settle<T, E: std::fmt::Display>(
        &mut self,
        op: &str,
        conn: &Connection,
        floor: i64,
        outcome: (Result<T, E>, Duration),
        revision: impl Fn(&T) -> Option<i64>,
    ) -> Option<T> {
        let (result, latency) = outcome;
        match result {
            Ok(response) => {
                self.ok(op, latency);
                match revision(&response) {
                    Some(rev) => self.check_revision(op, conn, floor, rev),
                    None => self.violation(op, "response has no header"),
                }
                Some(response)
            }
            Err(e) => {
                self.fail(op, e);
                None
            }
        }
    }
}

/// Waits for every task and merges their recorders.
pub async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Recorder>>,
    incidents: &Incidents,
) -> Recorder {
    let mut all = Recorder::new();
    for task in tasks {
        match task.await {
            Ok(rec) => all.merge(rec),
            Err(e) => {
                all.error("task");
                incidents.note(Kind::Error, "task", format!("a load task died: {e}"));
            }
        }
    }
    all
}
