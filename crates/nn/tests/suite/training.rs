//! Trainer invariants: the fused SGD step is exactly a gradient step, optimizers follow
//! their formulas, runs are deterministic, divergence is reported, checkpoints round-trip.

use nn::config::{Activation, Loss, ModelConfig, Penalty};
use nn::params::{bias_name, weight_name};
use nn::trainer::loss_and_gradients;
use nn::{Autoencoder, Dataset, Optimizer, TrainConfig, TrainError, Trainer};

fn small_config(penalty: Penalty) -> ModelConfig {
    ModelConfig::autoencoder(
        12,
        &[(7, Activation::Selu), (5, Activation::Sigmoid)],
        None,
        penalty,
        Loss::Bce,
    )
}

/// A model wide enough that two or three threads each get a part of every layer.
fn wide_config(penalty: Penalty) -> ModelConfig {
    ModelConfig::autoencoder(
        40,
        &[(24, Activation::Selu), (36, Activation::Sigmoid)],
        None,
        penalty,
        Loss::Bce,
    )
}

fn samples(n: usize) -> Vec<f32> {
    (0..n * 12)
        .map(|i| ((i * 37 % 101) as f32 / 100.0).min(1.0))
        .collect()
}

fn one_step(model: &Autoencoder, optimizer: Optimizer, x: &[f32], rows: usize) -> Autoencoder {
    one_step_on(model, optimizer, x, rows, 1)
}

fn one_step_on(
    model: &Autoencoder,
    optimizer: Optimizer,
    x: &[f32],
    rows: usize,
    threads: usize,
) -> Autoencoder {
    let config = TrainConfig {
        epochs: 1,
        batch_size: rows,
        shuffle: false,
        shuffle_window_bytes: None,
        seed: 0,
        optimizer,
        threads,
    };
    let mut trainer = Trainer::new(model.clone(), config).unwrap();
    let width = model.input_width();
    trainer
        .fit(&Dataset::from_f32(x.to_vec(), width), None, &mut ())
        .unwrap();
    trainer.into_model()
}

