//! Commands that need several cores: MGET, MSET, DEL and EXISTS with keys on several
//! cores scatter a part to each owner and gather the parts (MGET's values back in key
//! order); DBSIZE, FLUSHALL and INFO ask every core (this core's part runs at once, so
//! the commands after it see it done). The reply fills the command's slot when the
//! last part is in; a part that gives no value (its core panicked or closed) makes the
//! reply an error.

use super::super::commands::{self, AllCores, Args, Multi};
use super::super::core::{Core, CoreReport, Stats};
use super::super::resp;
use super::super::store::Cond;
use super::{call_failed, sink, Conn, Slots};
use coreloop::{CallError, IoLoop};
use std::cell::RefCell;
use std::rc::Rc;

impl Conn {
    pub(super) fn multi(
        self: &Rc<Self>,
        lp: &IoLoop,
        m: Multi,
        args: Args<'_>,
        slots: &mut Slots,
        out: &mut Vec<u8>,
    ) {
        let core = &self.core;
        let step = m.step();
        let keys = (1..args.len()).step_by(step);
        let all_local =
            core.shards.len() == 1 || keys.clone().all(|i| core.owner(args.get(i)) == core.id);
        if all_local {
            let mut store = core.store.borrow_mut();
            let dst = sink(slots, out);
            match m {
                Multi::Mget => {
                    resp::array(dst, keys.len());
                    for i in keys {
                        resp::opt_bulk(dst, store.get(lp, args.get(i)));
                    }
                }
                Multi::Mset => {
                    for i in keys {
                        let (k, v) = (args.get(i), args.get(i + 1));
                        store.set(lp, k, v, None, Cond::Always);
                    }
                    dst.extend_from_slice(resp::OK);
                }
                Multi::Del | Multi::Exists => {
                    let mut n = 0;
                    for i in keys {
                        let hit = if m == Multi::Del {
                            store.del(lp, args.get(i))
                        } else {
                            store.exists(lp, args.get(i))
                        };
                        n += i64::from(hit);
                    }
                    resp::int(dst, n);
                }
            }
            return;
        }
        // Scatter: each owner gets its keys (in request order), with their positions.
        let mut parts: Vec<Part> = (0..core.shards.len()).map(|_| Part::new(m)).collect();
        for (pos, i) in keys.enumerate() {
            let owner = core.owner(args.get(i));
            let part = &mut parts[owner];
            part.positions.push(pos);
            part.keys.push(args.get(i).into());
            if step == 2 {
                part.values.push(args.get(i + 1).into());
            }
        }
        let seq = slots.push_pending();
        let nkeys = (args.len() - 1) / step;
        let g = Rc::new(RefCell::new(Gather::new(m, nkeys, self.clone(), seq)));
        // Counted first: the local part, merged at once, must not look like the last.
        g.borrow_mut().left = parts.iter().filter(|p| !p.keys.is_empty()).count();
        for (owner, part) in parts.into_iter().enumerate() {
            if part.keys.is_empty() {
                continue;
            }
            let positions = part.positions.clone();
            if owner == core.id {
                let answer = part.run(lp);
                g.borrow_mut().merge(&positions, Ok(answer), owner);
                continue;
            }
            Stats::add(&core.stats.forwarded, 1);
            let g = g.clone();
            lp.call_on(&core.shards[owner], move |lp| {
                if let Some(c) = Core::of(lp) {
                    Stats::add(&c.stats.served_for_others, 1);
                }
                part.run(lp)
            })
            .then(move |lp, r| {
                let done = g.borrow_mut().merge(&positions, r, owner);
                if let Some((conn, seq, reply)) = done {
                    conn.fill(lp, seq, reply);
                }
            });
        }
    }

