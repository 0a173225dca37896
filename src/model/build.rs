//! What this build is: its version and the git revision it was built from (set by
//! `build.rs`), for `regwatch version`, `regwatch_build_info`, reports and the user agent.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("REGWATCH_REVISION");