/// The fused SGD step, split over 1 to 3 threads (parts of 8 units: at 12 inputs one
/// part is empty, at 40 both hold some), lands where the collected gradient says.
#[test]
fn fused_sgd_step_equals_the_gradient_step() {
    let penalties = [
        Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        },
        Penalty::L1 { weight: 0.01 },
    ];
    for (config, rows) in penalties.into_iter().flat_map(|p| {
        [
            (small_config(p), 6),
            (wide_config(p), 5),
            (wide_config(p), 32),
        ]
    }) {
        let model = Autoencoder::new(config.clone(), 3).unwrap();
        let x = samples(rows * model.input_width())[..rows * model.input_width()].to_vec();
        let (_, grads) = loss_and_gradients(&model, &x, rows);
        for threads in 1..=3 {
            let stepped = one_step_on(&model, Optimizer::sgd(0.5), &x, rows, threads);
            let what = format!("{:?}, {rows} rows, {threads} threads", config.penalty);
            for (l, (before, after)) in model.layers().zip(stepped.layers()).enumerate() {
                let pairs = [
                    (
                        before.weight,
                        after.weight,
                        grads.values(&weight_name(l)).unwrap(),
                    ),
                    (
                        before.bias,
                        after.bias,
                        grads.values(&bias_name(l)).unwrap(),
                    ),
                ];
                for (tensor, (before, after, grad)) in pairs.into_iter().enumerate() {
                    for (k, ((&w, &w2), &g)) in before.iter().zip(after).zip(grad).enumerate() {
                        let want = w - 0.5 * g;
                        assert!(
                            (w2 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                            "{what}: layer {l} tensor {tensor} element {k}: {w2} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn momentum_and_adam_first_steps_follow_keras() {
    let model = Autoencoder::new(small_config(Penalty::L1 { weight: 1e-3 }), 5).unwrap();
    let x = samples(4);
    let (_, grads) = loss_and_gradients(&model, &x, 4);
    // First momentum step: v = -lr g, w += v: the plain step.
    let momentum = Optimizer::Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: false,
    };
    let plain = one_step(&model, Optimizer::sgd(0.1), &x, 4);
    let with_momentum = one_step(&model, momentum, &x, 4);
    for (a, b) in plain.layers().zip(with_momentum.layers()) {
        for (u, v) in a.weight.iter().zip(b.weight) {
            assert!((u - v).abs() <= 1e-6, "{u} vs {v}");
        }
    }
    // First Adam step: w -= lr * g / (|g| + eps / sqrt(1 - b2)) ~ lr * sign(g).
    let adam = one_step(&model, Optimizer::adam(0.01), &x, 4);
    for (l, (before, after)) in model.layers().zip(adam.layers()).enumerate() {
        let grad = grads.values(&weight_name(l)).unwrap();
        for ((&w, &w2), &g) in before.weight.iter().zip(after.weight).zip(grad) {
            let g = f64::from(g);
            let m = 0.1 * g;
            let v = 0.001 * g * g;
            let alpha = 0.01 * (1.0f64 - 0.999).sqrt() / (1.0 - 0.9);
            let want = f64::from(w) - alpha * m / (v.sqrt() + 1e-7);
            assert!((f64::from(w2) - want).abs() <= 1e-6, "{w2} vs {want}");
        }
    }
}

#[test]
fn same_seed_same_weights_bit_for_bit() {
    let run = |seed: u64| {
        let model = Autoencoder::new(
            small_config(Penalty::Kl {
                target: 0.2,
                weight: 0.1,
            }),
            seed,
        )
        .unwrap();
        let config = TrainConfig {
            epochs: 3,
            batch_size: 7,
            shuffle: true,
            shuffle_window_bytes: None,
            seed,
            optimizer: Optimizer::sgd(0.3),
            threads: 1,
        };
        let mut trainer = Trainer::new(model, config).unwrap();
        let data = Dataset::from_f32(samples(40), 12);
        let (train, valid) = data.split_tail(8).unwrap();
        trainer.fit(&train, Some(&valid), &mut ()).unwrap();
        (trainer.history().to_vec(), trainer.into_model())
    };
    let (h1, m1) = run(11);
    let (h2, m2) = run(11);
    let (_, m3) = run(12);
    let bits = |m: &Autoencoder| -> Vec<u32> {
        m.layers()
            .flat_map(|l| l.weight.iter().chain(l.bias).map(|v| v.to_bits()))
            .collect()
    };
    assert_eq!(bits(&m1), bits(&m2));
    assert_ne!(bits(&m1), bits(&m3));
    for (a, b) in h1.iter().zip(&h2) {
        assert_eq!((a.loss, a.val_loss), (b.loss, b.val_loss));
    }
    assert!(h1[2].loss < h1[0].loss, "the loss goes down: {h1:?}");
}

#[test]
fn a_diverging_run_stops_with_epoch_and_step() {
    let model = Autoencoder::new(
        ModelConfig::autoencoder(
            12,
            &[(7, Activation::Relu), (5, Activation::Linear)],
            None,
            Penalty::None,
            Loss::Mse,
        ),
        1,
    )
    .unwrap();
    for threads in [1, 2] {
        let config = TrainConfig {
            epochs: 5,
            batch_size: 4,
            shuffle: true,
            shuffle_window_bytes: None,
            seed: 1,
            optimizer: Optimizer::sgd(1000.0),
            threads,
        };
        let mut trainer = Trainer::new(model.clone(), config).unwrap();
        let data = Dataset::from_f32(samples(40), 12);
        match trainer.fit(&data, None, &mut ()) {
            Err(TrainError::Diverged {
                epoch, step, lr, ..
            }) => {
                assert!(epoch >= 1 && step >= 1 && lr == 1000.0);
            }
            other => panic!("{threads} threads: expected divergence, got {other:?}"),
        }
    }
}

#[test]
fn wrong_widths_and_empty_data_are_errors() {
    let model = Autoencoder::new(small_config(Penalty::None), 1).unwrap();
    let mut trainer = Trainer::new(model, TrainConfig::reference()).unwrap();
    let wide = Dataset::from_f32(vec![0.5; 13 * 4], 13);
    assert!(matches!(
        trainer.fit(&wide, None, &mut ()),
        Err(TrainError::FeatureMismatch {
            expected: 12,
            found: 13
        })
    ));
    let empty = Dataset::from_f32(vec![0.5; 12], 12).slice(0..0);
    assert!(matches!(
        trainer.fit(&empty, None, &mut ()),
        Err(TrainError::EmptyDataset)
    ));
    let bad = TrainConfig {
        batch_size: 0,
        ..TrainConfig::reference()
    };
    assert!(Trainer::new(
        Autoencoder::new(small_config(Penalty::None), 1).unwrap(),
        bad
    )
    .is_err());
}

#[test]
fn checkpoints_round_trip_and_refuse_impostors() {
    let dir = tempfile::tempdir().unwrap();
    let model = Autoencoder::new(
        small_config(Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        }),
        9,
    )
    .unwrap();
    let path = dir.path().join("model.safetensors");
    nn::checkpoint::save(&model, &path, &[("note", "x".into())]).unwrap();
    let (loaded, metadata) = nn::checkpoint::load(&path).unwrap();
    assert_eq!(loaded, model);
    assert_eq!(metadata["note"], "x");
    let config: serde_json::Value = serde_json::from_str(&metadata["config"]).unwrap();
    assert_eq!(
        config["layers"][0],
        serde_json::json!({"inputs": 12, "units": 7, "activation": "selu"})
    );
    assert_eq!(config["coding_layer"], 1);
    assert_eq!(
        config["penalty"],
        serde_json::json!({"kind": "kl", "target": 0.1, "weight": 0.05})
    );

    // Tensors that disagree with the config they carry.
    let mut narrower = small_config(Penalty::None);
    narrower.layers[0].units = 6;
    narrower.layers[1].inputs = 6;
    let wrong = Autoencoder::new(narrower, 1).unwrap();
    let lying = dir.path().join("lying.safetensors");
    let bytes = nn::checkpoint::to_bytes(&wrong, &[]);
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("config".to_string(), small_config(Penalty::None).to_json());
    std::fs::write(
        &lying,
        safetensors::serialize(tensors.tensors(), Some(metadata)).unwrap(),
    )
    .unwrap();
    let err = nn::checkpoint::load(&lying).unwrap_err().to_string();
    assert!(
        err.contains("lying.safetensors") && err.contains("layers.0.weight has shape [12, 6]"),
        "{err}"
    );

    let not_model = dir.path().join("plain.safetensors");
    std::fs::write(&not_model, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    let err = nn::checkpoint::load(&not_model).unwrap_err().to_string();
    assert!(err.contains("plain.safetensors"), "{err}");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, [0xffu8; 64]).unwrap();
    assert!(nn::checkpoint::load(&garbage).is_err());
    assert!(nn::checkpoint::load(dir.path()).is_err());
}

#[test]
fn split_products_match_and_two_thread_runs_repeat_bit_for_bit() {
    use kernels::{MatMut, MatRef};
    let threads = nn::parallel::Threads::new(3).unwrap();
    for (m, k, n) in [(32, 784, 100), (784, 32, 100), (24, 300, 100), (5, 7, 9)] {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let mut whole = vec![1.0f32; m * n];
        let mut split = whole.clone();
        let (av, bv) = (
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
        );
        kernels::gemm(
            -0.5,
            av,
            bv,
            1.0,
            MatMut::row_major(&mut whole, m, n).unwrap(),
        )
        .unwrap();
        threads
            .install(|| {
                threads.gemm(
                    -0.5,
                    av,
                    bv,
                    1.0,
                    MatMut::row_major(&mut split, m, n).unwrap(),
                )
            })
            .unwrap();
        for (x, y) in whole.iter().zip(&split) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "{m}x{k}x{n}: {x} vs {y}"
            );
        }
    }

    let run = || {
        let model = Autoencoder::new(
            small_config(Penalty::Kl {
                target: 0.2,
                weight: 0.1,
            }),
            4,
        )
        .unwrap();
        let config = TrainConfig {
            epochs: 2,
            batch_size: 32,
            shuffle: true,
            shuffle_window_bytes: None,
            seed: 4,
            optimizer: Optimizer::sgd(0.3),
            threads: 2,
        };
        let mut trainer = Trainer::new(model, config).unwrap();
        trainer
            .fit(&Dataset::from_f32(samples(100), 12), None, &mut ())
            .unwrap();
        trainer.into_model()
    };
    let (a, b) = (run(), run());
    let bits = |m: &Autoencoder| -> Vec<u32> {
        m.layers()
            .flat_map(|l| l.weight.iter().chain(l.bias).map(|v| v.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
}

/// Stops training after a given step.
struct StopAt {
    epoch: usize,
    step: usize,
}

impl nn::Observer for StopAt {
    fn step_end(&mut self, p: &nn::StepProgress) -> nn::Control {
        if (p.epoch, p.step) == (self.epoch, self.step) {
            nn::Control::Stop
        } else {
            nn::Control::Continue
        }
    }
}

/// A team of threads stopped at the first or the last step of an epoch (where a part
/// could be left waiting at a barrier the others never reach) returns, and resumes to
/// the weights of a run never stopped.
#[test]
fn team_runs_stop_at_any_step_and_resume_bit_for_bit() {
    let config = wide_config(Penalty::Kl {
        target: 0.1,
        weight: 0.05,
    });
    let data = Dataset::from_f32(samples(60 * 40 / 12), 40);
    let bits = |m: &Autoencoder| -> Vec<u32> {
        m.layers()
            .flat_map(|l| l.weight.iter().chain(l.bias).map(|v| v.to_bits()))
            .collect()
    };
    for threads in [2, 3] {
        let fresh = || {
            let settings = TrainConfig {
                epochs: 2,
                batch_size: 8,
                shuffle: true,
                shuffle_window_bytes: None,
                seed: 3,
                optimizer: Optimizer::sgd(0.3),
                threads,
            };
            Trainer::new(Autoencoder::new(config.clone(), 2).unwrap(), settings).unwrap()
        };
        let mut straight = fresh();
        straight.fit(&data, None, &mut ()).unwrap();
        // 60 samples in batches of 8: 8 steps per epoch, the last of 4 samples.
        for step in [1, 7, 8] {
            let mut stopped = fresh();
            let outcome = stopped.fit(&data, None, &mut StopAt { epoch: 2, step });
            assert!(
                matches!(outcome, Err(TrainError::Interrupted)),
                "{threads} threads, step {step}: {outcome:?}"
            );
            let state = stopped.state();
            assert_eq!(
                state.position.map(|p| p.steps_done),
                Some(step),
                "{threads} threads"
            );
            let slots = stopped.optimizer_state().clone();
            let mut resumed = Trainer::restore(stopped.into_model(), state, slots).unwrap();
            resumed.fit(&data, None, &mut ()).unwrap();
            assert_eq!(
                bits(resumed.model()),
                bits(straight.model()),
                "{threads} threads, stopped at step {step}"
            );
        }
    }
}

struct PanicAt(usize);

impl nn::Observer for PanicAt {
    fn step_end(&mut self, p: &nn::StepProgress) -> nn::Control {
        assert!(p.step != self.0, "observer gives up at step {}", p.step);
        nn::Control::Continue
    }
}

/// A panic on one thread of a team (here in the observer, on part 0) reaches the
/// caller instead of leaving the other parts waiting at a barrier forever.
#[test]
fn a_panic_inside_a_team_reaches_the_caller() {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let config = wide_config(Penalty::None);
        let settings = TrainConfig {
            epochs: 1,
            batch_size: 8,
            shuffle: false,
            shuffle_window_bytes: None,
            seed: 1,
            optimizer: Optimizer::sgd(0.1),
            threads: 2,
        };
        let data = Dataset::from_f32(samples(60 * 40 / 12), 40);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut trainer = Trainer::new(Autoencoder::new(config, 1).unwrap(), settings).unwrap();
            trainer.fit(&data, None, &mut PanicAt(3)).is_ok()
        }));
        let _ = sender.send(outcome.is_err());
    });
    let panicked = receiver
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the run hung after a panic on one of its threads");
    assert!(panicked, "the observer's panic was lost");
}

