//! Data-driven protocol stories: each file in `testdata/` is a script of
//! commands, each followed by `----` and the output it must produce (the
//! messages delivered and the state changes, one per line), ended by a
//! blank line. A reader sees the protocol run; a behaviour change shows up
//! as a diff.
//!
//! `BASALT_REWRITE_SCENARIOS=1 cargo test -p basalt-raft --test scenarios`
//! rewrites the expected output from the actual one (review the diff!).
//!
//! Commands (ids are node ids):
//! - `cluster voters=1,2,3 [learners=4] [pre_vote=B] [check_quorum=B] [lease=B]
//!    [election=N] [heartbeat=N] [inflight=N] [inflight_bytes=N] [max_msg=N]`
//! - `campaign ID` / `tick ID [N]` (one node, no delivery) / `tick-all N`
//!   (every node, delivering; prints state changes only)
//! - `stabilize` (deliver until quiet) / `deliver [from=ID] [to=ID] [count=N]`
//!   / `drop [from=ID] [to=ID]`
//! - `propose ID DATA` / `propose-conf ID v4 l5 r1 [explicit]` /
//!   `leave-joint ID` / `read-index ID CTX` / `transfer ID TO`
//! - `isolate ID` / `cut FROM TO` (one way) / `heal` / `crash ID` /
//!   `restart ID` / `add-node ID` / `compact ID KEEP`
//! - `status` / `progress ID` / `log ID` / `state ID`

mod cluster;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use basalt_raft::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, MemStorage, NodeId,
};
use cluster::{show, show_conf, Cluster, SimOptions};

struct Case {
    line_no: usize,
    /// Comment and blank lines before the command, kept when rewriting.
    preamble: Vec<String>,
    command: String,
    expected: String,
}

/// Parses a scenario file; also returns the lines after the last case.
fn parse(text: &str) -> (Vec<Case>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    let mut preamble = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_end();
        if l.is_empty() || l.starts_with('#') {
            preamble.push(l.to_string());
            i += 1;
            continue;
        }
        let line_no = i + 1;
        let command = l.to_string();
        i += 1;
        assert!(
            i < lines.len() && lines[i] == "----",
            "line {line_no}: command must be followed by ----"
        );
        i += 1;
        let mut out = Vec::new();
        while i < lines.len() && !lines[i].is_empty() {
            out.push(lines[i]);
            i += 1;
        }
        cases.push(Case {
            line_no,
            preamble: std::mem::take(&mut preamble),
            command,
            expected: out.join("\n"),
        });
    }
    (cases, preamble)
}

fn kv(args: &[&str]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn id_list(s: &str) -> Vec<NodeId> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().expect("node id"))
        .collect()
}

fn flag(m: &BTreeMap<String, String>, k: &str, default: bool) -> bool {
    m.get(k).map_or(default, |v| v == "true")
}

fn num(m: &BTreeMap<String, String>, k: &str, default: u64) -> u64 {
    m.get(k).map_or(default, |v| v.parse().expect("number"))
}

struct Runner {
    c: Option<Cluster>,
}

impl Runner {
    fn cluster(&mut self) -> &mut Cluster {
        self.c.as_mut().expect("`cluster` must come first")
    }

