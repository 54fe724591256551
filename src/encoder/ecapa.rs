//! ECAPA-TDNN (Desplanques et al. 2020) as SpeechBrain implements it in
//! `speechbrain/lobes/models/ECAPA_TDNN.py` and `speechbrain/spkrec-ecapa-voxceleb` publishes
//! it: a TDNN layer, three SE-Res2Net blocks, multi-layer feature aggregation, attentive
//! statistics pooling with global context, BatchNorm and a 1×1 convolution to the embedding.
//!
//! SpeechBrain details kept here: every convolution pads "same" by reflection
//! (`padding_mode="reflect"`, `dilation * (kernel - 1) / 2` frames on each side); a TDNN block
//! is convolution → ReLU → BatchNorm (eval mode: running statistics, eps 1e-5); the Res2Net
//! split passes its first chunk through and feeds each later chunk plus the previous chunk's
//! output to its own TDNN block; statistics use the biased variance clamped at 1e-12 before
//! the square root. With one utterance per forward (relative length 1) every mask is all ones.
//!
//! Tensor names are the published `embedding_model.ckpt`'s (`blocks.0.conv.conv.weight`,
//! `blocks.1.res2net_block.blocks.0.norm.norm.running_mean`, `asp_bn.norm.running_var`,
//! `fc.conv.weight`, …), and every width is read from the tensor shapes, so reduced-width
//! checkpoints load through the same code as the published one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// BatchNorm epsilon of SpeechBrain's `BatchNorm1d`.
const BN_EPS: f64 = 1e-5;
/// Variance floor of SpeechBrain's attentive statistics pooling.
const STATS_EPS: f64 = 1e-12;
/// Dilations of the published model (`hyperparams.yaml`); weights do not record them.
pub const PUBLISHED_DILATIONS: [usize; 5] = [1, 2, 3, 4, 1];

/// Shape of an ECAPA-TDNN encoder: `ECAPA_TDNN`'s constructor arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcapaConfig {
    /// Feature bins per input frame.
    pub input_size: usize,
    /// Output channels of the first TDNN layer, the three SE-Res2Net blocks and the
    /// multi-layer feature aggregation layer.
    pub channels: [usize; 5],
    /// Kernel sizes of those five layers.
    pub kernel_sizes: [usize; 5],
    /// Dilations of those five layers.
    pub dilations: [usize; 5],
    /// Hidden channels of the attention in the statistics pooling.
    pub attention_channels: usize,
    /// Chunks of the Res2Net split.
    pub res2net_scale: usize,
    /// Bottleneck channels of the squeeze-and-excitation blocks.
    pub se_channels: usize,
    /// Embedding size.
    pub lin_neurons: usize,
    /// Whether the attention sees the utterance's mean and standard deviation too.
    pub global_context: bool,
}

impl Default for EcapaConfig {
    /// `speechbrain/spkrec-ecapa-voxceleb`.
    fn default() -> Self {
        Self {
            input_size: 80,
            channels: [1024, 1024, 1024, 1024, 3072],
            kernel_sizes: [5, 3, 3, 3, 1],
            dilations: PUBLISHED_DILATIONS,
            attention_channels: 128,
            res2net_scale: 8,
            se_channels: 128,
            lin_neurons: 192,
            global_context: true,
        }
    }
}

