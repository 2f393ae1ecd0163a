//! Vectorised elementary functions: `exp`, and the activations built on it.
//!
//! # Method
//! `exp(x) = 2^k * exp(r)` with `k = round(x / ln 2)` and `r = x - k ln 2` (Cody-Waite
//! reduction: `ln 2` split into a part exact in f32 and a correction, so `r` is exact
//! to within an ulp and lies in `[-ln2/2, ln2/2]`). `exp(r)` is the degree-7 polynomial
//! `1 + r + r^2 P(r)` with the minimax coefficients of Cephes' `expf`. `2^k` is built in
//! the exponent bits; it is split into two factors `2^h * 2^(k-h)` so that results in
//! the subnormal range (`x < -87.3`) are still rounded once, correctly, from `exp(r)`.
//!
//! # Accuracy
//! [`EXP_MAX_ULP`] bounds the distance to `f32::exp` over every finite f32; `+inf`
//! maps to `+inf`, `-inf` to `0`, NaN to NaN, `x > 88.72284` to `+inf`, and
//! `x < -103.97` to `0`, as `f32::exp` does.

use pulp::{Simd, WithSimd};

/// Bound on the error of [`exp`] against `f32::exp`, in units in the last place, over
/// every finite f32 input. The test suite enforces it; the worst error measured over
/// every 7th bit pattern (`cargo run -p kernels --release --example accuracy`) is 1 ulp.
pub const EXP_MAX_ULP: u32 = 2;

/// SELU scale `lambda` (Klambauer et al., 2017, as in Keras and PyTorch).
pub const SELU_LAMBDA: f32 = 1.050_700_987_355_480_5_f64 as f32;
/// SELU `alpha` (Klambauer et al., 2017, as in Keras and PyTorch).
pub const SELU_ALPHA: f32 = 1.673_263_242_354_377_2_f64 as f32;
/// `lambda * alpha`: the value SELU tends to at minus infinity is `-SELU_LAMBDA_ALPHA`.
pub const SELU_LAMBDA_ALPHA: f32 = SELU_LAMBDA * SELU_ALPHA;

/// `1.5 * 2^23`: adding then subtracting it rounds an f32 of magnitude below `2^22`
/// to the nearest integer, ties to even, and leaves the integer in the low mantissa bits.
const ROUNDING_MAGIC: f32 = 12_582_912.0;
/// Above `ln(f32::MAX)` the result overflows to infinity.
const EXP_OVERFLOW_ABOVE: f32 = 88.722_84;
/// Below `ln(smallest subnormal / 2)` the result rounds to zero.
const EXP_UNDERFLOW_BELOW: f32 = -103.972_08;
const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// `ln 2` in two parts: `LN2_HI` has few enough mantissa bits that `k * LN2_HI` is exact
/// for every `|k| <= 256` (Cephes' `C1`, `C2`).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial for `(exp(r) - 1 - r) / r^2` on `[-ln2/2, ln2/2]`, highest degree first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    // Cephes gives 5.0000001201e-1, which rounds to exactly 0.5 in f32.
    0.5,
];

/// `2^n` for an integral `n` in `[-126, 127]` held in an f32, built in the exponent bits.
#[inline(always)]
fn pow2_integral<S: Simd>(simd: S, n: S::f32s) -> S::f32s {
    // The low 9 bits of bits(MAGIC) are zero, so shifting bits(MAGIC + n + 127) left by 23
    // leaves exactly (n + 127) << 23: the exponent field of 2^n.
    let biased = simd.add_f32s(n, simd.splat_f32s(ROUNDING_MAGIC + 127.0));
    let bits: S::u32s = pulp::cast(biased);
    let shifted = simd.wrapping_dyn_shl_u32s(bits, simd.splat_u32s(23));
    pulp::cast(shifted)
}

/// Rounds to the nearest integer, ties to even, for `|x| < 2^22`.
#[inline(always)]
pub(crate) fn round_small<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let magic = simd.splat_f32s(ROUNDING_MAGIC);
    simd.sub_f32s(simd.add_f32s(x, magic), magic)
}

