//! `EIDense`: the Dale's ANN (DANN) layer of Cornford et al. 2021, "Learning to live with
//! Dale's principle: ANNs with separate excitatory and inhibitory units" (ICLR 2021).
//!
//! The layer's `units` outputs are excitatory. Its inputs also drive `inhibitoryUnits` linear
//! interneurons, which inhibit the outputs (feed-forward inhibition):
//!
//! ```text
//! z = x · W_EE + (x · W_IE) · W_EI + b,   h = activation(z)
//! W_EE [in, units] >= 0,  W_IE [in, inhibitory] >= 0,  W_EI [inhibitory, units] <= 0
//! ```
//!
//! (Keras layout, `[from, to]`; the paper writes `W_EE - W_EI W_IE` with all three non-negative,
//! here `W_EI` holds the signed weights so that `getWeights` shows what each synapse does.)
//! The effective kernel `W_EE + W_IE · W_EI` has weights of both signs, which the row-sign
//! layer this replaces could not give raw (non-negative) inputs such as pixels: that layer
//! stayed 1.3 points short of the unconstrained MLP on MNIST.
//!
//! When the inputs come from a layer with inhibitory units of its own (an `EIRNN`), its last
//! `1 - inputExcitatoryFraction` inputs are inhibitory: their rows of `W_EE` and `W_IE` are
//! <= 0, so every presynaptic unit keeps one sign ([`super::dale`]). Signs are kept by the
//! projection in [`Param::update`] after every optimizer step.

use serde_json::{json, Value};

use super::dale;
use super::{ActivationSpec, Common, ForwardCtx, Layer};
use crate::nn::options::Options;
use crate::nn::param::Param;
use crate::rng::Rng;
use crate::{ops, Error, Result, Tensor};

/// A dense layer of excitatory units with feed-forward inhibitory interneurons.
pub struct EIDense {
    common: Common,
    units: usize,
    /// Number of inhibitory interneurons.
    inhibitory: usize,
    activation: ActivationSpec,
    use_bias: bool,
    /// Fraction of the inputs that are excitatory (1: raw inputs or excitatory units).
    input_excitatory: f64,
    /// `[kernel W_EE, inhibitory_kernel W_IE, inhibitory_output W_EI, bias]` once built.
    weights: Option<[Param; 3]>,
    bias: Option<Param>,
}

/// The paper's default: one interneuron for every ten excitatory units, at least one.
fn default_inhibitory(units: usize) -> usize {
    ((units as f64 * 0.1).round() as usize).max(1)
}

impl EIDense {
    /// An `EIDense` from its options.
    pub(super) fn from_options(o: &mut Options, common: &Common) -> Result<Self> {
        let what = format!("EIDense '{}'", common.name);
        let units = o.required_positive("units")?;
        let inhibitory = match o.usize("inhibitoryUnits")? {
            Some(0) => {
                return Err(Error::Invalid(format!(
                    "{what}: option 'inhibitoryUnits' must be at least 1, got 0"
                )))
            }
            Some(n) => n,
            None => default_inhibitory(units),
        };
        Ok(EIDense {
            units,
            inhibitory,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            input_excitatory: dale::fraction(o, &what, "inputExcitatoryFraction", 1.0)?,
            common: common.clone(),
            weights: None,
            bias: None,
        })
    }
}

/// `n` draws from the exponential distribution with mean (and standard deviation) `scale`.
fn exponential(n: usize, scale: f32, rng: &mut Rng) -> Vec<f32> {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    (0..n).map(|_| -scale * (1.0 - rng.uniform()).ln()).collect()
}

