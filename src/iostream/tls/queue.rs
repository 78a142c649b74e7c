//! A loop's queue of server handshake steps waiting to run.
//!
//! Answering a ClientHello is the costly step of a handshake (the key exchange and the
//! signature); the client's Finished costs less (its check, the session tickets), but
//! a storm brings thousands. A server stream whose handshake bytes arrive joins this
//! queue instead of running the step at once, and the queue runs them in turns of the
//! loop, each within a time budget: a turn runs steps until the budget is spent (at
//! least one), and the next turn comes after the loop has looked at its I/O again. So a storm of new
//! connections costs the open ones at most one budget of waiting per turn, instead of
//! the whole storm's crypto; the storm's connections are answered in order of arrival.
//!
//! With the handshakes on the blocking pool the queue hands them to it, at most
//! [`MAX_ON_POOL`] at a time per loop (past that they wait here, rather than fill the
//! pool's queue and be refused).

use super::IoStream;
use crate::iostream::WeakStream;
use crate::reactor::{IoLoop, StepEnd};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long one turn may spend answering ClientHellos (at least one is answered).
pub(crate) const BUDGET: Duration = Duration::from_micros(250);

/// ClientHellos one loop may have on the blocking pool at once.
const MAX_ON_POOL: usize = 64;

#[derive(Default)]
struct Queue {
    waiting: RefCell<VecDeque<WeakStream>>,
    /// A turn is queued on the loop.
    scheduled: Cell<bool>,
    /// Answers running on the blocking pool.
    on_pool: Cell<usize>,
}

/// Queues `s`, whose ClientHello is held, for an answer.
pub(super) fn enqueue(lp: &IoLoop, s: &IoStream) {
    let q = lp.local::<Queue>();
    q.waiting.borrow_mut().push_back(s.downgrade());
    schedule(lp, &q);
}

fn schedule(lp: &IoLoop, q: &Queue) {
    if q.scheduled.replace(true) {
        return;
    }
    lp.add_callback(turn);
}

/// Schedules the next turn after the loop's next look at its I/O. (A callback added
/// by a turn would run in the next round of the same iteration, and the loop runs up
/// to 64 rounds before it polls: a storm's turns would follow each other for up to
/// 64 budgets, some 16 ms, while the open connections' requests waited.)
fn schedule_after_io(lp: &IoLoop, q: &Queue) {
    if q.scheduled.replace(true) {
        return;
    }
    lp.before_wait(Rc::new(NextTurn));
}

struct NextTurn;

impl StepEnd for NextTurn {
    fn run(self: Rc<Self>, lp: &IoLoop) {
        lp.add_callback(turn);
    }
}

/// One turn: answers ClientHellos within the budget, and queues the next turn if any
/// are left.
fn turn(lp: &IoLoop) {
    let q = lp.local::<Queue>();
    q.scheduled.set(false);
    let start = Instant::now();
    loop {
        if q.on_pool.get() >= MAX_ON_POOL {
            // `pool_done` schedules the next turn.
            return;
        }
        let next = q.waiting.borrow_mut().pop_front();
        let Some(w) = next else { return };
        let Some(s) = w.upgrade() else { continue };
        s.answer_hello(lp);
        if start.elapsed() >= BUDGET {
            break;
        }
    }
    if !q.waiting.borrow().is_empty() {
        schedule_after_io(lp, &q);
    }
}

/// An answer went to the blocking pool.
pub(super) fn pool_started(lp: &IoLoop) {
    let q = lp.local::<Queue>();
    q.on_pool.set(q.on_pool.get() + 1);
}

/// An answer came back from the blocking pool.
pub(super) fn pool_done(lp: &IoLoop) {
    let q = lp.local::<Queue>();
    q.on_pool.set(q.on_pool.get().saturating_sub(1));
    if !q.waiting.borrow().is_empty() {
        schedule(lp, &q);
    }
}
