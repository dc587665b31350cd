//! Progress of long operations (store copies, compaction): a live line on a
//! terminal, and a log event at every quarter for logs and the appliance.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: u64,
    last_quarter: u64,
    last_draw: Option<Instant>,
    terminal: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Self {
        Self { what, total, last_quarter: 0, last_draw: None, terminal: std::io::stderr().is_terminal() }
    }

    /// Reports `done` units out of the total.
    pub fn update(&mut self, done: u64) {
        let pct = done.saturating_mul(100).checked_div(self.total).unwrap_or(100);
        let quarter = pct / 25;
        if quarter > self.last_quarter {
            self.last_quarter = quarter;
            tracing::info!(operation = self.what, percent = pct, done, total = self.total, "progress");
        }
        if self.terminal && self.last_draw.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) {
            self.last_draw = Some(Instant::now());
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            eprint!("\r{}: {pct:3}% ({:.1}/{:.1} MiB)", self.what, mib(done), mib(self.total));
            let _ = std::io::stderr().flush();
        }
    }

    /// Ends the live line.
    pub fn finish(mut self) {
        self.update(self.total);
        if self.terminal {
            eprintln!();
        }
    }
}

/// Copies `src` to `dst` (created new) in 1 MiB chunks, reporting progress.
pub fn copy_file(what: &'static str, src: &std::path::Path, dst: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut input = std::fs::File::open(src)?;
    let total = input.metadata()?.len();
    let mut output = std::fs::OpenOptions::new().write(true).create_new(true).open(dst)?;
    let mut progress = Progress::new(what, total);
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
        done += n as u64;
        progress.update(done);
    }
    progress.finish();
    Ok(done)
}
