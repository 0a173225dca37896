//! Follows one log file across rotation, truncation, deletion and restarts, handing out
//! complete lines and the position to checkpoint after them.
//!
//! A file is recognised by device + inode plus a hash of its first bytes (inodes are reused
//! after deletion). Rotation cases:
//! - rename + create (logrotate's default): the open file is read to its end, then the new
//!   file from its start;
//! - copytruncate: the file shrinks below our offset; the copy (a sibling whose first bytes
//!   match) is read from our offset to its end, then the truncated file from its start;
//! - delete + re-create: like rename;
//! - restart after a rotation: the checkpointed file is looked for among the siblings
//!   (`access.log.1`) and finished first.

use crate::model::Checkpoint;
use sha2::{Digest, Sha256};
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes hashed to recognise a file.
const FINGERPRINT_BYTES: u64 = 256;
/// Read size of a file that is followed live (what was appended since the last look).
const FIRST_CHUNK: usize = 64 * 1024;
/// Read size once a read fills [`FIRST_CHUNK`] (catching up a backlog): the lines of one
/// read are handed out together, and the handler splits large blocks between threads. An
/// eighth of the tailer's batch (32 MiB, one commit): each block costs a helper thread and a
/// join at which one thread waits for the other's last chunk, so fewer, larger blocks.
const CHUNK: usize = 4 << 20;
/// Most lines handed out in one [`Lines`]: bounds the index of line ranges (512 KiB) when
/// a file holds many short lines, and holds a whole [`CHUNK`] of access log (~22,000 lines
/// of ~190 bytes), so a catch-up read is one block: one helper thread and one join.
const MAX_BLOCK_LINES: usize = 32 * 1024;

/// Where a file seen for the first time is read from (the config's `start_at`).
pub use crate::config::log::StartAt;

/// One open file and how far it has been read.
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    fp_len: u64,
    fp_hash: String,
    /// Offset of the first byte not yet handed out as part of a complete line.
    offset: u64,
    /// Where the next read continues (≥ offset; the bytes in between are in `partial`).
    read_pos: u64,
}

pub struct Follower {
    name: String,
    path: PathBuf,
    max_line: usize,
    start_at: StartAt,
    /// Files to finish, oldest first, before `current`.
    queue: Vec<Open>,
    current: Option<Open>,
    /// The checkpoint to resume from, until the file is found.
    resume: Option<Checkpoint>,
    partial: Vec<u8>,
    /// The current partial line is over `max_line` and is being skipped to its newline.
    skipping: bool,
    /// The read buffer, kept between polls ([`FIRST_CHUNK`], grown to [`CHUNK`]).
    buf: Vec<u8>,
    /// Where each complete line of the current read starts and ends in `buf`.
    ranges: Vec<(usize, usize)>,
    pub truncated_lines: u64,
}

/// What one call to [`Follower::poll`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub lines: u64,
    pub bytes: u64,
    /// True when there may be more to read right away.
    pub more: bool,
}

/// Complete lines handed out together (those of one read), each without its newline and
/// cut at `max_line`: one buffer and where each line lies in it, so a handler can split
/// them between threads at a line boundary.
#[derive(Debug, Clone, Copy)]
pub struct Lines<'a> {
    buf: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Lines<'a> {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let buf = self.buf;
        self.ranges
            .iter()
            .map(move |&(start, end)| &buf[start..end])
    }

    /// Line `i`.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.ranges
            .get(i)
            .map(|&(start, end)| &self.buf[start..end])
    }

    /// Lines of `buf` at `ranges` (start and end of each, without its newline).
    #[cfg(test)]
    pub(crate) fn new(buf: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Lines { buf, ranges }
    }

    /// The first `mid` lines and the rest.
    pub fn split_at(&self, mid: usize) -> (Lines<'a>, Lines<'a>) {
        let (a, b) = self.ranges.split_at(mid.min(self.ranges.len()));
        (
            Lines {
                buf: self.buf,
                ranges: a,
            },
            Lines {
                buf: self.buf,
                ranges: b,
            },
        )
    }
}

