//! Helpers shared by the benchmarks and the load generators (`benches/`, `src/bin/`).

pub mod ng;
