//! The GE2E speaker encoder (Wan et al. 2018) as Resemblyzer ships it: a 3-layer LSTM over
//! 40-band mel frames, the top layer's final hidden state through Linear → ReLU → L2 norm.
//!
//! Tensor names follow the PyTorch checkpoint (`lstm.weight_ih_l0`, …, `linear.weight`), so
//! loading is a straight mapping. On the CPU the layers run fused (`lstm_cpu`); on other
//! devices each layer's input projection is one matrix product over all frames of all
//! partials and the recurrence runs as tensor ops, step by step.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::lstm_cpu::{CpuLstm, CpuLstmLayer};
use super::Precision;

/// Shape of a GE2E encoder, as its model card states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ge2eConfig {
    /// Mel bands per input frame.
    pub input_dim: usize,
    /// LSTM hidden size (also the embedding size).
    pub hidden_size: usize,
    /// Stacked LSTM layers.
    pub num_layers: usize,
}

/// One LSTM layer with its weights laid out for batched inference as tensor ops.
struct LstmLayer {
    /// `(input, 4 * hidden)`: the transposed input weights, gate columns in order i, f, o, g.
    w_ih_t: Tensor,
    /// `(hidden, 4 * hidden)`: the transposed recurrent weights, same gate order.
    w_hh_t: Tensor,
    /// `(4 * hidden)`: `bias_ih + bias_hh`.
    bias: Tensor,
}

impl LstmLayer {
    fn new(
        vb: &VarBuilder,
        layer: usize,
        input: usize,
        hidden: usize,
    ) -> candle_core::Result<Self> {
        let w_ih = vb.get((4 * hidden, input), &format!("lstm.weight_ih_l{layer}"))?;
        let w_hh = vb.get((4 * hidden, hidden), &format!("lstm.weight_hh_l{layer}"))?;
        let b_ih = vb.get(4 * hidden, &format!("lstm.bias_ih_l{layer}"))?;
        let b_hh = vb.get(4 * hidden, &format!("lstm.bias_hh_l{layer}"))?;
        Ok(Self {
            w_ih_t: ifgo_to_ifog(&w_ih, hidden)?.t()?.contiguous()?,
            w_hh_t: ifgo_to_ifog(&w_hh, hidden)?.t()?.contiguous()?,
            bias: ifgo_to_ifog(&(b_ih + b_hh)?, hidden)?,
        })
    }

    /// The same weights laid out for the fused CPU layer, its products in `precision`.
    fn for_cpu(&self, precision: Precision) -> candle_core::Result<CpuLstmLayer> {
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        Ok(CpuLstmLayer::new(
            &host(&self.w_ih_t)?,
            &host(&self.w_hh_t)?,
            host(&self.bias)?,
            self.w_hh_t.dim(0)?,
            Some(precision),
        ))
    }

    /// Runs the layer over `xs` `(batch, time, input)` as tensor ops; returns every step's
    /// hidden state `(batch, time, hidden)` when `keep_sequence`, else only the last
    /// `(batch, hidden)`.
    fn forward(&self, xs: &Tensor, keep_sequence: bool) -> candle_core::Result<Tensor> {
        let (batch, steps, input) = xs.dims3()?;
        let hidden = self.w_hh_t.dim(0)?;
        let projected = xs
            .reshape((batch * steps, input))?
            .matmul(&self.w_ih_t)?
            .broadcast_add(&self.bias)?
            .reshape((batch, steps, 4 * hidden))?;
        let mut h = Tensor::zeros((batch, hidden), xs.dtype(), xs.device())?;
        let mut c = h.clone();
        let mut outputs = Vec::with_capacity(if keep_sequence { steps } else { 0 });
        for t in 0..steps {
            let gates = projected
                .narrow(1, t, 1)?
                .squeeze(1)?
                .add(&h.matmul(&self.w_hh_t)?)?;
            let sig = candle_nn::ops::sigmoid(&gates.narrow(1, 0, 3 * hidden)?)?;
            let i = sig.narrow(1, 0, hidden)?;
            let f = sig.narrow(1, hidden, hidden)?;
            let o = sig.narrow(1, 2 * hidden, hidden)?;
            let g = gates.narrow(1, 3 * hidden, hidden)?.tanh()?;
            c = ((f * &c)? + (i * g)?)?;
            h = (o * c.tanh()?)?;
            if keep_sequence {
                outputs.push(h.clone());
            }
        }
        if keep_sequence {
            Tensor::stack(&outputs, 1)
        } else {
            Ok(h)
        }
    }
}

/// The layers laid out for the fused CPU stack, their products in `precision`.
fn cpu_stack(layers: &[LstmLayer], precision: Precision) -> candle_core::Result<CpuLstm> {
    Ok(CpuLstm::new(
        layers
            .iter()
            .map(|l| l.for_cpu(precision))
            .collect::<candle_core::Result<Vec<_>>>()?,
    ))
}

