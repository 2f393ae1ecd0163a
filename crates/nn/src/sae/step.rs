//! One training step of a sparse autoencoder, sparse after the encoder's product: the
//! dense `Z = X' W_enc` (a GEMM, split across the threads), then only the kept latents
//! enter the decoder, the latents' gradients and the weight gradients (gathers and
//! scatters of `k` rows per sample, `crates/kernels`' `topk` and `sparse`).
//!
//! With `t = s x` (the scaled row), `x' = t - b_dec` (or `t`), `f` the code and
//! `x^ = f W_dec + b_dec`, the loss of a batch of `B` rows is
//! `(1/B) sum_b |x^_b - t_b|^2` plus:
//! - `topk`, AuxK: with the residual `r = t - x^` (a constant), `e^` the reconstruction
//!   of `r` by the `k_aux` largest activations of the dead latents (no bias),
//!   `c * sum |e^ - r|^2 / sum |r - mean(r)|^2`;
//! - `relu`: `(lambda_t / B) sum_b sum_j f_bj |W_dec,j|`, `lambda_t` warmed up linearly;
//! - `jumprelu`: `(c / B) sum_b #{j : z_bj > theta_j}`. Its thresholds' gradient is
//!   SAELens' straight-through estimate, chained through `theta = exp(log_threshold)`:
//!   with the rectangle `K(u) = [|u| < 1/2]` and `g_bj = dL/df_bj`,
//!   `dL/dtheta_j = sum_b K((z_bj - theta_j)/eps) (-(theta_j/eps) g_bj - c/(B eps))`, and
//!   `dL/dlog_threshold_j = theta_j dL/dtheta_j`; `z`'s gradient is `g` where kept.
//!
//! `batchtopk` trains on the `k B` largest activations of the batch, with AuxK as
//! `topk`; its running threshold is updated after the step (`SaeStep::train`).
//!
//! `tests/suite/sae.rs` checks these gradients against central differences of an f64 model.

use super::{Arch, SaeConfig, THRESHOLD_DECAY};
use crate::dataset::{first_non_finite_row, Dataset};
use crate::error::{DataError, TrainError};
use crate::model::Autoencoder;
use crate::optimizer::{Optimizer, OptimizerState};
use crate::parallel::{cut_mut, Threads};
use crate::params::Parameters;
use kernels::reduce::column_sums;
use kernels::sparse::{dots_at_entries, scatter_outer_add, sparse_times_dense, sum_by_latent};
use kernels::sparse_rows::{LatentIndex, SparseRows};
use kernels::sparsity::relu_l1_codes_row;
use kernels::topk::{
    batch_top_k_relu_in_place, threshold_rows, top_k_rows_among, top_k_rows_relu_in_place,
    window_rows,
};
use kernels::topk::{SelectScratch, Threshold};
use kernels::transpose::transpose;
use kernels::unit_norm::{normalize_rows, remove_parallel_component, row_norms};
use kernels::{Layout, MatMut, MatRef};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// For each latent, the training rows since it last fired: the dead latents are those
/// past [`SaeConfig::dead_after_rows`]. Saved with a run, so a resumed run sees the same.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLatents {
    /// Rows since each latent last fired.
    pub rows_since_fired: Vec<u64>,
}

impl DeadLatents {
    /// Every one of `latents` fresh.
    pub fn new(latents: usize) -> Self {
        Self {
            rows_since_fired: vec![0; latents],
        }
    }

    /// The latents that have not fired in `after` rows, in increasing order, into `out`.
    fn dead_into(&self, after: u64, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            (0..self.rows_since_fired.len() as u32)
                .filter(|&j| self.rows_since_fired[j as usize] >= after),
        );
    }

    /// How many latents have not fired in `after` rows.
    pub fn count(&self, after: u64) -> usize {
        self.rows_since_fired
            .iter()
            .filter(|&&r| r >= after)
            .count()
    }

    /// Counts the batch's rows on every latent that did not fire in `codes` and zeroes
    /// the others; `counts` is scratch.
    pub fn record(&mut self, codes: &SparseRows, rows: usize, counts: &mut [u32]) {
        counts.fill(0);
        codes.count_latents(counts);
        self.record_counts(counts, rows);
    }

    /// As [`DeadLatents::record`], from each latent's count of active rows.
    fn record_counts(&mut self, counts: &[u32], rows: usize) {
        for (since, &fired) in self.rows_since_fired.iter_mut().zip(counts) {
            *since = if fired > 0 { 0 } else { *since + rows as u64 };
        }
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// `sum_b |x^_b - t_b|^2` over the batch.
    pub squared_error: f64,
    /// The penalty terms (AuxK, L1), already in the loss's units.
    pub penalty: f64,
    /// Latents kept, summed over the rows.
    pub active: usize,
    /// `batchtopk`: the smallest activation kept in the batch, if any was.
    pub batch_threshold: Option<f32>,
}

