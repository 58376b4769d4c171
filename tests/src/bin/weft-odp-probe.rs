//! `weft-odp-probe`: tries one operation on the kernel datapath and prints
//! how it went, as `<operation>: <outcome>`. Tests run it under a
//! different user to see what the kernel answers an unprivileged caller.

use weft_odp::{Client, Error};

fn outcome<T>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e @ Error::PermissionDenied) => format!("PermissionDenied ({e})"),
        Err(e @ Error::ModuleNotLoaded { .. }) => format!("ModuleNotLoaded ({e})"),
        Err(e) => format!("other error: {e}"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let name = args.next().unwrap_or_else(|| "probe".to_string());
    let mut client = match Client::connect() {
        Ok(client) => client,
        Err(e) => {
            println!("connect: {}", outcome::<()>(Err(e)));
            return;
        }
    };
    let result = match op.as_str() {
        "create-datapath" => outcome(client.create_datapath(&name, 0, 0)),
        "list-datapaths" => outcome(client.datapaths()),
        _ => {
            eprintln!("usage: weft-odp-probe create-datapath|list-datapaths [NAME]");
            std::process::exit(2);
        }
    };
    println!("{op}: {result}");
}
