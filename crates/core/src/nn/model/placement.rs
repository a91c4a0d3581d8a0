//! Where a compiled model runs when it asks for the GPU: the planner's fused GPU steps, else
//! the layers' own GPU ops (checked by a probe step), else the CPU with a warning.

use std::sync::Mutex;

use super::*;

impl Model {
    /// Moves a compiled model that asked for the GPU onto it, once it is built: on failure a
    /// strict request ("gpu!") is an error, a plain one records the fallback warning.
    pub(super) fn attach_gpu(&mut self) -> Result<()> {
        let Some(c) = self.compiled.as_ref() else { return Ok(()) };
        let (Some(strict), None, None, false) = (c.wants_gpu, &c.gpu, &c.device_warning, c.layers_on_gpu) else {
            return Ok(());
        };
        if !self.is_built() {
            return Ok(());
        }
        let attached = GpuModel::new(self, &c.losses[0], &c.optimizer, &|p| {
            c.trainable.contains(&crate::nn::param::param_address(p))
        });
        let c = self.compiled.as_mut().expect("checked above");
        match attached {
            Ok(mut g) => {
                // A precision the adapter cannot honour (no SHADER_F16) is reported, not fatal.
                c.device_warning = g.set_precision(&c.precision)?;
                c.gpu = Some(Mutex::new(g));
            }
            Err(planned) => match self.run_layers_on_gpu() {
                Ok(()) => self.compiled.as_mut().expect("checked above").layers_on_gpu = true,
                Err(e) => {
                    let why = format!("{planned}; and through the layers' own GPU ops: {e}");
                    if strict {
                        return Err(Error::Invalid(why));
                    }
                    let c = self.compiled.as_mut().expect("checked above");
                    c.device_warning = Some(format!("device 'gpu' is not used, training on the CPU: {why}"));
                }
            },
        }
        Ok(())
    }

    /// For a model the planner refused: moves the weights to the GPU after checking that every
    /// layer, the loss and the optimizer have GPU kernels (a probe forward in inference and in
    /// training, with a backward pass, on a two-row batch of zeros); the weights stay on the
    /// CPU otherwise, and the Error names what is missing.
    pub(crate) fn run_layers_on_gpu(&mut self) -> Result<()> {
        let c = self.compiled_ref()?;
        if c.precision != "float32" {
            return Err(invalid("precision 'mixed_float16' runs on the planned GPU models only"));
        }
        self.to_device(crate::Device::Gpu)?;
        let probed = self.probe_layers();
        if probed.is_err() {
            self.to_device(crate::Device::Cpu)?;
        }
        probed
    }

    fn probe_layers(&self) -> Result<()> {
        // The training probe moves batch-norm statistics: they are put back afterwards.
        let saved: Vec<Vec<f32>> = self.get_weights()?.into_iter().map(|(_, _, w)| w).collect();
        let xs = self
            .inputs
            .iter()
            .map(|shape| Tensor::new(vec![0.0; 2 * numel(shape)], &[[2].as_slice(), shape].concat()))
            .collect::<Result<Vec<_>>>()?;
        let mut rng = Rng::new(0);
        crate::tensor::no_grad(|| self.run(&xs, &[], false, &mut rng))?;
        let outs = self.run(&xs, &[], true, &mut rng)?;
        let c = self.compiled_ref()?;
        let mut total: Option<Tensor> = None;
        for (out, loss) in outs.iter().zip(&c.losses) {
            let target = match loss {
                Loss::SparseCategoricalCrossentropy { .. } => {
                    let rows = out.len() / out.shape().last().copied().unwrap_or(1).max(1);
                    Tensor::new(vec![0.0; rows], &out.shape()[..out.rank() - 1])?
                }
                _ => Tensor::new(vec![0.0; out.len()], out.shape())?,
            };
            let l = loss.compute(out, &target.to(out.device())?)?;
            total = Some(match total {
                None => l,
                Some(t) => crate::ops::add(&t, &l)?,
            });
        }
        if let Some(total) = total {
            crate::backprop::backward(&total)?;
        }
        self.set_weights(&saved)
    }
}