/// The buffers of an SAE's step, sized for a batch once.
pub struct SaeStep {
    rows: usize,
    target: Vec<f32>,
    input: Vec<f32>,
    z: Vec<f32>,
    codes: SparseRows,
    /// The codes of each thread's block of rows (joined into `codes`).
    parts: Vec<SparseRows>,
    index: LatentIndex,
    scratch: SelectScratch,
    /// A selection scratch per thread.
    scratches: Vec<SelectScratch>,
    recon: Vec<f32>,
    dout: Vec<f32>,
    dvalues: Vec<f32>,
    aux_codes: SparseRows,
    aux_index: LatentIndex,
    aux_recon: Vec<f32>,
    aux_dvalues: Vec<f32>,
    dead: Vec<u32>,
    encoder_t: Vec<f32>,
    norms: Vec<f32>,
    /// Each latent's codes summed over the batch (the L1 penalty's).
    sums: Vec<f32>,
    counts: Vec<u32>,
    thetas: Vec<f32>,
    /// JumpReLU's entries near their thresholds, per block of rows, and their gradients.
    window: Vec<SparseRows>,
    window_grads: Vec<Vec<f32>>,
    /// The dense step's codes' gradient (`B x N`), allocated on its first use.
    dz: Vec<f32>,
    /// Zeros, the bias of a selection on codes that already hold theirs.
    zero_bias: Vec<f32>,
    /// Whether the last step was the dense one (its counts are in `counts`).
    dense: bool,
    /// How ReLU's products are taken.
    pub products: Products,
    /// The gradient of the last step, under the parameters' names.
    pub grads: Parameters,
}

fn sae_of(model: &Autoencoder) -> SaeConfig {
    model.config().sae.expect("an SAE model")
}

impl SaeStep {
    /// Buffers for `model` (an SAE) and batches of up to `rows` rows.
    pub fn new(model: &Autoencoder, rows: usize) -> Self {
        let (d, n) = (model.input_width(), model.coding_width());
        Self {
            rows,
            target: vec![0.0; rows * d],
            input: vec![0.0; rows * d],
            z: vec![0.0; rows * n],
            codes: SparseRows::new(n),
            parts: Vec::new(),
            index: LatentIndex::new(),
            scratch: SelectScratch::new(),
            scratches: Vec::new(),
            recon: vec![0.0; rows * d],
            dout: vec![0.0; rows * d],
            dvalues: Vec::new(),
            aux_codes: SparseRows::new(n),
            aux_index: LatentIndex::new(),
            aux_recon: vec![0.0; rows * d],
            aux_dvalues: Vec::new(),
            dead: Vec::new(),
            encoder_t: vec![0.0; n * d],
            norms: vec![0.0; n],
            sums: vec![0.0; n],
            counts: vec![0; n],
            thetas: vec![0.0; n],
            window: Vec::new(),
            window_grads: Vec::new(),
            dz: Vec::new(),
            zero_bias: vec![0.0; n],
            dense: false,
            products: Products::ByDensity,
            grads: model.parameters().zeros_like(),
        }
    }