/// `[value(i) for i in 0..n]`. The functions below apply each of their steps to all
/// `N` registers before the next step, so that the registers' independent dependency
/// chains sit side by side in program order. Written one register after another, the chain of
/// one `exp` (some 30 dependent operations) fills the out-of-order scheduler before the
/// next register's first operations enter it, and a loop of them ran at about 28 cycles
/// per register, a third of the rate its operation count allows.
macro_rules! each {
    ($n:expr, |$i:ident| $value:expr) => {{
        // A macro rather than a function taking a closure: the compiler left some of
        // these closures out of line, where the SIMD operations inside became calls.
        let $i = 0usize;
        let mut out = [$value; $n];
        for $i in 1..$n {
            out[$i] = $value;
        }
        out
    }};
}

/// `exp(x)` split as `2^k * (1 + m)`: returns `(exp(x), m, k)` with `m = exp(r) - 1`
/// kept before the `1` is added, so `expm1` can use it without cancellation; for `N`
/// registers side by side (see `each!`).
#[allow(clippy::type_complexity)]
#[inline(always)]
fn exp_parts<S: Simd, const N: usize>(
    simd: S,
    x: [S::f32s; N],
) -> ([S::f32s; N], [S::f32s; N], [S::f32s; N]) {
    let splat = |v: f32| simd.splat_f32s(v);
    let clamped = each!(N, |i| {
        simd.min_f32s(
            simd.max_f32s(x[i], splat(EXP_UNDERFLOW_BELOW)),
            splat(EXP_OVERFLOW_ABOVE),
        )
    });
    let k = each!(N, |i| round_small(
        simd,
        simd.mul_f32s(clamped[i], splat(LOG2_E))
    ));
    let r = each!(N, |i| simd.mul_add_f32s(
        simd.neg_f32s(k[i]),
        splat(LN2_HI),
        clamped[i]
    ));
    let r = each!(N, |i| simd.mul_add_f32s(
        simd.neg_f32s(k[i]),
        splat(LN2_LO),
        r[i]
    ));

    let mut p = [splat(EXP_POLY[0]); N];
    for &c in &EXP_POLY[1..] {
        p = each!(N, |i| simd.mul_add_f32s(p[i], r[i], splat(c)));
    }
    let r2 = each!(N, |i| simd.mul_f32s(r[i], r[i]));
    let exp_r_minus_1 = each!(N, |i| simd.mul_add_f32s(p[i], r2[i], r[i]));
    let exp_r = each!(N, |i| simd.add_f32s(exp_r_minus_1[i], splat(1.0)));

    // k lies in [-150, 128]; both halves stay inside the normal exponent range.
    let half = each!(N, |i| round_small(simd, simd.mul_f32s(k[i], splat(0.5))));
    let rest = each!(N, |i| simd.sub_f32s(k[i], half[i]));
    let y = each!(N, |i| {
        simd.mul_f32s(
            simd.mul_f32s(exp_r[i], pow2_integral(simd, half[i])),
            pow2_integral(simd, rest[i]),
        )
    });

    let y = each!(N, |i| {
        simd.select_f32s(
            simd.greater_than_f32s(x[i], splat(EXP_OVERFLOW_ABOVE)),
            splat(f32::INFINITY),
            y[i],
        )
    });
    let y = each!(N, |i| {
        simd.select_f32s(
            simd.less_than_f32s(x[i], splat(EXP_UNDERFLOW_BELOW)),
            splat(0.0),
            y[i],
        )
    });
    // NaN compares unequal to itself: pass it through.
    let y = each!(N, |i| simd.select_f32s(
        simd.equal_f32s(x[i], x[i]),
        y[i],
        x[i]
    ));
    (y, exp_r_minus_1, k)
}

/// `exp(x)` lane by lane; see the module documentation for the method and accuracy.
#[inline(always)]
pub fn exp_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    exp_parts(simd, [x]).0[0]
}

/// `exp(x) - 1` lane by lane, without cancellation for small `|x|`: where the reduction
/// leaves `k = 0` (`|x| < ln2 / 2`) the polynomial's `exp(r) - 1` is returned directly.
#[inline(always)]
pub fn expm1_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    expm1_each(simd, [x])[0]
}

/// [`expm1_simd`] of `N` registers side by side.
#[inline(always)]
fn expm1_each<S: Simd, const N: usize>(simd: S, x: [S::f32s; N]) -> [S::f32s; N] {
    let (y, exp_r_minus_1, k) = exp_parts(simd, x);
    each!(N, |i| {
        simd.select_f32s(
            simd.equal_f32s(k[i], simd.splat_f32s(0.0)),
            exp_r_minus_1[i],
            simd.sub_f32s(y[i], simd.splat_f32s(1.0)),
        )
    })
}

