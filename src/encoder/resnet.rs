//! WeSpeaker's ResNet speaker encoder (`wespeaker/models/resnet.py`, the architecture of
//! `wespeaker-voxceleb-resnet34-LM`) in Candle, for inference.
//!
//! Input `(batch, frames, bins)` is read as a one-channel image `(batch, 1, bins, frames)`:
//! a 3×3 convolution stem of `m` channels, four stages of basic residual blocks (3×3, 3×3,
//! with a 1×1 projection shortcut where the shape changes) of `m`, `2m`, `4m`, `8m` channels,
//! stages 2–4 starting with stride 2 in both axes; then temporal statistics pooling (mean and
//! unbiased standard deviation over frames of every channel × frequency row, `sqrt(var + 1e-7)`)
//! and one linear layer `seg_1` to the embedding. BatchNorm runs in eval mode and is folded
//! into the preceding convolution when the weights are loaded.
//!
//! Tensor names are WeSpeaker's own (`conv1`, `bn1`, `layer{1..4}.{i}.{conv1,bn1,conv2,bn2}`,
//! `layer{2..4}.0.shortcut.{0,1}`, `seg_1`); widths and depths are read from the tensor shapes,
//! so one loader serves the published model and narrower test models.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::conv2d_cpu::{CpuConv, Plane, Scratch};

/// BatchNorm epsilon of PyTorch's `BatchNorm2d` (WeSpeaker keeps the default).
const BN_EPS: f64 = 1e-5;
/// Variance floor inside the square root of WeSpeaker's `TSTP` pooling.
const TSTP_EPS: f64 = 1e-7;
/// Frequency downsampling of stages 2–4 (three stride-2 stages).
const FREQ_DOWNSAMPLING: usize = 8;

/// Shape of a WeSpeaker ResNet with basic blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Filterbank bins per frame (a multiple of 8).
    pub feat_dim: usize,
    /// Channels of the stem and the first stage (`m_channels`); stages double it.
    pub m_channels: usize,
    /// Residual blocks in each of the four stages.
    pub num_blocks: [usize; 4],
    /// Length of the embedding.
    pub embed_dim: usize,
}

impl ResNetConfig {
    /// `ResNet34` as published in `wespeaker-voxceleb-resnet34-LM`: 80 bins, 32 channels,
    /// blocks 3-4-6-3, 256-dimensional embeddings.
    pub const WESPEAKER_RESNET34: Self = Self {
        feat_dim: 80,
        m_channels: 32,
        num_blocks: [3, 4, 6, 3],
        embed_dim: 256,
    };

    /// Inputs of `seg_1`: mean and standard deviation of every channel × frequency row.
    fn pooled_dim(&self) -> usize {
        2 * (self.feat_dim / FREQ_DOWNSAMPLING) * self.m_channels * FREQ_DOWNSAMPLING
    }
}

/// A convolution with its BatchNorm folded in: `conv(x, weight) + bias`.
struct ConvBn {
    weight: Tensor,
    /// `(1, channels, 1, 1)`.
    bias: Tensor,
    stride: usize,
    padding: usize,
    /// The same weights for the CPU path (when the weights are on the CPU).
    cpu: Option<CpuConv>,
}

impl ConvBn {
    /// Loads convolution `conv` (no bias) and BatchNorm `bn` of `vb`, checking the shapes.
    fn load(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        shape: (usize, usize, usize),
        stride: usize,
    ) -> candle_core::Result<Self> {
        let (c_out, c_in, k) = shape;
        let (conv, bn) = (vb.pp(conv), vb.pp(bn));
        let weight = conv.get((c_out, c_in, k, k), "weight")?;
        let gamma = bn.get(c_out, "weight")?;
        let beta = bn.get(c_out, "bias")?;
        let mean = bn.get(c_out, "running_mean")?;
        let var = bn.get(c_out, "running_var")?;
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let bias = (beta - (mean * &scale)?)?;
        let weight = weight.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        let cpu = if weight.device().is_cpu() {
            Some(CpuConv::new(
                weight.flatten_all()?.to_vec1()?,
                bias.to_vec1()?,
                (c_out, c_in, k),
                (stride, stride),
            ))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, c_out, 1, 1))?,
            stride,
            padding: k / 2,
            cpu,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)
    }
}