    /// The loss's gradient at the `rows` raw rows `x` into [`SaeStep::grads`], with
    /// `dead` saying which latents AuxK may use and `step` the optimizer steps taken
    /// (for the L1 warm-up).
    pub fn gradients(
        &mut self,
        threads: &Threads,
        model: &Autoencoder,
        x: &[f32],
        rows: usize,
        dead: &DeadLatents,
        step: u64,
    ) -> StepStats {
        assert!(
            rows <= self.rows,
            "batch of {rows} exceeds the step's {}",
            self.rows
        );
        let sae = sae_of(model);
        let (d, n) = (model.input_width(), model.coding_width());
        let (encoder, decoder) = (model.layer(0), model.layer(1));
        let (b_enc, b_dec) = (encoder.bias, decoder.bias);
        let rows_d = Layout::contiguous(rows, d);
        let rows_n = Layout::contiguous(rows, n);
        let latents_d = Layout::contiguous(n, d);
        let scale = 1.0 / rows as f32;

        // Forward: scaled targets, the encoder's input, the product, the selection.
        let blocks = threads.ranges(rows);
        {
            let lengths = || blocks.iter().map(|b| b.len() * d);
            let target = cut_mut(&mut self.target[..rows * d], lengths());
            let input = cut_mut(&mut self.input[..rows * d], lengths());
            let work: Vec<_> = target.into_iter().zip(input).collect();
            let (scale, subtract) = (sae.input_scale, sae.apply_b_dec_to_input);
            threads.each(work, &|i, (target, input)| {
                let x = &x[blocks[i].start * d..blocks[i].end * d];
                scale_inputs(x, b_dec, scale, subtract, target, input);
            });
        }
        let z = &mut self.z[..rows * n];
        let a = MatRef::row_major(&self.input[..rows * d], rows, d).expect("sized");
        let c = MatMut::row_major(z, rows, n).expect("sized");
        threads
            .gemm(1.0, a, encoder.weight_view(), 0.0, c)
            .expect("shapes chain");
        // The selection, then the decoder, the loss and the kept latents' gradients, each
        // thread on its block of rows.
        self.parts.resize_with(blocks.len(), || SparseRows::new(n));
        self.scratches.resize_with(blocks.len(), SelectScratch::new);
        let mut batch_threshold = None;
        self.dense = false;
        if sae.arch == Arch::BatchTopK {
            // One selection over the whole batch, then cut into the blocks.
            let (k, scratch) = (sae.k, &mut self.scratch);
            batch_threshold =
                batch_top_k_relu_in_place(rows_n, z, b_enc, k, scratch, &mut self.codes);
            for (part, block) in self.parts.iter_mut().zip(&blocks) {
                part.clear(n);
                for r in block.clone() {
                    let (indices, values) = self.codes.row(r);
                    part.push_row(indices, values);
                }
            }
        } else {
            if sae.arch == Arch::JumpRelu {
                sae.thresholds(model.parameters(), &mut self.thetas);
            }
            if sae.arch == Arch::Relu {
                let active = relu_in_place(threads, &blocks, z, b_enc);
                let dense = match self.products {
                    Products::ByDensity => active * DENSE_FROM > rows * n,
                    Products::Sparse => false,
                    Products::Dense => true,
                };
                if dense {
                    self.dense = true;
                    return self.dense_relu(threads, model, rows, step, active);
                }
            }
            let (arch, k, thetas) = (sae.arch, sae.k, &self.thetas[..]);
            let zero_bias = &self.zero_bias[..];
            let z_blocks = cut_mut(z, blocks.iter().map(|b| b.len() * n));
            let work: Vec<_> = z_blocks
                .into_iter()
                .zip(self.parts.iter_mut().zip(self.scratches.iter_mut()))
                .collect();
            threads.each(work, &|i, (z, (part, scratch))| {
                let layout = Layout::contiguous(blocks[i].len(), n);
                match arch {
                    Arch::TopK => top_k_rows_relu_in_place(layout, z, b_enc, k, scratch, part),
                    Arch::JumpRelu => {
                        let thetas = Threshold::PerLatent(thetas);
                        threshold_rows(layout, z, b_enc, thetas, scratch, part);
                    }
                    Arch::Relu => {
                        // z already holds relu(z + b_enc).
                        let zero = Threshold::Global(0.0);
                        threshold_rows(layout, z, zero_bias, zero, scratch, part);
                    }
                    Arch::BatchTopK => unreachable!("selected over the batch above"),
                }
            });
            self.codes.clear(n);
            for part in &self.parts {
                self.codes.append(part);
            }
        }
        self.index.rebuild(&self.codes);
        let nnz = self.codes.nnz();
        self.dvalues.resize(nnz, 0.0);
        let mut errors = vec![0.0f64; blocks.len()];
        {
            let target = &self.target[..rows * d];
            let lengths = || blocks.iter().map(|b| b.len() * d);
            let recon = cut_mut(&mut self.recon[..rows * d], lengths());
            let dout = cut_mut(&mut self.dout[..rows * d], lengths());
            let dvalues = cut_mut(&mut self.dvalues, self.parts.iter().map(SparseRows::nnz));
            let work: Vec<_> = recon
                .into_iter()
                .zip(dout)
                .zip(dvalues.into_iter().zip(errors.iter_mut()))
                .zip(&self.parts)
                .collect();
            threads.each(work, &|i, (((recon, dout), (dvalues, error)), part)| {
                let block = &blocks[i];
                let layout = Layout::contiguous(block.len(), d);
                sparse_times_dense(part, decoder.weight, latents_d, Some(b_dec), recon, layout);
                let target = &target[block.start * d..block.end * d];
                *error = reconstruction_error(recon, None, target, dout, scale);
                dots_at_entries(part, dout, layout, decoder.weight, latents_d, dvalues);
            });
        }
        let squared_error: f64 = errors.iter().sum();
        let dout = &self.dout[..rows * d];
        let mut penalty = 0.0;

        // Zeroed gradients; the decoder's from the reconstruction first, each thread on
        // its block of latents. (Taken out of `self` for the step, so that the AuxK pass
        // can borrow the rest.) The encoder's weight gradient is overwritten whole below.
        let mut grads = std::mem::take(&mut self.grads);
        let (enc_w, enc_b, dec_w, dec_b, mut threshold_grad) = grad_tensors(&mut grads);
        enc_b.fill(0.0);
        if let Some(grad) = threshold_grad.as_deref_mut() {
            grad.fill(0.0);
        }
        let latent_blocks = threads.ranges(n);
        let values = self.codes.values();
        {
            let index = &self.index;
            let dec_w = cut_mut(dec_w, latent_blocks.iter().map(|b| b.len() * d));
            threads.each(dec_w, &|i, g| {
                let latents = latent_blocks[i].clone();
                g.fill(0.0);
                let layout = Layout::contiguous(latents.len(), d);
                scatter_outer_add(index, values, dout, rows_d, 1.0, latents, g, layout);
            });
        }
        column_sums(Layout::contiguous(rows, d), dout, 1.0, 0.0, dec_b);

        let lambda = l1_weight(&sae, step, scale);
        if sae.arch == Arch::Relu && lambda > 0.0 {
            row_norms(latents_d, decoder.weight, &mut self.norms);
            for j in 0..n {
                let (_, entries) = self.index.latent(j);
                let mut sum = 0.0f32;
                for &e in entries {
                    sum += values[e as usize];
                    self.dvalues[e as usize] += lambda * self.norms[j];
                }
                self.sums[j] = sum;
            }
            penalty += decoder_l1(lambda, &self.sums, &self.norms, decoder.weight, dec_w);
        }

        if sae.arch == Arch::JumpRelu {
            let grad = threshold_grad.expect("a log threshold");
            penalty += self.jump_thresholds(threads, &sae, decoder.weight, b_enc, rows, d, n, grad);
        }

        // AuxK: the dead latents' largest activations reconstruct the residual.
        self.aux_codes.clear(n);
        self.aux_dvalues.clear();
        let top = matches!(sae.arch, Arch::TopK | Arch::BatchTopK);
        if top && sae.auxk_coefficient > 0.0 {
            dead.dead_into(sae.dead_after_rows, &mut self.dead);
            if !self.dead.is_empty() {
                penalty += self.auxk(&sae, decoder.weight, rows, d, n, dec_w);
            }
        }

        // The encoder's gradients: dz = df on the kept (positive) entries, gathered by
        // latent (each thread on its block), then turned into W_enc's [d, N] layout (each
        // thread on its block of inputs).
        let input = &self.input[..rows * d];
        let with_aux = self.aux_codes.nnz() > 0;
        {
            let (index, dvalues) = (&self.index, &self.dvalues);
            let (aux_index, aux_dvalues) = (&self.aux_index, &self.aux_dvalues);
            let enc_t = cut_mut(
                &mut self.encoder_t,
                latent_blocks.iter().map(|b| b.len() * d),
            );
            threads.each(enc_t, &|i, g| {
                let latents = latent_blocks[i].clone();
                g.fill(0.0);
                let layout = Layout::contiguous(latents.len(), d);
                let l = latents.clone();
                scatter_outer_add(index, dvalues, input, rows_d, 1.0, l, g, layout);
                if with_aux {
                    let (l, aux) = (latents, aux_dvalues);
                    scatter_outer_add(aux_index, aux, input, rows_d, 1.0, l, g, layout);
                }
            });
        }
        let index = &self.index;
        sum_by_latent(index, &self.dvalues, 1.0, 0..n, enc_b);
        if with_aux {
            sum_by_latent(&self.aux_index, &self.aux_dvalues, 1.0, 0..n, enc_b);
        }
        let input_blocks = threads.ranges(d);
        let enc_w = cut_mut(enc_w, input_blocks.iter().map(|b| b.len() * n));
        let dec_b = cut_mut(dec_b, input_blocks.iter().map(Range::len));
        let (encoder_t, enc_b) = (&self.encoder_t, &*enc_b);
        let subtract = sae.apply_b_dec_to_input;
        threads.each(
            enc_w.into_iter().zip(dec_b).collect(),
            &|p, (out, dec_b)| {
                let inputs = input_blocks[p].clone();
                transpose_into(encoder_t, d, n, inputs.clone(), out);
                if subtract {
                    subtract_through_encoder(dec_b, inputs, encoder.weight, enc_b);
                }
            },
        );
        self.grads = grads;
        StepStats {
            squared_error,
            penalty,
            active: nnz,
            batch_threshold,
        }
    }