/// [`exp_nonpositive_simd`] returns `exp(EXP_NONPOSITIVE_FLOOR)` (about `1.6e-38`, still
/// a normal f32) for every input below this; SELU's `expm1` takes the same floor, where
/// `exp(x) - 1` has long rounded to -1.
pub const EXP_NONPOSITIVE_FLOOR: f32 = -87.0;

/// `exp(x)` for `x <= 0`, for callers that only ever exponentiate `-|z|` and add the
/// result to 1 or multiply it into a sigmoid: no overflow, subnormal or NaN handling,
/// so its dependency chain is about half that of [`exp_simd`], which is what bounds the
/// throughput of a loop of such calls. Inputs below [`EXP_NONPOSITIVE_FLOOR`] give
/// `exp(EXP_NONPOSITIVE_FLOOR)`, NaN gives a finite value, positive inputs are not
/// allowed; within [`EXP_MAX_ULP`] of `f32::exp` on `[EXP_NONPOSITIVE_FLOOR, 0]`.
#[inline(always)]
pub fn exp_nonpositive_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(x, simd.splat_f32s(EXP_NONPOSITIVE_FLOOR));
    let magic = simd.splat_f32s(ROUNDING_MAGIC);
    // `k_magic` holds `k = round(x / ln 2)` in its low mantissa bits.
    let k_magic = simd.mul_add_f32s(x, simd.splat_f32s(LOG2_E), magic);
    let k = simd.sub_f32s(k_magic, magic);
    let r = simd.mul_add_f32s(k, simd.splat_f32s(-LN2_HI), x);
    let r = simd.mul_add_f32s(k, simd.splat_f32s(-LN2_LO), r);
    // The polynomial by Estrin's scheme: three short chains instead of one long one.
    let c = |i: usize| simd.splat_f32s(EXP_POLY[i]);
    let r2 = simd.mul_f32s(r, r);
    let r4 = simd.mul_f32s(r2, r2);
    let low = simd.mul_add_f32s(c(4), r, c(5));
    let middle = simd.mul_add_f32s(c(2), r, c(3));
    let high = simd.mul_add_f32s(c(0), r, c(1));
    let p = simd.mul_add_f32s(middle, r2, low);
    let p = simd.mul_add_f32s(high, r4, p);
    let exp_r = simd.add_f32s(simd.mul_add_f32s(p, r2, r), simd.splat_f32s(1.0));
    // k lies in [-126, 0]: (k + 127) << 23 is the exponent field of 2^k, and the
    // magic's own low bits are shifted out (see `pow2_integral`).
    let k_bits: S::u32s = pulp::cast(k_magic);
    let biased = simd.add_u32s(k_bits, simd.splat_u32s(127));
    let two_pow_k: S::f32s = pulp::cast(simd.wrapping_dyn_shl_u32s(biased, simd.splat_u32s(23)));
    simd.mul_f32s(exp_r, two_pow_k)
}

/// `ln(1 + e)` for `e` in `[0, 1]` (the softplus of `-|z|` from `e = exp(-|z|)`): the
/// Cephes `logf` polynomial without reading the exponent bits, since `1 + e` lies in
/// `[1, 2]`; `f = e` exactly below `sqrt 2 - 1`, so small `e` keep full relative accuracy.
/// Other inputs give unspecified values.
#[inline(always)]
pub fn ln_1p_unit_simd<S: Simd>(simd: S, e: S::f32s) -> S::f32s {
    let halve = simd.greater_than_f32s(e, simd.splat_f32s(core::f32::consts::SQRT_2 - 1.0));
    // (1 + e) / 2 - 1, exactly.
    let halved = simd.mul_add_f32s(e, simd.splat_f32s(0.5), simd.splat_f32s(-0.5));
    let f = simd.select_f32s(halve, halved, e);
    let k = simd.select_f32s(halve, simd.splat_f32s(1.0), simd.splat_f32s(0.0));
    let c = |i: usize| simd.splat_f32s(LN_POLY[i]);
    let f2 = simd.mul_f32s(f, f);
    let f4 = simd.mul_f32s(f2, f2);
    let f8 = simd.mul_f32s(f4, f4);
    let a0 = simd.mul_add_f32s(c(7), f, c(8));
    let a1 = simd.mul_add_f32s(c(5), f, c(6));
    let a2 = simd.mul_add_f32s(c(3), f, c(4));
    let a3 = simd.mul_add_f32s(c(1), f, c(2));
    let b0 = simd.mul_add_f32s(a1, f2, a0);
    let b1 = simd.mul_add_f32s(a3, f2, a2);
    let p = simd.mul_add_f32s(b1, f4, b0);
    let p = simd.mul_add_f32s(c(0), f8, p);
    // f - f^2/2 + f^3 P(f) + k ln 2, with ln 2 in two parts.
    let t = simd.mul_add_f32s(p, f, simd.splat_f32s(-0.5));
    let y = simd.mul_add_f32s(k, simd.splat_f32s(LN2_LO), f);
    let y = simd.mul_add_f32s(t, f2, y);
    simd.mul_add_f32s(k, simd.splat_f32s(LN2_HI), y)
}