/// Hands out the lines collected in `ranges` (of `data`), if any.
fn hand_out(
    data: &[u8],
    ranges: &mut Vec<(usize, usize)>,
    on_lines: &mut dyn FnMut(Lines<'_>),
    progress: &mut Progress,
) {
    if ranges.is_empty() {
        return;
    }
    on_lines(Lines { buf: data, ranges });
    progress.lines += ranges.len() as u64;
    ranges.clear();
}

/// Hands out one line on its own (a line joined from two reads, a rotated file's last).
fn one_line(line: &[u8], on_lines: &mut dyn FnMut(Lines<'_>)) {
    on_lines(Lines {
        buf: line,
        ranges: &[(0, line.len())],
    });
}

/// Opens a log file, refusing anything but a regular file: opening a FIFO blocks until a
/// writer comes (so shutdown would never finish), `/dev/zero` never ends, a directory cannot
/// be read. `O_NONBLOCK` makes the open itself return at once whatever the path is; on a
/// regular file it changes nothing.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {}, not a regular file: only regular files are tailed",
            path.display(),
            crate::model::text::file_kind(kind)
        ),
    ))
}

fn fingerprint(file: &mut File, len: u64) -> io::Result<(u64, String)> {
    let len = len.min(FINGERPRINT_BYTES);
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut buf)?;
    Ok((len, hex::encode(Sha256::digest(&buf))))
}

fn matches_fingerprint(file: &mut File, meta: &Metadata, fp_len: u64, fp_hash: &str) -> bool {
    meta.len() >= fp_len
        && fingerprint(file, fp_len)
            .map(|(_, h)| h == fp_hash)
            .unwrap_or(false)
}