    /// ReLU's gradients with dense products, for codes too dense for the sparse ones
    /// (`self.z` holds them, `relu(z + b_enc)`, `active` of them positive). The same
    /// mathematics as the sparse step: `F W_dec`, `F^T dout`, `dout W_dec^T` masked by
    /// `F > 0` plus the L1 term, and `X'^T dZ`, each a GEMM split across the threads.
    fn dense_relu(
        &mut self,
        threads: &Threads,
        model: &Autoencoder,
        rows: usize,
        step: u64,
        active: usize,
    ) -> StepStats {
        let sae = sae_of(model);
        let (d, n) = (model.input_width(), model.coding_width());
        let (encoder, decoder) = (model.layer(0), model.layer(1));
        let scale = 1.0 / rows as f32;
        let f = &self.z[..rows * n];
        let codes = MatRef::row_major(f, rows, n).expect("sized");
        let recon = &mut self.recon[..rows * d];
        let out = MatMut::row_major(recon, rows, d).expect("sized");
        let gemm = "shapes chain";
        threads
            .gemm(1.0, codes, decoder.weight_view(), 0.0, out)
            .expect(gemm);
        let (target, dout) = (&self.target[..rows * d], &mut self.dout[..rows * d]);
        let squared_error = reconstruction_error(recon, Some(decoder.bias), target, dout, scale);
        let dout = &self.dout[..rows * d];
        let dout_view = MatRef::row_major(dout, rows, d).expect("sized");

        let mut grads = std::mem::take(&mut self.grads);
        let (enc_w, enc_b, dec_w, dec_b, _) = grad_tensors(&mut grads);
        let dec_w_view = MatMut::row_major(dec_w, n, d).expect("sized");
        threads
            .gemm(1.0, codes.t(), dout_view, 0.0, dec_w_view)
            .expect(gemm);
        column_sums(Layout::contiguous(rows, d), dout, 1.0, 0.0, dec_b);
        let lambda = l1_weight(&sae, step, scale);
        self.norms.fill(0.0);
        if lambda > 0.0 {
            row_norms(Layout::contiguous(n, d), decoder.weight, &mut self.norms);
        }

        // dZ = (dout W_dec^T + lambda |W_dec,j|) where F > 0, then the encoder's.
        self.dz.resize(rows * n, 0.0);
        let dz = &mut self.dz[..rows * n];
        let dz_view = MatMut::row_major(dz, rows, n).expect("sized");
        let decoder_t = decoder.weight_view().t();
        threads
            .gemm(1.0, dout_view, decoder_t, 0.0, dz_view)
            .expect(gemm);
        // One pass over the codes and dZ, split by latents so that each latent's sums
        // run over the rows in order, as one thread would add them.
        let latent_blocks = threads.ranges(n);
        let widths = || latent_blocks.iter().map(Range::len);
        let mut dz_columns = Vec::with_capacity(latent_blocks.len());
        let mut dz_rest = MatMut::row_major(&mut self.dz[..rows * n], rows, n).expect("sized");
        for width in widths() {
            let (part, right) = dz_rest.split_cols(width);
            dz_columns.push(part);
            dz_rest = right;
        }
        let parts = dz_columns
            .into_iter()
            .zip(cut_mut(&mut self.sums, widths()))
            .zip(
                cut_mut(&mut self.counts, widths())
                    .into_iter()
                    .zip(cut_mut(enc_b, widths())),
            )
            .map(|((dz, sums), (counts, bias))| (dz, sums, counts, bias))
            .collect();
        let norms = &self.norms;
        threads.each(parts, &|i, (mut dz, sums, counts, bias)| {
            let latents = latent_blocks[i].clone();
            let norms = &norms[latents.clone()];
            relu_codes_pass(f, n, latents, norms, lambda, &mut dz, sums, counts, bias);
        });
        let penalty = if lambda > 0.0 {
            decoder_l1(lambda, &self.sums, &self.norms, decoder.weight, dec_w)
        } else {
            0.0
        };
        let dz = &self.dz[..rows * n];
        let input = MatRef::row_major(&self.input[..rows * d], rows, d).expect("sized");
        let dz_view = MatRef::row_major(dz, rows, n).expect("sized");
        let enc_w_view = MatMut::row_major(enc_w, d, n).expect("sized");
        threads
            .gemm(1.0, input.t(), dz_view, 0.0, enc_w_view)
            .expect(gemm);
        if sae.apply_b_dec_to_input {
            subtract_through_encoder(dec_b, 0..d, encoder.weight, enc_b);
        }
        self.grads = grads;
        self.codes.clear(n);
        StepStats {
            squared_error,
            penalty,
            active,
            batch_threshold: None,
        }
    }

