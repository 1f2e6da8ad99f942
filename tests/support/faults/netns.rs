//! Partitions between real processes: each member runs in a network
//! namespace of its own, with two links to the root namespace.
//!
//! ```text
//!   root namespace (the test, its clients)
//!     bsltf<S>c  bridge 10.214.S.1/24 ── bsltf<S>c<i> ══ ethc 10.214.S.(10+i)  ┐ member i's
//!     bsltf<S>p  bridge (no address)  ── bsltf<S>p<i> ══ ethp 10.215.S.(10+i)  ┘ namespace
//! ```
//!
//! Clients reach members on the client network; members talk to each
//! other on the peer network. [`Network::isolate`] sets the member's
//! peer link down on the root side: from then on its peer packets, both
//! ways, are dropped silently (no reset, no unreachable error: a cut
//! cable), while clients still reach it, as Jepsen's control node does.
//! That is the partition under which a member that thinks it may serve
//! reads alone serves stale ones. [`Network::heal`] sets the link up.
//!
//! Names: every link and namespace starts with `bsltf<S>` where S is the
//! run's slot (1..=250), which also picks its subnets. A run owns its
//! slot by holding an exclusive `flock` on a slot file for its lifetime;
//! the kernel drops the lock when the process dies, however it dies. So
//! at the start of every run, any `bsltf<S>` namespace or link whose slot
//! lock can be taken was left by a crashed run and is removed (with the
//! processes still inside those namespaces). Nothing without the prefix is
//! ever touched. [`Drop`] removes the run's own.
//!
//! Namespaces need root and `ip`; [`Network::create`] says why not when it
//! cannot, and the caller runs without partitions, saying so.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cluster::IP_BIN;

/// Every name this module creates starts with it.
const PREFIX: &str = "bsltf";
/// Slots, and so concurrent runs on one machine: the third octet.
const SLOTS: u32 = 250;
/// How long [`Network::verify_member`] waits for `ip netns exec` to exec.
const EXEC_WAIT: Duration = Duration::from_secs(5);

/// The namespaces, links and addresses of one run.
pub struct Network {
    slot: u32,
    namespaces: Vec<String>,
    /// Held for the run's lifetime: owning the slot.
    _lock: File,
}

