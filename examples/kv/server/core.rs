//! A core's state: its share of the keys, its counters, the configuration, and every
//! shard's handle. Built in the runtime's setup on each core (`IoLoop::set_local`) and
//! reached by connections, timers and forwarded calls through `IoLoop::get_local`.

use super::store::Store;
use super::Config;
use coreloop::{IoLoop, LoopHandle};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Which core owns a key: normally `shard_of(key)`; the override is a benchmark aid
/// that measures what forwarding costs (every key on this core, or every key on the
/// next one). With it, keys written through one core are not found through another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShardOverride {
    #[default]
    None,
    /// Every key is owned by the core the command arrived on.
    Local,
    /// Every key is owned by the next core (all forwarded, with two or more cores).
    Remote,
}

/// Counters of one core, for `GET /stats` and INFO.
#[derive(Default)]
pub struct Stats {
    /// Commands that arrived on this core (RESP and HTTP).
    pub commands: Cell<u64>,
    /// Of those, commands (or parts of a multi-key command) sent to another core.
    pub forwarded: Cell<u64>,
    /// Commands (or parts) run here for another core.
    pub served_for_others: Cell<u64>,
}

impl Stats {
    pub fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get() + n);
    }
}

/// One core's state.
pub struct Core {
    pub id: usize,
    pub shards: Vec<LoopHandle>,
    pub store: RefCell<Store>,
    pub stats: Stats,
    pub cfg: Arc<Config>,
    /// A graceful stop has begun: connections close once their replies are out.
    pub draining: Cell<bool>,
}

impl Core {
    /// Made in the runtime's setup on each core.
    pub fn new(lp: &IoLoop, cfg: Arc<Config>) -> Core {
        Core {
            id: lp.shard_id(),
            shards: lp.shard_handles(),
            store: RefCell::new(Store::default()),
            stats: Stats::default(),
            cfg,
            draining: Cell::new(false),
        }
    }

    /// This loop's core state (set in setup; a loop without it is a programming error
    /// that the caller answers).
    pub fn of(lp: &IoLoop) -> Option<Rc<Core>> {
        lp.get_local::<Core>()
    }

    /// The core that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        let n = self.shards.len();
        if n == 1 {
            return 0;
        }
        match self.cfg.shard_override {
            ShardOverride::None => coreloop::shard_of(key, n),
            ShardOverride::Local => self.id,
            ShardOverride::Remote => (self.id + 1) % n,
        }
    }
}

/// A key's timer fired on its owner.
pub fn expire_now(lp: &IoLoop, key: &[u8], deadline: u64) {
    if let Some(core) = Core::of(lp) {
        core.store.borrow_mut().expire_due(lp, key, deadline);
    }
}

/// What each core reports for DBSIZE, INFO and `GET /stats`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreReport {
    pub keys: u64,
    pub expiring: u64,
    pub commands: u64,
    pub forwarded: u64,
    pub served_for_others: u64,
    /// Entries the key table has room for.
    pub table_capacity: u64,
    /// Bytes the RESP connections' input buffers hold.
    pub input_buffers: u64,
}

impl CoreReport {
    /// This core's figures now.
    pub fn of(lp: &IoLoop) -> CoreReport {
        let Some(core) = Core::of(lp) else {
            return CoreReport::default();
        };
        let store = core.store.borrow();
        CoreReport {
            keys: store.len() as u64,
            expiring: store.expiring() as u64,
            commands: core.stats.commands.get(),
            forwarded: core.stats.forwarded.get(),
            served_for_others: core.stats.served_for_others.get(),
            table_capacity: store.capacity() as u64,
            input_buffers: super::conn::input_buffer_bytes(lp) as u64,
        }
    }
}