    /// JumpReLU's L0 penalty, and its thresholds' straight-through gradient into
    /// `grad` (see the module doc), from the pre-activations in `self.z` (bias not yet
    /// added) and the reconstruction's gradient in `self.dout`.
    #[allow(clippy::too_many_arguments)]
    fn jump_thresholds(
        &mut self,
        threads: &Threads,
        sae: &SaeConfig,
        decoder: &[f32],
        b_enc: &[f32],
        rows: usize,
        d: usize,
        n: usize,
        grad: &mut [f32],
    ) -> f64 {
        let eps = sae.bandwidth;
        let l0 = sae.l0_coefficient / rows as f32;
        // The entries within half a bandwidth of their threshold, kept or not, and their
        // reconstruction gradients, each thread on its block of rows.
        let blocks = threads.ranges(rows);
        self.window.resize_with(blocks.len(), || SparseRows::new(n));
        self.window_grads.resize_with(blocks.len(), Vec::new);
        let latents_d = Layout::contiguous(n, d);
        let (z, dout, thetas) = (&self.z[..rows * n], &self.dout[..rows * d], &self.thetas);
        let work: Vec<_> = self.window.iter_mut().zip(&mut self.window_grads).collect();
        threads.each(work, &|i, (window, grads)| {
            let block = &blocks[i];
            let z = &z[block.start * n..block.end * n];
            window_rows(
                Layout::contiguous(block.len(), n),
                z,
                b_enc,
                thetas,
                eps,
                window,
            );
            grads.resize(window.nnz(), 0.0);
            let dout = &dout[block.start * d..block.end * d];
            let layout = Layout::contiguous(block.len(), d);
            dots_at_entries(window, dout, layout, decoder, latents_d, grads);
        });
        for (window, grads) in self.window.iter().zip(&self.window_grads) {
            for (&j, &g) in window.indices().iter().zip(grads) {
                let theta = self.thetas[j as usize];
                let dtheta = -(theta / eps) * g - l0 / eps;
                grad[j as usize] += theta * dtheta;
            }
        }
        f64::from(l0) * self.codes.nnz() as f64
    }

