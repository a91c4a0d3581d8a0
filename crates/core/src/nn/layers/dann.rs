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
//! layer (`inhibitoryUnits: 0`, below) cannot give raw (non-negative) inputs such as pixels:
//! as the MLP's layers it stayed 1.3 points short of the unconstrained MLP on MNIST.
//!
//! When the inputs come from a layer with inhibitory units of its own (an `EIRNN`), its last
//! `1 - inputExcitatoryFraction` inputs are inhibitory: their rows of `W_EE` and `W_IE` are
//! <= 0, so every presynaptic unit keeps one sign ([`super::dale`]). Signs are kept by the
//! projection in [`Param::update`] after every optimizer step.
//!
//! `inhibitoryUnits: 0` is the row-sign layer (Song, Yang & Wang 2016): no interneurons, one
//! kernel `|W| * D` whose rows carry the sign `D` of their presynaptic unit, `z = x · W + b`.
//! It needs inputs from both populations (an `EIRNN`) to have weights of both signs; it is the
//! readout of the eiRNN in `npm run dale` (row-by-row MNIST, see the README's Dale table).

use serde_json::{json, Value};

use super::dale;
use super::{ActivationSpec, Common, ForwardCtx, Layer};
use crate::nn::init::Initializer;
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
    /// Once built: `[kernel W_EE, inhibitory_kernel W_IE, inhibitory_output W_EI]`, or
    /// `[kernel]` with no interneurons (the row-sign layer).
    weights: Vec<Param>,
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
        // 0 selects the row-sign layer.
        let inhibitory = o.usize("inhibitoryUnits")?.unwrap_or_else(|| default_inhibitory(units));
        Ok(EIDense {
            units,
            inhibitory,
            activation: ActivationSpec::read(o)?,
            use_bias: o.bool("useBias")?.unwrap_or(true),
            input_excitatory: dale::fraction(o, &what, "inputExcitatoryFraction", 1.0)?,
            common: common.clone(),
            weights: Vec::new(),
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
        // With inputs from both populations (after an `EIRNN`), `signed_param` scales the rows
        // leaving excitatory inputs by sqrt(nI / nE) and those leaving inhibitory inputs by
        // sqrt(nE / nI), the rule of the EIRNN's own kernels: the two populations then carry the
        // same total weight (the paper has excitatory inputs only). On row-by-row MNIST (eiRNN
        // 128 units, 80% excitatory, 3 epochs) the DANN readout reached 90.77%, unscaled 76.58%.
        let input_signs = dale::signs(din, self.input_excitatory);
        let signed = |suffix: &str, data, shape: [usize; 2], signs| {
            dale::signed_param(format!("{name}/{suffix}"), data, &shape, trainable, signs)
        };
        self.weights = if ni == 0 {
            // Row-sign layer: |glorot uniform|, E/I-balanced rows.
            let w = Initializer::GlorotUniform.sample(&[din, units], rng)?;
            vec![signed("kernel", w, [din, units], input_signs)?]
        } else {
            let [w_ee, w_ie, w_ei] = dann_init(din, units, ni, rng);
            vec![
                signed("kernel", w_ee, [din, units], input_signs.clone())?,
                signed("inhibitory_kernel", w_ie, [din, ni], input_signs)?,
                signed("inhibitory_output", w_ei, [ni, units], vec![-1.0; ni])?,
            ]
        };
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
        let kernel = match self.weights.as_slice() {
            [w] => w.get(),
            // Folding the interneurons into one effective kernel costs in * inhibitory * units
            // once per batch, instead of rows * inhibitory * (in + units) through them.
            [w_ee, w_ie, w_ei] => ops::add(&w_ee.get(), &ops::matmul(&w_ie.get(), &w_ei.get())?)?,
            _ => return Err(not_built(&self.common.name)),
        };
        let bias = self.bias.as_ref().map(Param::get);
        let z = ops::linear(x, &kernel, bias.as_ref())?;
        self.activation.apply_owned(z)
    }
    fn params(&self) -> Vec<&Param> {
        self.weights.iter().chain(self.bias.iter()).collect()
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
