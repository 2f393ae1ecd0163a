//! The coding layer's transform: what the forward pass does to the coding layer's
//! activations beyond the layer's activation, and how the backward pass turns `dL/da`
//! into `dL/dz` there (the activation's derivative, fused with the penalty's gradient).
//! This is the one place that dispatches on the kind of coding layer; a kind that an
//! engine cannot run is refused where that engine says which models it suits
//! (`team::suits`).

use crate::penalty::Penalty;
use kernels::select::keep_largest_per_row;
use kernels::{Activation, Layout};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// What the coding layer does besides its activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Coding {
    /// The activation alone.
    #[default]
    Plain,
    /// Only the `k` largest activations of each row are kept, the others set to 0: a
    /// k-sparse autoencoder (Makhzani and Frey, 2013), the TopK of interpretability's
    /// sparse autoencoders. The coding layer's activation must be ReLU, so that the
    /// gradient flows through the kept activations alone.
    #[serde(rename = "topk")]
    TopK {
        /// Activations kept per row.
        k: usize,
    },
    /// Only the activations above their latent's threshold are kept: JumpReLU, and the
    /// inference of BatchTopK (with one threshold for every latent). The thresholds are
    /// a tensor of the model ([`crate::sae`] names it); the activation must be ReLU.
    Threshold,
}

impl Coding {
    /// Whether this is [`Coding::Plain`] (which configs leave unwritten).
    pub fn is_plain(&self) -> bool {
        *self == Self::Plain
    }

    /// Checks the settings against the coding layer's width and activation.
    pub fn validate(&self, units: usize, activation: Activation) -> Result<(), String> {
        match *self {
            Self::Plain => Ok(()),
            Self::Threshold if activation != Activation::Relu => Err(format!(
                "a thresholded coding layer must be relu, found {}",
                crate::config::activation_name(activation)
            )),
            Self::Threshold => Ok(()),
            Self::TopK { k } => {
                if k == 0 || k > units {
                    return Err(format!(
                        "top-k keeps {k} of {units} coding units: expected 1 to {units}"
                    ));
                }
                if activation != Activation::Relu {
                    return Err(format!(
                        "a top-k coding layer must be relu, found {}",
                        crate::config::activation_name(activation)
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether each column's forward and backward depend on that column alone, so that
    /// an engine may split the coding layer by columns.
    pub(crate) fn columns_independent(&self) -> bool {
        matches!(self, Self::Plain)
    }

    /// The coding layer's forward after its activation, on rows of `activated` laid out
    /// as `layout`; `thresholds` holds each latent's threshold for
    /// [`Coding::Threshold`].
    pub(crate) fn forward(&self, layout: Layout, activated: &mut [f32], thresholds: &[f32]) {
        match *self {
            Self::Plain => {}
            Self::Threshold => {
                for i in 0..layout.rows {
                    for (a, &theta) in activated[layout.row(i)].iter_mut().zip(thresholds) {
                        if *a <= theta {
                            *a = 0.0;
                        }
                    }
                }
            }
            Self::TopK { k } => ROW_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < layout.cols {
                    scratch.resize(layout.cols, 0.0);
                }
                keep_largest_per_row(layout, activated, k, &mut scratch);
            }),
        }
    }
}

thread_local! {
    /// A row of scratch per thread for the selection, grown once to the widest row.
    static ROW_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The coding layer's backward: `grad` from `dL/da` to `dL/dz` over the columns in
/// `layout` (every row of the batch); returns the penalty of those columns. A top-k
/// layer needs nothing more: its activation is ReLU, whose derivative is 0 wherever the
/// forward pass set an activation to 0, kept or not.
pub(crate) fn backward(
    activation: Activation,
    penalty: &Penalty,
    layout: Layout,
    a: &[f32],
    grad: &mut [f32],
    scratch: &mut [f32],
) -> f64 {
    penalty.backward(activation, layout, a, grad, scratch)
}
