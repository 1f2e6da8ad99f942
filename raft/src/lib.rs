//! basalt-raft: Raft consensus as a pure, deterministic state machine.
