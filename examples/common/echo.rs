//! The echo handler, shared by `examples/echo.rs` and `benches/echo_throughput.rs`.

use coreloop::IoStream;

/// Reads what is there (up to 64 KiB) and writes it back, forever; past the write
/// buffer's high-water mark it stops reading until the buffer drains. At end of file
/// the stream closes by itself once what was written has gone out.
pub fn echo(stream: &IoStream) {
    stream.read_some(64 * 1024).then(|_, s, data| {
        let data = match data {
            Ok(d) if !d.is_empty() => d,
            _ => return, // end of file, or an error (which closed the stream)
        };
        s.write(&data);
        if s.over_high_water() {
            s.on_drain(|_, s| echo(s));
        } else {
            echo(s);
        }
    });
}

/// The same in a task: what arrives goes back, each write waiting until it has gone
/// to the kernel; returns at end of file or on an error (the stream closes when the
/// task drops it).
pub async fn echo_async(stream: IoStream) {
    loop {
        let data = match stream.read_some(64 * 1024).await {
            Ok(d) if !d.is_empty() => d,
            _ => return,
        };
        if stream.write(&data).await.is_err() {
            return;
        }
    }
}
