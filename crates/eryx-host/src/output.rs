//! The output of a sandbox, captured where the guest cannot reach: the WASI stdout and stderr
//! of its instance. Whatever writes file descriptor 1 or 2 in the guest (`print`,
//! `sys.stdout.buffer`, `os.write`, C code) arrives here, in order. During an `execute` each
//! stream keeps at most [`Limits::max_output_bytes`](crate::Limits::max_output_bytes) bytes,
//! cut at a character boundary, and counts the characters beyond; an optional listener sees
//! the kept bytes as they are written. Outside an `execute` (instantiation, the state calls)
//! output is dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::tail::TailPipe;
use crate::Output;

/// One of a sandbox's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Sees a sandbox's output as it is written: the stream and the bytes (only what the output
/// keeps: nothing beyond the limit). Called on the thread running the guest, in order; a slow
/// listener slows the guest.
pub type OutputListener = Arc<dyn Fn(Stream, &[u8]) + Send + Sync>;

/// The mark that ends a stream's text when it was cut: how many characters were left out.
pub fn cut_mark(dropped_characters: u64) -> String {
    format!("\n[eryx: output truncated: {dropped_characters} more characters were printed]\n")
}

/// What one guest write may bring at once: more than any write can be. The guest's libc writes
/// no more than this per call and answers the count, and Python's unbuffered streams (like a
/// native one's on a pipe, where a blocking write is whole) do not write the rest, so a smaller
/// budget would lose output. A write is copied once into the host's memory (so it is bounded by
/// the guest's memory) and gone when it is counted.
const WRITE_BUDGET: usize = u32::MAX as usize;

/// One stream of one execute.
#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    /// Characters (UTF-8 sequences) written beyond the limit; more than 0 exactly when the
    /// stream was cut.
    dropped: u64,
}

impl Kept {
    /// Keeps what fits of `data` under `limit` (never a character's first bytes without the
    /// rest); answers the part kept.
    fn take<'a>(&mut self, data: &'a [u8], limit: usize) -> &'a [u8] {
        if self.cut() {
            self.dropped += characters(data);
            return &[];
        }
        let room = limit.saturating_sub(self.bytes.len());
        if data.len() <= room {
            self.bytes.extend_from_slice(data);
            return data;
        }
        let at = character_start(data, room);
        if at == 0 && data.first().is_some_and(|&byte| is_continuation(byte)) {
            // The character whose first bytes ended the last write goes whole: its start too.
            let start = character_start(&self.bytes, self.bytes.len());
            if self.bytes.get(start).is_some_and(|&byte| byte >= 0xC0) {
                self.bytes.truncate(start);
                let rest = data.iter().position(|&byte| !is_continuation(byte)).unwrap_or(data.len());
                self.dropped += 1 + characters(&data[rest..]);
                return &[];
            }
        }
        self.bytes.extend_from_slice(&data[..at]);
        // At least one: a stream was cut exactly when it dropped something.
        self.dropped += characters(&data[at..]).max(1);
        &data[..at]
    }

    fn cut(&self) -> bool {
        self.dropped > 0
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// Where to cut `data` at or before `at` without taking a character's first bytes without the
/// rest: before the UTF-8 sequence that `at` falls inside, if any (a stray continuation byte
/// is a character of its own).
fn character_start(data: &[u8], at: usize) -> usize {
    for start in (at.saturating_sub(3)..at).rev() {
        let length = match data[start] {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            byte if is_continuation(byte) => continue,
            _ => return at,
        };
        let complete = data[start + 1..(start + length).min(data.len())].iter().all(|&byte| is_continuation(byte));
        return if start + length > at && complete { start } else { at };
    }
    at
}

/// How many characters `data` holds as the text view shows them: a UTF-8 character, a lone
/// surrogate written as its bytes and a byte that is not UTF-8 count one each.
fn characters(data: &[u8]) -> u64 {
    let mut count = 0;
    units(data, |unit| {
        count += match unit {
            Unit::Text(text) => text.chars().count() as u64,
            Unit::Surrogate(_) | Unit::Byte(_) => 1,
        }
    });
    count
}

/// What output bytes are, as the text view reads them.
enum Unit<'a> {
    /// A run of UTF-8 text.
    Text(&'a str),
    /// A lone surrogate, written as its 3 bytes.
    Surrogate(u32),
    /// A byte that is not UTF-8.
    Byte(u8),
}

/// Walks `bytes` as the text view reads them, calling `each` per run of text and per
/// character that is not UTF-8.
fn units<'a>(bytes: &'a [u8], mut each: impl FnMut(Unit<'a>)) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, after) = match std::str::from_utf8(rest) {
            Ok(valid) => (valid, &rest[rest.len()..]),
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                // The first `valid_up_to` bytes are UTF-8 by definition.
                (std::str::from_utf8(valid).unwrap_or_default(), after)
            }
        };
        if !valid.is_empty() {
            each(Unit::Text(valid));
        }
        rest = match after {
            [] => after,
            [0xED, second @ 0xA0..=0xBF, third, ..] if is_continuation(*third) => {
                each(Unit::Surrogate(0xD000 | (u32::from(second & 0x3F) << 6) | u32::from(third & 0x3F)));
                &after[3..]
            }
            [byte, ..] => {
                each(Unit::Byte(*byte));
                &after[1..]
            }
        };
    }
}

