//! `sae`: train the sparse autoencoder of the reference (Keras, Hands-On ML chapter 17)
//! on Fashion-MNIST from one command, then evaluate it, encode with it, reconstruct with
//! it, inspect files, and export sparse autoencoders for SAELens and sparsify. Thin: it
//! parses, calls `nn`, shows, and saves.

mod args;
mod commands;
mod data;
mod export;
mod plots;
mod progress;
mod train;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if let Err(e) = kernels::isa::requested() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        args::Command::Train(a) => train::run(*a),
        args::Command::Eval(a) => commands::eval(a),
        args::Command::Encode(a) => commands::encode(a),
        args::Command::Reconstruct(a) => commands::reconstruct(a),
        args::Command::Info(a) => commands::info(a),
        args::Command::Export(a) => export::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