impl Follower {
    pub fn new(
        name: &str,
        path: &Path,
        start_at: StartAt,
        max_line: usize,
        resume: Option<Checkpoint>,
    ) -> Self {
        Follower {
            name: name.to_string(),
            path: path.to_path_buf(),
            max_line,
            start_at,
            queue: Vec::new(),
            current: None,
            resume,
            partial: Vec::new(),
            skipping: false,
            buf: Vec::new(),
            ranges: Vec::new(),
            truncated_lines: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position to commit after the lines handed out so far.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let o = self.queue.first().or(self.current.as_ref())?;
        Some(Checkpoint {
            log: self.name.clone(),
            dev: o.dev,
            ino: o.ino,
            fp_len: o.fp_len,
            fp_hash: o.fp_hash.clone(),
            offset: o.offset,
        })
    }

    /// Bytes written to the file but not yet read.
    pub fn lag_bytes(&self) -> u64 {
        let queued: u64 = self
            .queue
            .iter()
            .map(|o| {
                o.file
                    .metadata()
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .saturating_sub(o.offset)
            })
            .sum();
        let current = self
            .current
            .as_ref()
            .map(|o| {
                o.file
                    .metadata()
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .saturating_sub(o.offset)
            })
            .unwrap_or(0);
        queued + current
    }

    fn open_at(path: &Path, offset: Option<u64>, start_at: StartAt) -> io::Result<Option<Open>> {
        let mut file = match open_regular(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let (fp_len, fp_hash) = fingerprint(&mut file, meta.len())?;
        let offset = offset.unwrap_or(match start_at {
            StartAt::Beginning => 0,
            StartAt::End => meta.len(),
        });
        Ok(Some(Open {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            fp_len,
            fp_hash,
            offset,
            read_pos: offset,
        }))
    }

    /// Finds the file a checkpoint names: at the path, or rotated beside it.
    fn find(&self, cp: &Checkpoint) -> io::Result<Option<(Open, bool)>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stem = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut candidates = vec![(self.path.clone(), false)];
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != stem && n.starts_with(&stem) {
                    candidates.push((e.path(), true));
                }
            }
        }
        for (p, rotated) in candidates {
            let Ok(mut file) = open_regular(&p) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if meta.dev() == cp.dev
                && meta.ino() == cp.ino
                && matches_fingerprint(&mut file, &meta, cp.fp_len, &cp.fp_hash)
            {
                // A file that grew past the fingerprinted prefix gets a longer fingerprint.
                let (fp_len, fp_hash) = fingerprint(&mut file, meta.len())?;
                let offset = cp.offset.min(meta.len());
                return Ok(Some((
                    Open {
                        file,
                        dev: cp.dev,
                        ino: cp.ino,
                        fp_len,
                        fp_hash,
                        offset,
                        read_pos: offset,
                    },
                    rotated,
                )));
            }
        }
        Ok(None)
    }

    /// Establishes the files to read, from the checkpoint on the first call.
    fn ensure_open(&mut self) -> io::Result<()> {
        if self.current.is_some() || !self.queue.is_empty() {
            return Ok(());
        }
        if let Some(cp) = self.resume.take() {
            match self.find(&cp)? {
                Some((open, false)) => {
                    self.current = Some(open);
                    return Ok(());
                }
                Some((open, true)) => {
                    tracing::info!(log = %self.name, "finishing the file rotated while regwatch was stopped");
                    self.queue.push(open);
                    self.current = Self::open_at(&self.path, Some(0), self.start_at)?;
                    return Ok(());
                }
                None if let Some(mut copy) =
                    self.find_copy(cp.fp_len, &cp.fp_hash, cp.offset)? =>
                {
                    // Truncated (copytruncate) while regwatch was stopped: the rest is in the copy.
                    tracing::info!(log = %self.name, "finishing the copy of the file truncated while regwatch was stopped");
                    copy.offset = cp.offset;
                    copy.read_pos = cp.offset;
                    self.queue.push(copy);
                    self.current = Self::open_at(&self.path, Some(0), self.start_at)?;
                    return Ok(());
                }
                None => {
                    // The checkpointed file is gone: everything in the present one is new.
                    tracing::warn!(log = %self.name, "checkpointed file not found; reading the current file from its start");
                    self.current = Self::open_at(&self.path, Some(0), self.start_at)?;
                    return Ok(());
                }
            }
        }
        self.current = Self::open_at(&self.path, None, self.start_at)?;
        Ok(())
    }

    /// Reads up to `budget` bytes, calling `on_line` for each complete line (without its
    /// newline). Detects rotation and truncation when the open file is exhausted.
    pub fn poll(&mut self, budget: usize, on_line: &mut dyn FnMut(&[u8])) -> io::Result<Progress> {
        self.poll_lines(budget, &mut |lines| lines.iter().for_each(&mut *on_line))
    }

    /// [`poll`](Self::poll), handing out the complete lines of each read together, in order.
    pub fn poll_lines(
        &mut self,
        budget: usize,
        on_lines: &mut dyn FnMut(Lines<'_>),
    ) -> io::Result<Progress> {
        self.ensure_open()?;
        if self.queue.is_empty() {
            self.check_rewritten()?;
        }
        let mut progress = Progress::default();
        // Taken out of `self` while lines borrowed from them are handed out.
        let mut buf = std::mem::take(&mut self.buf);
        let mut ranges = std::mem::take(&mut self.ranges);
        if buf.is_empty() {
            buf.resize(FIRST_CHUNK, 0);
        }
        let read = self.read_lines(budget, &mut buf, &mut ranges, on_lines, &mut progress);
        if !progress.more && buf.len() > FIRST_CHUNK {
            // Caught up: a live file needs only the small buffer (a glob may follow many).
            buf.truncate(FIRST_CHUNK);
            buf.shrink_to_fit();
            ranges = Vec::new();
        }
        (self.buf, self.ranges) = (buf, ranges);
        read.map(|()| progress)
    }

    fn read_lines(
        &mut self,
        budget: usize,
        buf: &mut Vec<u8>,
        ranges: &mut Vec<(usize, usize)>,
        on_lines: &mut dyn FnMut(Lines<'_>),
        progress: &mut Progress,
    ) -> io::Result<()> {
        while (progress.bytes as usize) < budget {
            let draining = !self.queue.is_empty();
            let Some(open) = (if draining {
                self.queue.first_mut()
            } else {
                self.current.as_mut()
            }) else {
                return Ok(());
            };
            open.file.seek(SeekFrom::Start(open.read_pos))?;
            let n = open.file.read(buf)?;
            if n == 0 {
                if draining {
                    // A rotated file is finished: its last line may lack a newline.
                    self.flush_partial(on_lines, progress);
                    let done = self.queue.remove(0);
                    if self.current.is_none() && self.queue.is_empty() {
                        // No file at the path yet: the finished one stays current, so the
                        // checkpoint records that it was read to its end.
                        self.current = Some(done);
                    }
                    continue;
                }
                if !self.check_rotation()? {
                    return Ok(());
                }
                continue;
            }
            progress.bytes += n as u64;
            let start = open.read_pos;
            open.read_pos += n as u64;
            let line_start = self.split(&buf[..n], ranges, on_lines, progress);
            let moved = (line_start > 0).then_some(start + line_start as u64);
            self.keep_unfinished(&buf[line_start..n], moved, on_lines, progress);
            if n == buf.len() && buf.len() < CHUNK {
                // A backlog: read it in larger pieces from now on.
                buf.resize(CHUNK, 0);
            }
        }
        progress.more = true;
        Ok(())
    }

    /// Hands out the complete lines of `data` (the first one joined to the unfinished line
    /// kept from the previous read); returns where the unfinished rest of `data` starts.
    fn split(
        &mut self,
        data: &[u8],
        ranges: &mut Vec<(usize, usize)>,
        on_lines: &mut dyn FnMut(Lines<'_>),
        progress: &mut Progress,
    ) -> usize {
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', data) {
            if line_start == 0 && (self.skipping || !self.partial.is_empty()) {
                self.finish_partial(&data[..nl], on_lines, progress);
            } else {
                ranges.push(self.cut(line_start, nl));
                if ranges.len() == MAX_BLOCK_LINES {
                    hand_out(data, ranges, on_lines, progress);
                }
            }
            line_start = nl + 1;
        }
        hand_out(data, ranges, on_lines, progress);
        line_start
    }

    /// The range of the line from `start` to its newline at `nl`, cut at `max_line`.
    fn cut(&mut self, start: usize, nl: usize) -> (usize, usize) {
        if nl - start > self.max_line {
            self.truncated_lines += 1;
            (start, start + self.max_line)
        } else {
            (start, nl)
        }
    }

    /// The end of the line begun in an earlier read: handed out joined (cut at `max_line`),
    /// or dropped when the line was already handed out cut.
    fn finish_partial(
        &mut self,
        piece: &[u8],
        on_lines: &mut dyn FnMut(Lines<'_>),
        progress: &mut Progress,
    ) {
        if self.skipping {
            self.skipping = false;
            return;
        }
        let room = self.max_line.saturating_sub(self.partial.len());
        if piece.len() > room {
            self.truncated_lines += 1;
        }
        self.partial
            .extend_from_slice(&piece[..piece.len().min(room)]);
        one_line(&self.partial, on_lines);
        progress.lines += 1;
        self.partial.clear();
    }

    /// Keeps the unfinished line at the end of a read, never more than `max_line` bytes of
    /// it. `line_start` is the file offset after the read's last newline, if it had one:
    /// the committed offset moves there (without a newline the line still starts where it
    /// started, in an earlier read).
    fn keep_unfinished(
        &mut self,
        rest: &[u8],
        line_start: Option<u64>,
        on_lines: &mut dyn FnMut(Lines<'_>),
        progress: &mut Progress,
    ) {
        let max_line = self.max_line;
        let open = match self.queue.first_mut() {
            Some(open) => open,
            None => self.current.as_mut().expect("a file is open"),
        };
        if let Some(at) = line_start {
            open.offset = at;
        }
        if rest.is_empty() {
            return;
        }
        if !self.skipping {
            let room = max_line.saturating_sub(self.partial.len());
            if rest.len() > room {
                self.partial.extend_from_slice(&rest[..room]);
                one_line(&self.partial, on_lines);
                progress.lines += 1;
                self.truncated_lines += 1;
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        // The committed offset stays at the line's start, so a restart re-reads the
        // unfinished line; a truncated one is skipped to its end.
        if self.skipping {
            open.offset = open.read_pos;
        }
    }

    fn flush_partial(&mut self, on_lines: &mut dyn FnMut(Lines<'_>), progress: &mut Progress) {
        if !self.partial.is_empty() && !self.skipping {
            one_line(&self.partial, on_lines);
            progress.lines += 1;
        }
        self.partial.clear();
        self.skipping = false;
    }

    /// At the end of the current file: has it been rotated or truncated? Returns true when
    /// there is something new to read.
    fn check_rotation(&mut self) -> io::Result<bool> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(false);
        };
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Deleted and not yet re-created: keep the old file open (the writer may still
            // append to it until it reopens).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if now.dev() != cur.dev || now.ino() != cur.ino {
            // Rotated: the old file is finished (we are at its end); the new one starts at 0.
            let Some(new) = Self::open_at(&self.path, Some(0), self.start_at)? else {
                return Ok(false);
            };
            let old = self.current.replace(new).expect("checked above");
            // The writer may have appended to the old file between our last read and the
            // rename: finish it (and its unfinished last line) before the new one.
            self.queue.push(old);
            tracing::info!(log = %self.name, "log rotated; finishing the old file, then following the new one");
            return Ok(true);
        }
        let len = now.len();
        if len < cur.read_pos {
            self.on_truncated(len)?;
            return Ok(true);
        }
        // Same file, nothing new. Refresh a short fingerprint once the file is longer, so a
        // re-created file with the same first bytes is told apart.
        if cur.fp_len < FINGERPRINT_BYTES && len > cur.fp_len {
            let (fp_len, fp_hash) = fingerprint(&mut cur.file, len)?;
            cur.fp_len = fp_len;
            cur.fp_hash = fp_hash;
        }
        Ok(false)
    }

    /// copytruncate: the bytes after our offset went into a copy; read them from there, then
    /// the truncated file from its start.
    fn on_truncated(&mut self, len: u64) -> io::Result<()> {
        let Some(cur) = self.current.as_ref() else {
            return Ok(());
        };
        let (fp_len, fp_hash, offset, read_pos) =
            (cur.fp_len, cur.fp_hash.clone(), cur.offset, cur.read_pos);
        if let Some(mut copy) = self.find_copy(fp_len, &fp_hash, read_pos)? {
            tracing::info!(log = %self.name, "log truncated; finishing its copy first");
            copy.offset = offset;
            copy.read_pos = read_pos;
            self.queue.push(copy);
        } else {
            tracing::warn!(log = %self.name, "log truncated and no copy found; lines written just before the truncation may be missed");
            self.partial.clear();
            self.skipping = false;
        }
        let cur = self.current.as_mut().expect("checked above");
        cur.offset = 0;
        cur.read_pos = 0;
        let (fp_len, fp_hash) = if len > 0 {
            fingerprint(&mut cur.file, len)?
        } else {
            (0, hex::encode(Sha256::digest(b"")))
        };
        cur.fp_len = fp_len;
        cur.fp_hash = fp_hash;
        Ok(())
    }

    /// Truncated and written again past our offset before we looked: the size alone does
    /// not tell, the first bytes do.
    fn check_rewritten(&mut self) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if cur.read_pos == 0 || cur.fp_len == 0 {
            return Ok(());
        }
        let meta = cur.file.metadata()?;
        let (fp_len, fp_hash) = (cur.fp_len, cur.fp_hash.clone());
        if !matches_fingerprint(&mut cur.file, &meta, fp_len, &fp_hash) {
            self.on_truncated(meta.len())?;
        }
        Ok(())
    }

    /// A sibling that starts with the same bytes and reaches past `read_pos`: the copy
    /// `copytruncate` made.
    fn find_copy(&self, fp_len: u64, fp_hash: &str, read_pos: u64) -> io::Result<Option<Open>> {
        // An empty prefix matches every file: nothing was read from it, nothing to find.
        if fp_len == 0 {
            return Ok(None);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stem = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n == stem || !n.starts_with(&stem) {
                continue;
            }
            let Ok(mut file) = open_regular(&e.path()) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if meta.len() >= read_pos && matches_fingerprint(&mut file, &meta, fp_len, fp_hash) {
                return Ok(Some(Open {
                    file,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    fp_len,
                    fp_hash: fp_hash.to_string(),
                    offset: 0,
                    read_pos: 0,
                }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let p = f
                .poll(1 << 20, &mut |l| {
                    out.push(String::from_utf8_lossy(l).into_owned())
                })
                .unwrap();
            if !p.more {
                return out;
            }
        }
    }

    #[test]
    fn a_backlog_comes_in_large_blocks_of_whole_lines_cut_at_max_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut w = File::create(&path).unwrap();
        let mut want = Vec::new();
        for i in 0..40_000 {
            // Every thousandth line is longer than max_line (300 bytes) and is cut there.
            let len = if i % 1000 == 7 { 5000 } else { i % 150 };
            let line = format!("line {i} {}", "x".repeat(len));
            writeln!(w, "{line}").unwrap();
            want.push(line[..line.len().min(300)].to_string());
        }
        // The last line is unfinished: kept until its newline comes.
        write!(w, "half").unwrap();
        let mut f = Follower::new("a", &path, StartAt::Beginning, 300, None);
        let (mut got, mut largest) = (Vec::new(), 0);
        loop {
            let p = f
                .poll_lines(4 << 20, &mut |lines| {
                    largest = largest.max(lines.len());
                    let (a, b) = lines.split_at(lines.len() / 2);
                    assert_eq!(a.len() + b.len(), lines.len());
                    for l in a.iter().chain(b.iter()) {
                        got.push(String::from_utf8(l.to_vec()).unwrap());
                    }
                })
                .unwrap();
            if !p.more {
                break;
            }
        }
        assert_eq!(got, want);
        assert_eq!(f.truncated_lines, 40);
        assert!(largest > 2048, "reads stayed small: {largest} lines");
        let end = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            f.checkpoint().unwrap().offset,
            end - 4,
            "before the unfinished line"
        );
        writeln!(w, " done").unwrap();
        assert_eq!(lines(&mut f), ["half done"]);
    }

    #[test]
    fn a_renamed_file_keeps_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut w = File::create(&path).unwrap();
        for i in 0..20 {
            writeln!(w, "line {i} {}", "x".repeat(30)).unwrap();
        }
        let mut f = Follower::new("a", &path, StartAt::Beginning, 4096, None);
        assert_eq!(lines(&mut f).len(), 20);
        let before = f.checkpoint().unwrap();
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        assert_eq!(lines(&mut f).len(), 0);
        assert_eq!(f.checkpoint().unwrap(), before);
    }
}
