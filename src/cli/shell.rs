//! `gram-bench completions SHELL` and `gram-bench man`: what a CLI's users expect to install beside
//! it, generated from the same argument definitions the parser uses (so they cannot drift).

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell whose completion script to print.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write every page (gram-bench.1, gram-bench-run.1, …) into this folder; without it, the main
    /// page goes to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub(super) fn completions(a: &CompletionsArgs) -> Result<()> {
    clap_complete::generate(a.shell, &mut Cli::command(), "gram-bench", &mut std::io::stdout());
    Ok(())
}

pub(super) fn man(a: &ManArgs) -> Result<()> {
    let cmd = Cli::command();
    match &a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| Error::io(dir, e))?;
            eprintln!("wrote the man pages into {}", dir.display());
            Ok(())
        }
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| Error::Run(format!("writing the man page: {e}"))),
    }
}