/// A training checkpoint rewritten as versions before named parameters wrote it: the
/// optimizer's slots as `optimizer.{first,second}.{k}`, flat, `k` counting tensors.
fn with_numbered_slots(bytes: &[u8]) -> Vec<u8> {
    use safetensors::{tensor::TensorView, SafeTensors};
    let tensors = SafeTensors::deserialize(bytes).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(bytes).unwrap();
    let mut names = tensors.names();
    names.sort();
    let params: Vec<String> = Autoencoder::new(small_config(Penalty::None), 1)
        .unwrap()
        .parameters()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let mut renamed = Vec::new();
    for name in names {
        let view = tensors.tensor(name).unwrap();
        let new_name = match name.strip_prefix("optimizer.") {
            Some(rest) => {
                let (kind, param) = rest.split_once('.').unwrap();
                let k = params.iter().position(|p| p == param).unwrap();
                format!("optimizer.{kind}.{k}")
            }
            None => name.to_string(),
        };
        let len = view.data().len() / 4;
        let shape = if new_name == name {
            view.shape().to_vec()
        } else {
            vec![len]
        };
        renamed.push((
            new_name,
            TensorView::new(view.dtype(), shape, view.data()).unwrap(),
        ));
    }
    safetensors::serialize(renamed, metadata.metadata().clone()).unwrap()
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = Dataset::from_f32(samples(45), 12);
    let (train, valid) = data.split_tail(10).unwrap();
    let optimizers = [
        Optimizer::sgd(0.3),
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
        },
        Optimizer::adam(0.01),
    ];
    let bits = |m: &Autoencoder| -> Vec<u32> {
        m.layers()
            .flat_map(|l| l.weight.iter().chain(l.bias).map(|v| v.to_bits()))
            .collect()
    };
    for (optimizer, threads) in optimizers.into_iter().flat_map(|o| [(o, 1), (o, 2)]) {
        let fresh = || {
            let model = Autoencoder::new(
                small_config(Penalty::Kl {
                    target: 0.2,
                    weight: 0.1,
                }),
                8,
            )
            .unwrap();
            let config = TrainConfig {
                epochs: 3,
                batch_size: 7,
                shuffle: true,
                shuffle_window_bytes: None,
                seed: 8,
                optimizer,
                threads,
            };
            Trainer::new(model, config).unwrap()
        };
        let mut straight = fresh();
        straight.fit(&train, Some(&valid), &mut ()).unwrap();

        // Stopped in the middle of epoch 2 (of 5 steps), saved, loaded, continued.
        let mut first = fresh();
        let stopped = first.fit(&train, Some(&valid), &mut StopAt { epoch: 2, step: 3 });
        assert!(matches!(stopped, Err(TrainError::Interrupted)));
        assert_eq!(first.history().len(), 1);
        let path = dir.path().join("run.safetensors");
        nn::checkpoint::save_training(&first, &path, &[]).unwrap();
        let (mut resumed, _) = nn::checkpoint::load_training(&path).unwrap();
        resumed.fit(&train, Some(&valid), &mut ()).unwrap();
        // The same checkpoint as earlier versions wrote it, slots numbered and flat.
        let earlier = dir.path().join("earlier.safetensors");
        std::fs::write(
            &earlier,
            with_numbered_slots(&std::fs::read(&path).unwrap()),
        )
        .unwrap();
        let (mut resumed_earlier, _) = nn::checkpoint::load_training(&earlier).unwrap();
        resumed_earlier.fit(&train, Some(&valid), &mut ()).unwrap();

        assert_eq!(
            bits(resumed.model()),
            bits(straight.model()),
            "{optimizer:?}, {threads} threads"
        );
        assert_eq!(
            bits(resumed_earlier.model()),
            bits(straight.model()),
            "{optimizer:?}, {threads} threads, numbered slots"
        );
        assert_eq!(
            resumed.optimizer_state(),
            straight.optimizer_state(),
            "{optimizer:?}"
        );
        for (a, b) in resumed.history().iter().zip(straight.history()) {
            assert_eq!(
                (a.epoch, a.loss, a.rounded_accuracy, a.val_loss),
                (b.epoch, b.loss, b.rounded_accuracy, b.val_loss),
                "{optimizer:?}"
            );
        }
    }
    // A plain model file has no training state to resume from.
    let model = Autoencoder::new(small_config(Penalty::None), 1).unwrap();
    let plain = dir.path().join("plain.safetensors");
    nn::checkpoint::save(&model, &plain, &[]).unwrap();
    let err = nn::checkpoint::load_training(&plain)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot be resumed"), "{err}");
    // Saving streams into a temporary that it renames: none is left behind.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') && name.ends_with(".safetensors"),
            "{name} left in the directory"
        );
    }
}

