//! `sae train`: the reference run by default, with its files and pictures.

use crate::args::ArchKind::{Batchtopk, Jumprelu, Relu, Topk};
use crate::args::{ArchKind, LossKind, OptimizerKind, SparsityKind, TrainArgs};
use crate::{data, plots, progress};
use anyhow::{bail, Context, Result};
use nn::config::{format_layers, parse_layers};
use nn::sae::{SaeConfig, JUMPRELU_L0_COEFFICIENT};
use nn::{
    Autoencoder, Coding, Control, Dataset, Loss, ModelConfig, Optimizer, Penalty, TrainConfig,
    TrainError, Trainer,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The model and training settings the flags describe, checked before any data is read.
pub fn configs(args: &TrainArgs, inputs: usize) -> Result<(ModelConfig, TrainConfig)> {
    if let Some(arch) = args.sae.arch {
        return sae_configs(args, arch, inputs);
    }
    let encoder = parse_layers(&args.layers).map_err(|e| anyhow::anyhow!("--layers: {e}"))?;
    let decoder = args
        .decoder
        .as_deref()
        .map(|d| parse_layers(d).map_err(|e| anyhow::anyhow!("--decoder: {e}")))
        .transpose()?;
    let penalty = match args.sparsity {
        SparsityKind::Kl => {
            let target = args.sparsity_target;
            if !(target > 0.0 && target < 1.0) {
                bail!("--sparsity-target {target} must lie strictly between 0 and 1");
            }
            Penalty::Kl {
                target,
                weight: args.sparsity_weight.unwrap_or(0.05),
            }
        }
        SparsityKind::L1 => Penalty::L1 {
            weight: args.sparsity_weight.unwrap_or(1e-3),
        },
        SparsityKind::L2 => Penalty::L2 {
            weight: args.sparsity_weight.unwrap_or(1e-3),
        },
        SparsityKind::Squared => Penalty::Squared {
            target: args.sparsity_target,
            weight: args.sparsity_weight.unwrap_or(0.5),
        },
        SparsityKind::None => Penalty::None,
    };
    if let Some(w) = args.sparsity_weight {
        if !(w >= 0.0 && w.is_finite()) {
            bail!("--sparsity-weight {w} must be finite and not negative");
        }
    }
    let loss = match args.loss {
        LossKind::Bce => Loss::Bce,
        LossKind::Mse => Loss::Mse,
    };
    let mut model = ModelConfig::autoencoder(inputs, &encoder, decoder.as_deref(), penalty, loss);
    if let Some(k) = args.top_k {
        model.coding = Coding::TopK { k: k as usize };
    }
    model.validate().context("--layers/--decoder/--top-k")?;
    let batch_size = args.batch_size.unwrap_or(32) as usize;
    let optimizer = optimizer(args, OptimizerKind::Sgd, 1e-3)?;
    Ok((model, train_config(args, batch_size, optimizer)))
}

/// The settings of a sparse autoencoder (SAE.md's defaults where a flag is absent).
fn sae_configs(
    args: &TrainArgs,
    arch: ArchKind,
    inputs: usize,
) -> Result<(ModelConfig, TrainConfig)> {
    let flags = &args.sae;
    let latents = flags.latents.map_or(8 * inputs, |n| n as usize);
    let k = flags.k.map_or(32.min(latents), |k| k as usize);
    let mut sae = match arch {
        Topk => SaeConfig::topk(k, inputs),
        Batchtopk => SaeConfig::batchtopk(k, inputs),
        Relu => SaeConfig::relu(
            flags.l1_coefficient.unwrap_or(5.0),
            flags.l1_warmup.unwrap_or(2000),
        ),
        Jumprelu => SaeConfig::jumprelu(flags.l0_coefficient.unwrap_or(JUMPRELU_L0_COEFFICIENT)),
    };
    let flag_applies = |flag: &str, given: bool, archs: &[ArchKind]| {
        if given && !archs.contains(&arch) {
            bail!("{flag} does not apply to --arch {}", sae.arch.name());
        }
        Ok(())
    };
    flag_applies("--k", flags.k.is_some(), &[Topk, Batchtopk])?;
    flag_applies("--l1-coefficient", flags.l1_coefficient.is_some(), &[Relu])?;
    flag_applies("--l1-warmup", flags.l1_warmup.is_some(), &[Relu])?;
    flag_applies(
        "--l0-coefficient",
        flags.l0_coefficient.is_some(),
        &[Jumprelu],
    )?;
    flag_applies("--bandwidth", flags.bandwidth.is_some(), &[Jumprelu])?;
    flag_applies(
        "--initial-threshold",
        flags.initial_threshold.is_some(),
        &[Jumprelu],
    )?;
    flag_applies(
        "--auxk-coefficient",
        flags.auxk_coefficient.is_some(),
        &[Topk, Batchtopk],
    )?;
    flag_applies("--k-aux", flags.k_aux.is_some(), &[Topk, Batchtopk])?;
    if let Some(c) = flags.auxk_coefficient {
        sae.auxk_coefficient = c;
    }
    if let Some(k_aux) = flags.k_aux {
        sae.k_aux = k_aux as usize;
    }
    if let Some(width) = flags.bandwidth {
        sae.bandwidth = width;
    }
    if let Some(theta) = flags.initial_threshold {
        sae.initial_threshold = theta;
    }
    if let Some(rows) = flags.dead_after {
        sae.dead_after_rows = rows;
    }
    if let Some(steps) = flags.lr_warmup {
        sae.lr_warmup_steps = steps;
    }
    let model = ModelConfig::sae(inputs, latents, sae);
    model.validate().context("--arch")?;
    let batch_size = args.batch_size.unwrap_or(4096) as usize;
    let lr = 2e-4 / (latents as f32 / 16384.0).sqrt();
    let optimizer = optimizer(args, OptimizerKind::Adam, lr)?;
    Ok((model, train_config(args, batch_size, optimizer)))
}

/// The optimizer the flags ask for: `default` when none, `adam_lr` for Adam unless
/// `--lr` says otherwise.
fn optimizer(args: &TrainArgs, default: OptimizerKind, adam_lr: f32) -> Result<Optimizer> {
    let optimizer = match args.optimizer.unwrap_or(default) {
        OptimizerKind::Sgd => Optimizer::sgd(args.lr.unwrap_or(1.0)),
        OptimizerKind::Momentum => Optimizer::Sgd {
            lr: args.lr.unwrap_or(1.0),
            momentum: 0.9,
            nesterov: false,
        },
        OptimizerKind::Adam => Optimizer::adam(args.lr.unwrap_or(adam_lr)),
    };
    optimizer
        .validate()
        .map_err(|e| anyhow::anyhow!("--lr: {e}"))?;
    Ok(optimizer)
}

fn train_config(args: &TrainArgs, batch_size: usize, optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        epochs: args.epochs.unwrap_or(10) as usize,
        batch_size,
        shuffle: true,
        shuffle_window_bytes: Some(args.shuffle_window as usize * (1 << 20)),
        seed: args.seed,
        optimizer,
        threads: args.thread_count(),
    }
}