/// The paper's initialisation (its code's `EiDense_MultipleInt_LayerNorm_WeightInitPolicy`),
/// returning `(W_EE, W_IE, W_EI)` as magnitudes in Keras layout:
///
/// - `W_EE` is exponential with scale `sqrt(2π / (d (2π - 1)))` for `d` inputs: the scale that
///   keeps the variance of `z` when the inputs are rectified units of the layer before;
/// - one interneuron (an output layer): its input weights are the mean of `W_EE` over the
///   units; more: drawn like `W_EE`, independently, so the interneurons differ (identical ones
///   would get identical gradients and stay clones);
/// - `W_EI = 1 / inhibitory`.
///
/// The inhibition a unit receives then equals its excitation in expectation: the effective
/// kernel has mean 0 over the units for every input, as a centred initializer has.
fn dann_init(din: usize, units: usize, inhibitory: usize, rng: &mut Rng) -> [Vec<f32>; 3] {
    let two_pi = 2.0 * std::f64::consts::PI;
    let scale = (two_pi / (din as f64 * (two_pi - 1.0))).sqrt() as f32;
    let w_ee = exponential(din * units, scale, rng);
    let w_ie = if inhibitory == 1 {
        w_ee.chunks_exact(units)
            .map(|row| row.iter().sum::<f32>() / units as f32)
            .collect()
    } else {
        exponential(din * inhibitory, scale, rng)
    };
    let w_ei = vec![1.0 / inhibitory as f32; inhibitory * units];
    [w_ee, w_ie, w_ei]
}

/// With inputs from both populations (after an `EIRNN`), scales the rows leaving excitatory
/// inputs by `sqrt(nI / nE)` and those leaving inhibitory inputs by `sqrt(nE / nI)`, the rule
/// [`dale::signed_param`] applies to the EIRNN's own kernels: the two populations then carry the
/// same total weight. The paper has excitatory inputs only. On row-by-row MNIST (eiRNN 128
/// units, 80% excitatory, 3 epochs, `npm run dale`) the readout reached 90.77%, unscaled 76.58%.
fn balance_inputs(w: &mut [f32], cols: usize, signs: &[f32]) {
    let n_e = signs.iter().filter(|&&s| s > 0.0).count() as f32;
    let n_i = signs.len() as f32 - n_e;
    if n_e == 0.0 || n_i == 0.0 {
        return;
    }
    let (scale_e, scale_i) = ((n_i / n_e).sqrt(), (n_e / n_i).sqrt());
    for (row, &s) in w.chunks_exact_mut(cols).zip(signs) {
        let k = if s > 0.0 { scale_e } else { scale_i };
        row.iter_mut().for_each(|v| *v *= k);
    }
}

/// A weight with one sign per row: `signs[i] * |w|` for row `i`, kept by every update.
fn signed(name: String, mut data: Vec<f32>, shape: [usize; 2], trainable: bool, signs: Vec<f32>) -> Result<Param> {
    for (row, &s) in data.chunks_exact_mut(shape[1]).zip(&signs) {
        row.iter_mut().for_each(|w| *w = s * w.abs());
    }
    Param::new(name, data, &shape, trainable)?.with_row_signs(signs)
}

fn not_built(name: &str) -> Error {
    Error::Invalid(format!(
        "layer '{name}' is used before it was built; call build(inputShape) first"
    ))
}

