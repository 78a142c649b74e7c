//! The examples' SIGHUP reload (examples/common, as hello uses it): after the
//! certificate files are replaced and the process gets SIGHUP, new connections get
//! the new chain while an open one keeps working. In its own test binary: the SIGHUP
//! handler is the process's.
mod util;

#[path = "../examples/common/mod.rs"]
mod common;

use coreloop::tls::TlsConfig;
use coreloop::{Backend, Cores, Runtime};
use coreloop_macros::on_both_backends;
use std::io::{Read, Write};
use util::tls::{client_config, connect, eventually, peer_cn, Certs};

#[on_both_backends]
#[test]
fn sighup_reloads_the_certificates(backend: Backend) {
    let certs = Certs::new();
    let (cert, key) = certs.server();
    let rt = Runtime::builder()
        .backend(backend)
        .cores(Cores::Count(1))
        .build()
        .unwrap();
    let tls = TlsConfig::new(&cert, &key).unwrap();
    common::reload_on_sighup("test", tls.clone());
    let server = util::line_echo(1024)
        .tls(tls)
        .serve(&rt, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let cfg = client_config(&certs.ca(), &[]);
    let mut open = connect(server.local_addr(), "localhost", &cfg);
    assert_eq!(peer_cn(&open), "server");
    let (renewed_cert, renewed_key) = certs.issue("renewed", &["localhost"]);
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    eventually("a new connection gets the renewed chain", || {
        peer_cn(&connect(server.local_addr(), "localhost", &cfg)) == "renewed"
    });
    open.write_all(b"still\n").unwrap();
    let mut got = [0u8; 6];
    open.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still\n");
    rt.shutdown().unwrap();
}
