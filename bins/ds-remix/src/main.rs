//! ds-remix: groups documents by a column, reports each group's share of bytes and documents,
//! and resamples to the target mixture of a TOML config (up-sampling repeats, down-sampling
//! drops, both deterministic by seed). The logic lives in `dsllm-remix`.

use clap::{Parser, Subcommand};
use dsllm_core::cli::StageArgs;
use dsllm_core::Error;
use dsllm_remix::{RemixConfig, RemixJob, Unit};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "ds-remix", version, about = "Group documents, report their shares and resample them to a target mixture")]
#[command(args_conflicts_with_subcommands = true)]
#[command(mut_arg("input", |a| a.help("Documents Parquet: files, folders or globs (e.g. work/filtered/kept)")))]
#[command(mut_arg("output", |a| a.help("Output folder: <dump>/<file>.parquet (kept, with group and repeat), _dropped/, report.{json,md,png}, _manifest.json")))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    stage: StageArgs,
    /// The target mixture (TOML; see `default-config`). Without it every group is kept as is
    /// and only the report is of interest.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Column naming the groups (lang, domain, dump, or any column); overrides the config.
    #[arg(long)]
    group_by: Option<String>,
    /// What shares count: bytes of text or documents; overrides the config.
    #[arg(long, value_parser = ["bytes", "documents"])]
    unit: Option<String>,
    /// Seed of the choice of repeated and dropped documents; overrides the config.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an example configuration (TOML) to start a config file from.
    DefaultConfig,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    dsllm_core::cli::run_main(dsllm_remix::TOOL, || {
        if let Some(Command::DefaultConfig) = cli.command {
            print!("{}", RemixConfig::example().to_toml());
            std::process::exit(0)
        }
        let (inputs, output) = cli.stage.require()?;
        let mut config = match &cli.config {
            Some(path) => RemixConfig::from_toml_file(path).map_err(Error::Usage)?,
            None => RemixConfig::default(),
        };
        if let Some(column) = cli.group_by {
            config.group_by = column;
        }
        if let Some(unit) = cli.unit {
            config.unit = if unit == "documents" { Unit::Documents } else { Unit::Bytes };
        }
        if let Some(seed) = cli.seed {
            config.seed = seed;
        }
        config.validate().map_err(Error::Usage)?;
        dsllm_core::cli::init_threads(cli.stage.threads)?;
        RemixJob { inputs, output, config, force: cli.stage.force }.run()
    })
}
