#![allow(clippy::unwrap_used, reason = "tests")]
use super::*;

#[test]
fn without_a_terminal_progress_is_a_line_with_rate_and_time_left() {
    let progress = bar(1_000, false, "replaying");
    progress.set_length(1_000);
    let line = progress.line(250);
    assert!(
        line.starts_with("replaying: 250/1000 records (25 %), "),
        "{line}"
    );
    assert!(line.contains(" records/s, ETA "), "{line}");
    // Nothing done yet: no time left to estimate.
    assert!(progress.line(0).ends_with("ETA -"), "{}", progress.line(0));
}