/// Logistic sigmoid `1 / (1 + exp(-z))`, computed from `exp(-|z|)` and mirrored so that
/// nothing overflows: the result always lies in `[0, 1]` for finite `z`.
#[inline(always)]
pub fn sigmoid_simd<S: Simd>(simd: S, z: S::f32s) -> S::f32s {
    sigmoid_each(simd, [z])[0]
}

/// [`sigmoid_simd`] of `N` registers side by side (see `each!`): the same operations
/// on every lane, so the same bits.
#[inline(always)]
pub fn sigmoid_each<S: Simd, const N: usize>(simd: S, z: [S::f32s; N]) -> [S::f32s; N] {
    let e = exp_parts(simd, each!(N, |i| simd.neg_f32s(simd.abs_f32s(z[i])))).0;
    let one = simd.splat_f32s(1.0);
    let positive = each!(N, |i| simd.div_f32s(one, simd.add_f32s(one, e[i])));
    each!(N, |i| {
        simd.select_f32s(
            simd.greater_than_or_equal_f32s(z[i], simd.splat_f32s(0.0)),
            positive[i],
            simd.mul_f32s(e[i], positive[i]),
        )
    })
}

/// SELU: `lambda * z` for `z > 0`, `lambda * alpha * (exp(z) - 1)` otherwise, with
/// `exp(z) - 1` bit for bit as [`expm1_simd`] gives it, so small negative inputs keep
/// full relative accuracy. NaN comes out as it went in (a signalling NaN unquieted).
#[inline(always)]
pub fn selu_simd<S: Simd>(simd: S, z: S::f32s) -> S::f32s {
    selu_each(simd, [z])[0]
}

/// [`selu_simd`] of `N` registers side by side (see `each!`): the same operations on
/// every lane, so the same bits.
#[inline(always)]
pub fn selu_each<S: Simd, const N: usize>(simd: S, z: [S::f32s; N]) -> [S::f32s; N] {
    let expm1 = expm1_nonpositive_each(simd, z);
    let selu = each!(N, |i| {
        simd.select_f32s(
            simd.greater_than_f32s(z[i], simd.splat_f32s(0.0)),
            simd.mul_f32s(simd.splat_f32s(SELU_LAMBDA), z[i]),
            simd.mul_f32s(simd.splat_f32s(SELU_LAMBDA_ALPHA), expm1[i]),
        )
    });
    // NaN compares unequal to itself: pass it through.
    each!(N, |i| simd.select_f32s(
        simd.equal_f32s(z[i], z[i]),
        selu[i],
        z[i]
    ))
}

