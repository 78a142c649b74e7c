//! Decoding in place (`IoStream::with_unread`, `IoStream::read_more`): messages parsed
//! where they lie in the stream's buffer, in callbacks and in tasks, on both backends.
mod util;

use coreloop::{Backend, IoStream, StreamError};
use coreloop_macros::on_both_backends;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::thread;
use std::time::Duration;
use util::{new_loop, run, tcp_pair};

/// The first line in `buf`, and the bytes it takes (with its `\n`).
fn line(buf: &[u8]) -> (usize, Option<String>) {
    match buf.iter().position(|&c| c == b'\n') {
        Some(i) => (i + 1, Some(String::from_utf8_lossy(&buf[..i]).into_owned())),
        None => (0, None),
    }
}

/// Writes `parts` with a pause between them, so that they arrive as separate reads.
fn trickle(mut c: std::net::TcpStream, parts: &'static [&'static [u8]]) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for p in parts {
            c.write_all(p).unwrap();
            thread::sleep(Duration::from_millis(15));
        }
    })
}

/// Callbacks: each wait for more bytes, then every whole line where it lies.
fn decode_lines(s: &IoStream, got: Rc<RefCell<Vec<String>>>, want: usize) {
    s.read_more().then(move |lp, s, r| {
        r.unwrap();
        while let Some(l) = s.with_unread(line).unwrap() {
            got.borrow_mut().push(l);
        }
        if got.borrow().len() == want {
            return lp.stop();
        }
        decode_lines(s, got, want);
    });
}

#[on_both_backends]
#[test]
fn lines_cut_by_reads_are_decoded_where_they_lie(backend: Backend) {
    let lp = new_loop(backend);
    let (s, client) = tcp_pair(&lp);
    let t = trickle(client, &[b"one\ntw", b"o\nth", b"r", b"ee\nfour"]);
    let got = Rc::new(RefCell::new(Vec::new()));
    decode_lines(&s, got.clone(), 3);
    run(&lp);
    assert_eq!(*got.borrow(), ["one", "two", "three"]);
    t.join().unwrap();
    // What no line took stays for the next look.
    lp.run_until_complete(async move {
        while s.read_buffer_len() < 4 {
            s.read_more().await.unwrap();
        }
        assert_eq!(s.with_unread(|b| (0, b.to_vec())).unwrap(), b"four");
    })
    .unwrap();
}

#[on_both_backends]
#[test]
fn a_decoder_may_answer_on_the_stream_while_it_decodes(backend: Backend) {
    // An echo of lines in a task: each reply is written from inside the decode, where
    // the bytes are lent, not borrowed.
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    let t = thread::spawn(move || {
        client.write_all(b"a\nbb\nccc\n").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        client.read_to_string(&mut back).unwrap();
        back
    });
    let served = lp.run_until_complete(async move {
        let mut lines = 0;
        loop {
            match s.read_more().await {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(StreamError::of(&e), Some(StreamError::Eof));
                    break;
                }
            }
            while s
                .with_unread(|buf| {
                    let (n, l) = line(buf);
                    if let Some(l) = &l {
                        s.write(format!("{l}!\n").as_bytes());
                    }
                    (n, l.is_some())
                })
                .unwrap()
            {
                lines += 1;
            }
        }
        s.close().await.unwrap();
        lines
    });
    assert_eq!(served.unwrap(), 3);
    assert_eq!(t.join().unwrap(), "a!\nbb!\nccc!\n");
}

#[on_both_backends]
#[test]
fn the_bytes_of_a_pending_read_are_not_lent(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    client.write_all(b"xyz").unwrap();
    s.read_bytes(3).then(|lp, s, r| {
        assert_eq!(r.unwrap(), b"xyz");
        // Nothing pending now: lent (and empty).
        assert_eq!(s.with_unread(|b| (0, b.len())).unwrap(), 0);
        lp.stop();
    });
    let e = s.with_unread(|b| (b.len(), ())).unwrap_err();
    assert_eq!(StreamError::of(&e), Some(StreamError::ReadPending));
    run(&lp);
}

#[on_both_backends]
#[test]
fn at_end_of_file_the_last_bytes_stay_and_more_fails(backend: Backend) {
    let lp = new_loop(backend);
    let (s, mut client) = tcp_pair(&lp);
    s.set_close_on_eof(false);
    client.write_all(b"partial").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (first, then, left) = lp
        .run_until_complete(async move {
            let first = s.read_more().await.map(|v| v.len());
            // Wait until the end of file is in, consuming nothing.
            let mut then = Ok(0);
            for _ in 0..100 {
                then = s.read_more().await.map(|v| v.len());
                if then.is_err() {
                    break;
                }
            }
            let left = s.with_unread(|b| (0, b.to_vec())).unwrap();
            (first, then.map_err(|e| StreamError::of(&e)), left)
        })
        .unwrap();
    assert_eq!(first.unwrap(), 0, "read_more takes nothing");
    assert_eq!(then, Err(Some(StreamError::Eof)));
    assert_eq!(left, b"partial");
}
