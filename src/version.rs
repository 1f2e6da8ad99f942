//! `basalt --version`, in etcd's layout so scripts that read etcd's first
//! lines keep working:
//!
//! ```text
//! etcd Version: 3.5.17
//! Git SHA: 923c446
//! Go Version: none (basalt is built with rustc 1.88.0 (6b00bc388 2025-06-23))
//! Go OS/Arch: linux/amd64
//! basalt Version: 0.1.0
//! Rust Version: rustc 1.88.0 (6b00bc388 2025-06-23)
//! ```
//!
//! `etcd Version` is the etcd API version basalt serves (what Status
//! reports, for kube-apiserver); basalt's own version follows etcd's four
//! lines. The git SHA comes from the build (`build.rs`), "not set" when the
//! build had none.

use basalt_net::services::ETCD_COMPAT_VERSION;

pub const GIT_SHA: &str = match option_env!("BASALT_GIT_SHA") {
    Some(sha) => sha,
    None => "not set",
};

const RUSTC: &str = match option_env!("BASALT_RUSTC_VERSION") {
    Some(v) => v,
    None => "rustc (version not recorded)",
};

/// The lines `--version` prints.
pub fn text() -> String {
    format!(
        "etcd Version: {ETCD_COMPAT_VERSION}\n\
         Git SHA: {GIT_SHA}\n\
         Go Version: none (basalt is built with {RUSTC})\n\
         Go OS/Arch: {}\n\
         basalt Version: {}\n\
         Rust Version: {RUSTC}\n",
        os_arch(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// `GOOS/GOARCH` names for this build's target.
pub fn os_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}
