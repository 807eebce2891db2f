//! Upstream HTTP/1.1 exchanges for requests whose body is empty or already in memory (GET,
//! HEAD and the other idempotent methods, and bodiless requests of any method): the request
//! head is written and the response read by the request's own task, on a keep-alive
//! connection from the serving thread's pool.
//!
//! Written here, over `httparse` (the parser hyper itself uses), rather than sent through
//! hyper's client connection: hyper runs every client connection as a task of its own and
//! hands each request to it, and each response and response body back, over channels. For
//! the small exchanges that make up most of a gateway's traffic that hand-over cost more than
//! the parsing and the I/O together (see docs/BENCHMARKS.md), and no maintained client crate
//! exchanges on a connection from the caller's task. Requests that stream a body, and
//! upgrades, still go through hyper (`connections`), which reads the response while the body
//! is being written.
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when the last
//! transfer coding is chunked; else `Content-Length`; else the body runs until the upstream
//! closes. Interim (1xx) responses are passed over. A connection goes back to the pool only
//! after a response read to its end, from an HTTP/1.1 upstream that did not ask to close and
//! sent nothing after it; chunked trailers are read and dropped.

use std::{
    cell::RefCell,
    future::Future as _,
    io,
    pin::{pin, Pin},
    task::{ready, Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{
    header, uri::Authority, uri::PathAndQuery, HeaderMap, HeaderName, HeaderValue, Method,
    Response, StatusCode, Version,
};
use http_body::{Frame, SizeHint};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::pool::{dial, host_of, Pool, SendError, Usable};

/// The largest response head read (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers read.
const MAX_HEADERS: usize = 128;
/// How much room a read asks for.
const READ_SIZE: usize = 8 * 1024;
/// A body at most this long is copied out of the read buffer, which then serves the next
/// exchange; a longer one takes the buffer's bytes and the connection a new buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// The longest request body sent this way (a longer one goes through hyper). It is written
/// with the head in one write that the socket buffers take whole, so the response is never
/// waited for while the upstream waits for the rest of the request, or the other way round.
pub const BODY_LIMIT: usize = 16 * 1024;
/// Buffers that grew beyond this are not kept for the next exchange.
const KEEP_BUFFER: usize = 64 * 1024;

/// A keep-alive connection to an upstream, with the buffers it reuses.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// The request head being written.
    write: Vec<u8>,
}

thread_local! {
    static IDLE: RefCell<Pool<Conn>> = const { RefCell::new(Pool::new()) };
}

/// Whether an idle connection is still open and silent: a readable idle connection has been
/// closed by the upstream, or holds bytes nobody asked for. Costs no system call unless the
/// socket was reported readable.
fn usable(conn: &mut Conn) -> Usable {
    let mut cx = Context::from_waker(Waker::noop());
    match conn.stream.poll_read_ready(&mut cx) {
        Poll::Pending => Usable::Yes,
        Poll::Ready(Err(_)) => Usable::Closed,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Usable::Yes,
                _ => Usable::Closed,
            }
        }
    }
}

fn checkout(authority: &Authority) -> Option<Conn> {
    IDLE.try_with(|idle| idle.try_borrow_mut().ok()?.checkout(authority, usable))
        .ok()
        .flatten()
}

fn release(authority: &Authority, mut conn: Conn) {
    if conn.read.capacity() > KEEP_BUFFER {
        conn.read = BytesMut::new();
    }
    if conn.write.capacity() > KEEP_BUFFER {
        conn.write = Vec::new();
    }
    // An idle connection's age needs no precision finer than the tick.
    let now = crate::coarse_timer::now();
    // `try_with`: a connection released while the thread's storage is being torn down is
    // just closed.
    let _ = IDLE.try_with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            idle.release(authority, conn, now);
        }
    });
}

/// Closes the calling thread's lean connections idle for too long or closed by the upstream.
pub fn sweep(now: Instant) {
    let _ = IDLE.try_with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            idle.sweep(now, |conn| matches!(usable(conn), Usable::Yes));
        }
    });
}

