//! One core's share of the keys: a hash map of byte strings, with expiry on this core's
//! timer heap and lazy expiry on access (as Redis: a key past its deadline is never
//! seen, whether or not its timer has fired yet).
//!
//! Keys and values of up to 22 bytes are stored inline in the map's bucket, longer
//! ones in one boxed slice: a lookup of a short key touches the bucket and nothing
//! else (measured: with every key boxed, the cache misses on the key's and the value's
//! own allocations were a third of the server's CPU under `redis-benchmark -P 16`).
//! Overwriting a value of the same length reuses its bytes (redis-benchmark's SET does
//! exactly that), and while no key has a deadline a lookup skips the expiry check.

use coreloop::{IoLoop, TimeoutId};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// Bytes kept inline.
const INLINE: usize = 22;

/// A byte string, inline up to [`INLINE`] bytes, else boxed (24 bytes either way).
#[derive(Clone)]
pub enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, buf } => &buf[..usize::from(*len)],
            Bytes::Heap(b) => b,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Bytes::Inline { len, buf } => &mut buf[..usize::from(*len)],
            Bytes::Heap(b) => b,
        }
    }

    /// Replaces the bytes, in place when the length is the same.
    fn assign(&mut self, v: &[u8]) {
        if self.as_slice().len() == v.len() {
            self.as_mut_slice().copy_from_slice(v);
        } else {
            *self = Bytes::from(v);
        }
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        if v.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..v.len()].copy_from_slice(v);
            Bytes::Inline {
                len: v.len() as u8,
                buf,
            }
        } else {
            Bytes::Heap(v.into())
        }
    }
}

// Hash and equality are the slice's, so the map is searched with a `&[u8]`.
impl Hash for Bytes {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h);
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

type Map = HashMap<Bytes, Entry, ahash::RandomState>;

struct Entry {
    value: Bytes,
    /// Milliseconds since the store's epoch at which the key expires; 0: never.
    deadline: u64,
    timer: Option<TimeoutId>,
}

impl Entry {
    fn new(value: &[u8]) -> Entry {
        Entry {
            value: value.into(),
            deadline: 0,
            timer: None,
        }
    }
}

/// SET's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if it exists.
    IfPresent,
}

/// Why INCR cannot add.
#[derive(Debug, PartialEq, Eq)]
pub enum IncrError {
    NotAnInteger,
    Overflow,
}

/// A core's keys.
pub struct Store {
    map: Map,
    epoch: Instant,
    /// Keys with a deadline (for INFO's keyspace line).
    expiring: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            map: Map::default(),
            epoch: Instant::now(),
            expiring: 0,
        }
    }
}

impl Store {
    /// Milliseconds since the epoch, now (at least 1, so 0 can mean "never").
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The live entry of `key`; one past its deadline is removed first.
    fn live(&mut self, lp: &IoLoop, key: &[u8]) -> Option<&mut Entry> {
        if self.expiring > 0 {
            let expired = match self.map.get(key) {
                None => return None,
                Some(e) => e.deadline != 0 && e.deadline <= self.now_ms(),
            };
            if expired {
                self.remove(lp, key);
                return None;
            }
        }
        self.map.get_mut(key)
    }

    /// GET.
    pub fn get(&mut self, lp: &IoLoop, key: &[u8]) -> Option<&[u8]> {
        self.live(lp, key).map(|e| e.value.as_slice())
    }

    /// EXISTS (one key).
    pub fn exists(&mut self, lp: &IoLoop, key: &[u8]) -> bool {
        self.live(lp, key).is_some()
    }

    /// SET with its options; `ttl_ms`: EX/PX, already checked to be positive. Returns
    /// whether the value was set.
    pub fn set(
        &mut self,
        lp: &IoLoop,
        key: &[u8],
        value: &[u8],
        ttl_ms: Option<u64>,
        cond: Cond,
    ) -> bool {
        if cond != Cond::Always {
            let present = self.live(lp, key).is_some();
            if present != (cond == Cond::IfPresent) {
                return false;
            }
        }
        let e = self
            .map
            .entry(Bytes::from(key))
            .or_insert_with(|| Entry::new(&[]));
        e.value.assign(value);
        if let Some(t) = e.timer.take() {
            lp.remove_timeout(t);
        }
        if e.deadline != 0 {
            e.deadline = 0;
            self.expiring -= 1;
        }
        if let Some(ms) = ttl_ms {
            self.set_deadline(lp, key, ms);
        }
        true
    }

