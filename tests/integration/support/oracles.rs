//! Independent readers that tests check regwatch against: the sqlite3 CLI and a plain
//! rusqlite connection for regwatch's database (never regwatch's own store code), df for
//! disk usage, and curl for requests exactly as a real client sends them. A result compared
//! with something that shares none of regwatch's code cannot hide a bug both would share.

use super::proc::{assert_ok, require};
use std::path::Path;
use std::process::Command;

/// Runs `sqlite3 DB SQL` (the real CLI), failing the test if it fails.
pub fn sqlite3(db: &Path, sql: &str) -> String {
    require("sqlite3", "sqlite3");
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert_ok(&out, &format!("sqlite3 {sql}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
/// `df -B1` for the filesystem holding `path`: (used, available) bytes, as df counts them
/// (available = what an unprivileged writer can still use).
pub fn df(path: &Path) -> (u64, u64) {
    let out = Command::new("df")
        .args(["-B1", "--output=used,avail"])
        .arg(path)
        .output()
        .unwrap();
    assert_ok(&out, "df");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df printed {text:?}"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

/// `SELECT count(*) …` (or any one-integer query) on a database, through rusqlite.
pub fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Runs `curl -sS -o /dev/null -w %{http_code} ARGS…` and returns the status it printed.
pub fn curl_status(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
