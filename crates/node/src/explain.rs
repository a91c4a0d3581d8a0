//! Explanations and adversarial examples from JavaScript: input gradients, integrated
//! gradients, Grad-CAM, attention maps and L∞ attacks, each an async task on a worker thread.

use cortex_core::nn::explain::{Attack, Objective};
use cortex_core::nn::options::Options;
use cortex_core::nn::SharedLayer;
use cortex_core::rng::Rng;
use cortex_core::{threads, Error, Tensor};
use napi::bindgen_prelude::{AsyncTask, Float32Array};
use napi::{Env, Task};
use napi_derive::napi;
use serde_json::Value;

use crate::model::{model_of, NativeModel};
use crate::tensor::{to_tensor, HostTensor, TensorData};
use crate::{guarded, parse_json};

/// Parses `{ epsilon, stepSize?, steps?, randomStart?, clip?, batchSize? }`; without a step
/// size, one step of `epsilon` (FGSM), or with several steps `2.5 * epsilon / steps` (Madry et
/// al.'s choice).
pub(crate) fn parse_attack(v: &Value) -> cortex_core::Result<Attack> {
    let mut o = Options::new("attack", v)?;
    let epsilon = o
        .f32("epsilon")?
        .ok_or_else(|| Error::Invalid("attack: option 'epsilon' is required".into()))?;
    let steps = o.usize("steps")?.unwrap_or(1);
    let step_size = o.f32("stepSize")?.unwrap_or(if steps == 1 {
        epsilon
    } else {
        2.5 * epsilon / steps as f32
    });
    let random_start = o.bool("randomStart")?.unwrap_or(false);
    let clip = match o.value("clip") {
        None | Some(Value::Null) => Some((0.0, 1.0)),
        Some(Value::Bool(false)) => None,
        Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_f64(), a[1].as_f64()) {
            (Some(lo), Some(hi)) => Some((lo as f32, hi as f32)),
            _ => return Err(Error::Invalid("attack: clip must be [lo, hi] or false".into())),
        },
        Some(other) => {
            return Err(Error::Invalid(format!(
                "attack: clip must be [lo, hi] or false, got {other}"
            )))
        }
    };
    let batch_size = o.usize("batchSize")?.unwrap_or(256);
    o.finish()?;
    let attack = Attack {
        epsilon,
        step_size,
        steps,
        random_start,
        clip,
        batch_size,
    };
    attack.validate()?;
    Ok(attack)
}

fn tensors(what: &str, data: &[Float32Array], shapes: &[Vec<u32>]) -> napi::Result<Vec<Tensor>> {
    if data.len() != shapes.len() {
        return Err(napi::Error::new(
            napi::Status::InvalidArg,
            format!("{what}: one shape per array"),
        ));
    }
    data.iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (d, s))| to_tensor(&format!("{what}[{i}]"), d, s))
        .collect()
}

/// What an [`ExplainTask`] computes.
enum Job {
    InputGradients {
        xs: Vec<Tensor>,
        objective: Objective,
    },
    Attack {
        x: Tensor,
        ys: Vec<Tensor>,
        attack: Attack,
        seed: u64,
    },
    Integrated {
        x: Tensor,
        baseline: Tensor,
        output: usize,
        classes: Vec<usize>,
        steps: usize,
    },
    GradCam {
        xs: Vec<Tensor>,
        layer: String,
        output: usize,
        classes: Vec<usize>,
    },
    AttentionMaps {
        xs: Vec<Tensor>,
        layer: String,
    },
}

/// Tensors and per-sample numbers computed by an [`ExplainTask`].
#[napi(object)]
pub struct ExplainResult {
    /// Gradients (one per input), attributions, adversarial inputs or heatmaps.
    pub tensors: Vec<TensorData>,
    /// Objective values per sample, or `f(x) - f(baseline)` for integrated gradients.
    pub values: Vec<f64>,
}

/// Background explanation or attack.
pub struct ExplainTask {
    model: SharedLayer,
    job: Option<Job>,
}

impl Task for ExplainTask {
    type Output = (Vec<HostTensor>, Vec<f32>);
    type JsValue = ExplainResult;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let job = self.job.take().expect("runs once");
        guarded("explain", || {
            let guard = self.model.read();
            let model = model_of(&guard);
            model.sync_from_device()?;
            threads::run(|| match job {
                Job::InputGradients { xs, objective } => model.input_gradients(&xs, &objective),
                Job::Attack { x, ys, attack, seed } => Ok((
                    vec![model.adversarial(&x, &ys, &attack, &mut Rng::new(seed))?],
                    Vec::new(),
                )),
                Job::Integrated {
                    x,
                    baseline,
                    output,
                    classes,
                    steps,
                } => model
                    .integrated_gradients(&x, &baseline, output, &classes, steps, 64)
                    .map(|(a, d)| (vec![a], d)),
                Job::GradCam {
                    xs,
                    layer,
                    output,
                    classes,
                } => Ok((vec![model.grad_cam(&xs, &layer, output, &classes)?], Vec::new())),
                Job::AttentionMaps { xs, layer } => Ok((vec![model.attention_maps(&xs, &layer)?], Vec::new())),
            })
        })
        .map(|(tensors, values)| (tensors.into_iter().map(HostTensor::take).collect(), values))
    }

    fn resolve(&mut self, _env: Env, (tensors, values): Self::Output) -> napi::Result<ExplainResult> {
        Ok(ExplainResult {
            tensors: tensors.into_iter().map(TensorData::from).collect(),
            values: values.into_iter().map(f64::from).collect(),
        })
    }
}

