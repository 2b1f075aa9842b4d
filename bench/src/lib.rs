//! Benchmarks and (later) the load generator for srtp-relay; see `benches/`.
