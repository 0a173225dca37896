//! A property test of the file follower against a model: random sequences of writes (whole
//! and partial lines), rename rotation, copytruncate, delete + re-create, and restarts from
//! the last committed checkpoint. Whatever happens, the committed lines equal the written
//! lines, in order: nothing lost, nothing doubled.

use regwatch::sources::tail::follower::{Follower, StartAt};
use std::io::Write;
use std::path::PathBuf;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct World {
    dir: tempfile::TempDir,
    path: PathBuf,
    written: Vec<String>,
    /// A line written without its newline yet.
    pending: Option<String>,
    rotations: usize,
    seq: usize,
}

impl World {
    fn append(&mut self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn write(&mut self, rng: &mut Rng) {
        if let Some(rest) = self.pending.take() {
            self.append(&format!("{rest}\n"));
        }
        for _ in 0..rng.below(20) {
            self.seq += 1;
            // Varying lengths, some far past the read chunk of a single line.
            let line = format!("line {} {}", self.seq, "x".repeat(rng.below(200) as usize));
            self.written.push(line.clone());
            if rng.below(10) == 0 {
                // Half a line now, the rest later (a writer's split write).
                let cut = line.len() / 2;
                self.append(&line[..cut]);
                self.pending = Some(line[cut..].to_string());
                return;
            }
            self.append(&format!("{line}\n"));
        }
    }

    fn rotated(&mut self) -> PathBuf {
        self.rotations += 1;
        self.dir.path().join(format!("app.log.{}", self.rotations))
    }
}

/// Polls until the follower reaches the end of everything, committing after each call.
fn drain(
    f: &mut Follower,
    committed: &mut Vec<String>,
    saved: &mut Option<regwatch::model::Checkpoint>,
    budget: usize,
) {
    loop {
        let mut lines = Vec::new();
        let p = f
            .poll(budget, &mut |l| {
                lines.push(String::from_utf8(l.to_vec()).unwrap())
            })
            .unwrap();
        committed.extend(lines);
        *saved = f.checkpoint().or(saved.take());
        if std::env::var("TAIL_MODEL_DEBUG").is_ok() {
            eprintln!(
                "  drained to {} {:?}",
                committed.len(),
                saved.as_ref().map(|c| (c.ino, c.offset, c.fp_len))
            );
        }
        if !p.more {
            return;
        }
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let mut w = World {
        dir,
        path: path.clone(),
        written: Vec::new(),
        pending: None,
        rotations: 0,
        seq: 0,
    };
    w.append("");
    let mut follower = Follower::new("app", &path, StartAt::Beginning, 1 << 20, None);
    let mut committed: Vec<String> = Vec::new();
    let mut saved = None;
    // The follower has seen the (empty) file before anything happens to it.
    drain(&mut follower, &mut committed, &mut saved, 1 << 20);
    // A rotation is only seen at the end of the file: at most one between full reads (two
    // renames in a row would hide the middle file from any follower).
    let mut rotated_since_drain = false;
    let mut looked_nonempty = false;
    let mut trace: Vec<String> = Vec::new();
    for _ in 0..80 {
        let op = rng.below(10);
        trace.push(format!(
            "op{op} written={} committed={} pending={}",
            w.written.len(),
            committed.len(),
            w.pending.is_some()
        ));
        if std::env::var("TAIL_MODEL_DEBUG").is_ok() {
            eprintln!(
                "{} exists={} rotated={}",
                trace.last().unwrap(),
                path.exists(),
                rotated_since_drain
            );
        }
        match op {
            0..=3 => {
                // A file created by this write must be looked at before it can be rotated
                // away (a file that comes and goes between two looks is invisible).
                if !path.exists() {
                    rotated_since_drain = true;
                }
                w.write(&mut rng)
            }
            4 if !rotated_since_drain && w.pending.is_none() && path.exists() => {
                let to = w.rotated();
                std::fs::rename(&path, to).unwrap();
                rotated_since_drain = true;
            }
            // copytruncate can only be followed if the follower saw the file with content:
            // lines written to a file it last saw empty and truncated before it looks again
            // exist only in the copy, which nothing identifies (a documented limit).
            5 if !rotated_since_drain
                && w.pending.is_none()
                && path.exists()
                && looked_nonempty =>
            {
                let to = w.rotated();
                std::fs::copy(&path, &to).unwrap();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                rotated_since_drain = true;
            }
            6 if !rotated_since_drain && w.pending.is_none() && path.exists() => {
                // Renamed away and deleted while the follower still has it open; only safe
                // to restart after the follower has read it (a deleted file cannot be found).
                drain(&mut follower, &mut committed, &mut saved, 1 << 20);
                let to = w.rotated();
                std::fs::rename(&path, &to).unwrap();
                drain(&mut follower, &mut committed, &mut saved, 1 << 20);
                std::fs::remove_file(&to).unwrap();
                rotated_since_drain = true;
            }
            7 => {
                // Restart: everything not committed is forgotten.
                follower = Follower::new("app", &path, StartAt::Beginning, 1 << 20, saved.clone());
            }
            _ => {
                let budget = [64, 300, 4096, 1 << 20][rng.below(4) as usize];
                drain(&mut follower, &mut committed, &mut saved, budget);
                rotated_since_drain = false;
                looked_nonempty = std::fs::metadata(&path)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false);
            }
        }
    }
    if let Some(rest) = w.pending.take() {
        w.append(&format!("{rest}\n"));
    }
    drain(&mut follower, &mut committed, &mut saved, 1 << 20);
    drain(&mut follower, &mut committed, &mut saved, 1 << 20);
    if committed.len() != w.written.len() {
        let missing: Vec<&String> = w
            .written
            .iter()
            .filter(|l| !committed.contains(l))
            .collect();
        let short: Vec<String> = missing
            .iter()
            .map(|l| l.chars().take(14).collect())
            .collect();
        let first = committed.iter().zip(&w.written).position(|(a, b)| a != b);
        if let Some(i) = first {
            let c: Vec<String> = committed[i.saturating_sub(3)..(i + 12).min(committed.len())]
                .iter()
                .map(|l| l.chars().take(9).collect())
                .collect();
            eprintln!("COMMITTED AROUND {c:?}");
        }
        panic!(
            "seed {seed}: count differs: {} vs {}; missing {short:?}; first divergence {first:?}\n{}",
            committed.len(),
            w.written.len(),
            trace.join("\n")
        );
    }
    for (i, (a, b)) in committed.iter().zip(&w.written).enumerate() {
        assert_eq!(a, b, "seed {seed}: line {i} differs");
    }
}

#[test]
fn random_writes_rotations_truncations_and_restarts_match_the_model() {
    if let Ok(seed) = std::env::var("TAIL_MODEL_SEED") {
        return run(seed.parse().unwrap());
    }
    for seed in 1..=300u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    }
}