/// [`expm1_simd`] where it matters to SELU, for `N` registers side by side: exactly
/// `expm1_simd(x)` for `x` in `[EXP_NONPOSITIVE_FLOOR, 0]`, and `-1` below, as
/// `expm1_simd` gives there too (`exp(x)` under `2^-25` rounds away against 1).
/// Other inputs (positive, NaN) give unspecified numbers. These lanes never overflow,
/// so none of `exp_parts`' overflow and NaN selects, and `2^k` (`k` in `[-126, 0]`) is
/// one factor: `exp(x)` stays normal down to the floor, so multiplying by `2^k` in one
/// factor is exact, as `exp_parts`' two are. The same reduction and polynomial as
/// `exp_parts`, in the same order, so the same bits; a third fewer operations, which
/// made SELU's forward epilogue about a quarter faster.
#[inline(always)]
fn expm1_nonpositive_each<S: Simd, const N: usize>(simd: S, x: [S::f32s; N]) -> [S::f32s; N] {
    let splat = |v: f32| simd.splat_f32s(v);
    let clamped = each!(N, |i| simd.max_f32s(
        simd.min_f32s(x[i], splat(0.0)),
        splat(EXP_NONPOSITIVE_FLOOR)
    ));
    let k = each!(N, |i| round_small(
        simd,
        simd.mul_f32s(clamped[i], splat(LOG2_E))
    ));
    let r = each!(N, |i| simd.mul_add_f32s(
        simd.neg_f32s(k[i]),
        splat(LN2_HI),
        clamped[i]
    ));
    let r = each!(N, |i| simd.mul_add_f32s(
        simd.neg_f32s(k[i]),
        splat(LN2_LO),
        r[i]
    ));
    let mut p = [splat(EXP_POLY[0]); N];
    for &c in &EXP_POLY[1..] {
        p = each!(N, |i| simd.mul_add_f32s(p[i], r[i], splat(c)));
    }
    let r2 = each!(N, |i| simd.mul_f32s(r[i], r[i]));
    let exp_r_minus_1 = each!(N, |i| simd.mul_add_f32s(p[i], r2[i], r[i]));
    let exp_r = each!(N, |i| simd.add_f32s(exp_r_minus_1[i], splat(1.0)));
    let y = each!(N, |i| simd.mul_f32s(exp_r[i], pow2_integral(simd, k[i])));
    each!(N, |i| {
        simd.select_f32s(
            simd.equal_f32s(k[i], splat(0.0)),
            exp_r_minus_1[i],
            simd.sub_f32s(y[i], splat(1.0)),
        )
    })
}

/// A function of one register, applied by [`Map`].
trait Elementwise {
    fn eval<S: Simd>(simd: S, x: S::f32s) -> S::f32s;
}

struct Exp;
impl Elementwise for Exp {
    #[inline(always)]
    fn eval<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        exp_simd(simd, x)
    }
}

struct Ln;
impl Elementwise for Ln {
    #[inline(always)]
    fn eval<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        ln_simd(simd, x)
    }
}

/// `out[i] = F(x[i])`, full registers first, then the tail.
struct Map<'a, F> {
    x: &'a [f32],
    out: &'a mut [f32],
    function: core::marker::PhantomData<F>,
}

impl<F: Elementwise> WithSimd for Map<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (x_head, x_tail) = S::as_simd_f32s(self.x);
        let (out_head, out_tail) = S::as_mut_simd_f32s(self.out);
        for (o, &v) in out_head.iter_mut().zip(x_head) {
            *o = F::eval(simd, v);
        }
        if !x_tail.is_empty() {
            simd.partial_store_f32s(out_tail, F::eval(simd, simd.partial_load_f32s(x_tail)));
        }
    }
}

fn map<F: Elementwise>(x: &[f32], out: &mut [f32]) {
    crate::isa::dispatch(Map::<F> {
        x,
        out,
        function: core::marker::PhantomData,
    });
}

/// `out[i] = exp(x[i])`, accurate to [`EXP_MAX_ULP`] ulp.
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn exp(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "exp: input and output lengths differ");
    map::<Exp>(x, out);
}

struct ExpNonpositive;
impl Elementwise for ExpNonpositive {
    #[inline(always)]
    fn eval<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        exp_nonpositive_simd(simd, x)
    }
}

struct Ln1pUnit;
impl Elementwise for Ln1pUnit {
    #[inline(always)]
    fn eval<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        ln_1p_unit_simd(simd, x)
    }
}

/// `out[i] = exp(x[i])` for `x[i] <= 0`; see [`exp_nonpositive_simd`].
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn exp_nonpositive(x: &[f32], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "exp_nonpositive: input and output lengths differ"
    );
    map::<ExpNonpositive>(x, out);
}

/// `out[i] = ln(1 + e[i])` for `e[i]` in `[0, 1]`; see [`ln_1p_unit_simd`].
///
/// # Panics
/// If `e` and `out` differ in length.
pub fn ln_1p_unit(e: &[f32], out: &mut [f32]) {
    assert_eq!(
        e.len(),
        out.len(),
        "ln_1p_unit: input and output lengths differ"
    );
    map::<Ln1pUnit>(e, out);
}

/// Scalar references for this module's kernels.
pub mod reference {
    use super::*;

    /// `out[i] = f32::exp(x[i])`.
    pub fn exp(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v.exp();
        }
    }

    /// Logistic sigmoid of one value, in f64 then rounded, so it is an independent check.
    pub fn sigmoid(z: f32) -> f32 {
        let z = f64::from(z);
        (1.0 / (1.0 + (-z).exp())) as f32
    }

    /// SELU of one value, in f64 then rounded.
    pub fn selu(z: f32) -> f32 {
        let lambda = f64::from(SELU_LAMBDA);
        let alpha = f64::from(SELU_ALPHA);
        let z = f64::from(z);
        (if z > 0.0 {
            lambda * z
        } else {
            lambda * alpha * z.exp_m1()
        }) as f32
    }
}

