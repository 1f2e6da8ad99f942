//! Clients that record a history while the nemesis works: concurrent
//! clients, each on its own connection to one member, doing single-key
//! linearizable gets, puts of unique values, deletes and compare-and-put
//! transactions over a few keys; and watchers of the whole key prefix that
//! resume on another member when their stream breaks or stalls.
//!
//! What an answer means for the history ([`outcome_of`]): a response is
//! `Ok` with the fields the checker needs; an error on a read is `Failed`
//! (a read changes nothing); an error on a write is `Indeterminate` unless
//! the server certainly refused it before proposing it. A timeout, a lost
//! connection, "request timed out", "leader changed", "unavailable": the
//! write may have been committed, and may still be applied later.
//!
//! Every request has a client-side deadline, so a paused member does not
//! hold a client forever; a client that gave up reconnects, to the next
//! member for roaming clients, to its own member for pinned readers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_check::{
    Bytes, CasPutResponse, Current, DeleteResponse, Event, EventKind, GetResponse, KeyValue,
    Operation, Outcome, PutResponse, Recording, Request, Response, WatchRequest, WatchResponse,
    Watcher, WatcherId,
};
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::rng::Rng;

/// Every key of the workload starts with it; watchers watch it.
pub const PREFIX: &str = "faults/";
/// Errors after which a write certainly did not take effect: both etcd
/// and basalt refuse these before proposing anything.
const REFUSED_BEFORE_PROPOSING: &[&str] = &[
    "etcdserver: too many requests",
    "etcdserver: request is too large",
];
/// A watcher with nothing to say for this long is asked for progress;
/// silent for this long again, it is resumed elsewhere.
const WATCH_IDLE: Duration = Duration::from_millis(1500);
/// Client ids by role, for reports.
const PINNED_READER_IDS: u64 = 100;
const WATCHER_IDS: u64 = 200;
const FINAL_READER_IDS: u64 = 300;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadPlan {
    pub keys: usize,
    /// Clients that read and write; client `c` starts on member `c % n`
    /// and moves to the next member after any error.
    pub clients: usize,
    /// One more client per member that only reads, and stays on that
    /// member whatever happens: what shows stale reads on a cut-off member.
    pub pinned_readers: bool,
    /// Watchers of [`PREFIX`], from revision 1, with prev_kv.
    pub watchers: usize,
    /// A request not answered by then is given up.
    pub op_timeout: Duration,
    /// Most a client waits between two requests.
    pub think: Duration,
}

impl Default for WorkloadPlan {
    fn default() -> Self {
        WorkloadPlan {
            keys: 12,
            clients: 5,
            pinned_readers: false,
            watchers: 3,
            op_timeout: Duration::from_secs(2),
            think: Duration::from_millis(20),
        }
    }
}

/// The running clients and watchers, and what they recorded.
pub struct Workload {
    shared: Arc<Shared>,
    clients: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
    target: tokio::sync::watch::Sender<Option<i64>>,
}

struct Shared {
    clock: Clock,
    endpoints: Vec<String>,
    plan: WorkloadPlan,
    ops: Mutex<Vec<Operation>>,
    watchers: Mutex<Vec<Watcher>>,
    next_watcher: AtomicU64,
    stop_clients: AtomicBool,
    /// Watchers stop where they are, caught up or not.
    abandon_watchers: AtomicBool,
    /// Per watcher chain: the revision up to which it has seen everything.
    watched_up_to: Vec<AtomicU64>,
}

/// What the end of a run found.
#[derive(Debug, Default)]
pub struct FinalReads {
    /// The highest revision the final reads saw.
    pub revision: i64,
    /// Members that did not answer every final read in time.
    pub problems: Vec<String>,
}

