//! Worker threads over a growing queue: the closure walk (plan.rs, one
//! narinfo per item) and the downloads (fetch/mod.rs, one NAR per item). Each
//! result is handled on the calling thread, which may queue more items.
//! The first error stops the rest: no item starts after it, running ones
//! finish (their results are dropped), and the error is returned.
//! [`Budget`] bounds what concurrent work may hold in memory at once.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

/// Run `work` over `seed` and every item `on_done` adds, on `jobs` (at
/// least 1) worker threads. `work` runs on the workers; `on_done(item,
/// output)` runs on the calling thread and returns the items to queue next.
pub fn run<T, R, E>(
    jobs: usize,
    seed: Vec<T>,
    work: impl Fn(&T) -> Result<R, E> + Sync,
    mut on_done: impl FnMut(T, R) -> Result<Vec<T>, E>,
) -> Result<(), E>
where
    T: Send,
    R: Send,
    E: Send,
{
    let jobs = jobs.max(1);
    let mut queue: VecDeque<T> = seed.into();
    let mut first_error: Option<E> = None;
    let (work_tx, work_rx) = mpsc::channel::<T>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<(T, Result<R, E>)>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (work_rx, done_tx, work) = (&work_rx, done_tx.clone(), &work);
            s.spawn(move || loop {
                // A poisoned lock means another worker panicked: stop.
                let next = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                // The queue's sender is gone: the run is over.
                let Ok(item) = next else { return };
                let r = work(&item);
                if done_tx.send((item, r)).is_err() {
                    return;
                }
            });
        }
        // If all workers die, the receiver sees it instead of waiting.
        drop(done_tx);
        let mut in_flight = 0usize;
        loop {
            // An item sent is an item started: a worker is free for it.
            while first_error.is_none() && in_flight < jobs {
                let Some(item) = queue.pop_front() else { break };
                if work_tx.send(item).is_err() {
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok((item, r)) = done_rx.recv() else { break };
            in_flight -= 1;
            if first_error.is_some() {
                continue;
            }
            match r.and_then(|r| on_done(item, r)) {
                Ok(next) => queue.extend(next),
                Err(e) => first_error = Some(e),
            }
        }
        // Idle workers see the closed queue and return.
        drop(work_tx);
    });
    first_error.map_or(Ok(()), Err)
}

/// A memory budget shared by concurrent work: each piece takes what it
/// declares before it allocates, and waits while others hold too much.
/// One piece always gets in when nothing is held, however large it is, so
/// a single item bigger than the budget still runs (alone).
pub struct Budget {
    total: u64,
    held: Mutex<u64>,
    freed: Condvar,
}

/// What one [`Budget::take`] holds; given back on drop.
pub struct Held<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget {
            total,
            held: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Wait until `bytes` fit beside what is held (or nothing is held).
    pub fn take(&self, bytes: u64) -> Held<'_> {
        // A poisoned lock means a worker panicked: the run ends anyway.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held > 0 && held.saturating_add(bytes) > self.total {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held = held.saturating_add(bytes);
        Held {
            budget: self,
            bytes,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = (self.budget.held.lock()).unwrap_or_else(|e| e.into_inner());
        *held -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_budget_admits_what_fits_and_one_oversized_piece_alone() {
        let b = Budget::new(10);
        let (peak, now) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for cost in [4u64, 4, 4, 4, 30, 1, 1] {
                let (b, peak, now) = (&b, &peak, &now);
                s.spawn(move || {
                    let _h = b.take(cost);
                    let n = now.fetch_add(cost as usize, Ordering::SeqCst) + cost as usize;
                    peak.fetch_max(n, Ordering::SeqCst);
                    assert!(n <= 10 || n == cost as usize, "{n} held with {cost} taken");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(cost as usize, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(*b.held.lock().unwrap(), 0);
        assert!(peak.load(Ordering::SeqCst) >= 30, "the oversized piece ran");
    }

    #[test]
    fn every_item_and_every_added_item_is_worked_on_once() {
        // Item n adds 2n and 2n+1 below 64: a binary tree of 63 items.
        let worked = Mutex::new(Vec::new());
        let mut handled = Vec::new();
        run(
            4,
            vec![1u32],
            |&n| {
                worked.lock().unwrap().push(n);
                Ok::<u32, String>(n * 10)
            },
            |n, r| {
                assert_eq!(r, n * 10);
                handled.push(n);
                Ok([2 * n, 2 * n + 1].into_iter().filter(|&c| c < 64).collect())
            },
        )
        .unwrap();
        let mut worked = worked.into_inner().unwrap();
        worked.sort();
        handled.sort();
        let all: Vec<u32> = (1..64).collect();
        assert_eq!(worked, all);
        assert_eq!(handled, all);
    }

    #[test]
    fn at_most_jobs_items_run_at_once() {
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        run(
            3,
            (0..30).collect(),
            |_: &u32| {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), ()>(())
            },
            |_, ()| Ok(Vec::new()),
        )
        .unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn one_job_works_in_queue_order() {
        let mut order = Vec::new();
        run(
            1,
            vec![1, 2, 3],
            |&n: &u32| Ok::<u32, ()>(n),
            |n, _| {
                order.push(n);
                Ok(if n == 1 { vec![4, 5] } else { Vec::new() })
            },
        )
        .unwrap();
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        let started = AtomicUsize::new(0);
        let r = run(
            1,
            (0..100).collect(),
            |&n: &u32| {
                started.fetch_add(1, Ordering::SeqCst);
                if n == 5 {
                    Err(format!("item {n} failed"))
                } else {
                    Ok(())
                }
            },
            |_, ()| Ok(Vec::new()),
        );
        assert_eq!(r, Err("item 5 failed".to_string()));
        // Items 0 to 5, none after the failing one.
        assert_eq!(started.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn an_error_from_on_done_stops_the_rest_too() {
        let mut handled = 0;
        let r = run(
            1,
            vec![1u32, 2, 3],
            |&n| Ok::<u32, String>(n),
            |n, _| {
                handled += 1;
                if n == 2 {
                    Err("store refused 2".to_string())
                } else {
                    Ok(Vec::new())
                }
            },
        );
        assert_eq!(r, Err("store refused 2".to_string()));
        assert_eq!(handled, 2);
    }

    #[test]
    fn nothing_to_do_returns_at_once() {
        let r = run(
            4,
            Vec::<u32>::new(),
            |_| Ok::<(), ()>(()),
            |_, ()| Ok(Vec::new()),
        );
        assert_eq!(r, Ok(()));
    }
}