    /// Arms `key`'s expiry `ms` from now on this core's timer heap (replacing any).
    fn set_deadline(&mut self, lp: &IoLoop, key: &[u8], ms: u64) {
        let deadline = self.now_ms().saturating_add(ms);
        let at = self.epoch + Duration::from_millis(deadline - 1);
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        if let Some(t) = e.timer.take() {
            lp.remove_timeout(t);
        }
        if e.deadline == 0 {
            self.expiring += 1;
        }
        let owned: Box<[u8]> = key.into();
        e.deadline = deadline;
        e.timer = Some(lp.call_at(at, move |lp| super::core::expire_now(lp, &owned, deadline)));
    }

    /// The timer of `key` fired: removes it if that deadline is still its own.
    pub fn expire_due(&mut self, lp: &IoLoop, key: &[u8], deadline: u64) {
        if self.map.get(key).is_some_and(|e| e.deadline == deadline) {
            if let Some(e) = self.map.get_mut(key) {
                e.timer = None; // it fired: nothing to cancel
            }
            self.remove(lp, key);
        }
    }

    /// DEL (one key): whether it existed (and was live).
    pub fn del(&mut self, lp: &IoLoop, key: &[u8]) -> bool {
        self.live(lp, key).is_some() && self.remove(lp, key)
    }

    fn remove(&mut self, lp: &IoLoop, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                if e.deadline != 0 {
                    self.expiring -= 1;
                }
                if let Some(t) = e.timer {
                    lp.remove_timeout(t);
                }
                true
            }
            None => false,
        }
    }

    /// INCRBY: the new value. The key keeps its expiry, as in Redis.
    pub fn incr_by(&mut self, lp: &IoLoop, key: &[u8], by: i64) -> Result<i64, IncrError> {
        let now = match self.live(lp, key) {
            Some(e) => super::resp::parse_i64(e.value.as_slice()).ok_or(IncrError::NotAnInteger)?,
            None => 0,
        };
        let new = now.checked_add(by).ok_or(IncrError::Overflow)?;
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(new).as_bytes();
        match self.map.get_mut(key) {
            Some(e) => e.value.assign(digits),
            None => {
                self.map.insert(key.into(), Entry::new(digits));
            }
        }
        Ok(new)
    }

    /// EXPIRE/PEXPIRE in milliseconds: whether the key exists. A deadline not in the
    /// future deletes the key, as in Redis.
    pub fn expire(&mut self, lp: &IoLoop, key: &[u8], ms: i64) -> bool {
        if self.live(lp, key).is_none() {
            return false;
        }
        if ms <= 0 {
            self.remove(lp, key);
        } else {
            self.set_deadline(lp, key, ms as u64);
        }
        true
    }

    /// PTTL: milliseconds left, -1 without expiry, -2 for no key.
    pub fn pttl(&mut self, lp: &IoLoop, key: &[u8]) -> i64 {
        let now = self.now_ms();
        match self.live(lp, key) {
            None => -2,
            Some(e) if e.deadline == 0 => -1,
            Some(e) => (e.deadline - now) as i64,
        }
    }

    /// Keys held (those past their deadline whose timer has not run yet included, as
    /// Redis's DBSIZE counts them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Keys with a deadline.
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// The entries the table has room for (for INFO and the tests).
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    /// FLUSHALL: every key and its timer go, and the table's memory with them (a
    /// cleared map would keep its peak size).
    pub fn clear(&mut self, lp: &IoLoop) {
        for (_, e) in std::mem::take(&mut self.map) {
            if let Some(t) = e.timer {
                lp.remove_timeout(t);
            }
        }
        self.expiring = 0;
    }
}
