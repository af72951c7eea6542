//! The `gram-bench` command line: one file per subcommand (its arguments and what it does),
//! `common.rs` for what several share, and the dispatch below.

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};

mod baseline;
mod check;
mod clip;
mod common;
mod datasets;
mod device_check;
mod list;
mod lock;
mod plan;
mod report;
mod run;
mod shell;
mod slurm;
mod validate;
mod world;

use baseline::BaselineCommand;
use check::CheckArgs;
pub use clip::embed;
use clip::ClipCommand;

use common::SuiteArg;
use datasets::DatasetsCommand;
use device_check::DeviceCheckArgs;
use list::ListArgs;
use lock::LockCommand;
use plan::PlanArgs;
use report::ReportArgs;
use run::RunArgs;
use slurm::SlurmCommand;
use world::WorldArgs;

/// `--version`: the crate's version and the commit a release binary was built from (src/build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GRAM_BENCH_BUILD"), ")");

#[derive(Parser, Debug)]
#[command(name = "gram-bench", version = VERSION, about = "Reproducibility suite for CLIP prompt tuning")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the suites in a directory (default: suites/).
    List(ListArgs),
    /// Check a suite file: strict schema, references, protocols.
    Validate(SuiteArg),
    /// Show a suite's cells: done, missing or failed, and the estimated cost of the rest.
    Plan(PlanArgs),
    /// Run a suite's cells (resuming: cells with a record are skipped).
    Run(RunArgs),
    /// Aggregate a suite's records and write `reports/<suite>/{report.md, aggregate.csv, aggregate.json}`.
    Report(ReportArgs),
    /// Save baselines from our own runs (baselines/NAME.json).
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Compare a suite's records with a saved baseline; non-zero exit on any regression or missing metric.
    Check(CheckArgs),
    /// Build (once) and describe the embedded world and its micro-CLIP.
    World(WorldArgs),
    /// datasets.lock helpers.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Pin and check the CoOp datasets under a data root.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Work with a CLIP checkpoint directly.
    #[command(subcommand)]
    Clip(ClipCommand),
    /// Check and measure a backend in one run (parity, ViT-B/16 throughput, every method's step,
    /// a small suite against the CPU); prints tables and writes one JSON file.
    DeviceCheck(DeviceCheckArgs),
    /// Run a suite's cells as Slurm job arrays, and follow them.
    #[command(subcommand)]
    Slurm(SlurmCommand),
    /// Print a shell's completion script for gram-bench (bash, zsh, fish, elvish, powershell).
    Completions(shell::CompletionsArgs),
    /// Write gram-bench's man pages (one per command) into a folder, or the main page to stdout.
    Man(shell::ManArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    crate::faults::check_env()?;
    match cli.command {
        Command::List(a) => list::list(&a.dir),
        Command::Validate(a) => validate::validate(&a.suite, &a.lock, a.data_root),
        Command::Datasets(DatasetsCommand::Lock(a)) => datasets::datasets_lock(&a),
        Command::Datasets(DatasetsCommand::Verify(a)) => datasets::datasets_verify(&a),
        Command::Datasets(DatasetsCommand::Describe(a)) => datasets::datasets_describe(&a),
        Command::Lock(LockCommand::Digest { path }) => {
            println!("{}", crate::lock::weights_digest(&path)?);
            Ok(())
        }
        Command::Plan(a) => plan::plan(&a),
        Command::Run(a) => run::run(&a),
        Command::Report(a) => report::report(&a),
        Command::Baseline(BaselineCommand::Save(a)) => baseline::baseline_save(&a),
        Command::Check(a) => check::check(&a),
        Command::World(a) => world::world(&a),
        Command::DeviceCheck(a) => device_check::device_check(&a),
        Command::Completions(a) => shell::completions(&a),
        Command::Man(a) => shell::man(&a),
        Command::Slurm(SlurmCommand::Submit(a)) => slurm::submit(&a),
        Command::Slurm(SlurmCommand::Status(a)) => slurm::status(&a),
        Command::Slurm(SlurmCommand::Task(a)) => slurm::task(&a),
        Command::Clip(ClipCommand::Embed(args)) => {
            let out = embed(&args)?;
            let json = serde_json::to_string(&out).map_err(|e| Error::Internal(e.to_string()))?;
            println!("{json}");
            Ok(())
        }
    }
}
