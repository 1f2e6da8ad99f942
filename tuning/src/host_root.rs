//! The filesystem the host's facts are read from: `/` on a live host, a
//! fake `/proc` + `/sys` tree in tests, or the host's root mounted into a
//! container (`--host-root /host`).

use std::fs;
use std::path::{Path, PathBuf};

/// Reads host facts below a root directory. A file that is missing or
/// unreadable is `None`: kernels differ in what they expose, and an
/// unknown fact is reported as unknown rather than failing the check.
#[derive(Debug, Clone)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The live host.
    pub fn system() -> Self {
        Self::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps an absolute host path (`/proc/cmdline`) below the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// The file's contents with surrounding whitespace trimmed.
    pub fn read(&self, absolute: &str) -> Option<String> {
        fs::read_to_string(self.path(absolute))
            .ok()
            .map(|text| text.trim().to_owned())
    }

    /// The file parsed as a number.
    pub fn read_u64(&self, absolute: &str) -> Option<u64> {
        self.read(absolute)?.parse().ok()
    }

    /// The value of `Key:` in a `key: value` file such as
    /// `/proc/self/status` or `/proc/meminfo`.
    pub fn read_field(&self, absolute: &str, key: &str) -> Option<String> {
        let text = self.read(absolute)?;
        text.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
    }
}

/// The entry in brackets of a sysfs choice file: `none [mq-deadline] bfq`
/// selects `mq-deadline`. A file with no brackets holds just its value.
pub fn selected_choice(text: &str) -> Option<String> {
    match (text.find('['), text.find(']')) {
        (Some(open), Some(close)) if open < close => Some(text[open + 1..close].to_owned()),
        _ => {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_choice_reads_brackets() {
        assert_eq!(
            selected_choice("none [mq-deadline] kyber").as_deref(),
            Some("mq-deadline")
        );
        assert_eq!(
            selected_choice("performance").as_deref(),
            Some("performance")
        );
        assert_eq!(selected_choice("  "), None);
    }

    #[test]
    fn read_field_finds_status_lines() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        fs::write(
            dir.path().join("proc/self/status"),
            "Name:\tx\nSeccomp:\t2\n",
        )
        .unwrap();
        let host = HostRoot::new(dir.path());
        assert_eq!(
            host.read_field("/proc/self/status", "Seccomp").as_deref(),
            Some("2")
        );
        assert_eq!(host.read_field("/proc/self/status", "Missing"), None);
        assert_eq!(host.read("/proc/absent"), None);
    }
}