    /// AuxK's loss; adds its gradients to `dec_w` and its latent gradients to
    /// `aux_dvalues` (aligned with `aux_codes`).
    fn auxk(
        &mut self,
        sae: &SaeConfig,
        decoder: &[f32],
        rows: usize,
        d: usize,
        n: usize,
        dec_w: &mut [f32],
    ) -> f64 {
        let rows_d = Layout::contiguous(rows, d);
        let latents_d = Layout::contiguous(n, d);
        let activations = &self.z[..rows * n];
        let k_aux = sae.k_aux.min(self.dead.len());
        let rows_n = Layout::contiguous(rows, n);
        top_k_rows_among(
            rows_n,
            activations,
            &self.dead,
            k_aux,
            &mut self.scratch,
            &mut self.aux_codes,
        );
        let aux = &mut self.aux_recon[..rows * d];
        sparse_times_dense(&self.aux_codes, decoder, latents_d, None, aux, rows_d);
        // r = t - x^ = -dout * B / 2, kept constant.
        let (target, recon) = (&self.target[..rows * d], &self.recon[..rows * d]);
        let mut mean = vec![0.0f64; d];
        for (t_row, r_row) in target.chunks_exact(d).zip(recon.chunks_exact(d)) {
            for ((m, &t), &r) in mean.iter_mut().zip(t_row).zip(r_row) {
                *m += f64::from(t - r) / rows as f64;
            }
        }
        let (mut numerator, mut variance) = (0.0f64, 0.0f64);
        for ((t_row, r_row), a_row) in target
            .chunks_exact(d)
            .zip(recon.chunks_exact(d))
            .zip(aux.chunks_exact(d))
        {
            for (((&t, &r), &a), &m) in t_row.iter().zip(r_row).zip(a_row).zip(&mean) {
                let residual = f64::from(t - r);
                numerator += (f64::from(a) - residual).powi(2);
                variance += (residual - m).powi(2);
            }
        }
        if variance <= 0.0 {
            self.aux_codes.clear(n);
            return 0.0;
        }
        let loss = f64::from(sae.auxk_coefficient) * numerator / variance;
        if self.aux_codes.nnz() == 0 {
            // No dead latent is active: the loss is a constant, with no gradient.
            self.aux_codes.clear(n);
            return loss;
        }
        let factor = (2.0 * f64::from(sae.auxk_coefficient) / variance) as f32;
        // The gradient of AuxK's loss with respect to e^, in place of e^.
        for ((a_row, t_row), r_row) in aux
            .chunks_exact_mut(d)
            .zip(target.chunks_exact(d))
            .zip(recon.chunks_exact(d))
        {
            for ((a, &t), &r) in a_row.iter_mut().zip(t_row).zip(r_row) {
                *a = factor * (*a - (t - r));
            }
        }
        self.aux_dvalues.resize(self.aux_codes.nnz(), 0.0);
        dots_at_entries(
            &self.aux_codes,
            aux,
            rows_d,
            decoder,
            latents_d,
            &mut self.aux_dvalues,
        );
        self.aux_index.rebuild(&self.aux_codes);
        let values = self.aux_codes.values();
        scatter_outer_add(
            &self.aux_index,
            values,
            aux,
            rows_d,
            1.0,
            0..n,
            dec_w,
            latents_d,
        );
        f64::from(sae.auxk_coefficient) * numerator / variance
    }

