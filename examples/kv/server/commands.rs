//! The commands: names, arities and options checked where the command arrived (a bad
//! command is answered there, never forwarded), then what runs on the owner of the
//! key. The error replies are Redis 7's, word for word.

use super::resp::{self, parse_i64};
use super::store::{Cond, IncrError, Store};
use coreloop::IoLoop;

/// A command's arguments: spans into the bytes of the command.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    pub buf: &'a [u8],
    pub spans: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (a, b) = self.spans[i];
        &self.buf[a..b]
    }
}

/// A command on one key, run on the key's owner. `B` is `&[u8]` where it runs, a range
/// of a batch's bytes while it travels to another core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<B> {
    Get(B),
    Set {
        key: B,
        value: B,
        ttl_ms: Option<u64>,
        cond: Cond,
    },
    IncrBy(B, i64),
    /// EXPIRE/PEXPIRE, in milliseconds.
    Expire(B, i64),
    /// TTL (`false`) or PTTL (`true`).
    Ttl(B, bool),
}

impl<B: AsRef<[u8]>> Op<B> {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get(k) | Op::IncrBy(k, _) | Op::Expire(k, _) | Op::Ttl(k, _) => k.as_ref(),
            Op::Set { key, .. } => key.as_ref(),
        }
    }

    /// Runs on the owner's store, writing the reply.
    pub fn run(&self, lp: &IoLoop, store: &mut Store, out: &mut Vec<u8>) {
        match self {
            Op::Get(k) => resp::opt_bulk(out, store.get(lp, k.as_ref())),
            Op::Set {
                key,
                value,
                ttl_ms,
                cond,
            } => {
                let done = store.set(lp, key.as_ref(), value.as_ref(), *ttl_ms, *cond);
                out.extend_from_slice(if done { resp::OK } else { resp::NIL });
            }
            Op::IncrBy(k, by) => match store.incr_by(lp, k.as_ref(), *by) {
                Ok(v) => resp::int(out, v),
                Err(IncrError::NotAnInteger) => resp::error(out, NOT_AN_INTEGER),
                Err(IncrError::Overflow) => {
                    resp::error(out, "increment or decrement would overflow")
                }
            },
            Op::Expire(k, ms) => resp::int(out, i64::from(store.expire(lp, k.as_ref(), *ms))),
            Op::Ttl(k, in_ms) => {
                let t = store.pttl(lp, k.as_ref());
                resp::int(out, if t < 0 || *in_ms { t } else { (t + 500) / 1000 });
            }
        }
    }
}

impl<B> Op<B> {
    /// The same command with each byte string `f(b)` (into a batch for another core,
    /// and back out of it there).
    pub fn map<C>(&self, mut f: impl FnMut(&B) -> C) -> Op<C> {
        match self {
            Op::Get(k) => Op::Get(f(k)),
            Op::Set {
                key,
                value,
                ttl_ms,
                cond,
            } => Op::Set {
                key: f(key),
                value: f(value),
                ttl_ms: *ttl_ms,
                cond: *cond,
            },
            Op::IncrBy(k, n) => Op::IncrBy(f(k), *n),
            Op::Expire(k, n) => Op::Expire(f(k), *n),
            Op::Ttl(k, m) => Op::Ttl(f(k), *m),
        }
    }
}

/// Commands on several keys: each owner runs its part, the core that received the
/// command gathers the parts. The keys are `args[1..]` (MSET: key, value pairs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multi {
    Mget,
    Mset,
    Del,
    Exists,
}

impl Multi {
    /// Arguments per key (MSET: 2).
    pub fn step(self) -> usize {
        if self == Multi::Mset {
            2
        } else {
            1
        }
    }
}

/// Commands every core answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllCores {
    Dbsize,
    Flushall,
    Info,
}

/// A reply known where the command arrived.
#[derive(Debug)]
pub enum Now<'a> {
    Raw(&'static [u8]),
    Bulk(&'a [u8]),
    Int(i64),
    Error(String),
    /// CONFIG GET's parameters (`args[2..]`).
    ConfigGet(Args<'a>),
}

impl std::fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.len()).map(|i| String::from_utf8_lossy(self.get(i))))
            .finish()
    }
}

