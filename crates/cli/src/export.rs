//! `sae export`: a sparse autoencoder written for SAELens or sparsify (`nn::sae::export`
//! computes the files; this writes them).

use crate::args::ExportArgs;
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use nn::sae::export::{self, Provenance, CFG_FILE};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The layout to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// SAELens v6: `SAE.load_from_disk(DIR)`.
    Saelens,
    /// EleutherAI sparsify: `SparseCoder.load_from_disk(DIR/HOOK)` (TopK only).
    Sparsify,
}

pub fn run(args: ExportArgs) -> Result<ExitCode> {
    let (model, _) = nn::checkpoint::load(&args.model)?;
    let provenance = Provenance {
        model_name: args.model_name.clone(),
        hook_name: args.hook_name.clone(),
        context_size: args.context_size,
    };
    let model_error = || format!("{}", args.model.display());
    // Everything is checked before anything is written.
    let (files, dir) = match args.format {
        Format::Saelens => (
            export::saelens(&model, &provenance).with_context(model_error)?,
            args.out.clone(),
        ),
        Format::Sparsify => {
            let files = export::sparsify(&model).with_context(model_error)?;
            (files, args.out.join(hookpoint(args.hook_name.as_deref())?))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The weights first: a directory with a cfg.json from this export has its weights.
    let weights = dir.join(files.weights_file);
    write(&weights, &files.safetensors_bytes())?;
    let cfg = dir.join(CFG_FILE);
    write(&cfg, files.cfg_json.as_bytes())?;
    println!(
        "wrote {} and {} ({} x {} SAE, input scale folded in)",
        cfg.display(),
        weights.display(),
        model.input_width(),
        model.coding_width()
    );
    Ok(ExitCode::SUCCESS)
}

/// sparsify's directory for the SAE of a hookpoint: `--hook-name`, which must be one
/// path component (module names such as `layers.6.mlp` are).
fn hookpoint(name: Option<&str>) -> Result<PathBuf> {
    let Some(name) = name else {
        bail!("sparsify keeps each SAE in a directory named after its hookpoint: give --hook-name (e.g. layers.6)");
    };
    let one_component = matches!(
        Path::new(name).components().collect::<Vec<_>>().as_slice(),
        [std::path::Component::Normal(_)]
    );
    if !one_component || name.contains(['/', '\\']) {
        bail!("--hook-name {name:?} must be a module name such as layers.6, not a path");
    }
    Ok(PathBuf::from(name))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    nn::checkpoint::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
