//! Inference with a trained model: evaluation (Keras' loss, and the reconstruction and
//! coding statistics of [`Evaluation`]), encoding, decoding and reconstruction, over
//! batches shared out across threads.

use crate::config::Activation;
use crate::dataset::Dataset;
use crate::loss::Loss;
use crate::model::{Activations, Autoencoder};
use crate::parallel::Threads;
use kernels::activation::activation_forward;
use kernels::output::{output_stats, OutputStats};
use kernels::sparse::sparse_times_dense;
use kernels::sparse_rows::SparseRows;
use kernels::topk::{threshold_rows, SelectScratch, Threshold};
use kernels::Layout;
use std::ops::Range;

/// The batch size of encoding, decoding and reconstruction: large enough to keep the
/// products efficient, small enough for the buffers to stay in cache.
pub const INFERENCE_BATCH: usize = 256;

/// Floats of codes one thread's evaluation batch of an SAE may hold (64 MiB).
pub const EVALUATION_CODES: usize = 1 << 24;

/// Rows of one thread's evaluation batch of an SAE, at most: enough for the products to
/// run at full speed, few enough that the buffers stay small beside the training step's.
pub const EVALUATION_ROWS: usize = 1024;

/// How an evaluation decodes an SAE's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decode {
    /// The kept latents' rows of the decoder only.
    Sparse,
    /// The dense product, as training's generic forward pass runs it.
    #[cfg_attr(not(test), allow(dead_code))]
    Dense,
}

/// What an SAE's sparse decoding keeps between batches: the kept codes, the selection's
/// scratch, and a zero bias for it (the codes are already `relu(z + b_enc)`).
struct SparseCodes {
    codes: SparseRows,
    scratch: SelectScratch,
    zero_bias: Vec<f32>,
}

impl SparseCodes {
    fn new(units: usize) -> Self {
        Self {
            codes: SparseRows::new(units),
            scratch: SelectScratch::new(),
            zero_bias: vec![0.0; units],
        }
    }
}

/// A sigmoid coding unit above this counts as on, in the statistic that the book's
/// models report besides the dead latents ([`Evaluation::never_above_half`]).
pub const SIGMOID_ON: f32 = 0.5;

/// What a model does on a dataset. Which figures mean something depends on the model:
/// `rounded_accuracy` for values in `[0, 1]` (the book's BCE models); `mse` and `fvu`,
/// computed for models with an MSE loss only, and `l0` and `dead_latents` for rows of
/// unbounded floats; `never_above_half` for sigmoid coding layers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// Reconstruction loss plus penalty, per batch, averaged weighted by batch size.
    pub loss: f64,
    /// Fraction of values where the rounded reconstruction equals the rounded input.
    pub rounded_accuracy: f64,
    /// Mean activation of the coding layer over all samples and units.
    pub mean_coding_activation: f64,
    /// Mean squared difference between a value and its reconstruction (models with an
    /// MSE loss).
    pub mse: Option<f64>,
    /// Fraction of variance unexplained: `sum |x - x^|^2 / sum |x - mean(x)|^2` over
    /// all samples, `mean(x)` their mean row (1 - explained variance; models with an
    /// MSE loss).
    pub fvu: Option<f64>,
    /// Mean number of active coding units (`> 0`) per sample.
    pub l0: f64,
    /// Coding units never active (`> 0`) on any sample.
    pub dead_latents: usize,
    /// Coding units never above [`SIGMOID_ON`] on any sample.
    pub never_above_half: usize,
    /// Samples evaluated.
    pub samples: usize,
}

/// Running sums of an evaluation, per contiguous run of batches.
struct Sums {
    loss: f64,
    rounded_equal: u64,
    coding: f64,
    squared_error: f64,
    /// Per input column, the sum of its values.
    x_columns: Vec<f64>,
    x_squares: f64,
    active: u64,
    ever_active: Vec<bool>,
    ever_above_half: Vec<bool>,
}

