//! `sae eval`, `encode`, `reconstruct` and `info`.

use crate::args::{EncodeArgs, EvalArgs, InfoArgs, ReconstructArgs, TensorArg};
use crate::{data, plots};
use anyhow::{bail, Context, Result};
use nn::config::activation_name;
use nn::source::{Format, OpenOptions, Scaling};
use nn::{Autoencoder, Dataset};
use std::path::Path;
use std::process::ExitCode;

fn load_model(path: &Path) -> Result<Autoencoder> {
    Ok(nn::checkpoint::load(path)?.0)
}

/// Opens samples for `model`, refusing a width the model cannot take and values that are
/// not finite.
fn open_samples(path: &Path, tensor: &TensorArg, model: &Autoencoder) -> Result<Dataset> {
    let data = data::open_rows(path, tensor)?;
    if data.features() != model.input_width() {
        bail!(
            "{}: samples have {} values but the model takes {}",
            path.display(),
            data.features(),
            model.input_width()
        );
    }
    data::refuse_non_finite(&data)?;
    Ok(data)
}

pub fn eval(args: EvalArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let from_dir = matches!(
        data::source(args.data.data.as_deref()),
        data::Source::Dir(_)
    );
    let path = data::test_file(&args.data)?;
    let test = open_samples(&path, &args.data.tensor, &model)?;
    let threads = nn::parallel::Threads::new(args.threads.count())?;
    let result = model.evaluate_with(&threads, &test, args.batch_size as usize);
    let config = model.config();
    let units = model.coding_width();
    let share = |n: usize| 100.0 * n as f64 / units as f64;
    let label = if from_dir {
        "test samples:"
    } else {
        "samples:"
    };
    println!("{label:<25}{}", result.samples);
    println!("loss:                    {:.4}", result.loss);
    // Metrics by kind: rounded accuracy for values in [0, 1], the reconstruction's and
    // the codes' statistics for unbounded rows.
    if config.loss == nn::Loss::Bce {
        println!("rounded_accuracy:        {:.4}", result.rounded_accuracy);
    } else {
        if let (Some(mse), Some(fvu)) = (result.mse, result.fvu) {
            println!("mse:                     {mse:.6}");
            println!("fvu:                     {fvu:.4}");
        }
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
    let data = open_samples(&args.input, &args.tensor, &model)?;
    let threads = nn::parallel::Threads::new(args.threads.count())?;
    let codings = model.encode_with(&threads, &data, nn::inference::INFERENCE_BATCH);
    let (rows, cols) = (data.len(), model.coding_width());
    if args.top {
        return write_active_codes(&args.output, &codings, cols);
    }
    let bytes = if args.output.extension().is_some_and(|e| e == "npy") {
        nn::npy::encode_f32(&[rows, cols], &codings)
    } else {
        nn::idx::encode_f32(&[rows, cols], &codings)
    };
    nn::checkpoint::write_atomic(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("wrote {rows} x {cols} codings to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `encode --top`: each row's nonzero codes, largest first, as `FILE.indices.npy` and
/// `FILE.values.npy`, padded to the largest count in a row.
fn write_active_codes(output: &Path, codings: &[f32], cols: usize) -> Result<ExitCode> {
    let mut active: Vec<Vec<(usize, f32)>> = codings
        .chunks_exact(cols)
        .map(|row| {
            row.iter()
                .copied()
                .enumerate()
                .filter(|&(_, v)| v != 0.0)
                .collect()
        })
        .collect();
    for row in &mut active {
        row.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    let rows = active.len();
    let width = active.iter().map(Vec::len).max().unwrap_or(0);
    let (mut indices, mut values) = (Vec::new(), Vec::new());
    for row in &active {
        for slot in 0..width {
            let (index, value) = row.get(slot).map_or((-1, 0.0), |&(j, v)| (j as i32, v));
            indices.extend_from_slice(&index.to_le_bytes());
            values.extend_from_slice(&value.to_le_bytes());
        }
    }
    let beside = |suffix: &str| {
        let mut name = output.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    for (path, descr, bytes) in [
        (beside(".indices.npy"), "<i4", indices),
        (beside(".values.npy"), "<f4", values),
    ] {
        nn::checkpoint::write_atomic(&path, &nn::npy::encode(descr, &[rows, width], &bytes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "wrote the active codes of {rows} rows (at most {width} a row) to {0}.indices.npy and {0}.values.npy",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn reconstruct(args: ReconstructArgs) -> Result<ExitCode> {
    let model = load_model(&args.model)?;
    let data = open_samples(&args.input, &args.tensor, &model)?;
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
    if !is_model(path) {
        return describe_data(path, &args.tensor);
    }
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
    if let nn::Coding::TopK { k } = config.coding {
        println!("  coding: keeps the {k} largest activations of each row");
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
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` holds a model: a safetensors file with the model's configuration in its
/// metadata. A file named `.safetensors` that is no data file either is taken for a broken
/// model, so that the error says what a model needs.
fn is_model(path: &Path) -> bool {
    match nn::tensors::read_metadata(path) {
        Ok(Some(metadata)) => metadata.contains_key(nn::checkpoint::CONFIG_KEY),
        Ok(None) => false,
        Err(_) => path.extension().is_some_and(|e| e == "safetensors"),
    }
}

/// What a data file holds, as its header says.
fn describe_data(path: &Path, tensor: &TensorArg) -> Result<ExitCode> {
    let options = OpenOptions {
        tensor: tensor.tensor.clone(),
        ..OpenOptions::default()
    };
    let d = nn::source::describe(path, &options)?;
    let count = d.element_count();
    println!(
        "{}: {}{} {} of shape {:?} ({count} values)",
        path.display(),
        if d.gzipped { "gzipped " } else { "" },
        d.format.name(),
        d.dtype,
        d.shape
    );
    if d.format == Format::Safetensors {
        println!("  tensor: {}", d.tensor.as_deref().unwrap_or("?"));
    }
    if let (Some(rows), Some(features)) = (d.shape.first(), d.features()) {
        if d.shape.len() > 1 {
            println!("  samples: {rows} of {features} values");
        }
    }
    println!(
        "  scaling: {}",
        match d.scaling {
            Scaling::DivideBy255 => "divided by 255 (u8 values 0..=255 become 0..=1)",
            Scaling::Identity => "none (values used as stored)",
        }
    );
    println!(
        "  storage: {}",
        if d.mapped {
            "read in place from the memory-mapped file"
        } else {
            "converted to f32 in memory when opened"
        }
    );
    Ok(ExitCode::SUCCESS)
}
