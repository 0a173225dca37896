//! Where a tailed log file was read up to: the follower hands it out, the store keeps it in
//! the same transaction as the events read from those bytes.

/// Where a tailed log was read up to. Committed in the same transaction as the events read
/// from those bytes, so a crash neither loses nor repeats a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: String,
    pub dev: u64,
    pub ino: u64,
    /// The file is recognised by the hash of its first `fp_len` bytes (inode numbers are
    /// reused).
    pub fp_len: u64,
    pub fp_hash: String,
    pub offset: u64,
}
