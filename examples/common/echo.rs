//! The echo handler, shared by `examples/echo.rs` and `benches/echo_throughput.rs`.

use coreloop::IoStream;

/// Reads what is there (up to 64 KiB) and writes it back, forever; past the write
/// buffer's high-water mark it stops reading until the buffer drains.
pub fn echo(stream: &IoStream) {
    let r = stream.read_bytes_partial(64 * 1024, |_, s, data| {
        // An error means end of file (the stream closes itself once what we wrote has
        // been sent; calling close() here would drop it) or a failure (already closed).
        let Ok(data) = data else { return };
        if s.write(&data).is_err() {
            return;
        }
        if s.over_high_water() {
            s.on_drain(|_, s| echo(s));
        } else {
            echo(s);
        }
    });
    if r.is_err() {
        stream.close();
    }
}

/// The same in a task: what arrives goes back, and a write waits while the buffer is
/// over its high-water mark; returns at end of file or on an error.
pub async fn echo_async(stream: IoStream) {
    loop {
        let data = match stream.read_some_async(64 * 1024).await {
            Ok(d) if !d.is_empty() => d,
            _ => return,
        };
        if stream.write_all_async(&data).await.is_err() {
            return;
        }
    }
}