#[test]
fn inference_shared_across_threads_matches_one_thread() {
    let model = Autoencoder::new(
        small_config(Penalty::Kl {
            target: 0.1,
            weight: 0.05,
        }),
        5,
    )
    .unwrap();
    // 101 samples in batches of 8: uneven parts and a partial last batch.
    let data = Dataset::from_f32(samples(101), 12);
    let one = nn::parallel::Threads::sequential();
    let codes = model.encode_with(&one, &data, 8);
    let images = model.reconstruct_with(&one, &data, 8);
    let evaluation = model.evaluate_with(&one, &data, 8);
    assert_eq!(codes, model.encode(&data, 8));
    for count in [2, 3, 5] {
        let threads = nn::parallel::Threads::new(count).unwrap();
        // The same batches whatever the count: bit-identical outputs.
        assert_eq!(
            model.encode_with(&threads, &data, 8),
            codes,
            "{count} threads"
        );
        assert_eq!(
            model.reconstruct_with(&threads, &data, 8),
            images,
            "{count} threads"
        );
        let shared = model.evaluate_with(&threads, &data, 8);
        assert_eq!(shared.samples, evaluation.samples);
        for (a, b) in [
            (shared.loss, evaluation.loss),
            (shared.rounded_accuracy, evaluation.rounded_accuracy),
            (
                shared.mean_coding_activation,
                evaluation.mean_coding_activation,
            ),
        ] {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{count} threads: {a} vs {b}"
            );
        }
    }
}

