//! SIGINT and SIGTERM during a run: the process still ends at once (every record and checkpoint is
//! written atomically, so nothing stored is lost or half-written), but first it says how far the
//! run got and how to go on, instead of ending with no word.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Cells this run has recorded so far, for the message.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    pub recorded: Arc<AtomicUsize>,
}

impl Progress {
    pub(crate) fn recorded_one(&self) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
    }
}

/// Installs the handler for a run of `todo` cells started by `command`.
pub fn install(todo: usize, command: String) -> Progress {
    let progress = Progress::default();
    let p = progress.clone();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]);
    match signals {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let name = if sig == signal_hook::consts::SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    eprintln!(
                        "\n{name}: stopped. This run recorded {} of its {todo} cells; the cell in progress was \
                         not recorded (an SGD cell keeps its last finished epoch and resumes there). Every \
                         record written is whole. To go on, run the same command again: `{command}`",
                        p.recorded.load(Ordering::SeqCst)
                    );
                    std::process::exit(128 + sig);
                }
            });
        }
        // Without a handler the signal ends the run as before, only without the message.
        Err(e) => eprintln!("warning: cannot watch for SIGINT/SIGTERM ({e})"),
    }
    progress
}
