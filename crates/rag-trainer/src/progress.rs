//! Progress on stderr: a bar with rate and ETA on a terminal, a plain line every few percent
//! otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    total: u64,
    first: u64,
    start: Instant,
    every: u64,
}

impl Progress {
    pub(crate) fn new(label: &str, first: u64, total: u64, enabled: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps {per_sec} eta {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar.set_position(first);
            bar.reset_eta();
            bar
        });
        let every = (total / 10).max(1);
        Self { bar, plain: enabled && !terminal, label: label.into(), total, first, start: Instant::now(), every }
    }

    pub(crate) fn update(&self, step: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(message.to_string());
        } else if self.plain && (step.is_multiple_of(self.every) || step == self.total) {
            let done = (step - self.first) as f64;
            let elapsed = self.start.elapsed().as_secs_f64();
            let rate = done / elapsed.max(1e-9);
            let eta = (self.total - step) as f64 / rate.max(1e-9);
            eprintln!(
                "{} step {step}/{} {message} {rate:.2} steps/s elapsed {elapsed:.0}s eta {eta:.0}s",
                self.label, self.total
            );
        }
    }

    pub(crate) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.plain => eprintln!("{line}"),
            None => {}
        }
    }

    /// A line that is always shown (through the bar when there is one).
    pub(crate) fn announce(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
