//! Progress lines on stderr while an incident runs in the foreground.

use crate::executor::{Progress, Reporter};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A reporter that prints transitions as they happen and long waits at most once a
/// second, each line stamped with the time since the run started.
pub fn terminal() -> Reporter {
    let start = Instant::now();
    let last_wait = Arc::new(Mutex::new(None::<Instant>));
    Arc::new(move |p: &Progress| {
        let t = start.elapsed().as_secs_f64();
        match p {
            Progress::Transition { from, to, event, note, rejected } => {
                let what = if let Some(r) = rejected {
                    format!("{event} rejected in {from}: {r}")
                } else if from == to {
                    format!("{from}: {event}")
                } else {
                    format!("{from} → {to}  ({event})")
                };
                eprintln!("[{t:7.2}s] {what}{}", note.as_ref().map(|n| format!("\n            {n}")).unwrap_or_default());
            }
            Progress::Waiting { what, elapsed, limit } => {
                let mut last = last_wait.lock().expect("progress lock");
                if last.map(|l| l.elapsed().as_millis() >= 1000).unwrap_or(true) {
                    *last = Some(Instant::now());
                    eprintln!("[{t:7.2}s]   … {what} ({:.1}s of {:.1}s)", elapsed.as_secs_f64(), limit.as_secs_f64());
                }
            }
            Progress::Flush(f) => {
                let mut last = last_wait.lock().expect("progress lock");
                if last.map(|l| l.elapsed().as_millis() >= 500).unwrap_or(true) {
                    *last = Some(Instant::now());
                    eprintln!("[{t:7.2}s]   … flush: {} scanned, {} deleted, {} latency pauses", f.scanned, f.deleted, f.pauses);
                }
            }
            Progress::Info(s) => eprintln!("[{t:7.2}s] {s}"),
        }
    })
}
