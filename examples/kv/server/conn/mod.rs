//! One RESP connection: parses commands where they lie in the stream's read buffer
//! (`IoStream::read_more` and `IoStream::with_unread`: no second buffer, no copy of a
//! command cut by a read), runs each where its key lives, and answers in request order.
//!
//! - **Local path.** A command whose keys this core owns runs at once, and its reply is
//!   written straight into the stream's write buffer (`IoStream::write_with`): no
//!   allocation, no callback, no cross-core traffic.
//! - **Forwarding.** A command for a key another core owns goes there with `submit_to`:
//!   the commands of one read batch for one core travel together, their byte strings
//!   copied once into one buffer, and their replies come back as one buffer (a 16-deep
//!   pipeline costs one cross-core call, not 16). Multi-key and all-cores commands
//!   scatter and gather (`gather.rs`).
//! - **Order.** Every command takes the next reply slot. While no slot waits for another
//!   core, replies go straight out; once one waits, later replies queue behind it and
//!   leave in order as the slots fill, whichever core answered first. Commands on one
//!   key always run in request order: on the owner, in the order they were sent to it.
//! - **Limits.** Reading stops while more than `MAX_PENDING` replies wait for other
//!   cores, or while the stream's write buffer is over its high-water mark (a client
//!   that sends and never reads); it resumes when they drain. The stream bounds its
//!   read buffer, and a batch of commands stops once it has written a high-water
//!   mark's worth of replies (what it did not run stays in the read buffer, which
//!   pauses the socket), so what is buffered stays bounded whatever the client sends.
//!   Malformed RESP gets `-ERR Protocol error: ...` after the replies before it,
//!   then the connection closes, as in Redis.

mod gather;

use super::commands::{classify, Args, Command, Op};
use super::core::{Core, Stats};
use super::resp::{self, Parsed, Parser};
use coreloop::{CallError, IoLoop, IoStream, StreamError, DEFAULT_HIGH_WATER};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

/// Replies waiting for other cores before reading stops.
pub const MAX_PENDING: usize = 1024;

/// A reply waiting for its turn: its own bytes, or its part of a batch's replies.
enum Reply {
    Own(Vec<u8>),
    Part(Rc<Vec<u8>>, usize, usize),
}

/// Replies in request order: `None` while another core works on it.
#[derive(Default)]
struct Slots {
    q: VecDeque<Option<Reply>>,
    /// The sequence number of `q[0]`.
    head: u64,
}

impl Slots {
    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    fn push_pending(&mut self) -> u64 {
        self.q.push_back(None);
        self.head + self.q.len() as u64 - 1
    }
    fn push_ready(&mut self) -> &mut Vec<u8> {
        self.q.push_back(Some(Reply::Own(Vec::new())));
        match self.q.back_mut() {
            Some(Some(Reply::Own(v))) => v,
            _ => unreachable!("just pushed"),
        }
    }
    fn fill(&mut self, seq: u64, reply: Reply) {
        if let Some(s) = self.q.get_mut((seq - self.head) as usize) {
            *s = Some(reply);
        }
    }
    /// Moves the replies now due into `out`.
    fn pop_ready(&mut self, out: &mut Vec<u8>) {
        while let Some(Some(_)) = self.q.front() {
            match self.q.pop_front() {
                Some(Some(Reply::Own(r))) => out.extend_from_slice(&r),
                Some(Some(Reply::Part(all, a, b))) => out.extend_from_slice(&all[a..b]),
                _ => {}
            }
            self.head += 1;
        }
    }
}

/// Commands for another core gathered during a batch, sent in one call when the batch
/// ends (or before a command that must come after them: a scatter, an all-cores one).
#[derive(Default)]
struct Outgoing {
    /// The commands' byte strings, one after another.
    bytes: Vec<u8>,
    ops: Vec<Op<(usize, usize)>>,
    /// Their reply slots (these stay here).
    seqs: Vec<u64>,
}

