//! Where the benches find the test harness: benches/alerts.rs and benches/inventory.rs mount
//! this file with `#[path = "../tests/support/mod.rs"] mod support;`. The harness itself
//! lives with the integration tests, in tests/integration/support/; this file only mounts it
//! under the same name, so a benchmark starts its registry, nginx or daemon exactly the way
//! the tests do, and a change to the harness reaches both.

#[path = "../integration/support/mod.rs"]
mod harness;

pub use harness::*;
