//! The HTTP API, on the same runtime and the same keys as RESP: `GET`, `PUT` and
//! `DELETE /kv/{key}` (the key percent-decoded; run on its owner, forwarded like a RESP
//! command), and `GET /stats` (keys and counters of every core, gathered with
//! `call_on_all`). A call to another core that gives no value answers 503.

use super::core::{Core, CoreReport, Stats};
use super::store::{Cond, Store};
use coreloop::http::{Application, Request, Response, Route};
use coreloop::{CallError, IoLoop};

/// The routes.
pub fn app() -> Application {
    Application::new()
        .route("/kv/{*key}", Route::new().get(get).put(put).delete(delete))
        .route("/stats", Route::new().get(stats))
        // The runtime's own numbers (loops, both servers' latency by route) for Prometheus.
        .route("/metrics", coreloop::metrics::route())
}

/// `%XX` escapes decoded; `None` for a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn answer(mut resp: Response, status: u16, body: &[u8]) {
    resp.set_status(status);
    resp.set_header("Content-Type", "text/plain");
    resp.write(body);
    resp.finish();
}

/// Runs `f` on the owner of the request's key (here or forwarded), then `then` here
/// with the response; a bad key answers 400, a failed call 503.
fn on_owner<T, F, G>(lp: &IoLoop, req: &Request, resp: Response, f: F, then: G)
where
    T: Send + 'static,
    F: FnOnce(&IoLoop, &mut Store, &[u8]) -> T + Send + 'static,
    G: FnOnce(Response, T) + 'static,
{
    let Some(core) = Core::of(lp) else {
        return answer(resp, 503, b"this core is not set up\n");
    };
    let key = match req.param("key").and_then(percent_decode) {
        Some(k) if !k.is_empty() => k,
        _ => return answer(resp, 400, b"bad key\n"),
    };
    Stats::add(&core.stats.commands, 1);
    let owner = core.owner(&key);
    if owner == core.id {
        let v = f(lp, &mut core.store.borrow_mut(), &key);
        return then(resp, v);
    }
    Stats::add(&core.stats.forwarded, 1);
    lp.call_on(&core.shards[owner], move |lp| {
        let core = Core::of(lp).ok_or(())?;
        Stats::add(&core.stats.served_for_others, 1);
        let v = f(lp, &mut core.store.borrow_mut(), &key);
        Ok(v)
    })
    .then(move |_, r: Result<Result<T, ()>, CallError>| match r {
        Ok(Ok(v)) => then(resp, v),
        Ok(Err(())) => answer(resp, 503, b"the owner core is not set up\n"),
        Err(e) => answer(resp, 503, format!("core {owner}: {e}\n").as_bytes()),
    });
}

fn get(lp: IoLoop, req: Request, resp: Response) {
    on_owner(
        &lp,
        &req,
        resp,
        |lp, store, key| store.get(lp, key).map(Box::<[u8]>::from),
        |mut resp, v| match v {
            Some(v) => {
                resp.set_header("Content-Type", "application/octet-stream");
                resp.write(&v);
                resp.finish();
            }
            None => answer(resp, 404, b"no such key\n"),
        },
    );
}

fn put(lp: IoLoop, req: Request, resp: Response) {
    let value: Box<[u8]> = req.body().into();
    on_owner(
        &lp,
        &req,
        resp,
        move |lp, store, key| store.set(lp, key, &value, None, Cond::Always),
        |resp, _| answer(resp, 200, b"OK\n"),
    );
}

fn delete(lp: IoLoop, req: Request, resp: Response) {
    on_owner(
        &lp,
        &req,
        resp,
        |lp, store, key| store.del(lp, key),
        |resp, existed| {
            if existed {
                answer(resp, 200, b"deleted\n")
            } else {
                answer(resp, 404, b"no such key\n")
            }
        },
    );
}

/// `{"cores":[{"core":0,"keys":..,"expiring":..,"commands":..,"forwarded":..,
/// "served_for_others":..},...],"keys":..,"commands":..,"forwarded":..}`
fn stats(lp: IoLoop, _req: Request, resp: Response) {
    lp.call_on_all(CoreReport::of).then(move |_, answers| {
        let answers = match answers {
            Ok(a) => a,
            Err(e) => return answer(resp, 503, format!("{e}\n").as_bytes()),
        };
        let mut cores = Vec::new();
        let (mut keys, mut commands, mut forwarded) = (0, 0, 0);
        for (i, r) in answers.iter().enumerate() {
            keys += r.keys;
            commands += r.commands;
            forwarded += r.forwarded;
            cores.push(format!(
                "{{\"core\":{i},\"keys\":{},\"expiring\":{},\"commands\":{},\
                 \"forwarded\":{},\"served_for_others\":{}}}",
                r.keys, r.expiring, r.commands, r.forwarded, r.served_for_others
            ));
        }
        let body = format!(
            "{{\"cores\":[{}],\"keys\":{keys},\"commands\":{commands},\"forwarded\":{forwarded}}}\n",
            cores.join(",")
        );
        let mut resp = resp;
        resp.set_header("Content-Type", "application/json");
        resp.write(body);
        resp.finish();
    });
}
