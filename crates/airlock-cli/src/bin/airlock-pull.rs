//! `airlock-pull`: airlock's registry client, a program of its own so that
//! its TLS and HTTP stack stays out of `airlock` (which every sandbox's
//! start-up execs). Run by `airlock image pull` and by image builds FROM a
//! registry reference: a JSON request on stdin, progress on stderr, the
//! image's record as JSON on stdout.

#[allow(dead_code)]
#[path = "../image.rs"]
mod image;

use airlock_image::{Puller, RegistryPuller, Store};
use std::io::Read;

fn main() {
    let mut body = Vec::new();
    let req: image::PullRequest = match std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&body).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airlock-pull: bad request: {e} (this program is run by airlock)");
            std::process::exit(2);
        }
    };
    let bars = image::Bars::new(req.quiet);
    let result = Store::open(&req.state_dir)
        .and_then(|store| RegistryPuller.pull(&store, &req.reference, &req.opts, &bars));
    match result {
        Ok(rec) => match serde_json::to_string(&rec) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("airlock: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cur = c.source();
            }
            // For airlock to report (once, as its own error).
            println!("{}", serde_json::json!({ "error": msg }));
            std::process::exit(1);
        }
    }
}
