//! `mybuild parse`: dump the parsed Dockerfile for tooling.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// Print the parse as JSON
    #[arg(long)]
    pub json: bool,
    /// The Dockerfile to parse
    #[arg(default_value = "Dockerfile")]
    pub file: PathBuf,
}

pub fn run(_args: &ParseArgs) -> anyhow::Result<i32> {
    anyhow::bail!("mybuild parse is not available in this build")
}
