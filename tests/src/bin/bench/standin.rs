//! A stand-in for the Lambda Runtime API, on 127.0.0.1, for one function process.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` and chunked bodies) to serve what
//! `lambda_runtime` asks for:
//!
//! - `GET /2018-06-01/runtime/invocation/next`: the next queued event, with the
//!   `Lambda-Runtime-*` headers; held open until an event is queued (as Lambda does);
//! - `POST /2018-06-01/runtime/invocation/{id}/response` and `…/{id}/error`: recorded;
//! - `POST /2018-06-01/runtime/init/error`: recorded.
//!
//! Every request is timestamped the moment its request line arrives, so the harness can measure
//! from the exec of the binary to its first `next`, or to its answer.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

/// What the function posted back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostKind {
    /// `…/invocation/{id}/response`.
    Response,
    /// `…/invocation/{id}/error`.
    Error,
    /// `…/runtime/init/error`.
    InitError,
}

/// One post from the function.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The invocation it answers (empty for an init error).
    pub request_id: String,
    /// When its request line arrived.
    pub at: Instant,
    /// Response or error.
    pub kind: PostKind,
    /// The body, as sent.
    pub body: Vec<u8>,
}

impl Posted {
    /// The body as text (for messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Vec<u8>)>,
    first_next: Option<Instant>,
    posted: Vec<Posted>,
    seq: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    function_arn: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Runtime API of one function process. Dropping it stops serving.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub fn start(function: &str) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
        });
        let accepting = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("standin-{function}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if accepting.lock().closed {
                        return;
                    }
                    let Ok(stream) = conn else { continue };
                    let shared = accepting.clone();
                    // A connection ends when the function process does.
                    let _detached = std::thread::spawn(move || serve(stream, &shared));
                }
            })?;
        Ok(Self {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event; returns its request id.
    pub fn push(&self, event: Vec<u8>) -> String {
        let mut state = self.shared.lock();
        state.seq += 1;
        let id = format!("bench-{:08}", state.seq);
        state.queue.push_back((id.clone(), event));
        self.shared.changed.notify_all();
        id
    }

    /// When the first `next` arrived, waiting at most `wait` for it.
    pub fn first_next(&self, wait: Duration) -> Option<Instant> {
        self.wait_until(wait, |s| s.first_next)
    }

    /// The posts so far, once there are at least `n` (or an init error), waiting at most `wait`.
    pub fn posted(&self, n: usize, wait: Duration) -> Option<Vec<Posted>> {
        self.wait_until(wait, |s| {
            let init_failed = s.posted.iter().any(|p| p.kind == PostKind::InitError);
            (s.posted.len() >= n || init_failed).then(|| s.posted.clone())
        })
    }

    /// How many posts have arrived, once there are at least `n` (or an init error), waiting at
    /// most `wait`.
    pub fn count_at_least(&self, n: usize, wait: Duration) -> Option<usize> {
        self.wait_until(wait, |s| {
            let init_failed = s.posted.iter().any(|p| p.kind == PostKind::InitError);
            (s.posted.len() >= n || init_failed).then_some(s.posted.len())
        })
    }

    /// How many posts have arrived.
    pub fn posted_count(&self) -> usize {
        self.shared.lock().posted.len()
    }

    fn wait_until<T>(&self, wait: Duration, ready: impl Fn(&State) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + wait;
        let mut state = self.shared.lock();
        loop {
            if let Some(v) = ready(&state) {
                return Some(v);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .map_or_else(|p| p.into_inner().0, |(s, _)| s);
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    at: Instant,
    body: Vec<u8>,
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let Ok(Some(req)) = read_request(&mut reader) else {
            return;
        };
        let written = match (req.method.as_str(), req.path.as_str()) {
            ("GET", NEXT) => match next_event(shared, req.at) {
                Some((id, event)) => {
                    let deadline_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                        + 60_000;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Lambda-Runtime-Aws-Request-Id: {id}\r\n\
                         Lambda-Runtime-Deadline-Ms: {deadline_ms}\r\n\
                         Lambda-Runtime-Invoked-Function-Arn: {}\r\n\
                         Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\
                         Content-Length: {}\r\n\r\n",
                        shared.function_arn,
                        event.len()
                    );
                    writer
                        .write_all(head.as_bytes())
                        .and_then(|()| writer.write_all(&event))
                }
                None => return,
            },
            ("POST", INIT_ERROR) => {
                record(shared, String::new(), PostKind::InitError, req);
                accepted(&mut writer)
            }
            ("POST", path) if path.starts_with(INVOCATION) => {
                let rest = &path[INVOCATION.len()..];
                let posted = rest
                    .strip_suffix("/response")
                    .map(|id| (id, PostKind::Response))
                    .or_else(|| rest.strip_suffix("/error").map(|id| (id, PostKind::Error)));
                match posted {
                    Some((id, kind)) => {
                        record(shared, id.to_owned(), kind, req);
                        accepted(&mut writer)
                    }
                    None => not_found(&mut writer),
                }
            }
            _ => not_found(&mut writer),
        };
        if written.and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

/// Notes the first `next` and waits for an event; `None` once the stand-in is closed.
fn next_event(shared: &Shared, at: Instant) -> Option<(String, Vec<u8>)> {
    let mut state = shared.lock();
    state.first_next.get_or_insert(at);
    shared.changed.notify_all();
    loop {
        if state.closed {
            return None;
        }
        if let Some(event) = state.queue.pop_front() {
            return Some(event);
        }
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(|p| p.into_inner());
    }
}

fn record(shared: &Shared, request_id: String, kind: PostKind, req: Request) {
    let mut state = shared.lock();
    state.posted.push(Posted {
        request_id,
        at: req.at,
        kind,
        body: req.body,
    });
    shared.changed.notify_all();
}

fn accepted(w: &mut TcpStream) -> io::Result<()> {
    let body = br#"{"status":"OK"}"#;
    write!(
        w,
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)
}

fn not_found(w: &mut TcpStream) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
}

/// Reads one request; `None` at the end of the connection.
fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if r.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| bad("content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let mut body = vec![0; length];
        r.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request {
        method,
        path,
        at,
        body,
    }))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let size = size.trim_end();
        let hex = size.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(hex, 16).map_err(|_| bad("chunk size"))?;
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                if r.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf)?;
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_with_trailers_is_read_whole() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer-A: b\r\n\r\n";
        let req = read_request(&mut &raw[..])
            .ok()
            .flatten()
            .expect("one request");
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/x"));
        assert_eq!(req.body, b"hello world");
    }

    #[test]
    fn keep_alive_requests_are_read_one_after_the_other() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = &raw[..];
        let first = read_request(&mut r).ok().flatten().expect("first");
        let second = read_request(&mut r).ok().flatten().expect("second");
        assert_eq!(first.path, "/a");
        assert_eq!(
            (second.path.as_str(), second.body.as_slice()),
            ("/b", &b"abc"[..])
        );
        assert!(read_request(&mut r).ok().flatten().is_none());
    }
}
