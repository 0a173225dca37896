//! Filesystem usage of the storage root, as `df` computes it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One `statvfs` reading, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size of the filesystem (`df`'s "1B-blocks").
    pub capacity_bytes: u64,
    /// In use by anyone (`f_blocks - f_bfree`, `df`'s "Used").
    pub used_bytes: u64,
    /// What an unprivileged writer such as the registry can still use (`f_bavail`); smaller
    /// than `capacity - used` by the blocks reserved for root.
    pub available_bytes: u64,
}

impl FsUsage {
    /// `used / (used + available)`: the figure `df` rounds up into "Use%". The root-reserved
    /// blocks count as neither, so 1.0 means full for the registry, not for root.
    pub fn used_ratio(&self) -> f64 {
        let denom = self.used_bytes + self.available_bytes;
        if denom == 0 {
            0.0
        } else {
            self.used_bytes as f64 / denom as f64
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("statvfs {path}: {source}")]
pub struct FsUsageError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Reads the usage of the filesystem holding `path`.
///
/// `libc` (already in the lock file through tokio) gives `statvfs` directly; std has no
/// wrapper and a dedicated crate would add a dependency for one call.
pub fn fs_usage(path: &Path) -> Result<FsUsage, FsUsageError> {
    let err = |source| FsUsageError {
        path: path.to_path_buf(),
        source,
    };
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| err(std::io::Error::other("path contains a NUL byte")))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a properly sized out-parameter
    // that statvfs fully initialises on success.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        st
    };
    let frsize = st.f_frsize as u64;
    let blocks = st.f_blocks as u64;
    let free = st.f_bfree as u64;
    let avail = st.f_bavail as u64;
    Ok(FsUsage {
        capacity_bytes: blocks * frsize,
        used_bytes: blocks.saturating_sub(free) * frsize,
        available_bytes: avail * frsize,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let u = super::fs_usage(dir.path()).unwrap();
        assert!(u.capacity_bytes > 0);
        assert!(u.used_bytes + u.available_bytes <= u.capacity_bytes);
        assert!((0.0..=1.0).contains(&u.used_ratio()));
        let e = super::fs_usage(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
