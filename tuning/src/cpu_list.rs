//! The kernel's CPU list format (`0-3,8,10-11`), used by
//! `/sys/devices/system/cpu/online`, `Cpus_allowed_list`, `isolcpus=` and
//! friends.

use std::collections::BTreeSet;

/// Upper bound on a CPU number we accept; anything larger is a corrupt
/// file, not a machine, and must not make us allocate a huge set.
const MAX_CPU: u32 = 1 << 16;

/// Parses a CPU list. Returns `None` for text that is not a CPU list
/// (so a garbled file is reported as unknown, never as "no CPUs").
/// An empty string is the empty set: `/sys/devices/system/cpu/isolated`
/// is empty when nothing is isolated.
pub fn parse(text: &str) -> Option<BTreeSet<u32>> {
    let text = text.trim();
    let mut cpus = BTreeSet::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((first, last)) => {
                let first: u32 = first.trim().parse().ok()?;
                let last: u32 = last.trim().parse().ok()?;
                if first > last || last > MAX_CPU {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => {
                let cpu: u32 = part.parse().ok()?;
                if cpu > MAX_CPU {
                    return None;
                }
                cpus.insert(cpu);
            }
        }
    }
    Some(cpus)
}

/// Parses the value of a boot parameter such as `isolcpus=` whose CPU
/// list may be preceded by flags (`isolcpus=managed_irq,domain,2-3`).
pub fn parse_boot_param(value: &str) -> Option<BTreeSet<u32>> {
    let list: Vec<&str> = value
        .split(',')
        .filter(|part| part.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    parse(&list.join(","))
}

/// Formats a set back into the kernel's compact form, so reports read
/// like the files they came from.
pub fn format(cpus: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        if first == last {
            parts.push(first.to_string());
        } else {
            parts.push(format!("{first}-{last}"));
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles() {
        let cpus = parse("0-3,8,10-11\n").unwrap();
        assert_eq!(
            cpus.into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
    }

    #[test]
    fn empty_is_empty_set_and_garbage_is_none() {
        assert_eq!(parse("").unwrap().len(), 0);
        assert!(parse("zero").is_none());
        assert!(parse("3-1").is_none());
        assert!(parse("0-4294967295").is_none());
    }

    #[test]
    fn boot_param_skips_flags() {
        let cpus = parse_boot_param("managed_irq,domain,2-3").unwrap();
        assert_eq!(format(&cpus), "2-3");
    }

    #[test]
    fn format_round_trips() {
        for text in ["0", "0-1", "0,2,4", "0-3,8,10-11"] {
            assert_eq!(format(&parse(text).unwrap()), text);
        }
    }
}