/// `BasicBlock`: two 3×3 convolutions and a residual connection.
struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    /// 1×1 projection where the stride or width changes.
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let out = self.conv1.forward(x)?.relu()?;
        let out = self.conv2.forward(&out)?;
        let residual = match &self.shortcut {
            Some(shortcut) => shortcut.forward(x)?,
            None => x.clone(),
        };
        (out + residual)?.relu()
    }
}

/// The ResNet encoder with loaded weights.
pub struct ResNetEncoder {
    config: ResNetConfig,
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    /// `seg_1.weight` transposed: `(pooled_dim, embed_dim)`.
    seg_weight_t: Tensor,
    seg_bias: Tensor,
}

impl ResNetEncoder {
    /// Builds the encoder of shape `cfg` from safetensors bytes holding WeSpeaker's tensor
    /// names (as written from [`convert_checkpoint`]); every tensor must be present with the
    /// shape `cfg` implies.
    pub fn from_safetensors(
        cfg: ResNetConfig,
        bytes: &[u8],
        device: &Device,
    ) -> candle_core::Result<Self> {
        Self::new(
            cfg,
            VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?,
        )
    }

    /// Builds the encoder of shape `cfg` from weights named as WeSpeaker names them; every
    /// tensor must have the shape `cfg` implies.
    pub fn new(cfg: ResNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        if cfg.feat_dim == 0
            || !cfg.feat_dim.is_multiple_of(FREQ_DOWNSAMPLING)
            || cfg.m_channels == 0
        {
            candle_core::bail!(
                "ResNet feat_dim {} must be a positive multiple of {FREQ_DOWNSAMPLING} and m_channels {} positive",
                cfg.feat_dim,
                cfg.m_channels
            );
        }
        let m = cfg.m_channels;
        let stem = ConvBn::load(&vb, "conv1", "bn1", (m, 1, 3), 1)?;
        let mut blocks = Vec::new();
        let mut in_planes = m;
        for (stage, &count) in cfg.num_blocks.iter().enumerate() {
            let planes = m << stage;
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{i}", stage + 1);
                let conv1 = ConvBn::load(
                    &vb,
                    &format!("{prefix}.conv1"),
                    &format!("{prefix}.bn1"),
                    (planes, in_planes, 3),
                    stride,
                )?;
                let conv2 = ConvBn::load(
                    &vb,
                    &format!("{prefix}.conv2"),
                    &format!("{prefix}.bn2"),
                    (planes, planes, 3),
                    1,
                )?;
                let shortcut = if stride != 1 || in_planes != planes {
                    Some(ConvBn::load(
                        &vb,
                        &format!("{prefix}.shortcut.0"),
                        &format!("{prefix}.shortcut.1"),
                        (planes, in_planes, 1),
                        stride,
                    )?)
                } else {
                    None
                };
                blocks.push(BasicBlock {
                    conv1,
                    conv2,
                    shortcut,
                });
                in_planes = planes;
            }
        }
        let seg_weight = vb.get((cfg.embed_dim, cfg.pooled_dim()), "seg_1.weight")?;
        let seg_bias = vb.get(cfg.embed_dim, "seg_1.bias")?;
        Ok(Self {
            config: cfg,
            stem,
            blocks,
            seg_weight_t: seg_weight.t()?.contiguous()?,
            seg_bias,
        })
    }

    /// Raw (not normalised) embeddings `(batch, embed_dim)` of mean-normalised features
    /// `(batch, frames, bins)`, f32. Needs at least 9 frames (2 after the strided stages, for
    /// the standard deviation).
    pub fn forward(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        let (_, frames, bins) = feats.dims3()?;
        if bins != self.config.feat_dim {
            candle_core::bail!(
                "ResNet expects {} bins per frame, got {bins}",
                self.config.feat_dim
            );
        }
        if frames < 9 {
            candle_core::bail!("ResNet needs at least 9 frames, got {frames}");
        }
        if feats.device().is_cpu() && self.stem.cpu.is_some() {
            return self.forward_cpu(feats);
        }
        self.forward_tensor_ops(feats)
    }

    /// [`Self::forward`] with Candle's tensor operations (any device).
    fn forward_tensor_ops(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        // (B, T, F) -> (B, 1, F, T)
        let x = feats
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .unsqueeze(1)?
            .contiguous()?;
        let mut x = self.stem.forward(&x)?.relu()?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let stats = temporal_statistics(&x)?;
        stats
            .matmul(&self.seg_weight_t)?
            .broadcast_add(&self.seg_bias)
    }

    /// [`Self::forward`] on the CPU: each convolution as im2col and one matrix product into
    /// an output already holding the bias (and the residual), ReLU in place; one item at a time.
    fn forward_cpu(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, frames, bins) = feats.dims3()?;
        let feats: Vec<f32> = feats.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let seg_weight_t: Vec<f32> = self.seg_weight_t.flatten_all()?.to_vec1()?;
        let seg_bias: Vec<f32> = self.seg_bias.to_vec1()?;
        let mut scratch = Scratch::default();
        let mut out = Vec::with_capacity(batch * self.config.embed_dim);
        for item in feats.chunks_exact(frames * bins) {
            // (T, F) -> one (F, T) plane.
            let mut plane = vec![0f32; frames * bins];
            for (t, row) in item.chunks_exact(bins).enumerate() {
                for (f, &v) in row.iter().enumerate() {
                    plane[f * frames + t] = v;
                }
            }
            let mut x = cpu(&self.stem).run(&Plane::new(plane, bins, frames), None, &mut scratch);
            for block in &self.blocks {
                let hidden = cpu(&block.conv1).run(&x, None, &mut scratch);
                let residual = match &block.shortcut {
                    Some(shortcut) => cpu(shortcut).run_linear(&x, &mut scratch),
                    None => x,
                };
                x = cpu(&block.conv2).run(&hidden, Some(residual.data), &mut scratch);
            }
            let stats = temporal_statistics_cpu(&x);
            let embedding = out.len();
            out.extend_from_slice(&seg_bias);
            for (s, w) in stats
                .iter()
                .zip(seg_weight_t.chunks_exact(self.config.embed_dim))
            {
                for (o, &w) in out[embedding..].iter_mut().zip(w) {
                    *o += s * w;
                }
            }
        }
        Tensor::from_vec(out, (batch, self.config.embed_dim), &Device::Cpu)
    }

    /// Length of the embeddings.
    pub fn embedding_dim(&self) -> usize {
        self.config.embed_dim
    }

    /// The shape the encoder was built with.
    pub fn config(&self) -> ResNetConfig {
        self.config
    }
}

