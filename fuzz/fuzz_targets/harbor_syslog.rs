//! One line of Harbor's audit log forwarding through the parser of the `harbor_syslog`
//! listener: whatever a peer sends over TCP, the parser answers an event, a skip or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regwatch::formats::harbor_syslog::parse_line;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = parse_line(&line, "harbor", time::OffsetDateTime::UNIX_EPOCH);
});
