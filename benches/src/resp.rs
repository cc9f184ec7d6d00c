//! A tiny blocking RESP2 client over a std `TcpStream`: enough for PING loops,
//! seeding, EVAL, INFO and Sentinel queries, with explicit timeouts and no buffering
//! surprises (each command is one write, each reply is read completely).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => String::new(),
            Reply::Array(Some(items)) => items.iter().map(|r| r.text()).collect::<Vec<_>>().join(" "),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    pub fn items(&self) -> Vec<Reply> {
        match self {
            Reply::Array(Some(items)) => items.clone(),
            _ => vec![],
        }
    }
}

pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn connect(addr: SocketAddr, connect_timeout: Duration, io_timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, connect_timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(io_timeout))?;
        s.set_write_timeout(Some(io_timeout))?;
        Ok(Conn { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    pub fn port(port: u16) -> io::Result<Conn> {
        Self::connect(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(2), Duration::from_secs(120))
    }

    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.writer.write_all(&encode(args))
    }

    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&bytes)?;
        self.read()
    }

    /// PING written inline (the smallest request there is).
    pub fn ping(&mut self) -> io::Result<Reply> {
        self.writer.write_all(b"PING\r\n")?;
        self.read()
    }

    pub fn read(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_reply(r: &mut BufReader<TcpStream>) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    let num = || rest.parse::<i64>().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP length {rest:?}: {e}")));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r)?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"))),
    })
}

/// `field:value` lines of INFO (or `SENTINEL master`'s flat field/value array).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
}

pub fn pairs_field(reply: &Reply, field: &str) -> Option<String> {
    let items = reply.items();
    items.chunks(2).find(|kv| kv.len() == 2 && kv[0].text() == field).map(|kv| kv[1].text())
}