fn classes_of(classes: Vec<u32>) -> Vec<usize> {
    classes.into_iter().map(|c| c as usize).collect()
}

#[napi]
impl NativeModel {
    /// Gradients of an objective with respect to each input: the compiled loss against `ys`
    /// (when given), else the score of class `classes[i]` of output `output` for sample i.
    #[napi(ts_return_type = "Promise<ExplainResult>")]
    pub fn input_gradients(
        &self,
        xs: Vec<Float32Array>,
        x_shapes: Vec<Vec<u32>>,
        classes: Option<Vec<u32>>,
        output: Option<u32>,
        ys: Option<Vec<Float32Array>>,
        y_shapes: Option<Vec<Vec<u32>>>,
    ) -> napi::Result<AsyncTask<ExplainTask>> {
        let xs = tensors("inputGradients x", &xs, &x_shapes)?;
        let objective = match (ys, y_shapes, classes) {
            (Some(ys), Some(shapes), _) => Objective::Loss(tensors("inputGradients y", &ys, &shapes)?),
            (None, None, Some(classes)) => Objective::Class {
                output: output.unwrap_or(0) as usize,
                classes: classes_of(classes),
            },
            _ => {
                return Err(napi::Error::new(
                    napi::Status::InvalidArg,
                    "inputGradients: give target classes, or targets for the loss".to_string(),
                ))
            }
        };
        Ok(self.explain_task(Job::InputGradients { xs, objective }))
    }

    /// Adversarial examples of `x` against the compiled loss with targets `ys` (options JSON:
    /// `{ epsilon, stepSize, steps, randomStart, clip, batchSize }`).
    #[napi(ts_return_type = "Promise<ExplainResult>")]
    pub fn attack(
        &self,
        x: Float32Array,
        x_shape: Vec<u32>,
        ys: Vec<Float32Array>,
        y_shapes: Vec<Vec<u32>>,
        options_json: String,
        seed: f64,
    ) -> napi::Result<AsyncTask<ExplainTask>> {
        let spec = parse_json("attack options", &options_json)?;
        let attack = guarded("attack", || parse_attack(&spec))?;
        Ok(self.explain_task(Job::Attack {
            x: to_tensor("attack x", &x, &x_shape)?,
            ys: tensors("attack y", &ys, &y_shapes)?,
            attack,
            seed: seed as u64,
        }))
    }

    /// Integrated gradients of class `classes[i]` of output `output` for each sample of `x`.
    #[napi(ts_return_type = "Promise<ExplainResult>")]
    #[allow(clippy::too_many_arguments)]
    pub fn integrated_gradients(
        &self,
        x: Float32Array,
        x_shape: Vec<u32>,
        baseline: Float32Array,
        baseline_shape: Vec<u32>,
        classes: Vec<u32>,
        output: u32,
        steps: u32,
    ) -> napi::Result<AsyncTask<ExplainTask>> {
        Ok(self.explain_task(Job::Integrated {
            x: to_tensor("integratedGradients x", &x, &x_shape)?,
            baseline: to_tensor("integratedGradients baseline", &baseline, &baseline_shape)?,
            output: output as usize,
            classes: classes_of(classes),
            steps: steps as usize,
        }))
    }

    /// Grad-CAM heatmaps of layer `layer` for class `classes[i]` of output `output`.
    #[napi(ts_return_type = "Promise<ExplainResult>")]
    pub fn grad_cam(
        &self,
        xs: Vec<Float32Array>,
        x_shapes: Vec<Vec<u32>>,
        layer: String,
        classes: Vec<u32>,
        output: u32,
    ) -> napi::Result<AsyncTask<ExplainTask>> {
        Ok(self.explain_task(Job::GradCam {
            xs: tensors("gradCam x", &xs, &x_shapes)?,
            layer,
            output: output as usize,
            classes: classes_of(classes),
        }))
    }

    /// The attention probabilities `[batch, heads, query, key]` of the MultiHeadAttention
    /// layer `layer` for inputs `xs` (an inference pass).
    #[napi(ts_return_type = "Promise<ExplainResult>")]
    pub fn attention_maps(
        &self,
        xs: Vec<Float32Array>,
        x_shapes: Vec<Vec<u32>>,
        layer: String,
    ) -> napi::Result<AsyncTask<ExplainTask>> {
        Ok(self.explain_task(Job::AttentionMaps {
            xs: tensors("attentionMaps x", &xs, &x_shapes)?,
            layer,
        }))
    }
}

impl NativeModel {
    fn explain_task(&self, job: Job) -> AsyncTask<ExplainTask> {
        AsyncTask::new(ExplainTask {
            model: self.cell(),
            job: Some(job),
        })
    }
}
