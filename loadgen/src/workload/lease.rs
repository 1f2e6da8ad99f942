//! `lease-keepalive`: each client grants a lease, then sends keep-alives on
//! its keep-alive stream one after another; each round trip is one request.

use std::sync::Arc;
use std::time::Duration;

use super::DEFAULT_TOTAL;
use crate::cli::LeaseKeepaliveArgs;
use crate::error::{LoadgenError, Result};
use crate::report::Recorder;
use crate::run::{gather, Run};

/// `lease-keepalive`.
pub async fn keepalive(run: &Run, args: &LeaseKeepaliveArgs) -> Result<(Recorder, Duration)> {
    if args.ttl <= 0 {
        return Err(LoadgenError::InvalidArgs("--ttl must be positive".into()));
    }
    let phase = Arc::new(run.phase(Some(DEFAULT_TOTAL)));
    let mut tasks = Vec::new();
    for client in 0..run.clients {
        let conn = run.conn(client).clone();
        let phase = phase.clone();
        let ttl = args.ttl;
        let mut tally = run.tally(&phase);
        tasks.push(tokio::spawn(async move {
            tally.rec.declare("lease-keepalive");
            let mut leases = conn.client().lease_client();
            let floor = conn.floor();
            let Some(outcome) = phase.timed(leases.grant(ttl, None)).await else {
                return tally.rec;
            };
            let Some(granted) = tally.settle("lease-grant", &conn, floor, outcome, |r| {
                r.header().map(|h| h.revision())
            }) else {
                return tally.rec;
            };
            let id = granted.id();
            let Some((opened, _)) = phase.timed(leases.keep_alive(id)).await else {
                return tally.rec;
            };
            let (mut keeper, mut stream) = match opened {
                Ok(pair) => pair,
                Err(e) => {
                    tally.fail("lease-keepalive", e);
                    return tally.rec;
                }
            };
            while phase.pacer.next().await.is_some() {
                let start = tokio::time::Instant::now();
                if let Err(e) = keeper.keep_alive().await {
                    tally.fail("lease-keepalive", e);
                    break;
                }
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = phase.shutdown.wait() => break,
                };
                match message {
                    Ok(Some(resp)) if resp.id() == id && resp.ttl() > 0 => {
                        tally.ok("lease-keepalive", start.elapsed());
                    }
                    Ok(Some(resp)) => {
                        tally.violation(
                            "lease-keepalive",
                            format!(
                                "lease {id}: keep-alive answered for lease {} with ttl {}",
                                resp.id(),
                                resp.ttl()
                            ),
                        );
                    }
                    Ok(None) => {
                        tally.fail("lease-keepalive", "keep-alive stream closed by the server");
                        break;
                    }
                    Err(e) => {
                        tally.fail("lease-keepalive", e);
                        break;
                    }
                }
            }
            // Leave nothing behind on the server.
            let floor = conn.floor();
            if let Ok(outcome) = tokio::time::timeout(Duration::from_secs(5), async {
                let start = tokio::time::Instant::now();
                (leases.revoke(id).await, start.elapsed())
            })
            .await
            {
                tally.settle("lease-revoke", &conn, floor, outcome, |r| {
                    r.header().map(|h| h.revision())
                });
            }
            tally.rec
        }));
    }
    let rec = gather(tasks, &run.incidents).await;
    Ok((rec, phase.finish()))
}