/// `2^23`: every f32 of at least this magnitude is an integer.
const TWO_POW_23: f32 = 8_388_608.0;

/// Rounds to the nearest integer, ties to even (as TensorFlow's `round`), for every f32.
#[inline(always)]
pub fn round_half_even_simd<S: Simd>(simd: S, v: S::f32s) -> S::f32s {
    // v + copysign(2^23, v) lands where the f32 spacing is exactly 1, so the
    // hardware's round-to-nearest-even does the rounding.
    let sign = simd.and_f32s(v, simd.splat_f32s(-0.0));
    let shift = simd.or_f32s(sign, simd.splat_f32s(TWO_POW_23));
    let rounded = simd.sub_f32s(simd.add_f32s(v, shift), shift);
    simd.select_f32s(
        simd.less_than_f32s(simd.abs_f32s(v), simd.splat_f32s(TWO_POW_23)),
        rounded,
        v,
    )
}

/// Cephes `logf` polynomial for `(ln(1 + f) - f + f^2/2) / f^3` on `[sqrt(1/2) - 1, sqrt(2) - 1]`,
/// highest degree first.
const LN_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
const SQRT_HALF: f32 = core::f32::consts::FRAC_1_SQRT_2;

/// Natural logarithm for positive normal f32 (`f32::MIN_POSITIVE ..= f32::MAX`), within
/// [`LN_MAX_ABS_ERROR`] of `f32::ln`; other inputs give unspecified finite or infinite values.
///
/// `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, then `ln x = e ln 2 + ln m` with `ln m`
/// from the Cephes `logf` polynomial; `e` is read from the exponent bits.
#[inline(always)]
pub fn ln_simd<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let bits: S::u32s = pulp::cast(x);
    let biased_exponent = simd.wrapping_dyn_shr_u32s(bits, simd.splat_u32s(23));
    // Mantissa with the exponent of 0.5: m in [0.5, 1).
    let mantissa_bits = simd.or_u32s(
        simd.and_u32s(bits, simd.splat_u32s(0x007F_FFFF)),
        simd.splat_u32s(0x3F00_0000),
    );
    let m: S::f32s = pulp::cast(mantissa_bits);
    // The integer biased exponent, turned into an f32 through the rounding magic's bits.
    let magic_bits: u32 = ROUNDING_MAGIC.to_bits();
    let e_plus_magic: S::f32s =
        pulp::cast(simd.add_u32s(biased_exponent, simd.splat_u32s(magic_bits)));
    let e = simd.sub_f32s(e_plus_magic, simd.splat_f32s(ROUNDING_MAGIC + 126.0));

    let small = simd.less_than_f32s(m, simd.splat_f32s(SQRT_HALF));
    let e = simd.select_f32s(small, simd.sub_f32s(e, simd.splat_f32s(1.0)), e);
    let f = simd.sub_f32s(
        simd.select_f32s(small, simd.add_f32s(m, m), m),
        simd.splat_f32s(1.0),
    );

    let f2 = simd.mul_f32s(f, f);
    let mut p = simd.splat_f32s(LN_POLY[0]);
    for &c in &LN_POLY[1..] {
        p = simd.mul_add_f32s(p, f, simd.splat_f32s(c));
    }
    let mut y = simd.mul_f32s(simd.mul_f32s(p, f), f2);
    y = simd.mul_add_f32s(e, simd.splat_f32s(LN2_LO), y);
    y = simd.mul_add_f32s(simd.splat_f32s(-0.5), f2, y);
    let y = simd.add_f32s(f, y);
    simd.mul_add_f32s(e, simd.splat_f32s(LN2_HI), y)
}

/// Largest absolute error of [`ln_simd`] against `f32::ln` for inputs in `[0.5, 2]`,
/// and its relative error elsewhere in its domain (checked by the test suite).
pub const LN_MAX_ABS_ERROR: f32 = 2.5e-7;

/// `out[i] = ln(x[i])` for positive normal inputs; see [`ln_simd`].
///
/// # Panics
/// If `x` and `out` differ in length.
pub fn ln(x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "ln: input and output lengths differ");
    map::<Ln>(x, out);
}