/// WeSpeaker's `TSTP`: over the last (time) axis of `(B, C, F, T)`, the mean and
/// `sqrt(unbiased variance + 1e-7)` of every `(C, F)` row, flattened channel-major and
/// concatenated: `(B, 2·C·F)`.
fn temporal_statistics(x: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, _, _, frames) = x.dims4()?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = (centred.sqr()?.sum(D::Minus1)? / (frames as f64 - 1.0))?;
    let std = (var + TSTP_EPS)?.sqrt()?;
    Tensor::cat(
        &[&mean.reshape((batch, ()))?, &std.reshape((batch, ()))?],
        1,
    )
}

/// Reads a WeSpeaker checkpoint (`avg_model.pt`: a `torch.save`'d state dict, or a dict with
/// the state dict under `state_dict`, as WeSpeaker's `load_checkpoint` accepts) and returns the
/// inference tensors under their published names, f32, sorted by name: everything but the
/// training head (`projection.*`) and BatchNorm's `num_batches_tracked`. Fails on tensors of
/// other architectures or variants (e.g. `two_emb_layer`) and on shapes that are not a ResNet.
pub fn convert_checkpoint(checkpoint: &Path) -> Result<Vec<(String, Tensor)>, candle_core::Error> {
    let mut tensors = candle_core::pickle::read_all(checkpoint)?;
    if tensors.is_empty() {
        tensors = candle_core::pickle::read_all_with_key(checkpoint, Some("state_dict"))?;
    }
    if tensors.is_empty() {
        candle_core::bail!("{} holds no tensors", checkpoint.display());
    }
    let mut kept = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        if name.starts_with("projection.") || name.ends_with(".num_batches_tracked") {
            continue;
        }
        let known = [
            "conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "seg_1.",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if !known {
            candle_core::bail!(
                "{}: tensor {name} is not part of a WeSpeaker ResNet with one embedding layer",
                checkpoint.display()
            );
        }
        kept.push((name, tensor.to_dtype(DType::F32)?));
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    config_from_checkpoint(&kept)?;
    Ok(kept)
}