impl Sums {
    fn new(width: usize, units: usize) -> Self {
        Self {
            loss: 0.0,
            rounded_equal: 0,
            coding: 0.0,
            squared_error: 0.0,
            x_columns: vec![0.0; width],
            x_squares: 0.0,
            active: 0,
            ever_active: vec![false; units],
            ever_above_half: vec![false; units],
        }
    }

    fn add_codings(&mut self, coding: &[f32]) {
        for row in coding.chunks_exact(self.ever_active.len()) {
            for ((&a, active), above) in row
                .iter()
                .zip(&mut self.ever_active)
                .zip(&mut self.ever_above_half)
            {
                self.active += u64::from(a > 0.0);
                *active |= a > 0.0;
                *above |= a > SIGMOID_ON;
            }
        }
    }

    fn add_rows(&mut self, x: &[f32]) {
        for row in x.chunks_exact(self.x_columns.len()) {
            for (&v, column) in row.iter().zip(&mut self.x_columns) {
                let v = f64::from(v);
                self.x_squares += v * v;
                *column += v;
            }
        }
    }

    fn add(&mut self, other: &Self) {
        self.loss += other.loss;
        self.rounded_equal += other.rounded_equal;
        self.coding += other.coding;
        self.squared_error += other.squared_error;
        for (a, b) in self.x_columns.iter_mut().zip(&other.x_columns) {
            *a += b;
        }
        self.x_squares += other.x_squares;
        self.active += other.active;
        for (a, b) in self.ever_active.iter_mut().zip(&other.ever_active) {
            *a |= b;
        }
        for (a, b) in self.ever_above_half.iter_mut().zip(&other.ever_above_half) {
            *a |= b;
        }
    }
}

impl Autoencoder {
    /// Penalty of the coding activations of a batch (value only).
    pub(crate) fn penalty_value(&self, coding: &[f32], rows: usize, scratch: &mut [f32]) -> f64 {
        let layout = Layout::contiguous(rows, self.coding_width());
        self.config().penalty.value(layout, coding, scratch)
    }

    /// Loss statistics of one batch already run through [`Autoencoder::forward`]:
    /// `(output stats, penalty)`.
    pub(crate) fn batch_loss(
        &self,
        targets: &[f32],
        rows: usize,
        acts: &Activations,
        scratch: &mut [f32],
    ) -> (OutputStats, f64) {
        let width = self.input_width();
        let out = &acts.outputs[self.layer_count() - 1][..rows * width];
        // Under MSE the stored output is already activated, whatever the activation.
        let stats = output_stats(self.config().loss.kernel(), out, &targets[..rows * width]);
        let coding = &acts.outputs[self.config().coding_layer][..rows * self.coding_width()];
        (stats, self.penalty_value(coding, rows, scratch))
    }

