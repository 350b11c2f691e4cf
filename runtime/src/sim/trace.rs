//! The run's trace: a digest of every step (always), and the text of the steps when asked
//! for (printed as they happen, or the last few kept for a failure report).

use crate::time::Time;
use std::collections::VecDeque;

/// How many trace lines a failure report carries.
pub(crate) const TAIL_LINES: usize = 30;

/// What the simulation does with its trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// Keep only the digest (fastest). A failing run is replayed with `Tail` to report lines.
    #[default]
    Quiet,
    /// Keep the last lines for the failure report.
    Tail,
    /// Print every line to stdout as it happens, and keep the last lines.
    Print,
}

#[derive(Debug)]
pub(crate) struct Trace {
    mode: TraceMode,
    tail: VecDeque<String>,
    digest: u64,
}

impl Trace {
    pub(crate) fn new(mode: TraceMode) -> Self {
        Trace {
            mode,
            tail: VecDeque::new(),
            digest: 0xCBF2_9CE4_8422_2325,
        }
    }

    /// Fold a number into the digest (FNV-1a over its bytes).
    pub(crate) fn mix(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.digest ^= u64::from(b);
            self.digest = self.digest.wrapping_mul(0x0100_0000_01B3);
        }
    }

    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    /// Record one line, formatted only when lines are wanted.
    pub(crate) fn line(&mut self, step: u64, now: Time, text: impl FnOnce() -> String) {
        if self.mode == TraceMode::Quiet {
            return;
        }
        let line = format!("#{step:<6} {now} {}", text());
        if self.mode == TraceMode::Print {
            println!("{line}");
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