#[test]
fn products_with_epilogues_split_by_rows_or_columns_match_one_thread() {
    use kernels::MatRef;
    // (rows, inputs, units): columns split (wide weights, a training batch), rows split
    // (deep weights), and rows split (a large batch).
    for (rows, inputs, units) in [(32, 100, 784), (32, 300, 100), (100, 40, 64), (5, 3, 40)] {
        let input: Vec<f32> = (0..rows * inputs)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..inputs * units)
            .map(|i| ((i * 104_729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        // The epilogue tags each element with its row, so a wrong offset shows.
        let epilogue = |part: &mut [f32], first: usize, count: usize| {
            assert_eq!(part.len(), count * units);
            for (r, row) in part.chunks_mut(units).enumerate() {
                for v in row {
                    *v = v.tanh() + (first + r) as f32;
                }
            }
        };
        let run = |threads: usize| {
            let mut out = vec![f32::NAN; rows * units];
            let weight = MatRef::row_major(&w, inputs, units).unwrap();
            nn::parallel::Threads::new(threads)
                .unwrap()
                .product_then(&input, weight, &mut out, rows, &epilogue)
                .unwrap();
            out
        };
        let one = run(1);
        assert!(one.iter().all(|v| v.is_finite()));
        for threads in [2, 3] {
            assert_eq!(
                run(threads),
                one,
                "{rows}x{inputs}x{units}, {threads} threads"
            );
        }
    }
}

/// A run is reproducible bit for bit for a given thread count. With a collected
/// gradient (momentum) every product computes each element the same way however it is
/// split, so two and three threads end with one thread's weights, bit for bit. Plain
/// SGD runs as a team whose parts add partial sums, grouped by the thread count: close
/// to one thread's weights, not equal to them. A thread that read weights another had
/// already updated, or a part that missed a partial sum, would be far off.
#[test]
fn runs_repeat_for_a_thread_count_and_agree_across_counts() {
    let optimizers = [
        Optimizer::sgd(0.3),
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
        },
    ];
    for (optimizer, batch_size) in optimizers.into_iter().flat_map(|o| [(o, 32), (o, 8)]) {
        let run = |threads: usize| {
            let config = wide_config(Penalty::Kl {
                target: 0.1,
                weight: 0.05,
            });
            let settings = TrainConfig {
                epochs: 2,
                batch_size,
                shuffle: true,
                shuffle_window_bytes: None,
                seed: 5,
                optimizer,
                threads,
            };
            let mut trainer = Trainer::new(Autoencoder::new(config, 6).unwrap(), settings).unwrap();
            trainer
                .fit(
                    &Dataset::from_f32(samples(150 * 40 / 12), 40),
                    None,
                    &mut (),
                )
                .unwrap();
            trainer
                .into_model()
                .layers()
                .flat_map(|l| l.weight.iter().chain(l.bias).copied())
                .collect::<Vec<f32>>()
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let one = run(1);
        for threads in [1, 2, 3] {
            let first = run(threads);
            assert!(
                bits(&first) == bits(&run(threads)),
                "{optimizer:?}, batch {batch_size}: two runs at {threads} threads differ"
            );
            if optimizer.is_plain_sgd() {
                let worst = first
                    .iter()
                    .zip(&one)
                    .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-6,
                    "{optimizer:?}, batch {batch_size}: {threads} threads {worst} away from one"
                );
            } else {
                assert!(
                    bits(&first) == bits(&one),
                    "{optimizer:?}, batch {batch_size}: {threads} threads ended with other weights than one"
                );
            }
        }
    }
}

#[test]
fn products_by_input_halves_match_the_plain_product_and_agree_across_thread_counts() {
    use kernels::{gemm, MatMut, MatRef};
    use std::sync::Mutex;
    let (rows, inputs, units) = (12, 300, 40);
    let input = samples(rows * inputs);
    let weight: Vec<f32> = samples(inputs * units).iter().map(|v| v - 0.5).collect();
    let w = MatRef::row_major(&weight, inputs, units).unwrap();
    let mut plain = vec![0.0f32; rows * units];
    gemm(
        1.0,
        MatRef::row_major(&input, rows, inputs).unwrap(),
        w,
        0.0,
        MatMut::row_major(&mut plain, rows, units).unwrap(),
    )
    .unwrap();
    let mut first_result: Option<Vec<u32>> = None;
    for count in 1..=3 {
        let threads = nn::parallel::Threads::new(count).unwrap();
        let mut out = vec![f32::NAN; rows * units];
        let mut partial = vec![f32::NAN; rows * units];
        let visited = Mutex::new(vec![0u32; rows]);
        // The epilogue sees the summed rows: it adds 1 and records which rows it got.
        let epilogue = |part: &mut [f32], first: usize, count: usize| {
            assert_eq!(part.len(), count * units);
            part.iter_mut().for_each(|v| *v += 1.0);
            let mut visited = visited.lock().unwrap();
            (first..first + count).for_each(|r| visited[r] += 1);
        };
        threads
            .product_by_input_halves(&input, w, &mut out, &mut partial, rows, &epilogue)
            .unwrap();
        assert_eq!(*visited.lock().unwrap(), vec![1; rows], "{count} threads");
        for (at, (&got, &want)) in out.iter().zip(&plain).enumerate() {
            assert!(
                (got - (want + 1.0)).abs() <= 1e-4 * (1.0 + want.abs()),
                "{count} threads, element {at}: {got} against {}",
                want + 1.0
            );
        }
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        match &first_result {
            None => first_result = Some(bits),
            Some(one) => assert!(*one == bits, "{count} threads differ from one"),
        }
    }
}