#[derive(Default)]
struct Streams {
    /// Set during an execute: its limit per stream.
    limit: Option<usize>,
    stdout: Kept,
    stderr: Kept,
    listener: Option<OutputListener>,
}

/// A sandbox's capture of both streams (shared by its two WASI pipes).
#[derive(Clone, Default)]
pub(crate) struct Capture {
    streams: Arc<Mutex<Streams>>,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Streams> {
        // A poisoned lock (a listener panicked) still holds the output.
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts an execute's capture: empty streams of at most `limit` bytes each.
    pub(crate) fn begin(&self, limit: u64) {
        let mut streams = self.lock();
        streams.limit = Some(usize::try_from(limit).unwrap_or(usize::MAX));
        streams.stdout = Kept::default();
        streams.stderr = Kept::default();
    }

    /// Ends the execute's capture and answers its output.
    pub(crate) fn finish(&self) -> Output {
        let mut streams = self.lock();
        streams.limit = None;
        let (stdout, stderr) = (std::mem::take(&mut streams.stdout), std::mem::take(&mut streams.stderr));
        let view = |kept: &Kept| {
            let mut text = text_view(&kept.bytes);
            if kept.cut() {
                text.push_str(&cut_mark(kept.dropped));
            }
            text
        };
        Output {
            stdout: view(&stdout),
            stderr: view(&stderr),
            truncated: stdout.cut() || stderr.cut(),
            stdout_dropped: stdout.dropped,
            stderr_dropped: stderr.dropped,
            stdout_bytes: stdout.bytes,
            stderr_bytes: stderr.bytes,
        }
    }

    pub(crate) fn set_listener(&self, listener: Option<OutputListener>) {
        self.lock().listener = listener;
    }

    pub(crate) fn listener(&self) -> Option<OutputListener> {
        self.lock().listener.clone()
    }

    fn write(&self, stream: Stream, data: &[u8]) {
        let (kept, listener) = {
            let mut streams = self.lock();
            let Some(limit) = streams.limit else { return };
            let kept = match stream {
                Stream::Stdout => streams.stdout.take(data, limit),
                Stream::Stderr => streams.stderr.take(data, limit),
            };
            (kept, streams.listener.clone())
        };
        // Outside the lock: a listener may take its time (or print).
        if let (Some(listener), false) = (listener, kept.is_empty()) {
            listener(stream, kept);
        }
    }

    /// The WASI pipe of `stream`; stderr's also keeps its last bytes in `tail` (a guest
    /// panic's reason, whatever the limit).
    pub(crate) fn pipe(&self, stream: Stream, tail: Option<TailPipe>) -> CapturePipe {
        CapturePipe { capture: self.clone(), stream, tail }
    }
}

/// Output bytes as text: UTF-8 as it is; a lone surrogate that Python wrote as its bytes
/// (`surrogatepass`) as its escape (`\udcff`), and any other byte that is not UTF-8 as the
/// escape of the surrogate Python reads it as (`surrogateescape`: byte 0xff is `\udcff`).
pub fn text_view(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    units(bytes, |unit| match unit {
        Unit::Text(character) => text.push_str(character),
        Unit::Surrogate(unit) => text.push_str(&format!("\\u{unit:04x}")),
        Unit::Byte(byte) => text.push_str(&format!("\\udc{byte:02x}")),
    });
    text
}

/// The WASI stdout or stderr of one instance, writing into its sandbox's [`Capture`].
#[derive(Clone)]
pub(crate) struct CapturePipe {
    capture: Capture,
    stream: Stream,
    tail: Option<TailPipe>,
}

impl CapturePipe {
    fn accept(&self, data: &[u8]) {
        if let Some(tail) = &self.tail {
            tail.append(data);
        }
        self.capture.write(self.stream, data);
    }
}

impl IsTerminal for CapturePipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturePipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturePipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready: what is beyond the limit is counted, not kept.
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturePipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturePipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(limit: u64, writes: &[(Stream, &[u8])]) -> Output {
        let capture = Capture::default();
        capture.begin(limit);
        for (stream, data) in writes {
            capture.write(*stream, data);
        }
        capture.finish()
    }

