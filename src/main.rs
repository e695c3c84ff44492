//! The `memsieve` command line.

use clap::{Parser, Subcommand};
use memsieve::backend::BackendChoice;
use memsieve::cli;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "memsieve", version, about = "Find and remove training-data memorization in small language models")]
struct Cli {
    /// Compute backend: auto picks a real GPU if one exists, else cpu.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    /// Worker threads for the cpu backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print a per-op profile table at the end.
    #[arg(long, global = true)]
    profile: bool,
    /// Write a Chrome/Perfetto trace (Trace Event Format JSON) of every op and host phase to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate TinyMem data, train a small model and report memorization (nothing downloaded).
    Demo(cli::demo::DemoArgs),
    /// Train a TinyMem model (built-in math data or a JSONL token file).
    Train(cli::train::TrainArgs),
    /// Evaluate a model: % memorized, accuracy, loss and perplexity.
    Eval(cli::eval::EvalArgs),
    /// Greedy continuation of a prompt.
    Generate(cli::generate::GenerateArgs),
    /// Write a TinyMem dataset (JSONL token rows plus its description).
    Data(cli::data::DataArgs),
    /// Screen a labelled feature matrix for memorization: per-sample PSMI and dataset SMI.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Screen(Box<cli::screen::ScreenCommand>),
    /// Score MLP neurons for memorization (IG, DEPN, activations, zero-out): scores.json/.npy + heatmap.svg.
    Localize(cli::localize::LocalizeArgs),
    /// Silence the top-scoring neurons and report the model before and after.
    Edit(cli::localize::EditArgs),
    /// Attention-distribution statistics per (layer, head): entropy, normalised entropy, max weight, top-k mass.
    Attention(cli::attention::AttentionArgs),
    /// Remove memorized sequences with a weight-level method (BalancedSubnet, Subnet, Durable, …).
    Unlearn(cli::unlearn::UnlearnArgs),
    /// Continue a trained model for E epochs on a variant of its data or on other tasks (AdamW state resumed).
    Finetune(Box<cli::finetune::FinetuneArgs>),
    /// Experiments that test the paper's claims on TinyMem (predict-memorization).
    Experiment(cli::experiment::ExperimentArgs),
    /// The machine (CPU, SIMD, clock, peaks, measured bandwidth) and the backends found on it.
    Info,
    /// Time the standard workloads on the chosen backend (and the Python baselines with --baselines).
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid" on every adapter probe of a headless
    // machine; a compute-only program has no display to find there anyway.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Safety: no other thread exists yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let args = Cli::parse();
    let ctx = cli::Context::new(args.backend, args.profile, args.threads.unwrap_or(0)).with_trace(args.trace);
    let result = match args.command {
        Command::Demo(a) => cli::demo::run(&ctx, a),
        Command::Train(a) => cli::train::run(&ctx, a),
        Command::Eval(a) => cli::eval::run(&ctx, a),
        Command::Generate(a) => cli::generate::run(&ctx, a),
        Command::Data(a) => cli::data::run(a),
        Command::Screen(a) => cli::screen::run(&ctx, *a),
        Command::Localize(a) => cli::localize::run(&ctx, a),
        Command::Edit(a) => cli::localize::edit(&ctx, a),
        Command::Attention(a) => cli::attention::run(&ctx, a),
        Command::Unlearn(a) => cli::unlearn::run(&ctx, a),
        Command::Finetune(a) => cli::finetune::run(&ctx, *a),
        Command::Experiment(a) => cli::experiment::run(&ctx, a),
        Command::Info => cli::info::run(ctx.threads),
        Command::Bench(a) => cli::bench::run(&ctx, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