impl Workload {
    /// Starts the clients and watchers against `endpoints` (one per
    /// member), their choices drawn from `seed`.
    pub fn start(seed: u64, endpoints: Vec<String>, plan: WorkloadPlan, clock: Clock) -> Workload {
        let (target, target_rx) = tokio::sync::watch::channel(None);
        let shared = Arc::new(Shared {
            clock,
            endpoints,
            watched_up_to: (0..plan.watchers).map(|_| AtomicU64::new(0)).collect(),
            plan,
            ops: Mutex::new(Vec::new()),
            watchers: Mutex::new(Vec::new()),
            next_watcher: AtomicU64::new(1),
            stop_clients: AtomicBool::new(false),
            abandon_watchers: AtomicBool::new(false),
        });
        let n = shared.endpoints.len();
        let mut clients = Vec::new();
        for c in 0..shared.plan.clients {
            let role = Role::Roaming;
            let rng = Rng::fork(seed, 1 + c as u64);
            clients.push(tokio::spawn(client_loop(
                shared.clone(),
                1 + c as u64,
                c % n,
                role,
                rng,
            )));
        }
        if shared.plan.pinned_readers {
            for m in 0..n {
                let id = PINNED_READER_IDS + m as u64;
                let rng = Rng::fork(seed, id);
                clients.push(tokio::spawn(client_loop(
                    shared.clone(),
                    id,
                    m,
                    Role::PinnedReader,
                    rng,
                )));
            }
        }
        let watchers = (0..shared.plan.watchers)
            .map(|w| tokio::spawn(watch_chain(shared.clone(), w, target_rx.clone())))
            .collect();
        Workload {
            shared,
            clients,
            watchers,
            target,
        }
    }

    /// Stops the clients after their current request (bounded by the
    /// request deadline).
    pub async fn stop_clients(&mut self) -> Vec<String> {
        self.shared.stop_clients.store(true, Ordering::SeqCst);
        let mut problems = Vec::new();
        for client in self.clients.drain(..) {
            if let Err(e) = client.await {
                problems.push(format!("a client task failed: {e}"));
            }
        }
        problems
    }

