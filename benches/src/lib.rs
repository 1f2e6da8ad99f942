//! basalt-benches: shared code for the benchmark harness.
