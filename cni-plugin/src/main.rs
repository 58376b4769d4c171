//! `weft-cni`: run by a container runtime with the CNI environment and the
//! network configuration on stdin; prints a result or a CNI error on
//! stdout, and logs only on stderr.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Read};

use serde_json::Value;
use weft_api::{Client, ClientError};
use weft_cni::{CniError, Env, Router, RouterError, error::code, run};

/// The router's API over its unix socket.
struct Api(Client);

impl Api {
    fn map(e: ClientError) -> RouterError {
        match e {
            // The advice (start it, or point "socket" at it) is added once,
            // by the plugin; the client's own would say it twice.
            ClientError::NotRunning(socket) => {
                RouterError::Down(format!("no weft router answers at {}", socket.display()))
            }
            ClientError::Io { .. } | ClientError::Vanished => RouterError::Down(e.to_string()),
            ClientError::Status { status, body } => RouterError::Refused { status, body },
            other => RouterError::Other(other.to_string()),
        }
    }
}

impl Router for Api {
    fn get(&self, path: &str) -> Result<String, RouterError> {
        self.0.get(path).map_err(Api::map)
    }
    fn post(&self, path: &str, body: &Value) -> Result<String, RouterError> {
        self.0.post(path, &body.to_string()).map_err(Api::map)
    }
}

fn main() {
    let outcome = Env::from_vars(|k| std::env::var(k).ok())
        .map_err(|e| (e, "1.1.0".to_string()))
        .and_then(|env| {
            let mut stdin = Vec::new();
            // By hand on a terminal there is no configuration to wait for.
            if !std::io::stdin().is_terminal() {
                std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                    let e = CniError::new(code::IO_FAILURE, "cannot read stdin", e.to_string());
                    (e, "1.1.0".to_string())
                })?;
            }
            run(&env, &stdin, |conf| Api(Client::new(conf.socket())))
        });
    match outcome {
        Ok(Some(out)) => println!("{out}"),
        Ok(None) => {}
        Err((e, version)) => {
            eprintln!("weft-cni: {e}");
            println!("{}", e.to_json(&version));
            std::process::exit(1);
        }
    }
}