    /// One optimizer step on the rows `rows` of `train`, gathered into `x`: the
    /// gradients, the decoder's projection, the update at `lr_scale` times the
    /// optimizer's rate, the renormalisation, and the dead latents' counts. A row holding
    /// NaN or infinity is refused before anything changes, so that a file too large to
    /// be checked before training is checked as it is read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train(
        &mut self,
        threads: &Threads,
        model: &mut Autoencoder,
        train: &Dataset,
        rows: &[usize],
        x: &mut Vec<f32>,
        optimizer: &Optimizer,
        lr_scale: f32,
        state: &mut OptimizerState,
        dead: &mut DeadLatents,
    ) -> Result<StepStats, TrainError> {
        let sae = sae_of(model);
        let (d, n) = (model.input_width(), model.coding_width());
        x.resize(rows.len() * d, 0.0);
        train.gather(rows, x);
        let stats = self.gradients(threads, model, x, rows.len(), dead, state.iterations);
        // Every input value enters the squared error, so a NaN or infinity in the batch
        // makes it non-finite: only then is the batch searched for the row.
        if !stats.squared_error.is_finite() {
            if let Some(bad) = first_non_finite_row(x, d) {
                return Err(TrainError::Data(DataError::NonFinite {
                    path: train.path().map(Path::to_path_buf).unwrap_or_default(),
                    row: rows[bad],
                }));
            }
        }
        // The update goes element by element and the decoder's projection and
        // renormalisation row by row: each is split across the threads by ranges of
        // the parameters, with the same bits as on one thread.
        let latent_blocks = threads.ranges(n);
        let block_values = || latent_blocks.iter().map(|r| r.len() * d);
        if sae.unit_norm_decoder {
            let (_, _, dec_w, _, _) = grad_tensors(&mut self.grads);
            let decoder = model.layer(1).weight;
            let parts: Vec<_> = cut_mut(dec_w, block_values())
                .into_iter()
                .zip(&latent_blocks)
                .collect();
            threads.each(parts, &|_, (g, latents)| {
                let rows = &decoder[latents.start * d..latents.end * d];
                remove_parallel_component(Layout::contiguous(latents.len(), d), rows, g);
            });
        }
        state.advance();
        let scaled = optimizer.with_learning_rate(optimizer.learning_rate() * lr_scale);
        let params = model.parameters_mut().iter_mut();
        for (slot, (param, grad)) in params.zip(self.grads.iter()).enumerate() {
            state.apply_split(threads, &scaled, slot, &grad.values, &mut param.values);
        }
        if sae.unit_norm_decoder {
            let parts: Vec<_> = cut_mut(model.layer_mut(1).weight, block_values())
                .into_iter()
                .zip(&latent_blocks)
                .collect();
            threads.each(parts, &|_, (rows, latents)| {
                normalize_rows(Layout::contiguous(latents.len(), d), rows);
            });
        }
        if let Some(smallest) = stats.batch_threshold {
            let theta = model
                .parameters_mut()
                .iter_mut()
                .nth(4)
                .expect("a threshold");
            for t in &mut theta.values {
                *t = if *t == 0.0 {
                    smallest
                } else {
                    THRESHOLD_DECAY * *t + (1.0 - THRESHOLD_DECAY) * smallest
                };
            }
        }
        if self.dense {
            dead.record_counts(&self.counts, rows.len());
        } else {
            dead.record(&self.codes, rows.len(), &mut self.counts);
        }
        Ok(stats)
    }
}

/// How a ReLU SAE's step takes its products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Products {
    /// Dense when more than one code in [`DENSE_FROM`] is positive, else sparse.
    ByDensity,
    /// On the kept latents only, whatever their number.
    Sparse,
    /// Dense GEMMs, whatever the codes.
    Dense,
}

/// ReLU's codes are dense enough for the dense step when more than one in this
/// many is positive: there a dense product's FLOP is cheaper than a sparse one's by
/// about this factor.
pub const DENSE_FROM: usize = 8;

/// `z = relu(z + bias)` on every row (each thread on its block of `blocks`), returning
/// how many are positive.
fn relu_in_place(threads: &Threads, blocks: &[Range<usize>], z: &mut [f32], bias: &[f32]) -> usize {
    let n = bias.len();
    let mut counts = vec![0usize; blocks.len()];
    let parts = cut_mut(z, blocks.iter().map(|b| b.len() * n));
    threads.each(parts.into_iter().zip(counts.iter_mut()).collect(), &|_,
                                                                       (
        z,
        count,
    )| {
        let mut positive = 0;
        for row in z.chunks_exact_mut(n) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
                positive += usize::from(*v > 0.0);
            }
        }
        *count = positive;
    });
    counts.iter().sum()
}

/// `sum |recon - target|^2` over the rows, with `dout = 2 scale (recon - target)`;
/// `bias`, when given, is first added to each row of `recon`.
fn reconstruction_error(
    recon: &mut [f32],
    bias: Option<&[f32]>,
    target: &[f32],
    dout: &mut [f32],
    scale: f32,
) -> f64 {
    let mut sum = 0.0f64;
    if let Some(bias) = bias {
        for row in recon.chunks_exact_mut(bias.len()) {
            for (r, &b) in row.iter_mut().zip(bias) {
                *r += b;
            }
        }
    }
    for ((g, &r), &t) in dout.iter_mut().zip(recon.iter()).zip(target) {
        let e = r - t;
        sum += f64::from(e) * f64::from(e);
        *g = 2.0 * scale * e;
    }
    sum
}

/// The ReLU SAE's L1 coefficient at optimizer step `step` (warmed up linearly), times
/// the batch's `scale`.
fn l1_weight(sae: &SaeConfig, step: u64, scale: f32) -> f32 {
    let warm = if sae.l1_warmup_steps == 0 {
        1.0
    } else {
        (step as f32 / sae.l1_warmup_steps as f32).min(1.0)
    };
    sae.l1_coefficient * warm * scale
}

/// The penalty `lambda sum_j sums_j |W_dec,j|` (with each latent's codes summed in
/// `sums` and its decoder row's norm in `norms`), adding its gradient with respect to
/// the decoder to `dec_w`.
fn decoder_l1(lambda: f32, sums: &[f32], norms: &[f32], decoder: &[f32], dec_w: &mut [f32]) -> f64 {
    let d = decoder.len() / sums.len().max(1);
    let mut l1 = 0.0f64;
    let rows = decoder.chunks_exact(d).zip(dec_w.chunks_exact_mut(d));
    for ((&sum, &norm), (w, g)) in sums.iter().zip(norms).zip(rows) {
        l1 += f64::from(sum) * f64::from(norm);
        if norm > 0.0 && sum != 0.0 {
            let factor = lambda * sum / norm;
            for (g, &wv) in g.iter_mut().zip(w) {
                *g += factor * wv;
            }
        }
    }
    f64::from(lambda) * l1
}