    #[test]
    fn each_stream_keeps_its_limit_and_counts_the_rest() {
        let output = captured(16, &[(Stream::Stdout, b"short\n"), (Stream::Stderr, &[b'e'; 40])]);
        assert_eq!(output.stdout, "short\n");
        assert_eq!(output.stderr, format!("{}{}", "e".repeat(16), cut_mark(24)));
        assert!(output.truncated);
        assert_eq!((output.stdout_dropped, output.stderr_dropped), (0, 24));
        // Later writes are counted, not kept, however they are split.
        let output = captured(4, &[(Stream::Stdout, b"abcdef"), (Stream::Stdout, b"gh\n")]);
        assert_eq!(output.stdout_bytes, b"abcd");
        assert_eq!(output.stdout, format!("abcd{}", cut_mark(5)));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let text = "é".repeat(20);
        let output = captured(15, &[(Stream::Stdout, text.as_bytes())]);
        assert_eq!(output.stdout, format!("{}{}", "é".repeat(7), cut_mark(13)));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_and_counted_one_each() {
        // Stray continuation bytes are characters of their own: kept up to the limit.
        let output = captured(16, &[(Stream::Stdout, &[0x80; 1000])]);
        assert_eq!(output.stdout_bytes.len(), 16);
        assert_eq!(output.stdout_dropped, 984);
        // A lone surrogate (3 bytes) counts one, as it is shown.
        let output = captured(2, &[(Stream::Stdout, b"ab\xed\xb3\xbfc")]);
        assert_eq!(output.stdout, format!("ab{}", cut_mark(2)));
        // A sequence cut short by the end of a write is not held back for the rest.
        assert_eq!(character_start(b"abc\xc3", 3), 3);
        assert_eq!(character_start(b"ab\xc3\xa9", 3), 2);
        assert_eq!(character_start(b"a\xe2\x82\xac", 2), 1);
        assert_eq!(character_start(b"\xf0\x9f\x98\x80", 3), 0);
    }

    #[test]
    fn a_character_split_between_two_writes_is_cut_whole() {
        let output = captured(16, &[(Stream::Stdout, b"abcdefghijklmno\xc3"), (Stream::Stdout, b"\xa9zzzz")]);
        assert_eq!(output.stdout, format!("abcdefghijklmno{}", cut_mark(5)));
        // A whole character before the cut stays.
        let output = captured(3, &[(Stream::Stdout, "aé".as_bytes()), (Stream::Stdout, b"\x80z")]);
        assert_eq!(output.stdout_bytes, "aé".as_bytes());
    }

    #[test]
    fn nothing_is_kept_outside_an_execute() {
        let capture = Capture::default();
        capture.write(Stream::Stdout, b"instantiation noise");
        capture.begin(100);
        capture.write(Stream::Stdout, b"mine");
        assert_eq!(capture.finish().stdout, "mine");
        capture.write(Stream::Stdout, b"after");
        capture.begin(100);
        assert_eq!(capture.finish().stdout, "");
    }

    #[test]
    fn the_listener_sees_what_is_kept_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let capture = Capture::default();
        let sink = seen.clone();
        capture.set_listener(Some(Arc::new(move |stream, bytes: &[u8]| sink.lock().unwrap().push((stream, bytes.to_vec())))));
        capture.begin(5);
        capture.write(Stream::Stdout, b"one\n");
        capture.write(Stream::Stderr, b"err\n");
        capture.write(Stream::Stdout, b"two\n");
        capture.write(Stream::Stdout, b"three\n");
        capture.finish();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(Stream::Stdout, b"one\n".to_vec()), (Stream::Stderr, b"err\n".to_vec()), (Stream::Stdout, b"t".to_vec())]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_escaped() {
        // A lone surrogate as Python's `surrogatepass` writes it, a stray byte, and text.
        assert_eq!(text_view("a".as_bytes()), "a");
        assert_eq!(text_view(b"a\xed\xb3\xbfb"), "a\\udcffb");
        assert_eq!(text_view(b"a\xed\xa0\x80"), "a\\ud800");
        assert_eq!(text_view(b"x\xffy\xc3"), "x\\udcffy\\udcc3");
        assert_eq!(text_view("é\u{1F600}".as_bytes()), "é\u{1F600}");
    }
}
