//! The coding layer's transform. Today a coding layer is a dense layer with any
//! activation and a sparsity penalty on its output: forward it applies the activation
//! like any layer, and backward it turns `dL/da` into `dL/dz` with the activation's
//! derivative fused with the penalty's gradient. This is the one place that says so;
//! a coding layer of another kind (a selection of the largest activations, a learned
//! threshold) is a new case here, with its kernel; an engine that cannot run it
//! turns it down where it says which models it suits (`team::suits`).

use crate::penalty::Penalty;
use kernels::{Activation, Layout};

/// The coding layer's backward: `grad` from `dL/da` to `dL/dz` over the columns in
/// `layout` (every row of the batch); returns the penalty of those columns.
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