/// Creates `dir` and proves a file can be written there, before any training.
fn prepare_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    nn::checkpoint::remove_stale_temporaries(dir)
        .with_context(|| format!("cannot clean up output directory {}", dir.display()))?;
    Ok(())
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string())
}

/// `history.json` and `history.csv`: the columns of the book's models (values in
/// [0, 1], `bounded`) are Keras' and the mean coding activation; those of models of
/// unbounded rows are the reconstruction's and the codes' statistics.
fn write_history(dir: &Path, history: &[nn::EpochMetrics], bounded: bool) -> Result<()> {
    let json = serde_json::to_string_pretty(history).expect("metrics serialise");
    nn::checkpoint::write_atomic(&dir.join("history.json"), json.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("history.json").display()))?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v}"));
    let mut csv = if bounded {
        String::from("epoch,loss,rounded_accuracy,val_loss,val_rounded_accuracy,mean_coding_activation,seconds\n")
    } else {
        String::from("epoch,loss,val_loss,mse,fvu,l0,dead_latents,seconds\n")
    };
    for m in history {
        let row = if bounded {
            format!(
                "{},{},{},{},{},{},{}\n",
                m.epoch,
                m.loss,
                m.rounded_accuracy,
                opt(m.val_loss),
                opt(m.val_rounded_accuracy),
                opt(m.mean_coding_activation),
                m.seconds
            )
        } else {
            format!(
                "{},{},{},{},{},{},{},{}\n",
                m.epoch,
                m.loss,
                opt(m.val_loss),
                opt(m.mse),
                opt(m.fvu),
                opt(m.l0),
                m.dead_latents.map_or(String::new(), |d| d.to_string()),
                m.seconds
            )
        };
        csv.push_str(&row);
    }
    nn::checkpoint::write_atomic(&dir.join("history.csv"), csv.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("history.csv").display()))
}

