//! The command line's side of the API: HTTP/1.1 over the router's unix
//! socket, blocking, one request per connection.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no weft router is running with this run directory (no API at {0}); start one with `weft launch`"
    )]
    NotRunning(PathBuf),
    #[error("talking to the router at {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the router answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the router sent an unreadable answer")]
    Garbled,
    #[error(
        "the router closed the connection without answering: it stopped or died while handling the request; `weft status` says whether it runs, its log why it stopped"
    )]
    Vanished,
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Client {
        Client { socket }
    }

    pub fn get(&self, path: &str) -> Result<String, ClientError> {
        self.request("GET", path, "")
    }

    pub fn post(&self, path: &str, body: &str) -> Result<String, ClientError> {
        self.request("POST", path, body)
    }

    pub fn delete(&self, path: &str) -> Result<String, ClientError> {
        self.request("DELETE", path, "")
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Result<String, ClientError> {
        let io = |cause| ClientError::Io {
            path: self.socket.clone(),
            cause,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(self.socket.clone())
            }
            _ => io(e),
        })?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io)?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        if response.is_empty() {
            return Err(ClientError::Vanished);
        }
        let response = String::from_utf8(response).map_err(|_| ClientError::Garbled)?;
        let (head, payload) = response
            .split_once("\r\n\r\n")
            .ok_or(ClientError::Garbled)?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(ClientError::Garbled)?;
        if (200..300).contains(&status) {
            Ok(payload.to_string())
        } else {
            Err(ClientError::Status {
                status,
                body: payload.trim().to_string(),
            })
        }
    }
}