/// A connection's queues, lent to one command.
struct Queues<'a> {
    slots: &'a mut Slots,
    outbox: &'a mut Vec<Outgoing>,
    closing: &'a mut bool,
}

/// Where the next reply goes: straight out, or into a slot behind pending ones.
fn sink<'a>(slots: &'a mut Slots, out: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
    if slots.is_empty() {
        out
    } else {
        slots.push_ready()
    }
}

#[derive(Default)]
struct State {
    /// Where a command cut by a read was left (its bytes stay in the read buffer).
    parser: Parser,
    slots: Slots,
    /// By core: commands to forward when this batch ends.
    outbox: Vec<Outgoing>,
    /// A wait for more bytes is pending on the stream.
    reading: bool,
    /// The read buffer may hold whole commands not yet run (a batch stopped early).
    stalled: bool,
    /// The peer has sent everything.
    eof: bool,
    /// Close once every reply is out (protocol error, QUIT, draining).
    closing: bool,
    /// The close has been asked for.
    finished: bool,
    /// Key in this loop's connection list.
    key: usize,
}

/// A RESP connection.
pub struct Conn {
    stream: IoStream,
    core: Rc<Core>,
    st: RefCell<State>,
}

/// This loop's open connections (for a graceful stop).
#[derive(Default)]
pub struct Conns(RefCell<slab::Slab<Weak<Conn>>>);

/// Serves RESP on an accepted stream.
pub fn serve(lp: &IoLoop, stream: IoStream) {
    let Some(core) = Core::of(lp) else {
        stream.write(b"-ERR server not set up on this core\r\n");
        stream.close(); // the reply still goes out
        return;
    };
    // The connection decides when end of file closes it: after the replies still
    // waiting for other cores.
    stream.set_close_on_eof(false);
    stream.set_max_write_buffer(
        coreloop::DEFAULT_MAX_WRITE_BUFFER.max(core.cfg.max_bulk.saturating_mul(2)),
    );
    // A command is parsed in place: the read buffer holds the largest one whole (a
    // bulk string plus its framing).
    stream.set_max_buffer_size(
        coreloop::DEFAULT_MAX_BUFFER.max(core.cfg.max_bulk.saturating_add(64 * 1024)),
    );
    let draining = core.draining.get();
    let conn = Rc::new(Conn {
        stream: stream.clone(),
        core,
        st: RefCell::new(State {
            closing: draining,
            ..State::default()
        }),
    });
    let key = lp
        .local::<Conns>()
        .0
        .borrow_mut()
        .insert(Rc::downgrade(&conn));
    conn.st.borrow_mut().key = key;
    stream.set_close_callback(move |lp, _| {
        lp.local::<Conns>().0.borrow_mut().try_remove(key);
    });
    conn.pump(lp);
}

/// A graceful stop on this core: idle connections close now, busy ones once their
/// replies are out.
pub fn drain(lp: &IoLoop) {
    if let Some(core) = Core::of(lp) {
        core.draining.set(true);
    }
    let conns: Vec<Rc<Conn>> = lp
        .local::<Conns>()
        .0
        .borrow()
        .iter()
        .filter_map(|(_, c)| c.upgrade())
        .collect();
    for c in conns {
        c.st.borrow_mut().closing = true;
        c.pump(lp);
    }
}