/// A request to send: everything but the body is borrowed, so an attempt copies nothing.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub target: &'a PathAndQuery,
    /// Without hop-by-hop headers; `Content-Length` and `Transfer-Encoding` are ignored (the
    /// length written is the body's own).
    pub headers: &'a HeaderMap,
    /// Written after `headers`, in place of any of theirs with the same names.
    pub added: &'a crate::headers::Added,
    pub body: &'a Bytes,
}

/// Sends `request` to `authority` on an idle connection, or a new one when none is idle, and
/// reads the response head (and the body, when it came with the head). The body must be at
/// most [`BODY_LIMIT`] long.
pub async fn send(
    authority: &Authority,
    request: Outgoing<'_>,
    connect_timeout: Duration,
) -> Result<Response<Reply>, SendError> {
    if let Some(mut conn) = checkout(authority) {
        match exchange(&mut conn, authority, &request).await {
            Ok(head) => return Ok(respond(authority, conn, head)),
            // An upstream may close a kept-alive connection just as it is reused, before the
            // close is seen; a request that is harmless to repeat goes again on a new
            // connection rather than failing (as browsers do). Others fail: the upstream may
            // have acted on them.
            Err(SendError::ClosedEarly | SendError::Io(_)) if request.method.is_idempotent() => {}
            Err(e) => return Err(e),
        }
    }
    // Boxed: connecting is the rare path, and its future would otherwise be copied around
    // with every pooled request.
    let mut conn = Conn {
        stream: Box::pin(dial(authority, connect_timeout)).await?,
        read: BytesMut::with_capacity(READ_SIZE),
        write: Vec::with_capacity(1024),
    };
    let head = exchange(&mut conn, authority, &request).await?;
    Ok(respond(authority, conn, head))
}

/// Writes the request on `conn` and reads the final response head.
async fn exchange(
    conn: &mut Conn,
    authority: &Authority,
    request: &Outgoing<'_>,
) -> Result<Head, SendError> {
    encode(&mut conn.write, authority, request);
    conn.write.extend_from_slice(request.body);
    conn.stream.write_all(&conn.write).await?;
    read_head(conn, request.method).await
}

/// The response for `head`, with its body taken from `conn`'s buffer when it is all there
/// (and the connection back in the pool), or still to be read from `conn`.
fn respond(authority: &Authority, mut conn: Conn, head: Head) -> Response<Reply> {
    let mut response = Response::new(Reply::Empty);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    let reusable = head.reusable;
    match head.framing {
        Framing::Length(0) => {
            finish(authority, conn, reusable);
        }
        Framing::Length(n) if conn.read.len() as u64 >= n => {
            let n = n as usize;
            let bytes = if n <= COPY_LIMIT {
                let bytes = Bytes::copy_from_slice(&conn.read[..n]);
                conn.read.advance(n);
                bytes
            } else {
                conn.read.split_to(n).freeze()
            };
            *response.body_mut() = Reply::Full(Some(bytes));
            finish(authority, conn, reusable);
        }
        framing => {
            *response.body_mut() = Reply::Streaming(Box::new(Streaming {
                conn: Some(conn),
                authority: authority.clone(),
                state: match framing {
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::ChunkSize,
                    Framing::UntilClose => State::UntilClose,
                },
                reusable,
            }));
        }
    }
    response
}

/// Back to the pool after a complete response, when the connection may carry another.
fn finish(authority: &Authority, conn: Conn, reusable: bool) {
    // Anything after the response is something the upstream should not have sent.
    if reusable && conn.read.is_empty() {
        release(authority, conn);
    }
}