impl Layer for EIDense {
    fn class_name(&self) -> &'static str {
        "EIDense"
    }
    fn name(&self) -> &str {
        &self.common.name
    }
    fn build(&mut self, input_shape: &[usize], rng: &mut Rng) -> Result<Vec<usize>> {
        let Some(&din) = input_shape.last() else {
            return Err(Error::shape(
                &format!("EIDense '{}'", self.common.name),
                "an input of rank >= 1",
                input_shape,
            ));
        };
        let (name, trainable) = (&self.common.name, self.common.trainable);
        let (units, ni) = (self.units, self.inhibitory);
        let [mut w_ee, mut w_ie, w_ei] = dann_init(din, units, ni, rng);
        let input_signs = dale::signs(din, self.input_excitatory);
        balance_inputs(&mut w_ee, units, &input_signs);
        balance_inputs(&mut w_ie, ni, &input_signs);
        self.weights = Some([
            signed(
                format!("{name}/kernel"),
                w_ee,
                [din, units],
                trainable,
                input_signs.clone(),
            )?,
            signed(
                format!("{name}/inhibitory_kernel"),
                w_ie,
                [din, ni],
                trainable,
                input_signs,
            )?,
            signed(
                format!("{name}/inhibitory_output"),
                w_ei,
                [ni, units],
                trainable,
                vec![-1.0; ni],
            )?,
        ]);
        self.bias = if self.use_bias {
            Some(Param::new(
                format!("{name}/bias"),
                vec![0.0; units],
                &[units],
                trainable,
            )?)
        } else {
            None
        };
        let mut out = input_shape.to_vec();
        *out.last_mut().expect("rank checked") = units;
        Ok(out)
    }
    fn forward(&self, x: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        let [w_ee, w_ie, w_ei] = self.weights.as_ref().ok_or_else(|| not_built(&self.common.name))?;
        // Folding the interneurons into one effective kernel costs in * inhibitory * units
        // once per batch, instead of rows * inhibitory * (in + units) through them.
        let kernel = ops::add(&w_ee.get(), &ops::matmul(&w_ie.get(), &w_ei.get())?)?;
        let bias = self.bias.as_ref().map(Param::get);
        let z = ops::linear(x, &kernel, bias.as_ref())?;
        self.activation.apply_owned(z)
    }
    fn params(&self) -> Vec<&Param> {
        self.weights.iter().flatten().chain(self.bias.iter()).collect()
    }
    fn config(&self) -> Value {
        self.common.write(json!({
            "units": self.units,
            "inhibitoryUnits": self.inhibitory,
            "activation": self.activation.name(),
            "useBias": self.use_bias,
            "inputExcitatoryFraction": self.input_excitatory,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_one_interneuron_per_ten_units() {
        assert_eq!(default_inhibitory(256), 26);
        assert_eq!(default_inhibitory(500), 50);
        assert_eq!(default_inhibitory(10), 1);
        assert_eq!(default_inhibitory(3), 1);
    }

    #[test]
    fn mixed_inputs_are_balanced_by_population() {
        // Three E inputs and one I input, two columns: E rows * sqrt(1/3), the I row * sqrt(3).
        let mut w = vec![1.0; 8];
        balance_inputs(&mut w, 2, &dale::signs(4, 0.75));
        let (e, i) = ((1.0f32 / 3.0).sqrt(), 3f32.sqrt());
        assert_eq!(w, [e, e, e, e, e, e, i, i]);
        let mut one_population = vec![1.0; 4];
        balance_inputs(&mut one_population, 2, &[1.0, 1.0]);
        assert_eq!(one_population, [1.0; 4]);
    }

    #[test]
    fn initial_inhibition_balances_excitation() {
        let mut rng = Rng::new(5);
        let (din, units) = (400, 300);
        let [w_ee, w_ie, w_ei] = dann_init(din, units, 30, &mut rng);
        assert!(w_ee.iter().chain(&w_ie).chain(&w_ei).all(|&w| w >= 0.0));
        // Mean of the exponential is its scale.
        let mean = w_ee.iter().sum::<f32>() / w_ee.len() as f32;
        let scale = (2.0 * std::f32::consts::PI / (din as f32 * (2.0 * std::f32::consts::PI - 1.0))).sqrt();
        assert!((mean / scale - 1.0).abs() < 0.02, "{mean} vs {scale}");
        // Effective kernel W_EE - W_IE W_EI has mean ~0 (relative to its excitation).
        let inhibition: f32 = (0..din)
            .map(|i| (0..30).map(|k| w_ie[i * 30 + k] * w_ei[k * units]).sum::<f32>())
            .sum::<f32>()
            * units as f32;
        let excitation: f32 = w_ee.iter().sum();
        assert!(
            (inhibition / excitation - 1.0).abs() < 0.05,
            "{inhibition} vs {excitation}"
        );
        // One interneuron: exactly balanced, input by input.
        let [w_ee, w_ie, w_ei] = dann_init(4, 3, 1, &mut rng);
        assert_eq!(w_ei, [1.0; 3]);
        for i in 0..4 {
            let row = &w_ee[i * 3..i * 3 + 3];
            assert!((row.iter().sum::<f32>() / 3.0 - w_ie[i]).abs() < 1e-6);
        }
    }
}