impl Conn {
    /// Runs what is buffered, then reads more unless back-pressure says wait; closes
    /// when a close is due and every reply is out.
    fn pump(self: &Rc<Self>, lp: &IoLoop) {
        loop {
            if self.stream.closed() {
                return;
            }
            let (stalled, full) = {
                let st = self.st.borrow();
                (st.stalled, st.slots.q.len() >= MAX_PENDING)
            };
            if self.stream.over_high_water() {
                let me = self.clone();
                self.stream.on_drain(move |lp, _| me.pump(lp));
                return;
            }
            if full {
                return; // a filled slot calls pump again
            }
            if !stalled {
                break;
            }
            self.run_buffered(lp);
        }
        let mut st = self.st.borrow_mut();
        if st.closing || st.eof {
            if st.slots.is_empty() && !st.finished {
                st.finished = true;
                drop(st);
                self.stream.close(); // once the replies are out
            }
            return;
        }
        if !st.reading {
            st.reading = true;
            drop(st);
            let me = self.clone();
            self.stream
                .read_more()
                .then(move |lp, _, r| me.on_read(lp, r));
        }
    }

    fn on_read(self: &Rc<Self>, lp: &IoLoop, r: std::io::Result<Vec<u8>>) {
        self.st.borrow_mut().reading = false;
        match r {
            Ok(_) => self.run_buffered(lp),
            Err(e) if StreamError::of(&e) == Some(StreamError::Eof) => {
                self.st.borrow_mut().eof = true
            }
            Err(_) => return, // the stream closed
        }
        self.pump(lp);
    }

    /// Runs the whole commands in the read buffer, where they lie; what a batch did not
    /// take (a command cut by a read, or commands left for back-pressure) stays there.
    fn run_buffered(self: &Rc<Self>, lp: &IoLoop) {
        let _ = self.stream.with_unread(|buf| (self.run_batch(lp, buf), ()));
    }

    /// Runs the whole commands at the start of `buf`, writing replies into the stream's
    /// buffer; returns the bytes used. Stops early for back-pressure (then `stalled`).
    fn run_batch(self: &Rc<Self>, lp: &IoLoop, buf: &[u8]) -> usize {
        let mut used = 0;
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        st.stalled = false;
        let max_bulk = self.core.cfg.max_bulk;
        let wrote = self.stream.write_with(|out| {
            while used < buf.len() && !st.closing {
                if out.len() > DEFAULT_HIGH_WATER || st.slots.q.len() >= MAX_PENDING {
                    st.stalled = true;
                    break;
                }
                match st.parser.parse(&buf[used..], max_bulk) {
                    Parsed::Partial => break,
                    Parsed::Error(e) => {
                        let dst = sink(&mut st.slots, out);
                        resp::error(dst, &format!("Protocol error: {e}"));
                        st.parser.reset();
                        st.closing = true;
                        used = buf.len();
                    }
                    Parsed::Command(n) => {
                        let cmd = &buf[used..used + n];
                        used += n;
                        if !st.parser.args().is_empty() {
                            let args = Args {
                                buf: cmd,
                                spans: st.parser.args(),
                            };
                            let q = Queues {
                                slots: &mut st.slots,
                                outbox: &mut st.outbox,
                                closing: &mut st.closing,
                            };
                            self.exec(lp, args, q, out);
                        }
                    }
                }
            }
        });
        self.send_outbox(lp, &mut st.outbox);
        if wrote.is_err() {
            return buf.len(); // closed: nothing more to do
        }
        used
    }

    /// Sends each core its gathered commands in one call; the replies come back as one
    /// buffer and fill their slots.
    fn send_outbox(self: &Rc<Self>, lp: &IoLoop, outbox: &mut [Outgoing]) {
        for (owner, o) in outbox.iter_mut().enumerate() {
            if o.ops.is_empty() {
                continue;
            }
            let Outgoing { bytes, ops, seqs } = std::mem::take(o);
            let me = self.clone();
            lp.call_on(&self.core.shards[owner], move |lp| {
                let mut out = Vec::new();
                let mut ends = Vec::with_capacity(ops.len());
                match Core::of(lp) {
                    Some(core) => {
                        Stats::add(&core.stats.served_for_others, ops.len() as u64);
                        let mut store = core.store.borrow_mut();
                        for op in &ops {
                            op.map(|&(a, b)| &bytes[a..b]).run(lp, &mut store, &mut out);
                            ends.push(out.len());
                        }
                    }
                    None => {
                        for _ in &ops {
                            resp::error(&mut out, "the owner core is not set up");
                            ends.push(out.len());
                        }
                    }
                }
                (out, ends)
            })
            .then(move |lp, r| me.fill_batch(lp, owner, seqs, r));
        }
    }

