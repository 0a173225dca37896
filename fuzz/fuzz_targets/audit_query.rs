//! A query string sent to `GET /api/v1/audit` by anyone holding the API token: times past the
//! calendar, huge limits, odd cursors, unknown keys. Errors are fine; a panic is not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = regwatch::http::api::parse_audit_query(query);
    }
});
