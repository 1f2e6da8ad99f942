//! basalt-tuning: the host checker behind `basalt-tune`.
//!
//! basalt's latency depends on the host as much as on its code: a slow
//! `fdatasync`, a seccomp profile that blocks io_uring, a memlock limit
//! too small for registered buffers or a vCPU that halts between requests
//! all show up as tail latency or leader elections. This crate finds them
//! before production and says what to set.
//!
//! It is built in three layers, and only the middle one has opinions:
//! - [`facts`] reads `/proc` and `/sys` below a [`HostRoot`], so tests
//!   feed recorded trees; [`measure`] runs the few things that must be
//!   tried (disk syncs, io_uring, peer connects), bounded in count and
//!   time, writing only in a scratch directory it removes;
//! - [`rules`] and [`recommend`] are pure functions from facts and
//!   measurements to findings (verdict, why, fix) and flags;
//! - [`report`] renders a table or JSON.
//!
//! Invariant: nothing here changes the host. Applying a profile from
//! `tuning/profiles/` is a separate, explicit step (docs/tuning.md).
//!
//! ```no_run
//! use basalt_tuning::check::{check, CheckOptions};
//! use basalt_tuning::host_root::HostRoot;
//! use basalt_tuning::measure::{DiskProbeConfig, PeerProbeConfig};
//! use basalt_tuning::rules::Plan;
//!
//! let options = CheckOptions {
//!     host: HostRoot::system(),
//!     data_dir: "/var/lib/basalt".into(),
//!     peers: vec![],
//!     plan: Plan::default(),
//!     disk: DiskProbeConfig::default(),
//!     peer_probe: PeerProbeConfig::default(),
//! };
//! let report = check(&options)?;
//! print!("{}", report.to_table());
//! # Ok::<(), basalt_tuning::TuneError>(())
//! ```

pub mod check;
pub mod cpu_list;
pub mod duration;
pub mod error;
pub mod facts;
pub mod host_root;
pub mod measure;
pub mod recommend;
pub mod report;
pub mod rules;

pub use error::TuneError;
