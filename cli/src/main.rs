mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "mybuild", version, about = "Daemonless container image builder")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lint a Dockerfile
    Check(commands::check::CheckArgs),
    /// Parse a Dockerfile and print its syntax tree
    Parse(commands::parse::ParseArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check(a) => commands::check::run(a),
        Command::Parse(a) => commands::parse::run(a),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
