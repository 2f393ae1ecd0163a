//! `sae eval`, `encode`, `reconstruct` and `info`.

use crate::args::{EncodeArgs, EvalArgs, InfoArgs, ReconstructArgs};
use crate::{data, npy, plots};
use anyhow::{bail, Context, Result};
use nn::config::activation_name;
use nn::idx::IdxFile;
use nn::{Autoencoder, Dataset};
use std::path::Path;
use std::process::ExitCode;

fn load_model(path: &Path) -> Result<Autoencoder> {
    Ok(nn::checkpoint::load(path)?.0)
}

/// Opens samples for `model`, refusing a width the model cannot take.
fn open_samples(path: &Path, model: &Autoencoder) -> Result<Dataset> {
    let data = Dataset::open(path, None)?;
    if data.features() != model.input_width() {
        bail!(
            "{}: samples have {} values but the model takes {}",
            path.display(),
            data.features(),
            model.input_width()
        );
    }
    if data.is_empty() {
        bail!("{}: holds no samples", path.display());
    }
    Ok(data)
}

pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let dir = data::data_dir(args.data.data.as_deref());
    let path = data::find(&dir, data::TEST_IMAGES)?;
    let test = open_samples(&path, &model)?;
    let threads = nn::parallel::Threads::new(args.threads.count())?;
    let result = model.evaluate_with(&threads, &test, args.batch_size as usize);
    let config = model.config();
    let units = model.coding_width();
    let share = |n: usize| 100.0 * n as f64 / units as f64;
    println!("test samples:            {}", result.samples);
    println!("loss:                    {:.4}", result.loss);
    // Metrics by kind: rounded accuracy for values in [0, 1], the reconstruction's and
    // the codes' statistics for unbounded rows.
    if config.loss == nn::Loss::Bce {
        println!("rounded_accuracy:        {:.4}", result.rounded_accuracy);
    } else {
        println!("mse:                     {:.6}", result.mse);
        println!("fvu:                     {:.4}", result.fvu);
        println!("l0:                      {:.2}", result.l0);
        println!(
            "dead_latents:            {} of {units} ({:.1}%) never above 0",
            result.dead_latents,
            share(result.dead_latents)
        );
    }
    println!(
        "mean coding activation:  {:.4}",
        result.mean_coding_activation
    );
    if config.layers[config.coding_layer].activation == nn::Activation::Sigmoid {
        println!(
            "dead coding units:       {} of {units} ({:.1}%) never above {}",
            result.never_above_half,
            share(result.never_above_half),
            nn::inference::SIGMOID_ON
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn encode(args: EncodeArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let data = open_samples(&args.input, &model)?;
    let threads = nn::parallel::Threads::new(args.threads.count())?;
    let codings = model.encode_with(&threads, &data, nn::inference::INFERENCE_BATCH);
    let (rows, cols) = (data.len(), model.coding_width());
    let bytes = if args.output.extension().is_some_and(|e| e == "npy") {
        npy::encode_f32(rows, cols, &codings)
    } else {
        nn::idx::encode_f32(&[rows, cols], &codings)
    };
    nn::checkpoint::write_atomic(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("wrote {rows} x {cols} codings to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

pub fn reconstruct(args: ReconstructArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let data = open_samples(&args.input, &model)?;
    let Some(side) = plots::image_side(data.features()) else {
        bail!(
            "{}: samples of {} values are not square images",
            args.input.display(),
            data.features()
        );
    };
    let count = (args.count as usize).min(data.len());
    let first = data.slice(0..count);
    let mut originals = vec![0.0; count * data.features()];
    first.gather_range(0..count, &mut originals);
    let reconstructed = model.reconstruct(&first, count);
    plots::reconstructions(&originals, &reconstructed, count, side).save(&args.output)?;
    println!(
        "wrote {count} samples and their reconstructions to {}",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn info(args: InfoArgs) -> Result<ExitCode> {
    let path = &args.file;
    let is_model = path.extension().is_some_and(|e| e == "safetensors");
    if is_model {
        let (model, metadata) = nn::checkpoint::load(path)?;
        let config = model.config();
        println!("{}: safetensors model", path.display());
        for (i, l) in config.layers.iter().enumerate() {
            let mark = if i == config.coding_layer {
                "  <- coding layer"
            } else {
                ""
            };
            println!(
                "  layers.{i}: {} -> {} {}{mark}",
                l.inputs,
                l.units,
                activation_name(l.activation)
            );
        }
        println!("  penalty: {:?}", config.penalty);
        println!("  loss: {:?}", config.loss);
        println!("  parameters: {}", config.parameter_count());
        let mut keys: Vec<_> = metadata
            .keys()
            .filter(|k| *k != nn::checkpoint::CONFIG_KEY && *k != nn::checkpoint::TRAINER_KEY)
            .collect();
        keys.sort();
        if metadata.contains_key(nn::checkpoint::TRAINER_KEY) {
            println!("  resumable: yes (optimizer state and history included)");
        }
        for k in keys {
            println!("  {k}: {}", metadata[k]);
        }
    } else {
        let file = IdxFile::open(path)?;
        let count: usize = file.dims().iter().product();
        println!(
            "{}: IDX {} of shape {:?} ({count} values)",
            path.display(),
            file.element_type().name(),
            file.dims()
        );
    }
    Ok(ExitCode::SUCCESS)
}