    pub(super) fn all_cores(self: &Rc<Self>, lp: &IoLoop, a: AllCores, slots: &mut Slots) {
        let seq = slots.push_pending();
        let n = self.core.shards.len();
        let run = move |lp: &IoLoop| {
            if a == AllCores::Flushall {
                if let Some(core) = Core::of(lp) {
                    core.store.borrow_mut().clear(lp);
                }
            }
            CoreReport::of(lp)
        };
        let answers: Rc<RefCell<Answers>> = Rc::new(RefCell::new(vec![None; n]));
        let finish =
            move |me: &Rc<Conn>, lp: &IoLoop, answers: &[Option<Result<CoreReport, CallError>>]| {
                let mut out = Vec::new();
                let mut reports = Vec::new();
                for (core, a) in answers.iter().enumerate() {
                    match a {
                        Some(Ok(r)) => reports.push(*r),
                        Some(Err(e)) => {
                            me.fill(lp, seq, call_failed(core, e));
                            return;
                        }
                        None => {}
                    }
                }
                match a {
                    AllCores::Dbsize => {
                        resp::int(&mut out, reports.iter().map(|r| r.keys as i64).sum())
                    }
                    AllCores::Flushall => out.extend_from_slice(resp::OK),
                    AllCores::Info => resp::bulk(&mut out, commands::info(&reports).as_bytes()),
                }
                me.fill(lp, seq, out);
            };
        let finish = Rc::new(finish);
        // This core's part now, so later local commands come after it.
        answers.borrow_mut()[self.core.id] = Some(Ok(run(lp)));
        let left = Rc::new(std::cell::Cell::new(n - 1));
        if n == 1 {
            let me = self.clone();
            let finish = finish.clone();
            let answers = answers.clone();
            // Through the queue, like every gathered reply (the slot is already pending).
            lp.add_callback(move |lp| finish(&me, lp, &answers.borrow()));
            return;
        }
        for (core, h) in self.core.shards.iter().enumerate() {
            if core == self.core.id {
                continue;
            }
            let (me, finish, answers, left) =
                (self.clone(), finish.clone(), answers.clone(), left.clone());
            lp.call_on(h, run).then(move |lp, r| {
                answers.borrow_mut()[core] = Some(r);
                left.set(left.get() - 1);
                if left.get() == 0 {
                    let all = std::mem::take(&mut *answers.borrow_mut());
                    finish(&me, lp, &all);
                }
            });
        }
    }
}

/// Every core's part of a DBSIZE, FLUSHALL or INFO, as they come back.
type Answers = Vec<Option<Result<CoreReport, CallError>>>;

/// One owner's share of a multi-key command.
struct Part {
    m: Multi,
    keys: Vec<Box<[u8]>>,
    values: Vec<Box<[u8]>>,
    /// Where each key stands in the command (for MGET's reply order); stays home.
    positions: Vec<usize>,
}

/// What an owner answers for its part.
enum PartAnswer {
    Values(Vec<Option<Box<[u8]>>>),
    Count(i64),
    Done,
}

impl Part {
    fn new(m: Multi) -> Part {
        Part {
            m,
            keys: Vec::new(),
            values: Vec::new(),
            positions: Vec::new(),
        }
    }

    /// Runs on the owner.
    fn run(self, lp: &IoLoop) -> PartAnswer {
        let Some(core) = Core::of(lp) else {
            return PartAnswer::Done;
        };
        let mut store = core.store.borrow_mut();
        match self.m {
            Multi::Mget => PartAnswer::Values(
                self.keys
                    .iter()
                    .map(|k| store.get(lp, k).map(Box::from))
                    .collect(),
            ),
            Multi::Mset => {
                for (k, v) in self.keys.iter().zip(&self.values) {
                    store.set(lp, k, v, None, Cond::Always);
                }
                PartAnswer::Done
            }
            Multi::Del => {
                PartAnswer::Count(self.keys.iter().filter(|k| store.del(lp, k)).count() as i64)
            }
            Multi::Exists => {
                PartAnswer::Count(self.keys.iter().filter(|k| store.exists(lp, k)).count() as i64)
            }
        }
    }
}

/// The parts of a multi-key command coming back.
struct Gather {
    m: Multi,
    values: Vec<Option<Box<[u8]>>>,
    count: i64,
    failed: Option<Vec<u8>>,
    left: usize,
    conn: Option<Rc<Conn>>,
    seq: u64,
}

impl Gather {
    fn new(m: Multi, nkeys: usize, conn: Rc<Conn>, seq: u64) -> Gather {
        Gather {
            m,
            values: if m == Multi::Mget {
                vec![None; nkeys]
            } else {
                Vec::new()
            },
            count: 0,
            failed: None,
            left: 0,
            conn: Some(conn),
            seq,
        }
    }

    /// Adds a part; when it was the last, the connection, slot and reply.
    fn merge(
        &mut self,
        positions: &[usize],
        r: Result<PartAnswer, CallError>,
        owner: usize,
    ) -> Option<(Rc<Conn>, u64, Vec<u8>)> {
        match r {
            Ok(PartAnswer::Values(vs)) => {
                for (&p, v) in positions.iter().zip(vs) {
                    self.values[p] = v;
                }
            }
            Ok(PartAnswer::Count(n)) => self.count += n,
            Ok(PartAnswer::Done) => {}
            Err(e) => self.failed = Some(call_failed(owner, &e)),
        }
        self.left -= 1;
        if self.left > 0 {
            return None;
        }
        let reply = self.failed.take().unwrap_or_else(|| {
            let mut out = Vec::new();
            match self.m {
                Multi::Mget => {
                    resp::array(&mut out, self.values.len());
                    for v in &self.values {
                        resp::opt_bulk(&mut out, v.as_deref());
                    }
                }
                Multi::Mset => out.extend_from_slice(resp::OK),
                Multi::Del | Multi::Exists => resp::int(&mut out, self.count),
            }
            out
        });
        Some((self.conn.take()?, self.seq, reply))
    }
}