    /// Runs one command; returns its output.
    fn run(&mut self, command: &str) -> String {
        let parts: Vec<&str> = command.split_whitespace().collect();
        let (cmd, args) = (parts[0], &parts[1..]);
        let arg = |i: usize| -> NodeId { args[i].parse().expect("node id argument") };
        let mut out = String::new();
        if cmd == "cluster" {
            let m = kv(args);
            let opts = SimOptions {
                election_tick: num(&m, "election", 10) as usize,
                heartbeat_tick: num(&m, "heartbeat", 1) as usize,
                pre_vote: flag(&m, "pre_vote", true),
                check_quorum: flag(&m, "check_quorum", true),
                lease_reads: flag(&m, "lease", false),
                max_inflight_msgs: num(&m, "inflight", 256) as usize,
                max_inflight_bytes: num(&m, "inflight_bytes", 0),
                max_size_per_msg: num(&m, "max_msg", 1 << 20),
                ..SimOptions::default()
            };
            let voters = id_list(m.get("voters").map(String::as_str).unwrap_or("1"));
            let mut c = Cluster::new(&voters, opts, 0);
            c.keep_trace = false;
            c.events = Some(Vec::new());
            self.c = Some(c);
            return "ok".into();
        }
        let c = self.cluster();
        let result: Result<String, String> = match cmd {
            "campaign" => {
                c.raw(arg(0)).campaign();
                c.process(arg(0)).map(|_| String::new()).map_err(|v| v.0)
            }
            "tick" => {
                let n = args.get(1).map_or(1, |s| s.parse().expect("count"));
                let id = arg(0);
                let mut r = Ok(String::new());
                for _ in 0..n {
                    c.raw(id).tick();
                    if let Err(v) = c.process(id) {
                        r = Err(v.0);
                        break;
                    }
                }
                r
            }
            "tick-all" => {
                let n: u64 = args[0].parse().expect("count");
                let mut r = Ok(String::new());
                for _ in 0..n {
                    if let Err(v) = c.tick(0) {
                        r = Err(v.0);
                        break;
                    }
                }
                // Only state changes: the heartbeats would drown them.
                if let Some(ev) = c.events.as_mut() {
                    ev.retain(|l| !l.starts_with(|ch: char| ch.is_ascii_digit()));
                }
                r
            }
            "stabilize" => c.settle().map(|_| String::new()).map_err(|v| v.0),
            "deliver" | "drop" => {
                let m = kv(args);
                let from = m.get("from").map(|v| v.parse::<NodeId>().expect("id"));
                let to = m.get("to").map(|v| v.parse::<NodeId>().expect("id"));
                let count = num(&m, "count", u64::MAX) as usize;
                let msgs = c.take_in_flight(count, |msg| {
                    from.is_none_or(|f| msg.from == f) && to.is_none_or(|t| msg.to == t)
                });
                if cmd == "drop" {
                    Ok(format!("dropped {}", msgs.len()))
                } else {
                    let mut r = Ok(String::new());
                    for msg in msgs {
                        if let Err(v) = c.deliver(msg) {
                            r = Err(v.0);
                            break;
                        }
                    }
                    r
                }
            }
            "propose" => {
                let id = arg(0);
                let r = c.raw(id).propose(args[1].as_bytes().to_vec());
                let _ = c.process(id);
                Ok(match r {
                    Ok(()) => String::new(),
                    Err(e) => format!("error: {e}"),
                })
            }
            "propose-conf" | "leave-joint" => {
                let id = arg(0);
                let cc = if cmd == "leave-joint" {
                    ConfChange::leave_joint()
                } else {
                    conf_change(&args[1..])
                };
                let r = c.raw(id).propose_conf_change(&cc);
                let _ = c.process(id);
                Ok(match r {
                    Ok(()) => String::new(),
                    Err(e) => format!("error: {e}"),
                })
            }
            "read-index" => {
                let id = arg(0);
                let r = c.raw(id).read_index(args[1].as_bytes().to_vec());
                let _ = c.process(id);
                Ok(match r {
                    Ok(()) => String::new(),
                    Err(e) => format!("error: {e}"),
                })
            }
            "transfer" => {
                let id = arg(0);
                let r = c.raw(id).transfer_leader(arg(1));
                let _ = c.process(id);
                Ok(match r {
                    Ok(()) => String::new(),
                    Err(e) => format!("error: {e}"),
                })
            }
            "isolate" => {
                c.partition(&[arg(0)]);
                Ok(String::new())
            }
            "cut" => {
                c.cut.insert((arg(0), arg(1)));
                Ok(String::new())
            }
            "heal" => {
                c.cut.clear();
                Ok(String::new())
            }
            "crash" => {
                c.crash(arg(0));
                Ok(String::new())
            }
            "restart" => {
                c.restart(arg(0));
                c.process(arg(0)).map(|_| String::new()).map_err(|v| v.0)
            }
            "add-node" => {
                c.add_node(arg(0), MemStorage::new());
                Ok(String::new())
            }
            "compact" => {
                let keep: u64 = args[1].parse().expect("keep");
                c.compact(arg(0), keep)
                    .map(|_| String::new())
                    .map_err(|v| v.0)
            }
            "status" => Ok(status(c)),
            "progress" => Ok(progress(c, arg(0))),
            "log" => Ok(log(c, arg(0))),
            "state" => {
                let st: Vec<String> = c.nodes[&arg(0)].state.iter().map(|d| show(d)).collect();
                Ok(format!(
                    "applied={} [{}]",
                    c.nodes[&arg(0)].applied_index,
                    st.join(" ")
                ))
            }
            other => panic!("unknown command {other:?}"),
        };
        if let Some(ev) = c.events.as_mut() {
            for l in ev.drain(..) {
                let _ = writeln!(out, "{l}");
            }
        }
        match result {
            Ok(s) => out.push_str(&s),
            Err(v) => {
                let _ = write!(out, "VIOLATION: {v}");
            }
        }
        let out = out.trim_end().to_string();
        if out.is_empty() {
            "ok".into()
        } else {
            out
        }
    }
}

