//! Progress bars for long builds and saves. indicatif draws only when stderr is a terminal, so
//! tests and logs stay clean; bars are created only for work large enough to be worth watching.

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many items (vectors, passages) no bar is shown.
pub(crate) const MIN_ITEMS: u64 = 50_000;
/// Below this many bytes no bar is shown.
pub(crate) const MIN_BYTES: u64 = 64 << 20;

/// A bar counting items, hidden for small jobs.
pub(crate) fn items_bar(len: u64, message: &'static str) -> ProgressBar {
    if len < MIN_ITEMS {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {human_pos}/{human_len} ({per_sec}, eta {eta})")
            .expect("valid template"),
    );
    bar.set_message(message);
    bar
}

/// A bar counting bytes, hidden for small jobs; `len` 0 means unknown.
pub(crate) fn bytes_bar(len: u64, message: &'static str) -> ProgressBar {
    if len < MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .expect("valid template"),
    );
    bar.set_message(message);
    bar
}