impl Network {
    /// Removes what crashed runs left, then sets up `members` namespaces
    /// on a free slot. `Err` says why partitions are unavailable here.
    pub fn create(members: usize) -> Result<Network, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        if !Path::new(IP_BIN).exists() {
            return Err(format!("{IP_BIN} (iproute2) is not installed"));
        }
        remove_stale();
        let start = std::process::id() % SLOTS;
        for offset in 0..SLOTS {
            let slot = 1 + (start + offset) % SLOTS;
            let Some(lock) = try_lock(slot)? else {
                continue;
            };
            if slot_in_use(slot) {
                continue;
            }
            let mut network = Network {
                slot,
                namespaces: Vec::new(),
                _lock: lock,
            };
            network.build(members)?;
            return Ok(network);
        }
        Err(format!("all {SLOTS} slots are taken"))
    }

    fn build(&mut self, members: usize) -> Result<(), String> {
        let s = self.slot;
        let (client_bridge, peer_bridge) = (format!("{PREFIX}{s}c"), format!("{PREFIX}{s}p"));
        ip(&["link", "add", "name", &client_bridge, "type", "bridge"])?;
        ip(&["link", "add", "name", &peer_bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::gateway(s)),
            "dev",
            &client_bridge,
        ])?;
        for bridge in [&client_bridge, &peer_bridge] {
            ip(&["link", "set", bridge, "up"])?;
        }
        for i in 0..members {
            let ns = format!("{PREFIX}{s}-{}-m{i}", std::process::id());
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for (side, bridge, address) in [
                ('c', &client_bridge, self.client_ip(i)),
                ('p', &peer_bridge, self.peer_ip(i)),
            ] {
                let host = format!("{PREFIX}{s}{side}{i}");
                let inside = format!("eth{side}");
                ip(&[
                    "link", "add", &host, "type", "veth", "peer", "name", &inside, "netns", &ns,
                ])?;
                ip(&["link", "set", &host, "master", bridge, "up"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    &inside,
                ])?;
                ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            }
        }
        Ok(())
    }

    fn gateway(slot: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, slot as u8, 1)
    }

    /// The namespace member `i` runs in.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// Where clients (in the root namespace) reach member `i`.
    pub fn client_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, self.slot as u8, 10 + i as u8)
    }

    /// Where the other members reach member `i`.
    pub fn peer_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 215, self.slot as u8, 10 + i as u8)
    }

    /// Cuts member `i` off from the other members (clients still reach it).
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.peer_link(i), "down"]).map(drop)
    }

    pub fn heal(&self, i: usize) -> Result<(), String> {
        ip(&["link", "set", &self.peer_link(i), "up"]).map(drop)
    }

    /// Whether a TCP connection from inside member `from`'s namespace to
    /// `to` is accepted within `timeout` (bash's /dev/tcp, so no helper
    /// binary is needed in the namespace).
    pub fn connects_from(&self, from: usize, to: SocketAddrV4, timeout: Duration) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
        Command::new("timeout")
            .arg(format!("{}", timeout.as_secs_f64()))
            .args([
                IP_BIN,
                "netns",
                "exec",
                self.namespace(from),
                "bash",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The processes running in member `i`'s namespace.
    pub fn pids(&self, i: usize) -> Vec<i32> {
        pids_inside(self.namespace(i))
    }

    fn peer_link(&self, i: usize) -> String {
        format!("{PREFIX}{}p{i}", self.slot)
    }

    /// Checks that `pid` is the server binary `exe` itself (`ip netns
    /// exec` has exec'd), running in member `i`'s namespace: signals sent
    /// to `pid` must reach the server, not a wrapper.
    pub fn verify_member(&self, i: usize, pid: u32, exe: &Path) -> Result<(), String> {
        let want_exe = exe.canonicalize().map_err(|e| format!("{exe:?}: {e}"))?;
        let want_ns = std::fs::metadata(Path::new("/run/netns").join(self.namespace(i)))
            .map_err(|e| format!("namespace {}: {e}", self.namespace(i)))?
            .ino();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + EXEC_WAIT;
        loop {
            let exe_now = std::fs::read_link(proc.join("exe")).ok();
            if exe_now.as_deref() == Some(want_exe.as_path()) {
                let ns = std::fs::metadata(proc.join("ns/net"))
                    .map_err(|e| format!("pid {pid}: {e}"))?
                    .ino();
                return if ns == want_ns {
                    Ok(())
                } else {
                    Err(format!(
                        "pid {pid} runs {want_exe:?} outside namespace {}",
                        self.namespace(i)
                    ))
                };
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pid {pid} is {exe_now:?}, not {want_exe:?}, after {EXEC_WAIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The cluster is dropped first (its members killed); anything
        // still inside is ours and goes with the namespace.
        for (i, ns) in self.namespaces.iter().enumerate() {
            kill_inside(ns);
            // Deleting a namespace frees its veths only later, in the
            // kernel's own time; deleting one end now frees the pair now.
            for side in ['c', 'p'] {
                let _ = ip(&["link", "del", &format!("{PREFIX}{}{side}{i}", self.slot)]);
            }
            let _ = ip(&["netns", "del", ns]);
        }
        for side in ['c', 'p'] {
            let _ = ip(&["link", "del", &format!("{PREFIX}{}{side}", self.slot)]);
        }
    }
}

/// Runs `ip` with `args`; `Err` carries its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(IP_BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{IP_BIN}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The slot's lock, if no live run holds it.
fn try_lock(slot: u32) -> Result<Option<File>, String> {
    let dir = std::env::temp_dir().join("basalt-faults-slots");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let path = dir.join(format!("slot-{slot}"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{path:?}: {e}"))?;
    // SAFETY: the descriptor is open for the duration of the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok(locked.then_some(file))
}

/// The slot a name of ours belongs to: `bsltf<S>` then a non-digit.
fn slot_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = rest[digits.len()..].chars().next();
    if digits.is_empty() || !matches!(after, Some('c' | 'p' | '-')) {
        return None;
    }
    digits.parse().ok()
}

fn our_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| slot_of(name).is_some())
        .map(str::to_string)
        .collect()
}

/// Links in the root namespace with our prefix (a veth shows as
/// `name@peer`).
fn our_links() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| slot_of(name).is_some())
        .collect()
}

/// Whether anything of slot `slot` exists (after a stale sweep, only a
/// foreign process could have put it there: leave that slot alone).
fn slot_in_use(slot: u32) -> bool {
    our_namespaces()
        .iter()
        .chain(our_links().iter())
        .any(|name| slot_of(name) == Some(slot))
        || ip(&["-4", "addr", "show"])
            .unwrap_or_default()
            .contains(&format!("10.214.{slot}."))
}

/// Removes the namespaces and links of every slot no live run holds.
fn remove_stale() {
    let namespaces = our_namespaces();
    let links = our_links();
    let mut slots: Vec<u32> = namespaces
        .iter()
        .chain(links.iter())
        .filter_map(|name| slot_of(name))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        let Ok(Some(_lock)) = try_lock(slot) else {
            continue;
        };
        for ns in namespaces.iter().filter(|n| slot_of(n) == Some(slot)) {
            eprintln!("faults: removing namespace {ns} left by a crashed run");
            kill_inside(ns);
            let _ = ip(&["netns", "del", ns]);
        }
        for link in links.iter().filter(|n| slot_of(n) == Some(slot)) {
            eprintln!("faults: removing link {link} left by a crashed run");
            let _ = ip(&["link", "del", link]);
        }
    }
}

/// The processes in namespace `ns`.
fn pids_inside(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// SIGKILLs every process in namespace `ns` (only ever one of ours).
fn kill_inside(ns: &str) {
    for pid in pids_inside(ns) {
        // SAFETY: kill has no memory preconditions; the PID was just
        // listed as inside our namespace.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_have_a_slot() {
        assert_eq!(slot_of("bsltf12c"), Some(12));
        assert_eq!(slot_of("bsltf12p2"), Some(12));
        assert_eq!(slot_of("bsltf7-4242-m0"), Some(7));
        for other in [
            "eth0",
            "bsltf",
            "bsltfx1",
            "bsltf12",
            "bsltf12x",
            "br-bsltf1c",
        ] {
            assert_eq!(slot_of(other), None, "{other}");
        }
    }
}
