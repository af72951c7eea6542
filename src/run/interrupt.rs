//! SIGINT, SIGTERM and SIGHUP during a run: the process still ends at once (every record and
//! checkpoint is written atomically, so nothing stored is lost or half-written), but first it stops
//! the processes it started (the run of another precision's cells), so none goes on to record a cell
//! after its parent is gone, and it says how far the run got and how to go on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// The one handler of this process (a second `install` returns it).
static HANDLER: OnceLock<Progress> = OnceLock::new();

/// Set once a signal is being handled: the process is about to exit.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Blocks for good when a signal is being handled, so a thread that saw its child end because the
/// handler stopped it does not go on to report that as a failure; the handler ends the process.
pub(crate) fn hold_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

/// Process ids of the children this process is waiting on.
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// How long a stopped child may take to end before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(30);

/// A child process the handler stops with this one, for as long as the guard lives (drop it once
/// the child has been waited for).
pub(crate) struct ChildGuard(i32);

/// Registers the running child `pid`.
pub(crate) fn watch_child(pid: u32) -> ChildGuard {
    let pid = i32::try_from(pid).unwrap_or(i32::MAX);
    children().push(pid);
    ChildGuard(pid)
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        children().retain(|&p| p != self.0);
    }
}

fn children() -> std::sync::MutexGuard<'static, Vec<i32>> {
    // A panic while holding the list cannot leave it inconsistent (pushes and retains only).
    CHILDREN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        // A child that has already ended is no error.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Sends `sig` to every watched child and waits until each has been reaped by the thread waiting on
/// it (killing those still there after [`CHILD_GRACE`]); how many there were.
fn stop_children(sig: rustix::process::Signal) -> usize {
    let pids = children().clone();
    for &pid in &pids {
        signal(pid, sig);
    }
    let deadline = Instant::now() + CHILD_GRACE;
    let mut killed = false;
    loop {
        let left = children().clone();
        // Once killed, a child is gone whether or not its waiter has let go of it yet.
        if left.is_empty() || (killed && Instant::now() > deadline + Duration::from_secs(5)) {
            break;
        }
        if Instant::now() > deadline && !killed {
            for &pid in &left {
                signal(pid, rustix::process::Signal::KILL);
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// Installs the handler for a run of `todo` cells started by `command` (once per process: a later
/// call returns the first one's progress).
pub fn install(todo: usize, command: String) -> Progress {
    HANDLER
        .get_or_init(|| {
            let progress = Progress::default();
            let p = progress.clone();
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
                Ok(mut signals) => {
                    std::thread::spawn(move || {
                        if let Some(sig) = signals.forever().next() {
                            STOPPING.store(true, Ordering::SeqCst);
                            let (name, forward) = match sig {
                                SIGINT => ("SIGINT", rustix::process::Signal::INT),
                                SIGHUP => ("SIGHUP", rustix::process::Signal::HUP),
                                _ => ("SIGTERM", rustix::process::Signal::TERM),
                            };
                            let stopped = stop_children(forward);
                            eprintln!(
                                "\n{name}: stopped. This run recorded {} of its {todo} cells; the cell in \
                                 progress was not recorded (an SGD cell keeps its last finished epoch and \
                                 resumes there).{} Every record written is whole. To go on, run the same \
                                 command again: `{command}`",
                                p.recorded.load(Ordering::SeqCst),
                                if stopped > 0 {
                                    " The run of the other precision's cells was stopped with it."
                                } else {
                                    ""
                                }
                            );
                            std::process::exit(128 + sig);
                        }
                    });
                }
                // Without a handler the signal ends the run as before, only without the message.
                Err(e) => eprintln!("warning: cannot watch for SIGINT/SIGTERM/SIGHUP ({e})"),
            }
            progress
        })
        .clone()
}