/// Reads a SpeechBrain `embedding_model.ckpt` (a `torch.save`d state dict, zip format) and
/// returns its tensors as f32, sorted by name, without the `num_batches_tracked` counters —
/// ready to be written as safetensors and loaded by [`EcapaEncoder::from_safetensors`].
pub fn convert_checkpoint(checkpoint: &Path) -> Result<Vec<(String, Tensor)>, candle_core::Error> {
    let mut tensors = candle_core::pickle::read_all(checkpoint)?
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    if tensors.is_empty() {
        candle_core::bail!("{} holds no tensors", checkpoint.display());
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Infers the shape of the encoder held by `tensors` (named as in `embedding_model.ckpt`).
/// Dilations are not recorded in weights: the published ones are assumed.
pub fn config_from_checkpoint(tensors: &[(String, Tensor)]) -> candle_core::Result<EcapaConfig> {
    let dims = |name: &str| -> candle_core::Result<Vec<usize>> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.dims().to_vec())
            .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks tensor {name}")))
    };
    let conv = |name: &str| -> candle_core::Result<(usize, usize, usize)> {
        match dims(name)?[..] {
            [out, inp, k] => Ok((out, inp, k)),
            ref other => candle_core::bail!("{name} has shape {other:?}, expected 3 dimensions"),
        }
    };
    let has = |prefix: &str| tensors.iter().any(|(n, _)| n.starts_with(prefix));
    if !has("blocks.3.") || has("blocks.4.") {
        candle_core::bail!(
            "expected blocks.0 to blocks.3 (a TDNN layer and three SE-Res2Net blocks)"
        );
    }
    let (c0, input_size, k0) = conv("blocks.0.conv.conv.weight")?;
    let mut channels = [c0, 0, 0, 0, 0];
    let mut kernel_sizes = [k0, 0, 0, 0, 0];
    let res2net_scale = (0..)
        .take_while(|j| has(&format!("blocks.1.res2net_block.blocks.{j}.")))
        .count()
        + 1;
    for i in 1..4 {
        let (c, _, _) = conv(&format!("blocks.{i}.tdnn1.conv.conv.weight"))?;
        let (_, _, k) = conv(&format!(
            "blocks.{i}.res2net_block.blocks.0.conv.conv.weight"
        ))?;
        channels[i] = c;
        kernel_sizes[i] = k;
    }
    let (c4, _, k4) = conv("mfa.conv.conv.weight")?;
    channels[4] = c4;
    kernel_sizes[4] = k4;
    let (se_channels, _, _) = conv("blocks.1.se_block.conv1.conv.weight")?;
    let (attention_channels, attention_in, _) = conv("asp.tdnn.conv.conv.weight")?;
    let (lin_neurons, _, _) = conv("fc.conv.weight")?;
    Ok(EcapaConfig {
        input_size,
        channels,
        kernel_sizes,
        dilations: PUBLISHED_DILATIONS,
        attention_channels,
        res2net_scale,
        se_channels,
        lin_neurons,
        global_context: attention_in == 3 * c4,
    })
}

/// SpeechBrain's `Conv1d` with `padding="same"`, `padding_mode="reflect"`, stride 1.
struct Conv {
    /// `(out, in, kernel)`; for kernel 1 stored as `(out, in)` for a plain matrix product.
    weight: Tensor,
    /// `(1, out, 1)`.
    bias: Tensor,
    kernel: usize,
    dilation: usize,
}

impl Conv {
    fn load(
        vb: &VarBuilder,
        inp: usize,
        out: usize,
        kernel: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        if kernel.is_multiple_of(2) {
            candle_core::bail!(
                "{}: SpeechBrain's same padding needs an odd kernel, got {kernel}",
                vb.prefix()
            );
        }
        let weight = vb.get((out, inp, kernel), "weight")?;
        let weight = if kernel == 1 {
            weight.squeeze(2)?
        } else {
            weight
        };
        Ok(Self {
            weight,
            bias: vb.get(out, "bias")?.reshape((1, out, 1))?,
            kernel,
            dilation,
        })
    }

    /// `x`: `(batch, in, frames)` → `(batch, out, frames)`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = if self.kernel == 1 {
            self.weight.broadcast_matmul(x)?
        } else {
            let pad = self.dilation * (self.kernel - 1) / 2;
            reflect_pad(x, pad)?.conv1d(&self.weight, 0, 1, self.dilation, 1)?
        };
        y.broadcast_add(&self.bias)
    }
}

/// Pads the last dimension of `x` by reflection (`F.pad(mode="reflect")`: the edge value is
/// not repeated), `pad` values on each side.
fn reflect_pad(x: &Tensor, pad: usize) -> candle_core::Result<Tensor> {
    let len = x.dim(D::Minus1)?;
    if pad == 0 {
        return Ok(x.clone());
    }
    if pad >= len {
        candle_core::bail!("{len} frames are too few for reflection padding of {pad}");
    }
    let last = (len - 1) as i64;
    let index: Vec<u32> = (-(pad as i64)..len as i64 + pad as i64)
        .map(|i| {
            (if i < 0 {
                -i
            } else if i > last {
                2 * last - i
            } else {
                i
            }) as u32
        })
        .collect();
    let index = Tensor::from_vec(index, len + 2 * pad, x.device())?;
    x.contiguous()?.index_select(&index, D::Minus1)
}

