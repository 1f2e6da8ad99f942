//! etcd's require-leader watches: a client that sends the `hasleader: true`
//! metadata (kube-apiserver does, for every watch) asks for its stream to
//! fail rather than hang when the member has no leader, so it can move to
//! another member. As etcd 3.4: a stream opened without a leader fails at
//! once, and an open stream fails once the member has gone more than
//! [`MAX_NO_LEADER_CHECKS`] checks, one election timeout apart, without a
//! leader; both with `etcdserver: no leader` (Unavailable).

use std::rc::Rc;
use std::time::Duration;

use crate::error::Error;
use crate::grpc::{Handler, HandlerFuture, Metadata, RequestStream, ResponseSink, Router};
use crate::sequencer::PublishedViews;

use super::service::WATCH_METHOD;

/// Checks without a leader after which a require-leader stream fails
/// (etcd's `maxNoLeaderCnt`).
pub const MAX_NO_LEADER_CHECKS: u32 = 3;

struct RequireLeader {
    inner: Rc<dyn Handler>,
    views: PublishedViews,
    check_every: Duration,
}

/// Wraps the router's Watch handler so `hasleader` streams fail without a
/// leader; `check_every` is the election timeout.
pub fn require_leader(router: &mut Router, views: PublishedViews, check_every: Duration) {
    let Ok(inner) = router.route(WATCH_METHOD) else {
        return;
    };
    router.add(
        WATCH_METHOD,
        Rc::new(RequireLeader {
            inner,
            views,
            check_every,
        }),
    );
}

impl RequireLeader {
    fn has_leader(&self) -> bool {
        self.views.latest().map(|p| p.has_leader).unwrap_or(false)
    }
}

impl Handler for RequireLeader {
    fn call(
        &self,
        meta: Metadata,
        requests: RequestStream,
        responses: ResponseSink,
    ) -> HandlerFuture {
        if !meta.requires_leader() {
            return self.inner.call(meta, requests, responses);
        }
        if !self.has_leader() {
            return Box::pin(async { Err(Error::NoLeader.into()) });
        }
        let stream = self.inner.call(meta, requests, responses);
        let (views, every) = (self.views.clone(), self.check_every);
        Box::pin(async move {
            let monitor = async move {
                let mut without = 0;
                loop {
                    glommio::timer::sleep(every).await;
                    let has = views.latest().map(|p| p.has_leader).unwrap_or(false);
                    without = if has { 0 } else { without + 1 };
                    if without > MAX_NO_LEADER_CHECKS {
                        return Err(Error::NoLeader.into());
                    }
                }
            };
            futures_lite::future::or(stream, monitor).await
        })
    }
}
