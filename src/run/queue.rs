//! Which cell a run's worker computes next. A run computes its cells on `--jobs` workers at once
//! (each with its own session), taking them in plan order; a cell waits while a cell it depends
//! on is still waiting or being computed by this run, so an evaluation never starts before its
//! training here. Runners in other processes are kept apart by the store's cell locks, as before.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::suite::cells::{inputs, Cell};

pub(super) struct Queue<'a> {
    todo: &'a [Cell],
    by_key: BTreeMap<&'a str, &'a Cell>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Cells not taken yet, as indices into `todo`, in plan order.
    pending: Vec<usize>,
    pending_keys: HashSet<String>,
    /// Cells a worker of this run is computing.
    running: HashSet<String>,
    /// Set when a worker met an error that ends the run: the others take no new cell.
    stopped: bool,
}

impl<'a> Queue<'a> {
    /// `all` is the plan's every cell (dependencies are looked up there), `todo` this run's.
    pub(super) fn new(todo: &'a [Cell], all: &'a [Cell]) -> Self {
        let state = State {
            pending: (0..todo.len()).collect(),
            pending_keys: todo.iter().map(|c| c.key.clone()).collect(),
            ..State::default()
        };
        Queue {
            todo,
            by_key: all.iter().map(|c| (c.key.as_str(), c)).collect(),
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    // A worker that panicked holding the lock left the state as it was between two whole updates
    // (every update is a few set operations), so the state is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next cell for a worker: the first one in plan order whose inputs no worker of this run
    /// still has to compute, waiting while every cell left waits on one being computed. None
    /// when nothing is left, or the run stopped.
    pub(super) fn next(&self) -> Result<Option<&'a Cell>> {
        let mut st = self.lock();
        loop {
            if st.stopped || st.pending.is_empty() {
                return Ok(None);
            }
            let ready = st.pending.iter().position(|&i| {
                inputs(&self.todo[i], &self.by_key)
                    .iter()
                    .all(|d| !st.running.contains(&d.key) && !st.pending_keys.contains(&d.key))
            });
            if let Some(pos) = ready {
                let cell = &self.todo[st.pending.remove(pos)];
                st.pending_keys.remove(&cell.key);
                st.running.insert(cell.key.clone());
                return Ok(Some(cell));
            }
            if st.running.is_empty() {
                // Every cell left waits on another cell left: the plan's order is broken.
                return Err(Error::Internal(format!(
                    "{} cells wait on each other (the first: {})",
                    st.pending.len(),
                    self.todo[st.pending[0]].key
                )));
            }
            st = self.changed.wait(st).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// A worker is done with `cell` (recorded, failed, or left to another runner).
    pub(super) fn finish(&self, cell: &Cell) {
        self.lock().running.remove(&cell.key);
        self.changed.notify_all();
    }

    /// No worker takes another cell.
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn plan() -> Vec<Cell> {
        crate::suite::cells::tests::plan().cells
    }

    #[test]
    fn one_worker_takes_the_plan_in_order() {
        let cells = plan();
        let q = Queue::new(&cells, &cells);
        let mut order = Vec::new();
        while let Some(c) = q.next().unwrap() {
            order.push(c.key.clone());
            q.finish(c);
        }
        assert_eq!(order, cells.iter().map(|c| c.key.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn a_cell_waits_while_its_input_is_being_computed() {
        let cells = plan();
        let by_key: BTreeMap<&str, &Cell> = cells.iter().map(|c| (c.key.as_str(), c)).collect();
        let q = Queue::new(&cells, &cells);
        // The first cell with an evaluation depending on it.
        let first = q.next().unwrap().unwrap();
        let depends_on_first = |c: &Cell| inputs(c, &by_key).iter().any(|d| d.key == first.key);
        assert!(cells.iter().any(depends_on_first), "the plan evaluates the first cell");
        let first_done = AtomicBool::new(false);
        let taken = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut n = 0;
                while let Some(c) = q.next().unwrap() {
                    assert!(
                        !depends_on_first(c) || first_done.load(Ordering::SeqCst),
                        "{} started early",
                        c.key
                    );
                    n += 1;
                    q.finish(c);
                }
                n
            });
            // The other worker takes every cell that does not wait on the first, then waits.
            std::thread::sleep(std::time::Duration::from_millis(100));
            first_done.store(true, Ordering::SeqCst);
            q.finish(first);
            worker.join().unwrap()
        });
        assert_eq!(taken, cells.len() - 1);
    }

    #[test]
    fn a_stopped_queue_hands_out_nothing() {
        let cells = plan();
        let q = Queue::new(&cells, &cells);
        q.stop();
        assert!(q.next().unwrap().is_none());
    }
}
