//! Judging a block of lines on two threads while this one applies the results in file
//! order.
//!
//! A catch-up reads blocks of thousands of lines. Both threads claim a block a chunk at a
//! time and summarise each chunk (what its lines add up to, and the few lines that need
//! the tailer's state); the tailer applies each chunk's summary as soon as it and every
//! chunk before it are judged, between the chunks it judges itself. So the in-order work
//! overlaps the helper's judging instead of waiting for it, both threads end together
//! whatever else the machine runs (the store's writer, the evaluator), and the windows,
//! the pairing of failed logins and the order of audit events are those of one thread.
//!
//! The summaries live here between blocks: their buffers are reused, so judging a block
//! allocates nothing once the first blocks have sized them.

use super::follower::Lines;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Blocks of fewer lines are judged on the tailer's thread alone: starting a helper thread
/// costs about as much as judging a few hundred lines, and a live tailer's reads are small.
pub(super) const PARALLEL_MIN_LINES: usize = 2048;

/// Lines a thread claims at a time: enough that claiming costs nothing next to judging
/// them, few enough that neither thread waits long for the other at the end of a block.
const CHUNK_LINES: usize = 256;

/// The threads a tailer judges on, and the chunk summaries (`S`) kept between blocks.
pub struct Parallel<S> {
    threads: usize,
    slots: Mutex<Vec<Slot<S>>>,
}

#[derive(Default)]
struct Slot<S> {
    summary: Mutex<S>,
    /// Set once `summary` holds this block's chunk (release), read before applying it
    /// (acquire).
    judged: AtomicBool,
}

impl<S: Default + Send> Parallel<S> {
    /// Judges on `threads` threads (1: on the tailer's thread only).
    pub fn new(threads: usize) -> Self {
        Parallel {
            threads: threads.max(1),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// Two threads where the machine has two cores or more (a second helper would mostly
    /// wait for the tailer applying the summaries in order).
    pub fn available() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get().min(2)))
    }

    /// Runs `judge` on every chunk of `lines` and `apply` on every chunk with its summary,
    /// in file order, on this thread. `judge` gets a reused summary to overwrite.
    pub fn run(
        &self,
        lines: Lines<'_>,
        judge: impl Fn(Lines<'_>, &mut S) + Sync,
        mut apply: impl FnMut(Lines<'_>, &S),
    ) {
        let n = lines.len().div_ceil(CHUNK_LINES);
        let mut slots = self.slots.lock().expect("chunk summaries");
        if slots.len() < n.max(1) {
            slots.resize_with(n.max(1), Slot::default);
        }
        let chunk = |i: usize| lines.split_at(i * CHUNK_LINES).1.split_at(CHUNK_LINES).0;
        if self.threads < 2 || lines.len() < PARALLEL_MIN_LINES {
            let mut summary = slots[0].summary.lock().expect("chunk summary");
            for i in 0..n {
                judge(chunk(i), &mut summary);
                apply(chunk(i), &summary);
            }
            return;
        }
        let slots = &slots[..n];
        for s in slots {
            s.judged.store(false, Ordering::Relaxed);
        }
        let next = AtomicUsize::new(0);
        // Claims the next chunk and judges it; false when none is left.
        let judge_next = || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else {
                return false;
            };
            judge(chunk(i), &mut slot.summary.lock().expect("chunk summary"));
            slot.judged.store(true, Ordering::Release);
            true
        };
        let mut applied = 0;
        let mut apply_judged = || {
            while let Some(slot) = slots.get(applied) {
                if !slot.judged.load(Ordering::Acquire) {
                    return;
                }
                apply(chunk(applied), &slot.summary.lock().expect("chunk summary"));
                applied += 1;
            }
        };
        std::thread::scope(|s| {
            let helper = s.spawn(|| while judge_next() {});
            while judge_next() {
                apply_judged();
            }
            // The helper only judges: it cannot panic but by a bug, which is then this
            // thread's panic too.
            helper
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
        });
        apply_judged();
        debug_assert_eq!(applied, n, "every chunk applied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk is judged once and applied once, in file order, on one thread or two,
    /// for blocks below and above the size split between threads.
    #[test]
    fn every_chunk_is_applied_once_in_order() {
        for threads in [1, 2] {
            let p = Parallel::<Vec<usize>>::new(threads);
            for len in [0, 1, 255, 256, 257, PARALLEL_MIN_LINES + 1, 10_000] {
                let text: String = (0..len).map(|i| format!("{i}\n")).collect();
                let ranges = line_ranges(text.as_bytes());
                let lines = Lines::new(text.as_bytes(), &ranges);
                let mut seen = Vec::new();
                p.run(
                    lines,
                    |chunk, s| {
                        s.clear();
                        s.extend(
                            chunk
                                .iter()
                                .map(|l| std::str::from_utf8(l).unwrap().parse::<usize>().unwrap()),
                        );
                    },
                    |chunk, s| {
                        assert_eq!(chunk.len(), s.len());
                        seen.extend_from_slice(s);
                    },
                );
                assert_eq!(
                    seen,
                    (0..len).collect::<Vec<_>>(),
                    "{threads} threads, {len} lines"
                );
            }
        }
    }

    fn line_ranges(text: &[u8]) -> Vec<(usize, usize)> {
        let mut start = 0;
        let mut out = Vec::new();
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' {
                out.push((start, i));
                start = i + 1;
            }
        }
        out
    }
}