    /// Loss and the reconstruction and coding statistics of [`Evaluation`] over `data`,
    /// in batches of `batch_size` (the last may be smaller), as Keras' `evaluate`
    /// computes its loss.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Evaluation {
        self.evaluate_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::evaluate`] with the batches shared out across `threads`: each takes a
    /// contiguous run of whole batches, so the batches are the same for any thread count.
    pub fn evaluate_with(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
    ) -> Evaluation {
        let batch_size = self.evaluation_batch(batch_size);
        let work = |range: Range<usize>| self.evaluate_range(data, range, batch_size);
        let sums = threads.split_range(data.len(), batch_size, &work, &|mut a, b| {
            a.add(&b);
            a
        });
        let n = data.len();
        if n == 0 {
            return Evaluation::default();
        }
        let (width, units) = (self.input_width(), self.coding_width());
        let values = (n * width) as f64;
        // Variance about the mean row: sum |x|^2 - n |mean|^2.
        let centred: f64 =
            sums.x_squares - sums.x_columns.iter().map(|s| s * s).sum::<f64>() / n as f64;
        let unbounded = self.config().loss == Loss::Mse;
        Evaluation {
            loss: sums.loss / n as f64,
            rounded_accuracy: sums.rounded_equal as f64 / values,
            mean_coding_activation: sums.coding / (n * units) as f64,
            mse: unbounded.then(|| sums.squared_error / values),
            fvu: unbounded.then(|| sums.squared_error / centred),
            l0: sums.active as f64 / n as f64,
            dead_latents: sums.ever_active.iter().filter(|&&a| !a).count(),
            never_above_half: sums.ever_above_half.iter().filter(|&&a| !a).count(),
            samples: n,
        }
    }

    /// The batch an evaluation asked for `batch_size` runs in: an SAE's, capped at
    /// [`EVALUATION_ROWS`] rows and so that each thread's codes take at most
    /// [`EVALUATION_CODES`] floats (64 MiB), since its training batch times its latents
    /// can be as large as the model itself (4096 rows of 32768 latents: 512 MiB), and the
    /// training step's own buffers are still held. The sums are the same up to the order
    /// of their f64 additions.
    fn evaluation_batch(&self, batch_size: usize) -> usize {
        let batch_size = batch_size.max(1);
        if self.config().sae.is_none() {
            return batch_size;
        }
        let codes = (EVALUATION_CODES / self.coding_width().max(1)).max(1);
        batch_size.min(EVALUATION_ROWS).min(codes)
    }

    /// The sums behind [`Evaluation`] over the samples in `range`, in batches of
    /// `batch_size` from its start.
    fn evaluate_range(&self, data: &Dataset, range: Range<usize>, batch_size: usize) -> Sums {
        self.evaluate_range_by(data, range, batch_size, Decode::Sparse)
    }

    /// [`Autoencoder::evaluate_range`], decoding an SAE's codes as `decode` says.
    fn evaluate_range_by(
        &self,
        data: &Dataset,
        range: Range<usize>,
        batch_size: usize,
        decode: Decode,
    ) -> Sums {
        let (width, units) = (self.input_width(), self.coding_width());
        let mut acts = Activations::new(self.config(), batch_size);
        let mut x = vec![0.0; batch_size * width];
        let mut scratch = vec![0.0; self.plan().scratch_len()];
        let mut sums = Sums::new(width, units);
        let mut codes = SparseCodes::new(units);
        for start in range.clone().step_by(batch_size) {
            let rows = batch_size.min(range.end - start);
            let x = &mut x[..rows * width];
            data.gather_range(start..start + rows, x);
            let sae = self.config().sae;
            if sae.is_some() && decode == Decode::Sparse {
                self.forward_sae_sparse(x, rows, &mut acts, &mut codes);
            } else {
                self.forward(x, rows, &mut acts);
            }
            if sae.is_some() {
                let last = self.layer_count() - 1;
                self.finish_output(&mut acts.outputs[last][..rows * width]);
            }
            let (stats, penalty) = self.batch_loss(x, rows, &acts, &mut scratch);
            sums.loss += match sae {
                // An SAE's loss: the squared error of a scaled row, summed over the row.
                Some(sae) => stats.loss_sum * f64::from(sae.input_scale).powi(2),
                None => self.plan().batch_loss(&stats, penalty, rows) * rows as f64,
            };
            sums.rounded_equal += stats.rounded_equal;
            let coding = &acts.outputs[self.config().coding_layer][..rows * units];
            sums.coding += kernels::reduce::sum(coding);
            sums.add_codings(coding);
            // The book's models report none of the reconstruction's statistics, and their
            // validation is part of every epoch: only models of unbounded rows pay for them.
            if self.config().loss == Loss::Mse {
                // Under MSE the loss is the squared error of the activated output.
                sums.squared_error += stats.loss_sum;
                sums.add_rows(x);
            }
        }
        sums
    }

    /// The coding-layer activations of every sample of `data`, `len x coding_width`.
    pub fn encode(&self, data: &Dataset, batch_size: usize) -> Vec<f32> {
        self.encode_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::encode`] with the batches shared out across `threads`.
    pub fn encode_with(&self, threads: &Threads, data: &Dataset, batch_size: usize) -> Vec<f32> {
        let coding = self.config().coding_layer;
        self.map_batches(
            threads,
            data,
            batch_size,
            0..coding + 1,
            self.coding_width(),
        )
    }

    /// Reconstructions of every sample of `data` (after the output activation),
    /// `len x input_width`.
    pub fn reconstruct(&self, data: &Dataset, batch_size: usize) -> Vec<f32> {
        self.reconstruct_with(&Threads::sequential(), data, batch_size)
    }

    /// [`Autoencoder::reconstruct`] with the batches shared out across `threads`.
    pub fn reconstruct_with(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
    ) -> Vec<f32> {
        let layers = 0..self.layer_count();
        let mut out = self.map_batches(threads, data, batch_size, layers, self.input_width());
        self.finish_output(&mut out);
        out
    }

    /// An SAE's forward pass with its decoder run on the kept latents only: the encoder
    /// and the selection as [`Autoencoder::forward`] runs them, then `sparse_times_dense`
    /// over each row's nonzero codes (`k` of `N`, rather than a dense `N x d` product:
    /// as much arithmetic as the encoder's). The same sums as the dense decoder, up to
    /// the order of their additions.
    fn forward_sae_sparse(
        &self,
        x: &[f32],
        rows: usize,
        acts: &mut Activations,
        sparse: &mut SparseCodes,
    ) {
        let (width, units) = (self.input_width(), self.coding_width());
        let (coding, last) = (self.config().coding_layer, self.layer_count() - 1);
        debug_assert!(coding + 1 == last);
        debug_assert_eq!(self.config().layers[last].activation, Activation::Linear);
        self.forward_range(0..coding + 1, x, rows, acts);
        // The selection's nonzero codes (all positive), gathered as the training step's
        // ReLU path gathers them.
        threshold_rows(
            Layout::contiguous(rows, units),
            &acts.outputs[coding][..rows * units],
            &sparse.zero_bias,
            Threshold::Global(0.0),
            &mut sparse.scratch,
            &mut sparse.codes,
        );
        let decoder = self.layer(last);
        sparse_times_dense(
            &sparse.codes,
            decoder.weight,
            Layout::contiguous(units, width),
            Some(decoder.bias),
            &mut acts.outputs[last][..rows * width],
            Layout::contiguous(rows, width),
        );
    }

    /// Applies the output activation that the forward buffers leave out under BCE (the
    /// sigmoid is fused into the loss there), turning stored logits into reconstructions.
    fn finish_output(&self, out: &mut [f32]) {
        let last = self.layer_count() - 1;
        let activation = self.config().layers[last].activation;
        if self.plan().layer(last).stored != activation {
            activation_forward(activation, out);
        }
        // An SAE reconstructs the scaled row: back to the input's units.
        if let Some(sae) = &self.config().sae {
            let unscale = 1.0 / sae.input_scale;
            out.iter_mut().for_each(|v| *v *= unscale);
        }
    }

    /// Reconstructions from coding activations (`rows x coding_width`), `rows x input_width`.
    ///
    /// # Panics
    /// If `codings.len()` is not a multiple of the coding width.
    pub fn decode(&self, codings: &[f32]) -> Vec<f32> {
        let width = self.coding_width();
        assert_eq!(codings.len() % width, 0, "decode: ragged codings");
        let data = Dataset::from_f32(codings.to_vec(), width);
        let layers = self.config().coding_layer + 1..self.layer_count();
        let threads = Threads::sequential();
        let mut out =
            self.map_batches(&threads, &data, INFERENCE_BATCH, layers, self.input_width());
        self.finish_output(&mut out);
        out
    }

    fn map_batches(
        &self,
        threads: &Threads,
        data: &Dataset,
        batch_size: usize,
        layers: Range<usize>,
        out_width: usize,
    ) -> Vec<f32> {
        let batch_size = batch_size.max(1);
        let work = |range: Range<usize>| {
            let in_width = data.features();
            let last = layers.end - 1;
            let mut acts = Activations::new(self.config(), batch_size);
            let mut x = vec![0.0; batch_size * in_width];
            let mut out = Vec::with_capacity(range.len() * out_width);
            // An SAE's whole pass decodes its kept latents only.
            let sparse = self.config().sae.is_some() && layers == (0..self.layer_count());
            let mut codes = SparseCodes::new(self.coding_width());
            for start in range.clone().step_by(batch_size) {
                let rows = batch_size.min(range.end - start);
                data.gather_range(start..start + rows, &mut x[..rows * in_width]);
                let x = &x[..rows * in_width];
                if sparse {
                    self.forward_sae_sparse(x, rows, &mut acts, &mut codes);
                } else {
                    self.forward_range(layers.clone(), x, rows, &mut acts);
                }
                out.extend_from_slice(&acts.outputs[last][..rows * out_width]);
            }
            out
        };
        threads.split_range(data.len(), batch_size, &work, &|mut a, b| {
            a.extend_from_slice(&b);
            a
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::sae::SaeConfig;

    #[test]
    fn an_sae_decoded_on_its_kept_latents_evaluates_as_the_dense_decoder_does() {
        let (d, latents, rows) = (16, 256, 300);
        let values: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0).powi(3))
            .collect();
        let data = Dataset::from_f32(values.clone(), d);
        for sae in [
            SaeConfig::topk(8, d),
            SaeConfig::batchtopk(8, d),
            SaeConfig::jumprelu(0.05),
            SaeConfig::relu(1.0, 0),
        ] {
            let config = ModelConfig::sae(d, latents, sae);
            let model = Autoencoder::new_sae(config, 5, &values).unwrap();
            let dense = model.evaluate_range_by(&data, 0..rows, 64, Decode::Dense);
            let sparse = model.evaluate_range_by(&data, 0..rows, 64, Decode::Sparse);
            assert!(dense.active > 0, "{sae:?} keeps nothing");
            assert_eq!(sparse.active, dense.active, "{sae:?}");
            assert_eq!(sparse.ever_active, dense.ever_active, "{sae:?}");
            for (what, a, b) in [
                ("loss", sparse.loss, dense.loss),
                ("squared error", sparse.squared_error, dense.squared_error),
                ("coding", sparse.coding, dense.coding),
            ] {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1e-12),
                    "{sae:?} {what}: {a} against {b}"
                );
            }
        }
    }

    #[test]
    fn an_sae_reconstructs_from_its_kept_latents_as_the_dense_decoder_does() {
        let (d, latents, rows) = (16, 256, 150);
        let values: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0).powi(3))
            .collect();
        let data = Dataset::from_f32(values.clone(), d);
        let config = ModelConfig::sae(d, latents, SaeConfig::topk(8, d));
        let model = Autoencoder::new_sae(config, 7, &values).unwrap();
        let sparse = model.reconstruct(&data, 64);
        // The dense decoder: the codes through `decode`, the generic product.
        let codes = model.encode(&data, 64);
        let dense = model.decode(&codes);
        assert_eq!(sparse.len(), dense.len());
        for (a, b) in sparse.iter().zip(&dense) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} against {b}");
        }
    }

    #[test]
    fn an_sae_with_many_latents_is_evaluated_in_smaller_batches_with_the_same_sums() {
        let (d, latents, rows) = (8, 1 << 16, 300);
        let values: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0).powi(3))
            .collect();
        let data = Dataset::from_f32(values.clone(), d);
        let config = ModelConfig::sae(d, latents, SaeConfig::topk(4, latents));
        let model = Autoencoder::new_sae(config, 3, &values).unwrap();
        assert_eq!(model.evaluation_batch(rows), EVALUATION_CODES / latents);
        assert!(model.evaluation_batch(rows) < rows);
        let narrow =
            Autoencoder::new_sae(ModelConfig::sae(d, 64, SaeConfig::topk(4, 64)), 3, &values)
                .unwrap();
        assert_eq!(narrow.evaluation_batch(4096), EVALUATION_ROWS);
        assert_eq!(narrow.evaluation_batch(100), 100);

        let whole = model.evaluate_range(&data, 0..rows, rows);
        let capped = model.evaluate(&data, rows);
        assert_eq!(capped.samples, rows);
        let loss = whole.loss / rows as f64;
        assert!(
            (capped.loss - loss).abs() <= 1e-12 * loss.abs(),
            "{capped:?}"
        );
        assert_eq!(capped.l0, whole.active as f64 / rows as f64);
        let dead = whole.ever_active.iter().filter(|&&a| !a).count();
        assert_eq!(capped.dead_latents, dead);
    }
}
