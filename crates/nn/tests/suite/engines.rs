//! Every engine against the checked step: one plain-SGD step of the team and of the
//! forked step, at 1, 2 and 3 threads, lands where the gradients that
//! `tests/gradients.rs` checks against finite differences say, over the same random
//! architectures.

use crate::common::{build, case};
use nn::config::{Activation, Coding, Penalty};
use nn::trainer::loss_and_gradients;
use nn::{Dataset, Engine, Optimizer, TrainConfig, Trainer};
use proptest::prelude::*;

const LR: f32 = 0.25;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_engine_steps_where_the_checked_gradients_say(case in case()) {
        // KL is defined for activations in (0, 1); elsewhere its clipped mean makes the
        // gradient hang on the last bits of the forward pass, which engines may add in
        // another order.
        let coding = case.config.layers[case.config.coding_layer].activation;
        prop_assume!(
            !matches!(case.config.penalty, Penalty::Kl { .. }) || coding == Activation::Sigmoid
        );
        let model = build(&case);
        let (_, grads) = loss_and_gradients(&model, &case.x, case.rows);
        let data = Dataset::from_f32(case.x.clone(), model.input_width());
        let config = TrainConfig {
            epochs: 1,
            batch_size: case.rows,
            shuffle: false,
            shuffle_window_bytes: None,
            seed: 0,
            optimizer: Optimizer::sgd(LR),
            threads: 1,
        };
        // The team runs models with an even number of layers and a coding layer it can
        // split by columns; it refuses the others.
        let team_runs = model.layer_count() % 2 == 0 && case.config.coding == Coding::Plain;
        for engine in [Engine::Team, Engine::Forked] {
            for threads in 1..=3 {
                let config = TrainConfig { threads, ..config };
                let trainer = Trainer::with_engine(model.clone(), config, engine);
                if engine == Engine::Team && !team_runs {
                    prop_assert!(trainer.is_err(), "the team took {} layers", model.layer_count());
                    continue;
                }
                let mut trainer = trainer.unwrap();
                prop_assert_eq!(trainer.engine(), engine);
                trainer.fit(&data, None, &mut ()).unwrap();
                let stepped = trainer.model().parameters();
                for ((before, after), grad) in
                    model.parameters().iter().zip(stepped.iter()).zip(grads.iter())
                {
                    prop_assert_eq!(before.name(), after.name());
                    let largest_step =
                        grad.values.iter().fold(0.0f32, |m, &g| m.max((LR * g).abs()));
                    for (k, ((&w, &w2), &g)) in
                        before.values.iter().zip(&after.values).zip(&grad.values).enumerate()
                    {
                        let step = LR * g;
                        let want = w - step;
                        // The engines add partial sums in other groupings than the
                        // reference step, and fuse the update into the product: a few
                        // ulps of the weight and of the step, and of the summands of a
                        // step that cancel (bounded by the tensor's largest step).
                        let tol = 2e-6 * (w.abs() + step.abs()) + 4e-6 * largest_step + 1e-7;
                        prop_assert!(
                            (w2 - want).abs() <= tol,
                            "{:?}, {} threads, {} [{}]: {} vs {} (step {})",
                            engine, threads, before.name(), k, w2, want, step
                        );
                    }
                }
            }
        }
    }
}