/// One header line. Names and values cannot hold CR or LF (the `http` types refuse them), so
/// a header cannot smuggle another line into the head.
fn line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let name = name.as_str().as_bytes();
    let value = value.as_bytes();
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the request head into `out`.
fn encode(out: &mut Vec<u8>, authority: &Authority, request: &Outgoing<'_>) {
    out.clear();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    let mut had_length = false;
    for (name, value) in request.headers {
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == header::TRANSFER_ENCODING || crate::headers::Added::replaces(name) {
            continue;
        }
        has_host |= name == header::HOST;
        line(out, name, value);
    }
    request.added.for_each(|name, value| line(out, name, value));
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host_of(authority).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len = request.body.len();
    let expects_body = matches!(*request.method, Method::POST | Method::PUT | Method::PATCH);
    if len > 0 || had_length || expects_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(len, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into `buf`.
fn itoa(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    reusable: bool,
}

/// Reads until a final (non-1xx) response head is in, and consumes it from the buffer.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<Head, SendError> {
    loop {
        if !conn.read.is_empty() {
            if let Some((used, head)) = parse_head(&conn.read, method)? {
                conn.read.advance(used);
                match head {
                    Some(head) => return Ok(head),
                    // An interim response: the final one follows.
                    None => continue,
                }
            }
        }
        if conn.read.len() >= MAX_HEAD {
            return Err(SendError::Invalid("response head too large"));
        }
        conn.read.reserve(READ_SIZE);
        if conn.stream.read_buf(&mut conn.read).await? == 0 {
            return Err(SendError::ClosedEarly);
        }
    }
}

/// Parses a response head at the start of `buf`: `None` while it is incomplete, else the
/// bytes it took and the head (`None` for an interim 1xx response).
fn parse_head(buf: &[u8], method: &Method) -> Result<Option<(usize, Option<Head>)>, SendError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Invalid("too many response headers"))
        }
        Err(_) => return Err(SendError::Invalid("malformed response head")),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| SendError::Invalid("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(SendError::Invalid("an upgrade nobody asked for"));
    }
    if status.is_informational() {
        return Ok(Some((used, None)));
    }
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    // One more than the upstream sent: the gateway adds its request id on the way back, and
    // a full map would grow (rehashing every entry) for it.
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + 1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut close = version != Version::HTTP_11;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| SendError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| SendError::Invalid("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(SendError::Invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(SendError::Invalid("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoded = true;
            // Only the last coding says how the message ends.
            chunked = last_token(h.value).is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    // Both framings announced is how request smuggling starts: the body is read as chunked
    // (RFC 9112 §6.3) and the connection not trusted again.
    let reusable =
        !close && framing != Framing::UntilClose && !(transfer_encoded && length.is_some());
    Ok(Some((
        used,
        Some(Head {
            status,
            version,
            headers,
            framing,
            reusable,
        }),
    )))
}

