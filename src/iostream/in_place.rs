//! Decoding in place: a reader that parses messages where they lie in the stream's
//! read buffer, instead of asking for a copy of each (`read_until`, `read_bytes`) or
//! keeping a second buffer of its own for what a read cut off. It waits with
//! [`IoStream::read_more`] and decodes with [`IoStream::with_unread`]; the bytes it
//! does not consume stay where they are for its next look.

use super::ops::Reading;
use super::read::ReadKind;
use super::{IoStream, StreamError};
use std::io;

impl IoStream {
    /// Lets `decode` look at the bytes received and not yet read, in place, and consume
    /// the first of them: it returns how many (at most all of them) and a value, which
    /// this returns. What it does not consume stays buffered for the next look, with
    /// whatever arrives meanwhile after it. `decode` may use the stream (write replies,
    /// say): the bytes are lent to it, not borrowed from the stream.
    ///
    /// Fails with [`StreamError::ReadPending`] while a read is pending (the bytes are
    /// that read's). Wait for more bytes with [`read_more`](Self::read_more).
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"one\ntwo\nthr")?;
    /// // Lines parsed where they lie; the cut one waits for the rest.
    /// fn lines(s: &IoStream, got: &mut Vec<String>) {
    ///     while let Ok(Some(line)) = s.with_unread(|buf| match buf.iter().position(|&c| c == b'\n') {
    ///         Some(i) => (i + 1, Some(String::from_utf8_lossy(&buf[..i]).into_owned())),
    ///         None => (0, None),
    ///     }) {
    ///         got.push(line);
    ///     }
    /// }
    /// let got = lp.run_until_complete(async move {
    ///     let mut got = Vec::new();
    ///     while got.len() < 2 {
    ///         s.read_more().await?;
    ///         lines(&s, &mut got);
    ///     }
    ///     Ok::<_, std::io::Error>(got)
    /// })??;
    /// assert_eq!(got, ["one", "two"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_unread<R>(&self, decode: impl FnOnce(&[u8]) -> (usize, R)) -> io::Result<R> {
        let lent = self.inner.st.borrow_mut().r.lend();
        let Some((buf, pos)) = lent else {
            return Err(StreamError::ReadPending.into());
        };
        let (n, out) = decode(&buf[pos..]);
        let n = n.min(buf.len() - pos);
        let mut st = self.inner.st.borrow_mut();
        match self.lp() {
            Some(lp) => st.r.give_back(&lp, buf, pos, n),
            None => drop(buf), // (the loop is gone, and the stream with it)
        }
        Ok(out)
    }

    /// A read that takes nothing: it completes, with an empty `Vec`, once more bytes
    /// have arrived than were unread when it was made (they stay in the stream, for
    /// [`with_unread`](Self::with_unread)), or fails with what ended the stream
    /// ([`StreamError::Eof`] at end of file). With `then` or `.await`, as every read.
    ///
    /// ```
    /// # use coreloop::{IoLoop, IoStream};
    /// # use std::io::Write;
    /// # let lp = IoLoop::new()?;
    /// # let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// # let s = IoStream::new(&lp, a)?;
    /// b.write_all(b"PING\r\n")?;
    /// s.read_more().then(|lp, s, r| {
    ///     assert!(r.unwrap().is_empty());
    ///     let line = s.with_unread(|buf| (buf.len(), buf.to_vec())).unwrap();
    ///     assert_eq!(line, b"PING\r\n");
    ///     lp.stop();
    /// });
    /// lp.start()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_more(&self) -> Reading {
        let unread = self.read_buffer_len();
        Reading::new(self, Ok(ReadKind::More(unread)))
    }
}