/// The shape of the ResNet that `tensors` (WeSpeaker's names) belong to: `m_channels` from the
/// stem, the blocks per stage from the layer indices, the embedding size and `feat_dim` from
/// `seg_1`. Checks every tensor the shape implies.
pub fn config_from_checkpoint(tensors: &[(String, Tensor)]) -> candle_core::Result<ResNetConfig> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    let dims = |name: &str| {
        map.get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| candle_core::Error::Msg(format!("ResNet weights lack tensor {name}")))
    };
    let m_channels = dims("conv1.weight")?[0];
    let mut num_blocks = [0usize; 4];
    for (stage, count) in num_blocks.iter_mut().enumerate() {
        while map.contains_key(&format!("layer{}.{}.conv1.weight", stage + 1, *count)) {
            *count += 1;
        }
    }
    let seg = dims("seg_1.weight")?;
    let [embed_dim, pooled] = seg[..] else {
        candle_core::bail!("seg_1.weight has shape {seg:?}, expected two dimensions");
    };
    let per_row = 2 * m_channels * FREQ_DOWNSAMPLING;
    if m_channels == 0 || pooled % per_row != 0 {
        candle_core::bail!(
            "seg_1 takes {pooled} inputs, not a multiple of 2 × 8 × m_channels ({m_channels})"
        );
    }
    let config = ResNetConfig {
        feat_dim: pooled / per_row * FREQ_DOWNSAMPLING,
        m_channels,
        num_blocks,
        embed_dim,
    };
    let expected = tensor_names(config);
    let extra: Vec<&str> = tensors
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !expected.iter().any(|e| e == name))
        .collect();
    if !extra.is_empty() {
        candle_core::bail!("tensors that a ResNet of shape {config:?} does not use: {extra:?}");
    }
    ResNetEncoder::new(
        config,
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu),
    )?;
    Ok(config)
}

/// `TSTP` of one item on the CPU: per `(channel, row)` of `x` the mean over the width (time),
/// then `sqrt(unbiased variance + 1e-7)`, channel-major; accumulated in f64.
fn temporal_statistics_cpu(x: &Plane) -> Vec<f32> {
    let rows = x.data.len() / x.width;
    let mut stats = vec![0f32; 2 * rows];
    for (r, row) in x.data.chunks_exact(x.width).enumerate() {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        stats[r] = mean as f32;
        stats[rows + r] = ((var as f32) + TSTP_EPS as f32).sqrt();
    }
    stats
}

/// The CPU copy of a convolution's weights (present when `forward_cpu` is called).
fn cpu(conv: &ConvBn) -> &CpuConv {
    conv.cpu
        .as_ref()
        .expect("weights on the CPU have a CPU copy")
}