/// Metadata key of the number of validation samples, which a resumed run must reuse.
const VALID_KEY: &str = "valid";

/// Saves the model with everything `--resume` needs (optimizer slots, history, position).
fn save_model(path: &Path, trainer: &Trainer, valid: usize) -> Result<()> {
    let extra = [
        ("epochs_done", trainer.history().len().to_string()),
        (VALID_KEY, valid.to_string()),
    ];
    nn::checkpoint::save_training(trainer, path, &extra).with_context(|| {
        if path.is_file() {
            "saving the run failed; the previous checkpoint is intact"
        } else {
            "saving the run failed"
        }
    })?;
    Ok(())
}

/// A new trainer from the flags, or the one saved in `--resume DIR`, with the number of
/// validation samples and the output directory.
fn trainer_for(args: &TrainArgs, rows: &Dataset) -> Result<(Trainer, usize, PathBuf)> {
    let features = rows.features();
    if let Some(dir) = &args.resume {
        let path = dir.join("model.safetensors");
        let (mut trainer, metadata) = nn::checkpoint::load_training(&path)?;
        if let Some(epochs) = args.epochs {
            trainer.set_epochs(epochs as usize)?;
        }
        let valid = metadata
            .get(VALID_KEY)
            .and_then(|v| v.parse().ok())
            .with_context(|| {
                format!("{}: no {VALID_KEY:?} entry to resume with", path.display())
            })?;
        if trainer.model().input_width() != features {
            bail!(
                "{}: the model takes {} values per sample but the data has {features}",
                path.display(),
                trainer.model().input_width()
            );
        }
        return Ok((trainer, valid, dir.clone()));
    }
    let (mut model_config, train_config) = configs(args, features)?;
    let model = match &mut model_config.sae {
        Some(sae) => {
            // SAE.md: the input scale and b_dec's geometric median from the first batch.
            let count = train_config.batch_size.min(rows.len());
            data::refuse_non_finite(&rows.slice(0..count))?;
            let mut sample = vec![0.0; count * features];
            rows.gather_range(0..count, &mut sample);
            sae.input_scale = nn::sae::input_scale(&sample, features);
            Autoencoder::new_sae(model_config, args.seed, &sample)?
        }
        None => Autoencoder::new(model_config, args.seed)?,
    };
    let out = args.out.clone().unwrap_or_else(default_out_dir);
    Ok((Trainer::new(model, train_config)?, args.valid, out))
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let (images_path, labels_path) = data::training_files(&args.data)?;
    let images = data::open_rows(&images_path, &args.data.tensor)?;
    let (mut trainer, valid_count, out) = trainer_for(&args, &images)?;
    if valid_count >= images.len() {
        bail!(
            "--valid {valid_count} leaves no training samples: {} holds {}",
            images_path.display(),
            images.len()
        );
    }
    if let Some(labels) = labels_path {
        nn::dataset::open_labels(&labels, None, &images)?;
    }
    let (train, valid) = images.split_tail(valid_count)?;
    // A sparse autoencoder's data may be far larger than memory: its training rows are
    // checked batch by batch as they are read, rather than in a pass of their own.
    if trainer.model().config().sae.is_some() {
        data::refuse_non_finite(&valid)?;
    } else {
        data::refuse_non_finite(&images)?;
    }
    let valid = (!valid.is_empty()).then_some(valid);
    let out_is_new = !out.exists();
    prepare_out_dir(&out)?;

    let model_config = trainer.model().config().clone();
    let epochs = trainer.config().epochs;
    let first_epoch = trainer.history().len() + 1;
    if !args.quiet {
        let encoder = &model_config.layers[..=model_config.coding_layer];
        let verb = if args.resume.is_some() {
            format!("Resuming at epoch {first_epoch} of {epochs}:")
        } else {
            "Training".to_string()
        };
        println!(
            "{verb} {} ({} parameters; coding layer {} units) on {} samples, validating on {}; writing to {}",
            match &model_config.sae {
                Some(sae) => format!(
                    "a {} sparse autoencoder{} ({} -> {} latents",
                    sae.arch.name(),
                    match sae.arch {
                        nn::sae::Arch::TopK => format!(" keeping {} a row", sae.k),
                        nn::sae::Arch::BatchTopK =>
                            format!(" keeping {} a row on average", sae.k),
                        nn::sae::Arch::Relu | nn::sae::Arch::JumpRelu => String::new(),
                    },
                    model_config.input_width(),
                    model_config.coding_width()
                ) + ")",
                None => format_layers(
                    &encoder.iter().map(|l| (l.units, l.activation)).collect::<Vec<_>>()
                ),
            },
            model_config.parameter_count(),
            model_config.coding_width(),
            train.len(),
            valid.as_ref().map_or(0, Dataset::len),
            out.display()
        );
    }
    // SIGINT and SIGTERM only set a flag; the observer stops training after the step in
    // flight, and the run is saved below.
    let stop = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_usize(signal, Arc::clone(&stop), signal as usize)
            .context("cannot install the signal handlers")?;
    }
    let bounded = model_config.loss == Loss::Bce;
    let mut observer = progress::Progress::new(args.quiet, bounded, Arc::clone(&stop), started);
    let model_path = out.join("model.safetensors");
    let training_started = Instant::now();
    for epoch in first_epoch..=epochs {
        let outcome = trainer.fit_epoch(&train, valid.as_ref(), &mut observer);
        let interrupted = match outcome {
            Ok(Control::Continue) => false,
            Ok(Control::Stop) | Err(TrainError::Interrupted) => true,
            Err(e) => {
                // A run that fails before writing anything leaves no directory behind
                // (`remove_dir` removes only an empty one).
                if out_is_new {
                    let _ = std::fs::remove_dir(&out);
                }
                return Err(e.into());
            }
        };
        write_history(&out, trainer.history(), bounded)?;
        if interrupted {
            save_model(&model_path, &trainer, valid_count)?;
            let signal = stop.load(Ordering::Relaxed);
            eprintln!(
                "interrupted by {} during epoch {epoch}: saved the run to {}; continue it with --resume {}",
                if signal == SIGTERM as usize { "SIGTERM" } else { "SIGINT" },
                out.display(),
                out.display()
            );
            // The shell's convention: 128 + the signal's number.
            return Ok(ExitCode::from(128 + signal as u8));
        }
        if args
            .checkpoint_every
            .is_some_and(|n| epoch % n as usize == 0)
        {
            save_model(&model_path, &trainer, valid_count)?;
        }
    }
    let trained_epochs = (epochs + 1).saturating_sub(first_epoch).max(1) as f64;
    let training_seconds = training_started.elapsed().as_secs_f64();
    save_model(&model_path, &trainer, valid_count)?;

    let pictures = match &valid {
        Some(valid) => plots::write_run_pictures(trainer.model(), valid, &out)?,
        None => Vec::new(),
    };
    if !args.quiet {
        println!(
            "Done in {:.1}s (first step {:.0} ms after start): {:.2}s per epoch, {:.0} samples/s. Files in {}: model.safetensors, history.json, history.csv{}",
            started.elapsed().as_secs_f64(),
            observer.start_up.unwrap_or_default().as_secs_f64() * 1000.0,
            training_seconds / trained_epochs,
            train.len() as f64 * trained_epochs / training_seconds,
            out.display(),
            pictures.iter().map(|p| format!(", {p}")).collect::<String>()
        );
    }
    Ok(ExitCode::SUCCESS)
}
