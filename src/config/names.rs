//! The `name` of a config entry (registry, log, rule, channel, report): which characters it
//! may use, and that no other entry of the same kind has it. Names end up in metric labels,
//! checkpoints and stored alert states, so they are checked the same way everywhere.

use std::collections::HashSet;

/// Checks a `name` key: valid characters, and not used by another entry of the same kind
/// (`seen` collects them). The error message names the kind.
pub(crate) fn unique_name(
    kind: &str,
    name: &str,
    seen: &mut HashSet<String>,
) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!(
            "invalid {kind} name {name:?}: expected 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'"
        ));
    }
    if !seen.insert(name.to_string()) {
        return Err(format!(
            "duplicate {kind} name {name:?}: names must be unique"
        ));
    }
    Ok(())
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
