//! A stable-toolchain fuzzing harness: mutated real files fed to a parser, each input checked for
//! a panic, a hang and the largest single allocation it made, and each rejection for an error
//! that names what it read.
//!
//! `cargo fuzz` needs a nightly toolchain; this runs under `cargo test`. The tests in
//! `tests/parsers.rs` take `RAG_FUZZ_CASES` inputs per parser (default [`DEFAULT_CASES`], what
//! CI runs); the documented run (docs/reliability.md) takes a million:
//!
//! ```sh
//! RAG_FUZZ_CASES=1000000 cargo test --release -p rag-fuzz -- --nocapture --test-threads 2
//! ```
//!
//! Inputs are seeded: the same count reruns the same inputs, and an input that panics is written
//! to `target/fuzz-failures/` before the test fails.
//!
//! [`CountingAllocator`] is `unsafe` code (as the memory maps of `rag-hf` and `rag-index` are):
//! a test binary installs it as its global allocator to measure what each input allocates.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Inputs per parser when `RAG_FUZZ_CASES` is not set.
pub const DEFAULT_CASES: usize = 3000;

/// A single allocation above this is refused (the process aborts with the size): no input may
/// make a parser ask for this much, whatever a header claims.
pub const ALLOCATION_CAP: usize = 1 << 30;

/// The longest one input may take before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(5);

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, recording the largest single allocation of each thread and refusing
/// any above [`ALLOCATION_CAP`].
pub struct CountingAllocator;

// SAFETY: every call is forwarded to `System` unchanged, except that a request above the cap
// returns null, which `GlobalAlloc` allows (the caller then reports the failure). The
// thread-local is const-initialized without a destructor, so reading it never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_CAP {
            return std::ptr::null_mut();
        }
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: as `alloc`; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The largest single allocation this thread made since the last [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}

/// Starts a new measurement of [`largest`].
pub fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

/// Inputs per parser: `RAG_FUZZ_CASES`, else [`DEFAULT_CASES`].
pub fn cases() -> usize {
    std::env::var("RAG_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// What a run over one parser saw.
#[derive(Debug, Clone, PartialEq)]
pub struct FuzzReport {
    /// The parser's name.
    pub parser: String,
    /// Inputs run.
    pub inputs: usize,
    /// Inputs the parser accepted.
    pub accepted: usize,
    /// Inputs it refused with an error.
    pub rejected: usize,
    /// The largest single allocation any input made, in bytes.
    pub largest_allocation: usize,
    /// The largest input, in bytes.
    pub largest_input: usize,
    /// The slowest input.
    pub slowest: Duration,
}

impl std::fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs ({} accepted, {} rejected), no panic or hang; largest allocation {} bytes \
             (largest input {} bytes), slowest input {:.1} ms",
            self.parser,
            self.inputs,
            self.accepted,
            self.rejected,
            self.largest_allocation,
            self.largest_input,
            self.slowest.as_secs_f64() * 1e3
        )
    }
}

/// Byte strings that parsers treat specially: JSON and TSV syntax, extreme numbers.
const TOKENS: [&[u8]; 22] = [
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\t",
    b"\n",
    b"\r\n",
    b"\\",
    b"\\u0000",
    b"null",
    b"-1",
    b"0",
    b"18446744073709551615",
    b"18446744073709551616",
    b"9223372036854775807",
    b"1e400",
    b"4294967296",
    b"\"\"",
    b"\xff\xfe",
];

/// A seeded mutator of byte strings (splitmix64).
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    /// One to four mutations of `input`, each among: flip a bit, set a byte, insert a token or
    /// random bytes, delete a range, duplicate a range, truncate, splice in part of `other`.
    /// Mutations land in the first `focus` bytes (a file's header) when `focus` is given.
    pub fn mutate(&mut self, input: &[u8], other: &[u8], focus: Option<usize>) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let span = focus.map_or(out.len(), |f| f.min(out.len()));
            let at = self.below(span + 1);
            match self.below(8) {
                0 if !out.is_empty() && at < out.len() => out[at] ^= 1 << self.below(8),
                1 if at < out.len() => out[at] = self.next() as u8,
                2 => {
                    let token = TOKENS[self.below(TOKENS.len())];
                    out.splice(at..at, token.iter().copied());
                }
                3 => {
                    let n = 1 + self.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
                    out.splice(at..at, bytes);
                }
                4 => {
                    let end = (at + 1 + self.below(16)).min(out.len());
                    if at < end {
                        out.drain(at..end);
                    }
                }
                5 => {
                    let end = (at + 1 + self.below(32)).min(out.len());
                    if at < end {
                        let copy = out[at..end].to_vec();
                        out.splice(at..at, copy);
                    }
                }
                6 => out.truncate(at),
                _ if !other.is_empty() => {
                    let from = self.below(other.len());
                    let end = (from + 1 + self.below(64)).min(other.len());
                    out.splice(at..at, other[from..end].iter().copied());
                }
                _ => {}
            }
        }
        out
    }
}

/// Runs `parse` on the `seeds` (real files) and then on `cases − seeds` mutations of them,
/// drawn from `seed`. `parse` returns `Ok` for an accepted input and `Err(message)` for a refused
/// one, after checking that the message names what it read. A panic (the input is saved under
/// `target/fuzz-failures/`) or an input slower than [`HANG`] fails the run. The report is
/// printed.
pub fn fuzz(
    parser: &str,
    seeds: &[Vec<u8>],
    focus: Option<usize>,
    cases: usize,
    seed: u64,
    mut parse: impl FnMut(&[u8]) -> Result<(), String>,
) -> FuzzReport {
    assert!(!seeds.is_empty(), "{parser}: no seed files");
    let mut mutator = Mutator::new(seed);
    let mut report = FuzzReport {
        parser: parser.to_string(),
        inputs: 0,
        accepted: 0,
        rejected: 0,
        largest_allocation: 0,
        largest_input: 0,
        slowest: Duration::ZERO,
    };
    for i in 0..cases.max(seeds.len()) {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let (a, b) = (mutator.below(seeds.len()), mutator.below(seeds.len()));
            // Mutations of mutations reach further from the seeds.
            let once = mutator.mutate(&seeds[a], &seeds[b], focus);
            if mutator.below(2) == 0 { mutator.mutate(&once, &seeds[b], focus) } else { once }
        };
        reset_largest();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| parse(&input)));
        let elapsed = started.elapsed();
        report.largest_allocation = report.largest_allocation.max(largest());
        report.largest_input = report.largest_input.max(input.len());
        report.slowest = report.slowest.max(elapsed);
        report.inputs += 1;
        match outcome {
            Ok(Ok(())) => report.accepted += 1,
            Ok(Err(message)) => {
                assert!(!message.trim().is_empty(), "{parser}: input {i} was refused with an empty message");
                report.rejected += 1;
            }
            Err(panic) => {
                let saved = save_failure(parser, i, &input);
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                panic!("{parser}: input {i} panicked ({what}); saved to {}", saved.display());
            }
        }
        if elapsed > HANG {
            let saved = save_failure(parser, i, &input);
            panic!("{parser}: input {i} took {elapsed:?}; saved to {}", saved.display());
        }
    }
    println!("{report}");
    report
}

fn save_failure(parser: &str, i: usize, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{parser}-{i}.bin"));
    let _ = std::fs::write(&path, input);
    path
}