impl Now<'_> {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Now::Raw(r) => out.extend_from_slice(r),
            Now::Bulk(b) => resp::bulk(out, b),
            Now::Int(n) => resp::int(out, *n),
            Now::Error(e) => resp::error(out, e),
            Now::ConfigGet(args) => {
                let known: Vec<(&[u8], &[u8])> = (2..args.len())
                    .filter_map(|i| config_value(args.get(i)))
                    .collect();
                resp::array(out, known.len() * 2);
                for (k, v) in known {
                    resp::bulk(out, k);
                    resp::bulk(out, v);
                }
            }
        }
    }
}

/// The parameters redis-benchmark and redis-cli ask for at start-up.
fn config_value(name: &[u8]) -> Option<(&'static [u8], &'static [u8])> {
    const KNOWN: &[(&[u8], &[u8])] =
        &[(b"save", b""), (b"appendonly", b"no"), (b"databases", b"1")];
    KNOWN
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .copied()
}

/// What to do with a command.
#[derive(Debug)]
pub enum Command<'a> {
    Now(Now<'a>),
    Key(Op<&'a [u8]>),
    Multi(Multi),
    All(AllCores),
    /// QUIT: `+OK`, then close.
    Quit,
}

pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

fn wrong_arity(name: &str) -> Command<'static> {
    Command::Now(Now::Error(format!(
        "wrong number of arguments for '{name}' command"
    )))
}

fn err(msg: impl Into<String>) -> Command<'static> {
    Command::Now(Now::Error(msg.into()))
}

