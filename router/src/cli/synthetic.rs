//! `weft synthetic [CONTAINER]`: opens, closes or lists containers'
//! Synthetic Network doors (`/synthetic` in the API).

use anyhow::{Context, Result};

use super::{args::SyntheticArgs, client};
use crate::{condition::doors::DoorInfo, daemon::paths::Paths};

pub fn synthetic(args: &SyntheticArgs) -> Result<()> {
    let api = client(&args.dirs);
    let Some(container) = &args.container else {
        let doors: Vec<DoorInfo> =
            serde_json::from_str(&api.get("/synthetic")?).context("the router's answer")?;
        if doors.is_empty() {
            println!("No Synthetic Network doors are open; `weft synthetic CONTAINER` opens one.");
        }
        for d in doors {
            let page = if d.ui.is_some() {
                "API and page"
            } else {
                "API"
            };
            println!("{:<24} {:<28} {page}", d.id, d.url);
        }
        return Ok(());
    };
    let path = format!("/synthetic/{container}");
    if args.close {
        api.delete(&path)?;
        println!("{container}: its Synthetic Network door is closed");
        return Ok(());
    }
    // The router runs elsewhere: it needs the page's whole path.
    let ui = match &args.ui {
        Some(dir) => Some(
            std::fs::canonicalize(dir)
                .with_context(|| format!("cannot find the page directory {}", dir.display()))?,
        ),
        None => None,
    };
    let body = serde_json::json!({ "port": args.port, "ui": ui });
    let door: DoorInfo = serde_json::from_str(&api.post(&path, &body.to_string())?)
        .context("the router's answer")?;
    let token = Paths::new(&args.dirs).token_file();
    println!(
        "{}: Synthetic Network's API on {} (GET and POST /qos, GET /top/ingress.profile and /top/egress.profile)",
        door.id, door.url
    );
    if door.ui.is_some() {
        println!(
            "  its page: {} (user weft, password: the token in {})",
            door.url,
            token.display()
        );
    }
    println!(
        "  its client: new SyntheticNetwork({{hostname: '127.0.0.1', port: {}, auth: 'weft:' + token}}), token from {}",
        door.port,
        token.display()
    );
    println!("  reads need no token; `weft synthetic {container} --close` closes it");
    Ok(())
}