/// Reorders PyTorch's gate blocks (i, f, g, o) along dim 0 to (i, f, o, g), so the three
/// sigmoid gates are one contiguous block.
fn ifgo_to_ifog(t: &Tensor, hidden: usize) -> candle_core::Result<Tensor> {
    Tensor::cat(
        &[
            t.narrow(0, 0, 2 * hidden)?,
            t.narrow(0, 3 * hidden, hidden)?,
            t.narrow(0, 2 * hidden, hidden)?,
        ],
        0,
    )
}

/// The GE2E encoder with its weights loaded.
pub struct Ge2eEncoder {
    layers: Vec<LstmLayer>,
    /// The layers fused for the CPU, when the weights live there.
    cpu_layers: Option<CpuLstm>,
    linear: Linear,
}

impl Ge2eEncoder {
    /// Builds the encoder from weights named as in Resemblyzer's checkpoint.
    pub fn new(config: Ge2eConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let layers = (0..config.num_layers)
            .map(|l| {
                let input = if l == 0 {
                    config.input_dim
                } else {
                    config.hidden_size
                };
                LstmLayer::new(&vb, l, input, config.hidden_size)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let linear = candle_nn::linear(config.hidden_size, config.hidden_size, vb.pp("linear"))?;
        let cpu_layers = match vb.device() {
            Device::Cpu => Some(cpu_stack(&layers, Precision::F32)?),
            _ => None,
        };
        Ok(Self {
            layers,
            cpu_layers,
            linear,
        })
    }

    /// Lays the CPU layers out for `precision`; returns the precision in effect (bfloat16
    /// only where the CPU has AVX512_BF16). On other devices nothing changes: f32.
    pub fn set_precision(&mut self, precision: Precision) -> candle_core::Result<Precision> {
        if self.cpu_layers.is_none() {
            return Ok(Precision::F32);
        }
        let stack = cpu_stack(&self.layers, precision)?;
        let in_effect = stack.precision();
        self.cpu_layers = Some(stack);
        Ok(in_effect)
    }

    /// Loads the encoder from a safetensors buffer onto `device`.
    pub fn from_safetensors(
        config: Ge2eConfig,
        weights: &[u8],
        device: &Device,
    ) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_slice_safetensors(weights, DType::F32, device)?;
        Self::new(config, vb)
    }

    /// Embeds a batch of partials `(batch, frames, input_dim)` into L2-normalised
    /// `(batch, hidden_size)` embeddings.
    pub fn forward(&self, mels: &Tensor) -> candle_core::Result<Tensor> {
        let last = self.layers.len() - 1;
        let top = match &self.cpu_layers {
            Some(stack) => {
                let (batch, steps, _) = mels.dims3()?;
                let xs = mels.flatten_all()?.to_vec1::<f32>()?;
                let top = stack.forward(&xs, batch, steps);
                let hidden = self.layers[last].w_hh_t.dim(0)?;
                Tensor::from_vec(top, (batch, hidden), mels.device())?
            }
            None => {
                let mut xs = mels.contiguous()?;
                for (l, layer) in self.layers.iter().enumerate() {
                    xs = layer.forward(&xs, l != last)?;
                }
                xs
            }
        };
        let embeds = self.linear.forward(&top)?.relu()?;
        let norms = embeds.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        embeds.broadcast_div(&norms.maximum(1e-12)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A small random encoder: the fused CPU recurrence and the tensor-op recurrence agree.
    #[test]
    fn fused_and_tensor_op_recurrences_agree() {
        let config = Ge2eConfig {
            input_dim: 6,
            hidden_size: 16,
            num_layers: 3,
        };
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        for l in 0..3 {
            let input = if l == 0 { 6 } else { 16 };
            let rand = |shape: &[usize]| Tensor::randn(0f32, 0.3, shape, &dev).unwrap();
            tensors.insert(format!("lstm.weight_ih_l{l}"), rand(&[64, input]));
            tensors.insert(format!("lstm.weight_hh_l{l}"), rand(&[64, 16]));
            tensors.insert(format!("lstm.bias_ih_l{l}"), rand(&[64]));
            tensors.insert(format!("lstm.bias_hh_l{l}"), rand(&[64]));
        }
        tensors.insert(
            "linear.weight".into(),
            Tensor::randn(0f32, 0.3, (16, 16), &dev).unwrap(),
        );
        tensors.insert(
            "linear.bias".into(),
            Tensor::randn(0f32, 0.3, 16, &dev).unwrap(),
        );
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let fused = Ge2eEncoder::new(config, vb.clone()).unwrap();
        let mut generic = Ge2eEncoder::new(config, vb).unwrap();
        generic.cpu_layers = None;
        let mels = Tensor::randn(0f32, 1.0, (5, 30, 6), &dev).unwrap();
        let run = |encoder: &Ge2eEncoder| -> Vec<f32> {
            encoder
                .forward(&mels)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (a, b) = (run(&fused), run(&generic));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
}