    /// Reads every key on every member (linearizable, recorded), retrying
    /// each until `deadline` from now: after the quiet period every member
    /// must answer.
    pub async fn final_reads(&self, deadline: Duration) -> FinalReads {
        let shared = &self.shared;
        let give_up = Instant::now() + deadline;
        let mut result = FinalReads::default();
        for (m, endpoint) in shared.endpoints.iter().enumerate() {
            let id = FINAL_READER_IDS + m as u64;
            let mut conn = None;
            'keys: for k in 0..shared.plan.keys {
                let request = Request::get(key_name(k));
                loop {
                    if Instant::now() > give_up {
                        result.problems.push(format!(
                            "m{m} did not answer the final reads within {deadline:?}"
                        ));
                        break 'keys;
                    }
                    if conn.is_none() {
                        conn = connect(endpoint, shared.plan.op_timeout).await;
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                    let client = conn.as_mut().expect("connected");
                    let (_, ok) = shared.perform_and_record(id, client, &request).await;
                    if let Some(Response::Get(r)) = ok {
                        result.revision = result.revision.max(r.header_revision);
                        break;
                    }
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        result
    }

    /// Lets the watchers run until each has seen everything up to
    /// `revision`, or `deadline` passes; returns the ones that did not.
    pub async fn stop_watchers(&mut self, revision: i64, deadline: Duration) -> Vec<String> {
        let _ = self.target.send(Some(revision));
        let give_up = Instant::now() + deadline;
        while Instant::now() < give_up && self.watchers.iter().any(|w| !w.is_finished()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.shared.abandon_watchers.store(true, Ordering::SeqCst);
        let mut problems = Vec::new();
        for (w, watcher) in self.watchers.drain(..).enumerate() {
            if let Err(e) = watcher.await {
                problems.push(format!("watcher task {w} failed: {e}"));
            }
            let seen = self.shared.watched_up_to[w].load(Ordering::SeqCst) as i64;
            if seen < revision {
                problems.push(format!(
                    "watcher chain {w} saw revisions up to {seen} only, not {revision}, within {deadline:?}"
                ));
            }
        }
        problems
    }

    /// Everything recorded so far.
    pub fn recording(&self) -> Recording {
        let mut recording = Recording::default();
        for op in self.shared.ops.lock().expect("ops").iter() {
            recording.history.push(op.clone());
        }
        recording.watchers = self.shared.watchers.lock().expect("watchers").clone();
        recording.watchers.sort_by_key(|w| w.id);
        recording
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.shared.stop_clients.store(true, Ordering::SeqCst);
        self.shared.abandon_watchers.store(true, Ordering::SeqCst);
        for task in self.clients.iter().chain(&self.watchers) {
            task.abort();
        }
    }
}

pub fn key_name(k: usize) -> String {
    format!("{PREFIX}k{k:02}")
}

/// A client of one member only, or `None` if it cannot be had in time.
pub async fn connect(endpoint: &str, timeout: Duration) -> Option<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    match tokio::time::timeout(timeout, Client::connect([endpoint], Some(options))).await {
        Ok(Ok(client)) => Some(client),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Roaming,
    PinnedReader,
}

async fn client_loop(shared: Arc<Shared>, id: u64, home: usize, role: Role, mut rng: Rng) {
    let n = shared.endpoints.len();
    let mut member = home;
    let mut conn: Option<Client> = None;
    let mut errors_in_a_row = 0;
    // The mod_revision this client last saw for each key: what its
    // compare-and-puts expect.
    let mut known: HashMap<Bytes, i64> = HashMap::new();
    let mut written = 0u64;
    while !shared.stop_clients.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = connect(&shared.endpoints[member], shared.plan.op_timeout).await;
            if conn.is_none() {
                if role == Role::Roaming {
                    member = (member + 1) % n;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let request = match role {
            Role::PinnedReader => Request::get(key_name(rng.index(shared.plan.keys))),
            Role::Roaming => {
                written += 1;
                choose(&mut rng, &shared.plan, &known, format!("c{id}-{written}"))
            }
        };
        let client = conn.as_mut().expect("connected");
        let (_, ok) = shared.perform_and_record(id, client, &request).await;
        match ok {
            Some(response) => {
                errors_in_a_row = 0;
                learn(&mut known, &request, &response);
            }
            None if role == Role::PinnedReader => {
                // Stay: the channel reconnects by itself; start afresh
                // only if it keeps failing.
                errors_in_a_row += 1;
                if errors_in_a_row >= 3 {
                    conn = None;
                    errors_in_a_row = 0;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                conn = None;
                member = (member + 1) % n;
            }
        }
        let think = rng.duration(Duration::ZERO, shared.plan.think);
        tokio::time::sleep(think).await;
    }
}

/// The next request of a roaming client: gets 30%, puts 30%,
/// compare-and-puts 25% (expecting the mod_revision it last saw, 0 if
/// none), deletes 15%.
fn choose(
    rng: &mut Rng,
    plan: &WorkloadPlan,
    known: &HashMap<Bytes, i64>,
    value: String,
) -> Request {
    let key = key_name(rng.index(plan.keys));
    match rng.below(100) {
        0..30 => Request::get(key),
        30..60 => Request::put(key, value),
        60..85 => {
            let expected = known.get(&Bytes::from(key.as_str())).copied().unwrap_or(0);
            Request::cas_put(key, expected, value)
        }
        _ => Request::delete(key),
    }
}

/// Remembers what a response says of the key's mod_revision.
fn learn(known: &mut HashMap<Bytes, i64>, request: &Request, response: &Response) {
    let key = request.key().clone();
    let revision = match response {
        Response::Get(r) => r.mod_revision,
        Response::Put(r) => r.header_revision,
        Response::Delete(r) if r.deleted > 0 => 0,
        Response::Delete(_) => return,
        Response::CasPut(r) if r.succeeded => r.header_revision,
        Response::CasPut(r) => r.current.as_ref().map_or(0, |c| c.mod_revision),
    };
    known.insert(key, revision);
}

/// Why a request got no response.
#[derive(Debug)]
pub enum Failure {
    TimedOut,
    Error(etcd_client::Error),
}

/// What a request that got no response means for the history.
pub fn outcome_of(request: &Request, failure: &Failure) -> Outcome {
    let server_said = match failure {
        Failure::Error(etcd_client::Error::GRpcStatus(status)) => Some(status.message()),
        Failure::Error(_) | Failure::TimedOut => None,
    };
    outcome_given(request, server_said)
}

/// `server_said`: the gRPC status message, if the server answered with one.
fn outcome_given(request: &Request, server_said: Option<&str>) -> Outcome {
    if matches!(request, Request::Get { .. }) {
        return Outcome::Failed;
    }
    match server_said {
        Some(message) if REFUSED_BEFORE_PROPOSING.contains(&message) => Outcome::Failed,
        _ => Outcome::Indeterminate,
    }
}

impl Shared {
    /// Sends `request`, records it, and returns its outcome and, when
    /// answered, the response.
    async fn perform_and_record(
        &self,
        client_id: u64,
        client: &mut Client,
        request: &Request,
    ) -> (Outcome, Option<Response>) {
        let called = self.clock.now();
        let result =
            match tokio::time::timeout(self.plan.op_timeout, perform(client, request)).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(Failure::Error(e)),
                Err(_) => Err(Failure::TimedOut),
            };
        let returned = self.clock.now();
        let (outcome, ok) = match result {
            Ok(response) => (Outcome::Ok(response.clone()), Some(response)),
            Err(failure) => (outcome_of(request, &failure), None),
        };
        let op = Operation::new(
            client_id,
            called,
            returned,
            request.clone(),
            outcome.clone(),
        );
        self.ops.lock().expect("ops").push(op);
        (outcome, ok)
    }
}

/// One request, as the checker wants its response.
async fn perform(client: &mut Client, request: &Request) -> Result<Response, etcd_client::Error> {
    fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
        header.map_or(0, |h| h.revision())
    }
    Ok(match request {
        Request::Get { key } => {
            let r = client.get(key.as_slice(), None).await?;
            let kv = r.kvs().first();
            Response::Get(GetResponse {
                value: kv.map(|kv| Bytes::from(kv.value())),
                mod_revision: kv.map_or(0, |kv| kv.mod_revision()),
                header_revision: revision(r.header()),
            })
        }
        Request::Put { key, value } => {
            let r = client.put(key.as_slice(), value.as_slice(), None).await?;
            Response::Put(PutResponse {
                header_revision: revision(r.header()),
            })
        }
        Request::Delete { key } => {
            let r = client.delete(key.as_slice(), None).await?;
            Response::Delete(DeleteResponse {
                deleted: r.deleted(),
                header_revision: revision(r.header()),
            })
        }
        Request::CasPut {
            key,
            compare,
            value,
        } => {
            let basalt_check::Compare::ModRevision(expected) = compare else {
                unreachable!("the workload compares mod_revisions only")
            };
            let txn = Txn::new()
                .when([EtcdCompare::mod_revision(
                    key.as_slice(),
                    CompareOp::Equal,
                    *expected,
                )])
                .and_then([TxnOp::put(key.as_slice(), value.as_slice(), None)])
                .or_else([TxnOp::get(key.as_slice(), None)]);
            let r = client.txn(txn).await?;
            let current = if r.succeeded() {
                None
            } else {
                r.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| Current {
                        value: Bytes::from(kv.value()),
                        mod_revision: kv.mod_revision(),
                    }),
                    _ => None,
                })
            };
            Response::CasPut(CasPutResponse {
                succeeded: r.succeeded(),
                header_revision: revision(r.header()),
                current,
            })
        }
    })
}

/// One watcher chain: watches [`PREFIX`] from revision 1; when a stream
/// ends, fails, is canceled or stays silent even to a progress request,
/// resumes on the next member from the last revision it saw + 1, recorded
/// as a watcher that resumes the previous one.
async fn watch_chain(
    shared: Arc<Shared>,
    index: usize,
    target: tokio::sync::watch::Receiver<Option<i64>>,
) {
    let n = shared.endpoints.len();
    let mut member = index % n;
    let mut previous: Option<WatcherId> = None;
    let mut seen: i64 = 0;
    loop {
        let done = |seen: i64| target.borrow().is_some_and(|t| seen >= t);
        if done(seen) || shared.abandon_watchers.load(Ordering::SeqCst) {
            return;
        }
        let id = shared.next_watcher.fetch_add(1, Ordering::SeqCst);
        let mut watcher = Watcher {
            id,
            client: WATCHER_IDS + index as u64,
            request: WatchRequest::prefix(PREFIX)
                .starting_at(seen + 1)
                .with_prev_kv(),
            resumes: previous,
            responses: Vec::new(),
        };
        watch_once(
            &shared,
            &shared.endpoints[member],
            &mut watcher,
            &mut seen,
            &done,
        )
        .await;
        shared.watched_up_to[index].store(seen.max(0) as u64, Ordering::SeqCst);
        if !watcher.responses.is_empty() {
            previous = Some(id);
            shared.watchers.lock().expect("watchers").push(watcher);
        }
        member = (member + 1) % n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One watch stream on one member, until it breaks, stalls, or `done`.
async fn watch_once(
    shared: &Shared,
    endpoint: &str,
    watcher: &mut Watcher,
    seen: &mut i64,
    done: &impl Fn(i64) -> bool,
) {
    let timeout = shared.plan.op_timeout;
    let Some(mut client) = connect(endpoint, timeout).await else {
        return;
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(watcher.request.start_revision);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(timeout, client.watch(PREFIX, Some(options))).await
    else {
        return;
    };
    let mut asked_progress = false;
    loop {
        if done(*seen) || shared.abandon_watchers.load(Ordering::SeqCst) {
            return;
        }
        match tokio::time::timeout(WATCH_IDLE, stream.message()).await {
            Ok(Ok(Some(message))) => {
                asked_progress = false;
                let response = watch_response(&message, shared.clock.now());
                if let Some(last) = response.events.last() {
                    *seen = (*seen).max(last.kv.mod_revision);
                } else if response.is_progress_notify() {
                    *seen = (*seen).max(response.header_revision);
                }
                let canceled = response.canceled;
                watcher.responses.push(response);
                if canceled {
                    return;
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) if asked_progress => return,
            Err(_) => {
                if stream.request_progress().await.is_err() {
                    return;
                }
                asked_progress = true;
            }
        }
    }
}

fn watch_response(message: &etcd_client::WatchResponse, received_at: u64) -> WatchResponse {
    WatchResponse {
        header_revision: message.header().map_or(0, |h| h.revision()),
        created: message.created(),
        canceled: message.canceled(),
        compact_revision: message.compact_revision(),
        cancel_reason: message.cancel_reason().to_string(),
        received_at: Some(received_at),
        events: message
            .events()
            .iter()
            .map(|event| Event {
                kind: match event.event_type() {
                    EventType::Put => EventKind::Put,
                    EventType::Delete => EventKind::Delete,
                },
                // A server that leaves kv out gets an empty one: the
                // checker then says what is wrong with it.
                kv: event.kv().map(key_value).unwrap_or_default(),
                prev_kv: event.prev_kv().map(key_value),
            })
            .collect(),
    }
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: Bytes::from(kv.key()),
        value: Bytes::from(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_and_refused_writes_are_failed() {
        let put = Request::put("k", "v");
        assert_eq!(outcome_given(&Request::get("k"), None), Outcome::Failed);
        assert_eq!(outcome_given(&put, None), Outcome::Indeterminate);
        for message in [
            "etcdserver: request timed out",
            "etcdserver: leader changed",
            "etcdserver: no leader",
            "transport error",
        ] {
            assert_eq!(
                outcome_given(&put, Some(message)),
                Outcome::Indeterminate,
                "{message}"
            );
        }
        assert_eq!(
            outcome_given(&put, Some("etcdserver: too many requests")),
            Outcome::Failed
        );
    }
}