fn conf_change(args: &[&str]) -> ConfChange {
    let mut cc = ConfChange::default();
    for a in args {
        if *a == "explicit" {
            cc.transition = ConfChangeTransition::JointExplicit;
            continue;
        }
        if *a == "implicit" {
            cc.transition = ConfChangeTransition::JointImplicit;
            continue;
        }
        let (kind, id) = a.split_at(1);
        let change_type = match kind {
            "v" => ConfChangeType::AddNode,
            "l" => ConfChangeType::AddLearner,
            "r" => ConfChangeType::RemoveNode,
            _ => panic!("conf change must be v<id>, l<id> or r<id>: {a}"),
        };
        cc.changes.push(ConfChangeSingle {
            change_type,
            node_id: id.parse().expect("id"),
        });
    }
    cc
}

fn status(c: &mut Cluster) -> String {
    let mut out = String::new();
    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
    for id in ids {
        let n = &c.nodes[&id];
        match &n.raw {
            None => {
                let _ = writeln!(out, "n{id}: down");
            }
            Some(r) => {
                let s = r.status();
                let _ = writeln!(
                    out,
                    "n{id}: {:?} term={} lead={} commit={} applied={} last={} {}",
                    s.soft_state.role,
                    s.hard_state.term,
                    s.soft_state.leader_id,
                    s.hard_state.commit,
                    n.applied_index,
                    s.last_index,
                    show_conf(&s.conf_state)
                );
            }
        }
    }
    out
}

fn progress(c: &mut Cluster, id: NodeId) -> String {
    let s = c.raw(id).status();
    let mut out = String::new();
    for p in s.progress {
        let _ = writeln!(
            out,
            "n{}: {:?} match={} next={} inflight={}{}",
            p.id,
            p.state,
            p.matched,
            p.next,
            p.inflight_msgs,
            if p.is_learner { " learner" } else { "" }
        );
    }
    out
}

fn log(c: &mut Cluster, id: NodeId) -> String {
    let raw = c.raw(id);
    let s = raw.status();
    let ents = raw
        .log_entries(s.first_index, s.last_index + 1)
        .unwrap_or_default();
    let parts: Vec<String> = ents
        .iter()
        .map(|e| {
            if e.data.is_empty() {
                format!("{}/{}", e.index, e.term)
            } else {
                format!("{}/{} {}", e.index, e.term, show(&e.data))
            }
        })
        .collect();
    format!(
        "first={} last={} commit={}: {}",
        s.first_index,
        s.last_index,
        s.hard_state.commit,
        parts.join(", ")
    )
}

fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (cases, trailer) = parse(&text);
    let mut runner = Runner { c: None };
    let rewrite = std::env::var("BASALT_REWRITE_SCENARIOS").is_ok();
    let mut rewritten = String::new();
    for case in &cases {
        let actual = runner.run(&case.command);
        if rewrite {
            for l in &case.preamble {
                let _ = writeln!(rewritten, "{l}");
            }
            let _ = writeln!(rewritten, "{}\n----\n{actual}", case.command);
        } else if actual != case.expected {
            // Later commands depend on this one's effects: stop at the first.
            return Err(format!(
                "{}:{}: {}\n--- expected\n{}\n--- actual\n{}\n",
                path.display(),
                case.line_no,
                case.command,
                case.expected,
                actual
            ));
        }
    }
    if rewrite {
        for l in &trailer {
            let _ = writeln!(rewritten, "{l}");
        }
        std::fs::write(path, rewritten).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = run_file(f) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} scenario file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