    fn fill_batch(
        self: &Rc<Self>,
        lp: &IoLoop,
        owner: usize,
        seqs: Vec<u64>,
        r: Result<(Vec<u8>, Vec<usize>), CallError>,
    ) {
        let _ = self.stream.write_with(|out| {
            let mut st = self.st.borrow_mut();
            match r {
                Ok((replies, ends)) => {
                    let all = Rc::new(replies);
                    let mut start = 0;
                    for (seq, end) in seqs.into_iter().zip(ends) {
                        st.slots.fill(seq, Reply::Part(all.clone(), start, end));
                        start = end;
                    }
                }
                Err(e) => {
                    for seq in seqs {
                        st.slots.fill(seq, Reply::Own(call_failed(owner, &e)));
                    }
                }
            }
            st.slots.pop_ready(out);
        });
        self.pump(lp);
    }

    /// One command.
    fn exec(self: &Rc<Self>, lp: &IoLoop, args: Args<'_>, q: Queues<'_>, out: &mut Vec<u8>) {
        let core = &self.core;
        Stats::add(&core.stats.commands, 1);
        match classify(args) {
            Command::Now(reply) => reply.write(sink(q.slots, out)),
            Command::Key(op) => {
                let owner = core.owner(op.key());
                if owner == core.id {
                    op.run(lp, &mut core.store.borrow_mut(), sink(q.slots, out));
                } else {
                    Stats::add(&core.stats.forwarded, 1);
                    if q.outbox.is_empty() {
                        q.outbox.resize_with(core.shards.len(), Outgoing::default);
                    }
                    let o = &mut q.outbox[owner];
                    o.seqs.push(q.slots.push_pending());
                    let bytes = &mut o.bytes;
                    o.ops.push(op.map(|s| {
                        bytes.extend_from_slice(s);
                        (bytes.len() - s.len(), bytes.len())
                    }));
                }
            }
            Command::Multi(m) => {
                // After the commands gathered so far: they came first.
                self.send_outbox(lp, q.outbox);
                self.multi(lp, m, args, q.slots, out)
            }
            Command::All(a) => {
                self.send_outbox(lp, q.outbox);
                self.all_cores(lp, a, q.slots)
            }
            Command::Quit => {
                sink(q.slots, out).extend_from_slice(resp::OK);
                *q.closing = true;
            }
        }
    }

    /// A reply from another core (or a gather) is ready.
    fn fill(self: &Rc<Self>, lp: &IoLoop, seq: u64, reply: Vec<u8>) {
        let _ = self.stream.write_with(|out| {
            let mut st = self.st.borrow_mut();
            st.slots.fill(seq, Reply::Own(reply));
            st.slots.pop_ready(out);
        });
        self.pump(lp);
    }
}

/// The bytes this loop's connections hold unread in their streams' read buffers (for
/// INFO and the tests: commands are decoded where they lie, so a big command's bytes
/// stay there until it has run; the stream frees a buffer once it is read, and shrinks
/// a big one left with a few bytes).
pub fn input_buffer_bytes(lp: &IoLoop) -> usize {
    lp.local::<Conns>()
        .0
        .borrow()
        .iter()
        .filter_map(|(_, c)| c.upgrade())
        .map(|c| c.stream.read_buffer_len())
        .sum()
}

/// The reply for a call to another core that gave no value.
fn call_failed(core: usize, e: &CallError) -> Vec<u8> {
    let mut out = Vec::new();
    resp::error(
        &mut out,
        &format!("core {core} could not run the command: {e}"),
    );
    out
}
