//! A body posted to `/notifications`: the registry's envelope or a Harbor webhook payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = regwatch::formats::notification::parse(data, "main");
});
