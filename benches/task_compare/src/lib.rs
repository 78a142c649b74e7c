//! Nothing to see: the benchmarks are in `benches/tasks.rs`.
