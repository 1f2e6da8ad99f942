//! A server's memory as the kernel counts it: resident set now (VmRSS) and
//! at its peak (VmHWM), from /proc/PID/status; and resetting the peak, so
//! a phase's growth can be measured on its own.

use std::path::Path;

use crate::error::{BenchError, Result};

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resident {
    /// VmRSS.
    pub now: u64,
    /// VmHWM: the peak since start or since the last [`reset_peak`].
    pub peak: u64,
}

/// Reads VmRSS and VmHWM of `pid`.
pub fn resident(pid: u32) -> Result<Resident> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        action: "reading",
        path: path.into(),
        source,
    })?;
    Ok(parse_status(&text))
}

/// Parses the VmRSS and VmHWM lines of a /proc/PID/status text.
pub fn parse_status(text: &str) -> Resident {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Resident {
        now: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// Resets VmHWM of `pid` to its current RSS (proc(5): writing 5 to
/// clear_refs).
pub fn reset_peak(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(Path::new(&path), "5").map_err(|source| BenchError::Io {
        action: "writing",
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tetcd\nVmHWM:\t  123456 kB\nVmRSS:\t   10000 kB\nThreads:\t12\n";
        assert_eq!(
            parse_status(text),
            Resident {
                now: 10_000 * 1024,
                peak: 123_456 * 1024
            }
        );
        assert_eq!(parse_status("garbage"), Resident::default());
    }

    #[test]
    fn reads_and_resets_own_peak() {
        let me = std::process::id();
        // Touch 64 MiB, give it back: the peak remembers it, RSS does not.
        let big = vec![1u8; 64 << 20];
        assert_eq!(
            big.iter().step_by(4096).map(|b| *b as usize).sum::<usize>(),
            (64 << 20) / 4096
        );
        drop(big);
        let before = resident(me).unwrap();
        assert!(
            before.now > 0 && before.peak >= before.now + (32 << 20),
            "{before:?}"
        );
        reset_peak(me).unwrap();
        let after = resident(me).unwrap();
        assert!(
            after.peak + (32 << 20) <= before.peak,
            "{before:?} then {after:?}"
        );
    }
}