/// Redis's reply to a command it does not know: the name and the first arguments, each
/// quoted, cut at 128 bytes.
fn unknown(args: Args<'_>) -> Command<'static> {
    let name = String::from_utf8_lossy(&args.get(0)[..args.get(0).len().min(128)]);
    let mut rest = String::new();
    for i in 1..args.len() {
        if rest.len() >= 128 {
            break;
        }
        let a = String::from_utf8_lossy(args.get(i));
        let room = 128 - rest.len();
        let cut: String = a.chars().take(room).collect();
        rest.push_str(&format!("'{cut}' "));
    }
    err(format!(
        "unknown command '{name}', with args beginning with: {rest}"
    ))
}

/// The command `args` names (a non-empty list), checked.
pub fn classify(args: Args<'_>) -> Command<'_> {
    let name = args.get(0);
    let mut lower = [0u8; 16];
    if name.len() > lower.len() {
        return unknown(args);
    }
    for (l, c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    let n = args.len();
    // (name, arity: exact if positive, at least -arity if negative)
    let (cmd, arity): (&str, i32) = match &lower[..name.len()] {
        b"get" => ("get", 2),
        b"set" => ("set", -3),
        b"del" => ("del", -2),
        b"exists" => ("exists", -2),
        b"incr" => ("incr", 2),
        b"incrby" => ("incrby", 3),
        b"decr" => ("decr", 2),
        b"decrby" => ("decrby", 3),
        b"mget" => ("mget", -2),
        b"mset" => ("mset", -3),
        b"expire" => ("expire", -3),
        b"pexpire" => ("pexpire", -3),
        b"ttl" => ("ttl", 2),
        b"pttl" => ("pttl", 2),
        b"dbsize" => ("dbsize", 1),
        b"flushall" => ("flushall", -1),
        b"ping" => ("ping", -1),
        b"echo" => ("echo", 2),
        b"command" => ("command", -1),
        b"config" => ("config", -2),
        b"info" => ("info", -1),
        b"select" => ("select", 2),
        b"quit" => ("quit", -1),
        _ => return unknown(args),
    };
    let arity_ok = if arity > 0 {
        n == arity as usize
    } else {
        n >= (-arity) as usize
    };
    if !arity_ok {
        return wrong_arity(cmd);
    }
    let key = || args.get(1);
    let int = |i: usize| parse_i64(args.get(i));
    match cmd {
        "get" => Command::Key(Op::Get(key())),
        "set" => set(args),
        "incr" => Command::Key(Op::IncrBy(key(), 1)),
        "decr" => Command::Key(Op::IncrBy(key(), -1)),
        "incrby" => match int(2) {
            Some(by) => Command::Key(Op::IncrBy(key(), by)),
            None => err(NOT_AN_INTEGER),
        },
        "decrby" => match int(2) {
            Some(i64::MIN) => err("decrement would overflow"),
            Some(by) => Command::Key(Op::IncrBy(key(), -by)),
            None => err(NOT_AN_INTEGER),
        },
        "mget" => Command::Multi(Multi::Mget),
        "mset" if n.is_multiple_of(2) => wrong_arity("mset"),
        "mset" => Command::Multi(Multi::Mset),
        "del" => Command::Multi(Multi::Del),
        "exists" => Command::Multi(Multi::Exists),
        "expire" | "pexpire" => {
            if n > 3 {
                let opt = String::from_utf8_lossy(args.get(3)).into_owned();
                return err(format!("Unsupported option {opt}"));
            }
            let scale = if cmd == "expire" { 1000 } else { 1 };
            match int(2) {
                None => err(NOT_AN_INTEGER),
                Some(v) => match v.checked_mul(scale) {
                    Some(ms) => Command::Key(Op::Expire(key(), ms)),
                    None => err(format!("invalid expire time in '{cmd}' command")),
                },
            }
        }
        "ttl" => Command::Key(Op::Ttl(key(), false)),
        "pttl" => Command::Key(Op::Ttl(key(), true)),
        "dbsize" => Command::All(AllCores::Dbsize),
        "flushall" => match n {
            1 => Command::All(AllCores::Flushall),
            2 if args.get(1).eq_ignore_ascii_case(b"sync")
                || args.get(1).eq_ignore_ascii_case(b"async") =>
            {
                Command::All(AllCores::Flushall)
            }
            _ => err("syntax error"),
        },
        "ping" => match n {
            1 => Command::Now(Now::Raw(b"+PONG\r\n")),
            2 => Command::Now(Now::Bulk(args.get(1))),
            _ => wrong_arity("ping"),
        },
        "echo" => Command::Now(Now::Bulk(args.get(1))),
        "command" => {
            if n >= 2 && args.get(1).eq_ignore_ascii_case(b"count") {
                Command::Now(Now::Int(0))
            } else {
                // No command table is published; redis-cli then works without hints.
                Command::Now(Now::Raw(b"*0\r\n"))
            }
        }
        "config" => {
            let sub = args.get(1);
            if sub.eq_ignore_ascii_case(b"get") {
                if n < 3 {
                    wrong_arity("config|get")
                } else {
                    Command::Now(Now::ConfigGet(args))
                }
            } else {
                let sub = String::from_utf8_lossy(sub).into_owned();
                err(format!("unknown subcommand '{sub}'. Try CONFIG HELP."))
            }
        }
        "info" => Command::All(AllCores::Info),
        "select" => match int(1) {
            Some(0) => Command::Now(Now::Raw(resp::OK)),
            Some(_) => err("DB index is out of range"),
            None => err(NOT_AN_INTEGER),
        },
        "quit" => Command::Quit,
        _ => unknown(args),
    }
}

/// SET key value [NX|XX] [EX seconds|PX milliseconds].
fn set(args: Args<'_>) -> Command<'_> {
    let mut cond = Cond::Always;
    let mut ttl_ms = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args.get(i);
        let is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
        if is(b"nx") && cond != Cond::IfPresent {
            cond = Cond::IfAbsent;
        } else if is(b"xx") && cond != Cond::IfAbsent {
            cond = Cond::IfPresent;
        } else if (is(b"ex") || is(b"px")) && ttl_ms.is_none() && i + 1 < args.len() {
            let scale = if is(b"ex") { 1000 } else { 1 };
            let Some(v) = parse_i64(args.get(i + 1)) else {
                return err(NOT_AN_INTEGER);
            };
            match v.checked_mul(scale) {
                Some(ms) if v > 0 => ttl_ms = Some(ms as u64),
                _ => return err("invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return err("syntax error");
        }
        i += 1;
    }
    Command::Key(Op::Set {
        key: args.get(1),
        value: args.get(2),
        ttl_ms,
        cond,
    })
}

/// INFO's text, from every core's figures.
pub fn info(cores: &[super::core::CoreReport]) -> String {
    let keys: u64 = cores.iter().map(|c| c.keys).sum();
    let expires: u64 = cores.iter().map(|c| c.expiring).sum();
    let commands: u64 = cores.iter().map(|c| c.commands).sum();
    let input_buffers: u64 = cores.iter().map(|c| c.input_buffers).sum();
    let table_capacity: u64 = cores.iter().map(|c| c.table_capacity).sum();
    let mut s = format!(
        "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nkv_server:coreloop\r\n\
         process_id:{}\r\nkv_cores:{}\r\n\r\n# Memory\r\n\
         kv_input_buffer_bytes:{input_buffers}\r\nkv_table_capacity:{table_capacity}\r\n\r\n\
         # Stats\r\ntotal_commands_processed:{commands}\r\n\r\n# Keyspace\r\n",
        std::process::id(),
        cores.len()
    );
    if keys > 0 {
        s.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
    }
    s
}
