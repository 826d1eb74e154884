//! What the `sagaflow` binary needs beyond the library: the demo, the benchmarks
//! and launching sagaflow processes as children. Behind the `tools` feature (on by
//! default, so `cargo build` gives the binary); an embedder depending on the library
//! with `default-features = false` gets the worker, the client, the definitions and
//! the machine without them. Not a stable API.

pub mod bench;
pub mod demo;
pub mod launch;
