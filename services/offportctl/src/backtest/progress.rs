//! Progress of a long step, on a terminal or in a log.

use super::*;

/// Progress of a long step: a bar on a terminal; elsewhere (CI, a Kubernetes Job, a pipe) a
/// line on stderr every 10 s with the count, the rate and the time left, and one at the end.
pub(crate) struct Progress {
    bar: ProgressBar,
    lines: bool,
    what: String,
    started: std::time::Instant,
    last_line: std::cell::Cell<std::time::Instant>,
}

/// Seconds between progress lines when there is no terminal.
pub(super) const PROGRESS_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Progress {
    pub(super) fn set_length(&self, total: u64) {
        self.bar.set_length(total);
    }

    pub(super) fn set_position(&self, done: u64) {
        self.bar.set_position(done);
        if self.lines && self.last_line.get().elapsed() >= PROGRESS_LINE_EVERY {
            self.last_line.set(std::time::Instant::now());
            eprintln!("{}", self.line(done));
        }
    }

    /// `what: done/total (pct), rate/s, ETA s`.
    pub(super) fn line(&self, done: u64) -> String {
        let total = self.bar.length().unwrap_or(0);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / seconds;
        let left = if rate > 0.0 && total > done {
            format!("{:.0} s", (total - done) as f64 / rate)
        } else {
            "-".to_string()
        };
        format!(
            "{}: {done}/{total} records ({:.0} %), {rate:.0} records/s, ETA {left}",
            self.what,
            done as f64 * 100.0 / total.max(1) as f64
        )
    }

    /// Clears the bar; without a terminal, a last line says what was done and how fast.
    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
        if self.lines {
            eprintln!("{}", self.line(self.bar.position()));
        }
    }
}

pub(super) fn bar(total: u64, quiet: bool, what: &str) -> Progress {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = if quiet || !terminal {
        let hidden = ProgressBar::hidden();
        hidden.set_length(total);
        hidden
    } else {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{what} [{{bar:40}}] {{human_pos}}/{{human_len}} {{per_sec}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    Progress {
        bar,
        lines: !quiet && !terminal,
        what: what.to_string(),
        started: std::time::Instant::now(),
        last_line: std::cell::Cell::new(std::time::Instant::now()),
    }
}
