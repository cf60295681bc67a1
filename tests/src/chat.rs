//! A chat stand-in on 127.0.0.1: an HTTP server that records every request it receives (the
//! host it was addressed to, the path, the JSON body) and answers as told: `200 ok`, `503`, or
//! after a delay. It plays Slack's `response_url` endpoint (`POST`, JSON, answered `200 ok`:
//! Slack, "Handling user interaction", *Message responses*) for the follow-up tests and the
//! demo; whatever reaches it, and only it, is what ec2pass posted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the stand-in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `200 ok`, at once.
    Up,
    /// `503`, at once (the chat is down).
    Down,
    /// `200 ok` after this long.
    Slow(Duration),
}

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The `Host` header.
    pub host: String,
    /// The request line's path.
    pub path: String,
    /// The body, as JSON (`Null` when it is not).
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
}

/// The running stand-in.
#[derive(Clone)]
pub struct ChatStandIn {
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    received: Arc<Mutex<Vec<Received>>>,
    mode: Arc<Mutex<Mode>>,
}

impl ChatStandIn {
    /// Listens on a free loopback port, answering as `mode` says (changeable later).
    pub fn start(mode: Mode) -> Self {
        Self::start_on(0, mode)
    }

    /// Listens on this loopback port (`make demo`'s is 4010, the origin `dev/local.env` lets
    /// the issuer keep reply URLs on).
    pub fn start_on(port: u16, mode: Mode) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("a loopback port");
        let origin = format!("http://{}", listener.local_addr().expect("its address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(mode));
        let (r, m) = (received.clone(), mode.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, m) = (r.clone(), m.clone());
                std::thread::spawn(move || serve(&stream, &r, &m));
            }
        });
        Self {
            origin,
            received,
            mode,
        }
    }

    /// A reply URL on the stand-in, shaped like Slack's.
    pub fn reply_url(&self) -> String {
        format!(
            "{}/commands/T0/{}/{}",
            self.origin,
            crate::unique(""),
            crate::unique("x")
        )
    }

    /// Answers as `mode` from now on.
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn serve(stream: &std::net::TcpStream, received: &Mutex<Vec<Received>>, mode: &Mutex<Mode>) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (mut length, mut host) = (0usize, String::new());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        if let Some((name, v)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("host") {
                host = v.trim().to_owned();
            }
        }
        line.clear();
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let now = *mode.lock().unwrap_or_else(|p| p.into_inner());
    let (code, status) = match now {
        Mode::Up | Mode::Slow(_) => (200, "200 OK"),
        Mode::Down => (503, "503 Service Unavailable"),
    };
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            host,
            path,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            status: code,
        });
    if let Mode::Slow(d) = now {
        std::thread::sleep(d);
    }
    let answer = if now == Mode::Down { "" } else { "ok" };
    let _ = write!(
        &mut &*stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}
