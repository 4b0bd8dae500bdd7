//! `mybuild check`: lint a Dockerfile with BuildKit's check rules.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Exit non-zero when any warning is reported
    #[arg(long)]
    pub fail_on_warning: bool,
    /// Build context directory
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

pub fn run(_args: &CheckArgs) -> anyhow::Result<i32> {
    anyhow::bail!("mybuild check is not available in this build")
}