fn last_token(value: &[u8]) -> Option<&[u8]> {
    value
        .rsplit(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .find(|t| !t.is_empty())
}

/// A response body from a lean exchange.
pub enum Reply {
    Empty,
    /// The whole body, read with the head.
    Full(Option<Bytes>),
    /// The rest is still to be read from the connection.
    Streaming(Box<Streaming>),
}

/// Where a streamed body stands.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// A chunk-size line comes next.
    ChunkSize,
    /// Bytes left of the current chunk.
    Chunk(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// Everything until the upstream closes.
    UntilClose,
    Done,
}

pub struct Streaming {
    conn: Option<Conn>,
    authority: Authority,
    state: State,
    reusable: bool,
}

/// Why a streamed body stopped short.
fn broken(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Streaming {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.read;
            match self.state {
                State::Length(0) | State::Done => {
                    self.state = State::Done;
                    if let Some(conn) = self.conn.take() {
                        finish(&self.authority, conn, self.reusable);
                    }
                    return Poll::Ready(None);
                }
                State::Length(left) | State::Chunk(left) if !buf.is_empty() => {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match self.state {
                        // Done now, so the connection goes back before the body is sent on
                        // and the server knows the body has ended without another poll.
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::Chunk(left),
                    };
                    if matches!(self.state, State::Done) {
                        if let Some(conn) = self.conn.take() {
                            finish(&self.authority, conn, self.reusable);
                        }
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                State::UntilClose if !buf.is_empty() => {
                    return Poll::Ready(Some(Ok(buf.split().freeze())));
                }
                State::ChunkSize if !buf.is_empty() => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::Chunk(size)
                        };
                        continue;
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                    _ => return Poll::Ready(Some(Err(broken("invalid chunk size")))),
                },
                State::ChunkEnd if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(broken("chunk not followed by CRLF"))));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                    continue;
                }
                State::Trailers if !buf.is_empty() => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = State::Done;
                        continue;
                    }
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.advance(end + 4);
                        self.state = State::Done;
                        continue;
                    }
                    if buf.len() >= MAX_HEAD {
                        return Poll::Ready(Some(Err(broken("trailers too large"))));
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            buf.reserve(READ_SIZE);
            let read = pin!(conn.stream.read_buf(buf)).poll(cx);
            match ready!(read) {
                Ok(0) if matches!(self.state, State::UntilClose) => {
                    self.state = State::Done;
                    self.reusable = false;
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(broken(
                        "upstream closed the connection in the middle of the body",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Reply::Empty => Poll::Ready(None),
            Reply::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Reply::Streaming(s) => s.poll_next(cx).map(|next| next.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Empty => true,
            Reply::Full(bytes) => bytes.is_none(),
            Reply::Streaming(s) => matches!(s.state, State::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Empty => SizeHint::with_exact(0),
            Reply::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Reply::Streaming(s) => match s.state {
                State::Length(n) => SizeHint::with_exact(n),
                State::Done => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<(usize, Option<Head>)>, SendError> {
        parse_head(raw.as_bytes(), &method)
    }

    fn framing(raw: &str, method: Method) -> (Framing, bool) {
        match head(raw, method) {
            Ok(Some((_, Some(h)))) => (h.framing, h.reusable),
            _ => panic!("no final head in {raw:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(framing(ok, Method::GET), (Framing::Length(5), true));
        assert_eq!(framing(ok, Method::HEAD), (Framing::Length(0), true));
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n";
        assert_eq!(framing(chunked, Method::GET), (Framing::Chunked, true));
        let not_last = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n";
        assert_eq!(framing(not_last, Method::GET), (Framing::UntilClose, false));
        let both = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(framing(both, Method::GET), (Framing::Chunked, false));
        let none = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(framing(none, Method::GET), (Framing::UntilClose, false));
        let no_content = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(framing(no_content, Method::GET), (Framing::Length(0), true));
        let close = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(close, Method::GET), (Framing::Length(0), false));
        let old = "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(old, Method::GET), (Framing::Length(0), false));
        let old_kept = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(framing(old_kept, Method::GET), (Framing::Length(0), true));
    }

    #[test]
    fn interim_partial_and_bad_heads() {
        let interim = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            Method::GET,
        );
        assert!(matches!(interim, Ok(Some((25, None)))));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nx: y", Method::GET),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(head(bad, Method::GET).is_err(), "{bad:?} accepted");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            head(&many, Method::GET),
            Err(SendError::Invalid("too many response headers"))
        ));
    }

    #[test]
    fn request_heads_carry_the_bodys_own_length_and_a_host() {
        let authority = Authority::from_static("10.0.0.1:80");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        let body = Bytes::from_static(b"abc");
        let target = PathAndQuery::from_static("/p?q=1");
        let client = "10.0.0.9".parse().unwrap();
        let rid = HeaderValue::from_static("rid");
        let added = crate::headers::Added::new(&headers, client, false, rid.clone(), None);
        encode(
            &mut out,
            &authority,
            &Outgoing {
                method: &Method::PUT,
                target: &target,
                headers: &headers,
                added: &added,
                body: &body,
            },
        );
        // The trace context is new on every request: its 55 characters shown as TP.
        let text = String::from_utf8_lossy(&out).into_owned();
        let at = text.find("traceparent: ").expect("a traceparent") + 13;
        let text = format!("{}TP{}", &text[..at], &text[at + 55..]);
        assert_eq!(
            text,
            "PUT /p?q=1 HTTP/1.1\r\nx-a: 1\r\nx-a: 2\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-request-id: rid\r\ntraceparent: TP\r\n\
             host: 10.0.0.1\r\ncontent-length: 3\r\n\r\n"
        );
        let empty = Bytes::new();
        let none = HeaderMap::new();
        let added = crate::headers::Added::new(&none, client, false, rid, None);
        encode(
            &mut out,
            &Authority::from_static("up:8080"),
            &Outgoing {
                method: &Method::GET,
                target: &target,
                headers: &none,
                added: &added,
                body: &empty,
            },
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("GET /p?q=1 HTTP/1.1\r\nx-forwarded-for: 10.0.0.9\r\n"));
        assert!(text.ends_with("\r\nhost: up:8080\r\n\r\n"), "{text}");
        assert_eq!(itoa(0, &mut [0; 20]), b"0");
        assert_eq!(itoa(1234567, &mut [0; 20]), b"1234567");
    }
}