/// `BatchNorm1d` in eval mode folded into a per-channel scale and shift, `(1, C, 1)` each.
struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    fn load(vb: &VarBuilder, channels: usize) -> candle_core::Result<Self> {
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        let mean = vb.get(channels, "running_mean")?;
        let var = vb.get(channels, "running_var")?;
        let scale = weight.div(&(var + BN_EPS)?.sqrt()?)?;
        let shift = bias.sub(&mean.mul(&scale)?)?;
        Ok(Self {
            scale: scale.reshape((1, channels, 1))?,
            shift: shift.reshape((1, channels, 1))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// `TDNNBlock`: convolution → ReLU → BatchNorm.
struct TdnnBlock {
    conv: Conv,
    norm: BatchNorm,
}

impl TdnnBlock {
    fn load(
        vb: &VarBuilder,
        inp: usize,
        out: usize,
        kernel: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv: Conv::load(&vb.pp("conv.conv"), inp, out, kernel, dilation)?,
            norm: BatchNorm::load(&vb.pp("norm.norm"), out)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?.relu()?)
    }
}

/// `Res2NetBlock`: the channels split into `scale` chunks; chunk 0 passes through, chunk 1
/// goes through block 0, chunk i (≥ 2) plus the previous output through block i - 1.
struct Res2Net {
    blocks: Vec<TdnnBlock>,
}

impl Res2Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let chunks = x.chunk(self.blocks.len() + 1, 1)?;
        let mut outputs = Vec::with_capacity(chunks.len());
        outputs.push(chunks[0].clone());
        for (i, (chunk, block)) in chunks[1..].iter().zip(&self.blocks).enumerate() {
            let input = if i == 0 {
                chunk.clone()
            } else {
                (chunk + &outputs[i])?
            };
            outputs.push(block.forward(&input)?);
        }
        Tensor::cat(&outputs, 1)
    }
}

/// `SEBlock`: channel gates from the utterance mean.
struct SqueezeExcite {
    conv1: Conv,
    conv2: Conv,
}

impl SqueezeExcite {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = x.mean_keepdim(2)?;
        let s = self.conv1.forward(&s)?.relu()?;
        let gates = candle_nn::ops::sigmoid(&self.conv2.forward(&s)?)?;
        x.broadcast_mul(&gates)
    }
}

/// `SERes2NetBlock`: TDNN → Res2Net → TDNN → SE, plus the (projected) input.
struct SeRes2NetBlock {
    tdnn1: TdnnBlock,
    res2net: Res2Net,
    tdnn2: TdnnBlock,
    se: SqueezeExcite,
    shortcut: Option<Conv>,
}