/// Every tensor name of a ResNet of shape `cfg`, as WeSpeaker names them.
fn tensor_names(cfg: ResNetConfig) -> Vec<String> {
    let conv_bn = |conv: &str, bn: &str| {
        [
            format!("{conv}.weight"),
            format!("{bn}.weight"),
            format!("{bn}.bias"),
            format!("{bn}.running_mean"),
            format!("{bn}.running_var"),
        ]
    };
    let mut names: Vec<String> = conv_bn("conv1", "bn1").into();
    let mut in_planes = cfg.m_channels;
    for (stage, &count) in cfg.num_blocks.iter().enumerate() {
        let planes = cfg.m_channels << stage;
        for i in 0..count {
            let p = format!("layer{}.{i}", stage + 1);
            names.extend(conv_bn(&format!("{p}.conv1"), &format!("{p}.bn1")));
            names.extend(conv_bn(&format!("{p}.conv2"), &format!("{p}.bn2")));
            if i == 0 && (stage > 0 || in_planes != planes) {
                names.extend(conv_bn(
                    &format!("{p}.shortcut.0"),
                    &format!("{p}.shortcut.1"),
                ));
            }
            in_planes = planes;
        }
    }
    names.extend(["seg_1.weight".to_string(), "seg_1.bias".to_string()]);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU var builder over a copy of `map`.
    fn vb(map: &HashMap<String, Tensor>) -> VarBuilder<'static> {
        VarBuilder::from_tensors(map.clone(), DType::F32, &Device::Cpu)
    }

    /// Random WeSpeaker-named tensors for a ResNet of shape `cfg`.
    fn random_tensors(cfg: ResNetConfig) -> Vec<(String, Tensor)> {
        let dev = Device::Cpu;
        let mut out = Vec::new();
        let mut conv_bn = |conv: String, bn: String, shape: (usize, usize, usize)| {
            let (o, i, k) = shape;
            out.push((
                format!("{conv}.weight"),
                Tensor::randn(0f32, 0.2, (o, i, k, k), &dev).unwrap(),
            ));
            out.push((
                format!("{bn}.weight"),
                Tensor::rand(0.5f32, 1.5, o, &dev).unwrap(),
            ));
            out.push((
                format!("{bn}.bias"),
                Tensor::randn(0f32, 0.1, o, &dev).unwrap(),
            ));
            out.push((
                format!("{bn}.running_mean"),
                Tensor::randn(0f32, 0.1, o, &dev).unwrap(),
            ));
            out.push((
                format!("{bn}.running_var"),
                Tensor::rand(0.5f32, 2.0, o, &dev).unwrap(),
            ));
        };
        let m = cfg.m_channels;
        conv_bn("conv1".into(), "bn1".into(), (m, 1, 3));
        let mut in_planes = m;
        for (stage, &count) in cfg.num_blocks.iter().enumerate() {
            let planes = m << stage;
            for i in 0..count {
                let p = format!("layer{}.{i}", stage + 1);
                conv_bn(
                    format!("{p}.conv1"),
                    format!("{p}.bn1"),
                    (planes, in_planes, 3),
                );
                conv_bn(
                    format!("{p}.conv2"),
                    format!("{p}.bn2"),
                    (planes, planes, 3),
                );
                if i == 0 && (stage > 0 || in_planes != planes) {
                    conv_bn(
                        format!("{p}.shortcut.0"),
                        format!("{p}.shortcut.1"),
                        (planes, in_planes, 1),
                    );
                }
                in_planes = planes;
            }
        }
        out.push((
            "seg_1.weight".into(),
            Tensor::randn(0f32, 0.1, (cfg.embed_dim, cfg.pooled_dim()), &dev).unwrap(),
        ));
        out.push((
            "seg_1.bias".into(),
            Tensor::randn(0f32, 0.1, cfg.embed_dim, &dev).unwrap(),
        ));
        out
    }

    const SMALL: ResNetConfig = ResNetConfig {
        feat_dim: 16,
        m_channels: 2,
        num_blocks: [1, 2, 1, 1],
        embed_dim: 6,
    };

    #[test]
    fn the_shape_is_read_back_from_the_tensors() {
        assert_eq!(
            config_from_checkpoint(&random_tensors(SMALL)).unwrap(),
            SMALL
        );
        let published = ResNetConfig::WESPEAKER_RESNET34;
        assert_eq!(published.pooled_dim(), 5120);
        assert_eq!(
            config_from_checkpoint(&random_tensors(published)).unwrap(),
            published
        );
    }

    #[test]
    fn missing_wrong_or_extra_tensors_are_refused() {
        let tensors = random_tensors(SMALL);
        let without: Vec<_> = tensors
            .iter()
            .filter(|(n, _)| n != "layer2.0.shortcut.1.running_var")
            .cloned()
            .collect();
        let err = config_from_checkpoint(&without).unwrap_err().to_string();
        assert!(err.contains("layer2.0.shortcut.1.running_var"), "{err}");
        let mut extra = tensors.clone();
        extra.push((
            "seg_2.weight".into(),
            Tensor::zeros((6, 6), DType::F32, &Device::Cpu).unwrap(),
        ));
        assert!(config_from_checkpoint(&extra).is_err());
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut wider = SMALL;
        wider.m_channels = 4;
        assert!(ResNetEncoder::new(wider, vb(&map)).is_err());
    }

    #[test]
    fn forward_gives_one_embedding_per_item_and_pools_over_time() {
        let map: HashMap<String, Tensor> = random_tensors(SMALL).into_iter().collect();
        let encoder = ResNetEncoder::new(SMALL, vb(&map)).unwrap();
        assert_eq!(encoder.embedding_dim(), 6);
        let feats = Tensor::randn(0f32, 1.0, (3, 40, 16), &Device::Cpu).unwrap();
        let out = encoder.forward(&feats).unwrap();
        assert_eq!(out.dims(), &[3, 6]);
        // Items are independent: the second alone gives the second row.
        let single = encoder.forward(&feats.narrow(0, 1, 1).unwrap()).unwrap();
        let diff = crate::encoder::max_abs(&(out.narrow(0, 1, 1).unwrap() - single).unwrap());
        assert!(diff < 1e-5, "{diff}");
        // Wrong bins and too few frames are errors, not panics.
        assert!(encoder
            .forward(&Tensor::zeros((1, 40, 15), DType::F32, &Device::Cpu).unwrap())
            .is_err());
        assert!(encoder
            .forward(&Tensor::zeros((1, 8, 16), DType::F32, &Device::Cpu).unwrap())
            .is_err());
    }

    #[test]
    fn cpu_path_and_tensor_ops_agree() {
        let map: HashMap<String, Tensor> = random_tensors(SMALL).into_iter().collect();
        let encoder = ResNetEncoder::new(SMALL, vb(&map)).unwrap();
        for frames in [9, 10, 37] {
            let feats = Tensor::randn(0f32, 1.0, (2, frames, 16), &Device::Cpu).unwrap();
            let cpu = encoder.forward_cpu(&feats).unwrap();
            let ops = encoder.forward_tensor_ops(&feats).unwrap();
            let scale = crate::encoder::max_abs(&ops);
            let diff = crate::encoder::max_abs(&(cpu - ops).unwrap());
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{frames} frames: {diff} of {scale}"
            );
        }
    }

    #[test]
    fn folded_batchnorm_matches_conv_then_batchnorm() {
        let dev = Device::Cpu;
        let tensors = random_tensors(SMALL);
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        let folded = ConvBn::load(&vb(&map), "conv1", "bn1", (2, 1, 3), 1).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 1, 16, 20), &dev).unwrap();
        let conv = x.conv2d(&map["conv1.weight"], 1, 1, 1, 1).unwrap();
        let c = |n: &str| map[n].reshape((1, 2, 1, 1)).unwrap();
        let reference = conv
            .broadcast_sub(&c("bn1.running_mean"))
            .unwrap()
            .broadcast_div(&(c("bn1.running_var") + BN_EPS).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&c("bn1.weight"))
            .unwrap()
            .broadcast_add(&c("bn1.bias"))
            .unwrap();
        let diff = crate::encoder::max_abs(&(folded.forward(&x).unwrap() - reference).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn statistics_pooling_uses_the_unbiased_deviation() {
        // One channel, one frequency row, frames 1, 2, 3, 6: mean 3, unbiased variance 14/3.
        let x = Tensor::new(&[1f32, 2., 3., 6.], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let stats: Vec<f32> = temporal_statistics(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((stats[0] - 3.0).abs() < 1e-6);
        assert!(
            (stats[1] - (14.0f32 / 3.0 + 1e-7).sqrt()).abs() < 1e-6,
            "{stats:?}"
        );
    }
}