/// `db_dec[i] -= W_enc[i, :] . db_enc` for the inputs `i` in `inputs` (`dec_b` holds
/// their gradients): with `x' = t - b_dec`, `b_dec`'s gradient through the encoder.
fn subtract_through_encoder(
    dec_b: &mut [f32],
    inputs: Range<usize>,
    encoder: &[f32],
    enc_b: &[f32],
) {
    let n = enc_b.len();
    for (g, i) in dec_b.iter_mut().zip(inputs) {
        let row = &encoder[i * n..(i + 1) * n];
        let dot: f32 = row.iter().zip(enc_b).map(|(w, b)| w * b).sum();
        *g -= dot;
    }
}

/// For the columns `latents` of the `rows x n` codes `f` and of `dz` (a view of those
/// columns alone): each latent's sum of activations and count of rows it fired in, `dz`
/// masked to the rows it fired in with `lambda * norm` added there, and the masked
/// column's sum (the encoder bias's gradient). Every sum runs over the rows in order.
#[allow(clippy::too_many_arguments)]
fn relu_codes_pass(
    f: &[f32],
    n: usize,
    latents: Range<usize>,
    norms: &[f32],
    lambda: f32,
    dz: &mut MatMut<'_>,
    sums: &mut [f32],
    counts: &mut [u32],
    bias: &mut [f32],
) {
    sums.fill(0.0);
    counts.fill(0);
    bias.fill(0.0);
    for (r, f_row) in f.chunks_exact(n).enumerate() {
        let g_row = dz.row_mut(r).expect("a row-major view");
        let f_row = &f_row[latents.clone()];
        relu_l1_codes_row(f_row, g_row, norms, lambda, sums, counts, bias);
    }
}

/// The targets `x * scale` and the encoder's input (`x * scale - b_dec` when
/// `subtract`), row by row of `b_dec.len()` values. One row at a time, as slices of
/// equal length, so that the compiler vectorises it (the same operations on every
/// element, so the same bits as element by element).
fn scale_inputs(
    x: &[f32],
    b_dec: &[f32],
    scale: f32,
    subtract: bool,
    target: &mut [f32],
    input: &mut [f32],
) {
    let d = b_dec.len();
    let rows = x
        .chunks_exact(d)
        .zip(target.chunks_exact_mut(d).zip(input.chunks_exact_mut(d)));
    for (x, (target, input)) in rows {
        for (t, &v) in target.iter_mut().zip(x) {
            *t = v * scale;
        }
        if subtract {
            for ((i, &t), &b) in input.iter_mut().zip(&*target).zip(b_dec) {
                *i = t - b;
            }
        } else {
            input.copy_from_slice(target);
        }
    }
}

/// Rows `inputs` of the `d x n` transpose of the `n x d` matrix `t` (the encoder's
/// gradient, built latent by latent), into `out` (`inputs.len() x n`).
fn transpose_into(t: &[f32], d: usize, n: usize, inputs: Range<usize>, out: &mut [f32]) {
    let columns = Layout::strided(n, inputs.len(), d);
    transpose(columns, &t[inputs.start..], n, out);
}

/// The gradient tensors, mutable: `(W_enc, b_enc, W_dec, b_dec, threshold)`.
type GradTensors<'a> = (
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    &'a mut [f32],
    Option<&'a mut [f32]>,
);

fn grad_tensors(grads: &mut Parameters) -> GradTensors<'_> {
    let mut tensors = grads.iter_mut().map(|t| t.values.as_mut_slice());
    let mut next = || tensors.next().expect("four tensors");
    let (a, b, c, d) = (next(), next(), next(), next());
    (a, b, c, d, tensors.next())
}

/// The SAE's loss (reconstruction plus penalties, as [`SaeStep::gradients`] defines it)
/// at `rows` raw rows `x`, and its gradient, leaving the model unchanged.
pub fn loss_and_gradients(
    model: &Autoencoder,
    x: &[f32],
    rows: usize,
    dead: &DeadLatents,
    step: u64,
) -> (f64, Parameters) {
    loss_and_gradients_by(model, x, rows, dead, step, Products::ByDensity)
}

/// [`loss_and_gradients`], with ReLU's products taken as `products` says.
pub fn loss_and_gradients_by(
    model: &Autoencoder,
    x: &[f32],
    rows: usize,
    dead: &DeadLatents,
    step: u64,
    products: Products,
) -> (f64, Parameters) {
    let mut work = SaeStep::new(model, rows);
    work.products = products;
    let stats = work.gradients(&Threads::sequential(), model, x, rows, dead, step);
    (
        stats.squared_error / rows as f64 + stats.penalty,
        work.grads,
    )
}
