use clap::{Parser, Subcommand};

/// weft: a container overlay network router.
#[derive(Parser)]
#[command(name = "weft", version = weft_router::VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version of this weft binary.
    Version,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("weft {}", weft_router::VERSION),
    }
}
