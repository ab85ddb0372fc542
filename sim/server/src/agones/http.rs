//! Just enough HTTP/1.1 to talk to the Agones sidecar on localhost: one request per
//! connection (`Connection: close`), every step under a deadline, every buffer bounded.
//!
//! The parsing ([`parse_head`], [`decode_chunks`], [`LineBuffer`]) is plain functions
//! over bytes, tested without a socket; [`request`] and [`WatchStream`] only move bytes
//! between a `TcpStream` and them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most bytes a response head or a unary response body may take. The sidecar's
/// answers are a few hundred bytes (a GameServer with its labels and annotations a few
/// KiB); more is not the sidecar.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a call to the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The sidecar is not listening (yet, or any more).
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection broke.
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
    /// No complete answer before the deadline.
    #[error("no answer within the timeout")]
    Timeout,
    /// The bytes are not HTTP/1.1 as we speak it.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// More bytes than [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// A response's status line and the headers we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub body: BodyKind,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs to the end of the connection.
    UntilClose,
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` until the blank line has arrived;
/// then the head and the offset where the body starts.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_BYTES {
            Err(HttpError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let text =
        std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or(HttpError::Malformed("bad status code"))?;
    let mut body = BodyKind::UntilClose;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && body != BodyKind::Chunked {
            let len = value
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            if len > MAX_RESPONSE_BYTES {
                return Err(HttpError::TooLarge);
            }
            body = BodyKind::Length(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            body = BodyKind::Chunked;
        }
    }
    Ok(Some((Head { status, body }, end + 4)))
}

/// Moves every complete chunk at the front of `raw` (chunked transfer encoding) into
/// `out`, leaving a partial one in `raw` for later. `Ok(true)` once the last (empty)
/// chunk has been read. Chunk extensions and trailers are skipped.
pub fn decode_chunks(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, HttpError> {
    let mut at = 0;
    let finished = loop {
        let rest = &raw[at..];
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            break false;
        };
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Malformed("chunk size is not UTF-8"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        if size > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        if size == 0 {
            // The last chunk; whatever trailers follow are of no interest.
            break true;
        }
        let data_start = line_end + 2;
        if rest.len() < data_start + size + 2 {
            break false;
        }
        if &rest[data_start + size..data_start + size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
        out.extend_from_slice(&rest[data_start..data_start + size]);
        at += data_start + size + 2;
    };
    raw.drain(..at);
    if raw.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge);
    }
    Ok(finished)
}

/// Splits a byte stream into `\n`-terminated lines, each at most `max_line` bytes.
#[derive(Debug)]
pub struct LineBuffer {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineBuffer {
    /// Lines up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            pending: Vec::new(),
            max_line,
        }
    }

    /// Appends bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete line without its terminator (`\r\n` or `\n`); an error if a
    /// line grows past the limit without ending.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        match self.pending.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            None if self.pending.len() > self.max_line => Err(HttpError::TooLarge),
            None => Ok(None),
        }
    }
}

/// The request bytes: method, path, and a JSON body if any.
pub fn request_bytes(method: &str, path: &str, body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Reads from `stream` into `buf` once, waiting at most until `deadline`. `Ok(0)` is the
/// end of the stream.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HttpError::Timeout);
    }
    stream.set_read_timeout(Some(left)).map_err(HttpError::Io)?;
    match stream.read(buf) {
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(HttpError::Timeout)
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => read_some(stream, buf, deadline),
        Err(e) => Err(HttpError::Io(e)),
    }
}

fn connect(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HttpError::Timeout);
    }
    let stream = TcpStream::connect_timeout(&addr, left).map_err(|e| {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            HttpError::Timeout
        } else {
            HttpError::Connect(e)
        }
    })?;
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(HttpError::Io)?;
    Ok(stream)
}

/// Sends one request and reads the whole response, all within `timeout`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addr, deadline)?;
    stream
        .write_all(&request_bytes(method, path, body))
        .map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => HttpError::Timeout,
            _ => HttpError::Io(e),
        })?;
    let mut raw = Vec::with_capacity(1024);
    let mut scratch = [0u8; 4096];
    let (head, body_start) = loop {
        if let Some(parsed) = parse_head(&raw)? {
            break parsed;
        }
        let n = read_some(&mut stream, &mut scratch, deadline)?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed inside the head"));
        }
        raw.extend_from_slice(&scratch[..n]);
    };
    raw.drain(..body_start);
    let mut body = Vec::new();
    loop {
        let eof = match head.body {
            BodyKind::Length(len) if raw.len() >= len => {
                raw.truncate(len);
                body = raw;
                break;
            }
            BodyKind::Chunked if decode_chunks(&mut raw, &mut body)? => break,
            _ => {
                if raw.len() > MAX_RESPONSE_BYTES || body.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                let n = read_some(&mut stream, &mut scratch, deadline)?;
                raw.extend_from_slice(&scratch[..n]);
                n == 0
            }
        };
        if eof {
            match head.body {
                BodyKind::UntilClose => {
                    body = raw;
                    break;
                }
                _ => return Err(HttpError::Malformed("connection closed inside the body")),
            }
        }
    }
    Ok(Response {
        status: head.status,
        body,
    })
}

/// A streaming GET (`/watch/gameserver`): the head within a timeout, then the body line
/// by line for as long as the sidecar keeps the connection open.
pub struct WatchStream {
    stream: TcpStream,
    chunked: bool,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    lines: LineBuffer,
}

/// What [`WatchStream::next_line`] saw.
#[derive(Debug)]
pub enum WatchRead {
    /// A line of the body.
    Line(Vec<u8>),
    /// Nothing within the poll interval; the stream is still open.
    Idle,
    /// The sidecar ended the stream.
    Ended,
}

impl WatchStream {
    /// Connects, sends the GET and reads the head, all within `timeout`; fails unless the
    /// status is 2xx.
    pub fn open(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Self, HttpError> {
        let deadline = Instant::now() + timeout;
        let mut stream = connect(addr, deadline)?;
        stream
            .write_all(&request_bytes("GET", path, None))
            .map_err(HttpError::Io)?;
        let mut raw = Vec::with_capacity(1024);
        let mut scratch = [0u8; 4096];
        let (head, body_start) = loop {
            if let Some(parsed) = parse_head(&raw)? {
                break parsed;
            }
            let n = read_some(&mut stream, &mut scratch, deadline)?;
            if n == 0 {
                return Err(HttpError::Malformed("connection closed inside the head"));
            }
            raw.extend_from_slice(&scratch[..n]);
        };
        if !(200..300).contains(&head.status) {
            return Err(HttpError::Malformed("watch answered with an error status"));
        }
        raw.drain(..body_start);
        Ok(Self {
            stream,
            chunked: head.body == BodyKind::Chunked,
            raw,
            decoded: Vec::new(),
            lines: LineBuffer::new(MAX_RESPONSE_BYTES),
        })
    }

    /// The next line, waiting at most `poll` for bytes.
    pub fn next_line(&mut self, poll: Duration) -> Result<WatchRead, HttpError> {
        loop {
            self.move_raw_to_lines()?;
            if let Some(line) = self.lines.next_line()? {
                return Ok(WatchRead::Line(line));
            }
            let mut scratch = [0u8; 4096];
            match read_some(&mut self.stream, &mut scratch, Instant::now() + poll) {
                Ok(0) => return Ok(WatchRead::Ended),
                Ok(n) => self.raw.extend_from_slice(&scratch[..n]),
                Err(HttpError::Timeout) => return Ok(WatchRead::Idle),
                Err(e) => return Err(e),
            }
        }
    }

    fn move_raw_to_lines(&mut self) -> Result<(), HttpError> {
        if self.chunked {
            decode_chunks(&mut self.raw, &mut self.decoded)?;
            self.lines.push(&self.decoded);
            self.decoded.clear();
        } else {
            self.lines.push(&self.raw);
            self.raw.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_with_content_length_parses_once_complete() {
        let bytes =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert!(parse_head(&bytes[..20]).unwrap().is_none());
        let (head, start) = parse_head(bytes).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.body, BodyKind::Length(2));
        assert_eq!(&bytes[start..], b"{}");
    }

    #[test]
    fn chunked_wins_over_content_length_and_errors_are_named() {
        let (head, _) =
            parse_head(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.status, 500);
        assert_eq!(head.body, BodyKind::Chunked);
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"),
            Err(HttpError::TooLarge)
        ));
        assert!(matches!(
            parse_head(&vec![b'a'; MAX_RESPONSE_BYTES + 1]),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn chunks_decode_across_arbitrary_splits() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut raw = body[..split].to_vec();
            let mut out = Vec::new();
            let finished_early = decode_chunks(&mut raw, &mut out).unwrap();
            raw.extend_from_slice(&body[split..]);
            let finished = decode_chunks(&mut raw, &mut out).unwrap();
            assert!(finished || finished_early, "split at {split}");
            assert_eq!(out, b"hello, world", "split at {split}");
        }
        let mut bad = b"zz\r\n".to_vec();
        assert!(decode_chunks(&mut bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn lines_split_on_newlines_and_are_bounded() {
        let mut lines = LineBuffer::new(16);
        lines.push(b"{\"a\":1}\r\n{\"b\"");
        assert_eq!(lines.next_line().unwrap().unwrap(), b"{\"a\":1}");
        assert!(lines.next_line().unwrap().is_none());
        lines.push(b":2}\n");
        assert_eq!(lines.next_line().unwrap().unwrap(), b"{\"b\":2}");
        lines.push(&[b'x'; 17]);
        assert!(matches!(lines.next_line(), Err(HttpError::TooLarge)));
    }

    #[test]
    fn a_request_carries_its_json_body_and_length() {
        let bytes = request_bytes(
            "PATCH",
            "/v1beta1/counters/players",
            Some(b"{\"count\":\"3\"}"),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("PATCH /v1beta1/counters/players HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"count\":\"3\"}"));
        let get = String::from_utf8(request_bytes("GET", "/gameserver", None)).unwrap();
        assert!(!get.contains("Content-Length"));
    }
}