impl SeRes2NetBlock {
    fn load(
        vb: &VarBuilder,
        cfg: &EcapaConfig,
        inp: usize,
        out: usize,
        kernel: usize,
        dilation: usize,
    ) -> candle_core::Result<Self> {
        let scale = cfg.res2net_scale;
        if scale < 2 || !out.is_multiple_of(scale) {
            candle_core::bail!("{out} channels do not split into {scale} Res2Net chunks");
        }
        let width = out / scale;
        let blocks = (0..scale - 1)
            .map(|j| {
                TdnnBlock::load(
                    &vb.pp(format!("res2net_block.blocks.{j}")),
                    width,
                    width,
                    kernel,
                    dilation,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let shortcut = if inp != out {
            Some(Conv::load(&vb.pp("shortcut.conv"), inp, out, 1, 1)?)
        } else {
            None
        };
        Ok(Self {
            tdnn1: TdnnBlock::load(&vb.pp("tdnn1"), inp, out, 1, 1)?,
            res2net: Res2Net { blocks },
            tdnn2: TdnnBlock::load(&vb.pp("tdnn2"), out, out, 1, 1)?,
            se: SqueezeExcite {
                conv1: Conv::load(&vb.pp("se_block.conv1.conv"), out, cfg.se_channels, 1, 1)?,
                conv2: Conv::load(&vb.pp("se_block.conv2.conv"), cfg.se_channels, out, 1, 1)?,
            },
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let residual = match &self.shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let y = self.tdnn1.forward(x)?;
        let y = self.res2net.forward(&y)?;
        let y = self.tdnn2.forward(&y)?;
        self.se.forward(&y)? + residual
    }
}

/// Mean and standard deviation over frames of `x` `(batch, C, frames)` weighted by `w`
/// (broadcastable to `x`, summing to one over frames): `(batch, C)` each.
fn weighted_stats(x: &Tensor, w: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let mean = x.broadcast_mul(w)?.sum_keepdim(2)?;
    let var = x
        .broadcast_sub(&mean)?
        .sqr()?
        .broadcast_mul(w)?
        .sum_keepdim(2)?;
    Ok((
        mean.squeeze(2)?,
        var.maximum(STATS_EPS)?.sqrt()?.squeeze(2)?,
    ))
}

/// `AttentiveStatisticsPooling`. Its attention TDNN sees `[x; mean; std]` with global
/// context; the mean and std are constant over frames, so their share of that 1×1
/// convolution is computed once per utterance instead of on `3C × frames` copies.
struct AttentivePooling {
    /// `(attention, C)`: the attention TDNN's weights on the frames.
    w_frames: Tensor,
    /// `(attention, 2C)`: its weights on the utterance mean and std (global context only).
    w_context: Option<Tensor>,
    /// `(1, attention, 1)`.
    bias: Tensor,
    norm: BatchNorm,
    conv: Conv,
}

impl AttentivePooling {
    fn load(vb: &VarBuilder, cfg: &EcapaConfig) -> candle_core::Result<Self> {
        let (channels, attention) = (cfg.channels[4], cfg.attention_channels);
        let inp = if cfg.global_context {
            3 * channels
        } else {
            channels
        };
        let tdnn = vb.pp("tdnn");
        let weight = tdnn
            .get((attention, inp, 1), "conv.conv.weight")?
            .squeeze(2)?;
        let w_context = if cfg.global_context {
            Some(weight.narrow(1, channels, 2 * channels)?.contiguous()?)
        } else {
            None
        };
        Ok(Self {
            w_frames: weight.narrow(1, 0, channels)?.contiguous()?,
            w_context,
            bias: tdnn
                .get(attention, "conv.conv.bias")?
                .reshape((1, attention, 1))?,
            norm: BatchNorm::load(&tdnn.pp("norm.norm"), attention)?,
            conv: Conv::load(&vb.pp("conv.conv"), attention, channels, 1, 1)?,
        })
    }

    /// `(batch, C, frames)` → `(batch, 2C)`: attention-weighted mean and standard deviation.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let frames = x.dim(2)?;
        let mut hidden = self
            .w_frames
            .broadcast_matmul(x)?
            .broadcast_add(&self.bias)?;
        if let Some(w_context) = &self.w_context {
            let uniform = Tensor::full(1.0 / frames as f32, (1, 1, frames), x.device())?;
            let (mean, std) = weighted_stats(x, &uniform)?;
            let context = Tensor::cat(&[mean, std], 1)?.unsqueeze(2)?;
            hidden = hidden.broadcast_add(&w_context.broadcast_matmul(&context)?)?;
        }
        let hidden = self.norm.forward(&hidden.relu()?)?;
        let scores = self.conv.forward(&hidden.tanh()?)?;
        let attn = candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?;
        let (mean, std) = weighted_stats(x, &attn)?;
        Tensor::cat(&[mean, std], 1)
    }
}

/// The ECAPA-TDNN encoder with its weights loaded.
pub struct EcapaEncoder {
    config: EcapaConfig,
    layer0: TdnnBlock,
    blocks: Vec<SeRes2NetBlock>,
    mfa: TdnnBlock,
    asp: AttentivePooling,
    asp_bn: BatchNorm,
    fc: Conv,
}

impl EcapaEncoder {
    /// Builds the encoder from weights named as in `embedding_model.ckpt`.
    pub fn new(config: EcapaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let EcapaConfig {
            input_size,
            channels: c,
            kernel_sizes: k,
            dilations: d,
            ..
        } = config;
        let layer0 = TdnnBlock::load(&vb.pp("blocks.0"), input_size, c[0], k[0], d[0])?;
        let blocks = (1..4)
            .map(|i| {
                SeRes2NetBlock::load(
                    &vb.pp(format!("blocks.{i}")),
                    &config,
                    c[i - 1],
                    c[i],
                    k[i],
                    d[i],
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mfa = TdnnBlock::load(&vb.pp("mfa"), c[1] + c[2] + c[3], c[4], k[4], d[4])?;
        let asp = AttentivePooling::load(&vb.pp("asp"), &config)?;
        Ok(Self {
            config,
            layer0,
            blocks,
            mfa,
            asp,
            asp_bn: BatchNorm::load(&vb.pp("asp_bn.norm"), 2 * c[4])?,
            fc: Conv::load(&vb.pp("fc.conv"), 2 * c[4], config.lin_neurons, 1, 1)?,
        })
    }

    /// Loads the encoder from a safetensors buffer (as written from [`convert_checkpoint`])
    /// onto `device`.
    pub fn from_safetensors(
        config: EcapaConfig,
        bytes: &[u8],
        device: &Device,
    ) -> candle_core::Result<Self> {
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?;
        Self::new(config, vb)
    }

    /// Builds the encoder from named tensors, moved onto `device`.
    pub fn from_tensors(
        config: EcapaConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }

    /// The shape this encoder was built with.
    pub fn config(&self) -> &EcapaConfig {
        &self.config
    }

    /// Embedding size.
    pub fn embedding_dim(&self) -> usize {
        self.config.lin_neurons
    }

    /// Embeds `(batch, frames, input_size)` mean-normalised filterbanks into raw
    /// (un-normalised) `(batch, lin_neurons)` embeddings, every frame of every item counted.
    pub fn forward(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, bins) = feats.dims3()?;
        if bins != self.config.input_size {
            candle_core::bail!(
                "features have {bins} bins, the encoder expects {}",
                self.config.input_size
            );
        }
        let x = feats.transpose(1, 2)?.contiguous()?;
        let mut x = self.layer0.forward(&x)?;
        let mut outputs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x)?;
            outputs.push(x.clone());
        }
        let x = self.mfa.forward(&Tensor::cat(&outputs, 1)?)?;
        let pooled = self.asp.forward(&x)?.unsqueeze(2)?;
        let embedding = self.fc.forward(&self.asp_bn.forward(&pooled)?)?;
        embedding.squeeze(2)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn small_config() -> EcapaConfig {
        EcapaConfig {
            input_size: 12,
            channels: [16, 16, 16, 16, 48],
            kernel_sizes: [5, 3, 3, 3, 1],
            dilations: PUBLISHED_DILATIONS,
            attention_channels: 8,
            res2net_scale: 4,
            se_channels: 8,
            lin_neurons: 6,
            global_context: true,
        }
    }

    /// Random weights under the published tensor names for `cfg`.
    fn random_tensors(cfg: &EcapaConfig) -> Vec<(String, Tensor)> {
        let dev = Device::Cpu;
        let mut out = Vec::new();
        let mut conv = |name: &str, o: usize, i: usize, k: usize| {
            out.push((
                format!("{name}.weight"),
                Tensor::randn(0f32, 0.3, (o, i, k), &dev).unwrap(),
            ));
            out.push((
                format!("{name}.bias"),
                Tensor::randn(0f32, 0.1, o, &dev).unwrap(),
            ));
        };
        let c = cfg.channels;
        let w = c[1] / cfg.res2net_scale;
        conv(
            "blocks.0.conv.conv",
            c[0],
            cfg.input_size,
            cfg.kernel_sizes[0],
        );
        for i in 1..4 {
            conv(&format!("blocks.{i}.tdnn1.conv.conv"), c[i], c[i - 1], 1);
            conv(&format!("blocks.{i}.tdnn2.conv.conv"), c[i], c[i], 1);
            for j in 0..cfg.res2net_scale - 1 {
                conv(
                    &format!("blocks.{i}.res2net_block.blocks.{j}.conv.conv"),
                    w,
                    w,
                    cfg.kernel_sizes[i],
                );
            }
            conv(
                &format!("blocks.{i}.se_block.conv1.conv"),
                cfg.se_channels,
                c[i],
                1,
            );
            conv(
                &format!("blocks.{i}.se_block.conv2.conv"),
                c[i],
                cfg.se_channels,
                1,
            );
        }
        conv("mfa.conv.conv", c[4], 3 * c[3], 1);
        let attention_in = if cfg.global_context { 3 * c[4] } else { c[4] };
        conv(
            "asp.tdnn.conv.conv",
            cfg.attention_channels,
            attention_in,
            1,
        );
        conv("asp.conv.conv", c[4], cfg.attention_channels, 1);
        conv("fc.conv", cfg.lin_neurons, 2 * c[4], 1);
        let mut norms: Vec<(String, usize)> = vec![
            ("blocks.0.norm.norm".into(), c[0]),
            ("mfa.norm.norm".into(), c[4]),
            ("asp.tdnn.norm.norm".into(), cfg.attention_channels),
            ("asp_bn.norm".into(), 2 * c[4]),
        ];
        for (i, &ci) in c.iter().enumerate().take(4).skip(1) {
            norms.push((format!("blocks.{i}.tdnn1.norm.norm"), ci));
            norms.push((format!("blocks.{i}.tdnn2.norm.norm"), ci));
            for j in 0..cfg.res2net_scale - 1 {
                norms.push((format!("blocks.{i}.res2net_block.blocks.{j}.norm.norm"), w));
            }
        }
        for (name, n) in norms {
            out.push((
                format!("{name}.weight"),
                Tensor::randn(1f32, 0.1, n, &dev).unwrap(),
            ));
            out.push((
                format!("{name}.bias"),
                Tensor::randn(0f32, 0.1, n, &dev).unwrap(),
            ));
            out.push((
                format!("{name}.running_mean"),
                Tensor::randn(0f32, 0.1, n, &dev).unwrap(),
            ));
            let var = Tensor::randn(0f32, 0.2, n, &dev).unwrap().exp().unwrap();
            out.push((format!("{name}.running_var"), var));
        }
        out
    }

    fn encoder(cfg: EcapaConfig, tensors: &[(String, Tensor)]) -> EcapaEncoder {
        let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
        EcapaEncoder::new(cfg, VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)).unwrap()
    }

    #[test]
    fn shape_is_read_back_from_tensor_shapes() {
        let cfg = small_config();
        assert_eq!(config_from_checkpoint(&random_tensors(&cfg)).unwrap(), cfg);
    }

    #[test]
    fn attention_without_global_context_loads_and_runs() {
        let cfg = EcapaConfig {
            global_context: false,
            ..small_config()
        };
        let tensors = random_tensors(&cfg);
        assert_eq!(config_from_checkpoint(&tensors).unwrap(), cfg);
        let feats = Tensor::randn(0f32, 1.0, (2, 25, cfg.input_size), &Device::Cpu).unwrap();
        let out = encoder(cfg, &tensors).forward(&feats).unwrap();
        assert_eq!(out.dims(), &[2, cfg.lin_neurons]);
        // Weights of a global-context model do not fit a model without it.
        let with_context = random_tensors(&small_config());
        let map: HashMap<String, Tensor> = with_context.into_iter().collect();
        assert!(
            EcapaEncoder::new(cfg, VarBuilder::from_tensors(map, DType::F32, &Device::Cpu))
                .is_err()
        );
    }

    #[test]
    fn reflect_pad_mirrors_without_repeating_the_edge() {
        let x = Tensor::new(&[[[1f32, 2., 3., 4.]]], &Device::Cpu).unwrap();
        let y = reflect_pad(&x, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![3., 2., 1., 2., 3., 4., 3., 2.]);
        assert!(reflect_pad(&x, 4).is_err());
    }

    #[test]
    fn batched_forward_equals_one_item_at_a_time() {
        let cfg = small_config();
        let enc = encoder(cfg, &random_tensors(&cfg));
        let feats = Tensor::randn(0f32, 1.0, (3, 40, cfg.input_size), &Device::Cpu).unwrap();
        let batched = enc.forward(&feats).unwrap();
        assert_eq!(batched.dims(), &[3, cfg.lin_neurons]);
        for b in 0..3 {
            let one = enc.forward(&feats.narrow(0, b, 1).unwrap()).unwrap();
            let diff = crate::encoder::max_abs(&(one - batched.narrow(0, b, 1).unwrap()).unwrap());
            assert!(diff < 1e-4, "item {b}: {diff}");
        }
    }

    #[test]
    fn embedding_depends_on_the_input_and_ignores_nothing() {
        let cfg = small_config();
        let enc = encoder(cfg, &random_tensors(&cfg));
        let a = Tensor::randn(0f32, 1.0, (1, 30, cfg.input_size), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (1, 30, cfg.input_size), &Device::Cpu).unwrap();
        let ea = enc
            .forward(&a)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let eb = enc
            .forward(&b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(ea.iter().all(|v| v.is_finite()));
        assert!(ea.iter().zip(&eb).any(|(x, y)| (x - y).abs() > 1e-3));
    }

    #[test]
    fn wrong_feature_width_and_missing_tensors_are_errors() {
        let cfg = small_config();
        let enc = encoder(cfg, &random_tensors(&cfg));
        let feats = Tensor::zeros((1, 30, cfg.input_size + 1), DType::F32, &Device::Cpu).unwrap();
        assert!(enc.forward(&feats).is_err());
        let mut tensors = random_tensors(&cfg);
        tensors.retain(|(n, _)| n != "fc.conv.bias");
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        assert!(
            EcapaEncoder::new(cfg, VarBuilder::from_tensors(map, DType::F32, &Device::Cpu))
                .is_err()
        );
    }
}
