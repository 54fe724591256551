//! CAM++ (Wang et al. 2023) as 3D-Speaker implements it in `speakerlab/models/campplus`
//! (`DTDNN.py`, `layers.py`) and publishes it as `speech_campplus_sv_zh_en_16k-common_advanced`:
//! a 2-D convolutional front module (FCM: a small ResNet over frequency × time that halves the
//! frequency axis three times), a strided TDNN layer, three densely connected TDNN blocks whose
//! layers are context-aware masked (CAM) convolutions, transit layers that halve the width,
//! statistics pooling and a dense layer to the embedding.
//!
//! 3D-Speaker details kept here:
//! - `get_nonlinear("batchnorm-relu")` is BatchNorm then ReLU; the last dense layer's
//!   `"batchnorm_"` is a BatchNorm without scale and shift, and no ReLU. BatchNorm runs in eval
//!   mode (running statistics, eps 1e-5) and is folded into the convolution before it where
//!   there is one.
//! - The FCM strides only along frequency (`stride=(2, 1)`); the TDNN layer strides 2 along
//!   time with padding `(kernel - 1) / 2`.
//! - A CAM layer's mask comes from the utterance mean plus the mean of its 100-frame segment
//!   (`avg_pool1d(ceil_mode=True)`: the last, shorter segment averages the frames it has),
//!   through a 1×1 bottleneck (ReLU) and a 1×1 convolution (sigmoid). The mask is constant
//!   inside a segment, so it is computed once per segment.
//! - Statistics pooling: mean and unbiased standard deviation over time.
//!
//! Tensor names are the checkpoint's (`head.layer1.0.conv1.weight`,
//! `xvector.block2.tdnnd7.cam_layer.linear_local.weight`, `xvector.dense.linear.weight`, …); the
//! shape comes from the model card and every tensor is checked against it, extra ones refused.
//! On the CPU the encoder runs its own kernels ([`cpu`]); elsewhere Candle's tensor operations.

mod cpu;

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// BatchNorm epsilon (PyTorch's default).
const BN_EPS: f64 = 1e-5;

/// Shape of a CAM++ encoder: `CAMPPlus`'s constructor arguments and the fixed choices of its
/// layers, as the model card states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamppConfig {
    /// Filterbank bins per input frame (divisible by 8).
    pub feat_dim: usize,
    /// Channels of the FCM head.
    pub m_channels: usize,
    /// Residual blocks in the FCM's two stages.
    pub head_blocks: [usize; 2],
    /// Output channels of the first TDNN layer.
    pub init_channels: usize,
    /// Kernel of the first TDNN layer.
    pub tdnn_kernel: usize,
    /// Time stride of the first TDNN layer.
    pub tdnn_stride: usize,
    /// Channels each dense layer adds.
    pub growth_rate: usize,
    /// Bottleneck channels of a dense layer, as a multiple of `growth_rate`.
    pub bn_size: usize,
    /// Layers of the three dense blocks.
    pub block_layers: [usize; 3],
    /// Kernel of the CAM convolutions of each block.
    pub block_kernels: [usize; 3],
    /// Dilation of the CAM convolutions of each block.
    pub block_dilations: [usize; 3],
    /// Bottleneck reduction of the CAM context.
    pub context_reduction: usize,
    /// Frames per segment of the CAM context's segment pooling.
    pub segment_frames: usize,
    /// Embedding size.
    pub embedding_size: usize,
}

impl CamppConfig {
    /// Channels the FCM gives the TDNN layer: `m_channels × feat_dim / 8`.
    fn head_out(&self) -> usize {
        self.m_channels * (self.feat_dim / 8)
    }

    /// Bottleneck channels of the dense layers.
    fn bn_channels(&self) -> usize {
        self.bn_size * self.growth_rate
    }

    /// Checks what the tensors cannot: sizes that must divide or be odd.
    fn check(&self) -> candle_core::Result<()> {
        let odd = |k: usize| k % 2 == 1;
        if self.feat_dim == 0 || !self.feat_dim.is_multiple_of(8) {
            candle_core::bail!("CAM++ needs feat_dim divisible by 8, got {}", self.feat_dim);
        }
        if !odd(self.tdnn_kernel) || !self.block_kernels.iter().copied().all(odd) {
            candle_core::bail!("CAM++ kernels must be odd");
        }
        if self.tdnn_stride == 0 || self.segment_frames == 0 || self.context_reduction == 0 {
            candle_core::bail!(
                "tdnn_stride, segment_frames and context_reduction must be positive"
            );
        }
        Ok(())
    }

    /// Frames after the strided TDNN layer, for `frames` input frames.
    fn tdnn_frames(&self, frames: usize) -> usize {
        let pad = self.tdnn_kernel / 2;
        (frames + 2 * pad).saturating_sub(self.tdnn_kernel) / self.tdnn_stride + 1
    }
}

/// A folded BatchNorm: `x · scale + shift` per channel.
#[derive(Clone)]
struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Affine {
    /// Eval-mode BatchNorm from `vb` (`weight`, `bias`, `running_mean`, `running_var`; scale
    /// and shift of 1 and 0 when `affine` is false).
    fn load(vb: &VarBuilder, channels: usize, affine: bool) -> candle_core::Result<Self> {
        let mean: Vec<f32> = vb.get(channels, "running_mean")?.to_vec1()?;
        let var: Vec<f32> = vb.get(channels, "running_var")?.to_vec1()?;
        let (gamma, beta): (Vec<f32>, Vec<f32>) = if affine {
            (
                vb.get(channels, "weight")?.to_vec1()?,
                vb.get(channels, "bias")?.to_vec1()?,
            )
        } else {
            (vec![1.0; channels], vec![0.0; channels])
        };
        let mut scale = Vec::with_capacity(channels);
        let mut shift = Vec::with_capacity(channels);
        for c in 0..channels {
            let s = f64::from(gamma[c]) / (f64::from(var[c]) + BN_EPS).sqrt();
            scale.push(s as f32);
            shift.push((f64::from(beta[c]) - f64::from(mean[c]) * s) as f32);
        }
        Ok(Self { scale, shift })
    }

    /// `(1, C, 1)` scale and shift tensors on `device`.
    fn tensors(&self, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let c = self.scale.len();
        Ok((
            Tensor::from_slice(&self.scale, (1, c, 1), device)?,
            Tensor::from_slice(&self.shift, (1, c, 1), device)?,
        ))
    }
}

/// A convolution `(out, in, k…)` with a BatchNorm after it folded in: weight rows scaled, and
/// the shift as bias.
fn fold(weight: &Tensor, bn: &Affine) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let out = weight.dim(0)?;
    let per_row = weight.elem_count() / out;
    let mut w: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    for (row, &s) in w.chunks_exact_mut(per_row).zip(&bn.scale) {
        for v in row {
            *v *= s;
        }
    }
    Ok((w, bn.shift.clone()))
}

/// A 2-D convolution (no bias, padding `k / 2`) with its BatchNorm folded, as the host values
/// the CPU path uses and the tensors the others use.
struct Conv2dBn {
    /// `(out, in, k, k)` folded.
    weight: Tensor,
    /// `(1, out, 1, 1)`.
    bias: Tensor,
    host: (Vec<f32>, Vec<f32>),
    shape: (usize, usize, usize),
    /// Stride along frequency (time is never strided in the FCM).
    stride: usize,
}

impl Conv2dBn {
    fn load(
        conv: &VarBuilder,
        bn: &VarBuilder,
        (c_out, c_in, k): (usize, usize, usize),
        stride: usize,
    ) -> candle_core::Result<Self> {
        let raw = conv.get((c_out, c_in, k, k), "weight")?;
        let host = fold(&raw, &Affine::load(bn, c_out, true)?)?;
        let device = raw.device();
        Ok(Self {
            weight: Tensor::from_slice(&host.0, (c_out, c_in, k, k), device)?,
            bias: Tensor::from_slice(&host.1, (1, c_out, 1, 1), device)?,
            host,
            shape: (c_out, c_in, k),
            stride,
        })
    }

    /// `(B, C, F, T)` → `(B, out, F / stride, T)` with tensor operations: a stride-1
    /// convolution whose every `stride`-th frequency row is kept (Candle's `conv2d` strides
    /// both axes alike).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x
            .conv2d(&self.weight, self.shape.2 / 2, 1, 1, 1)?
            .broadcast_add(&self.bias)?;
        if self.stride == 1 {
            return Ok(y);
        }
        let rows: Vec<u32> = (0..y.dim(2)? as u32).step_by(self.stride).collect();
        let rows = Tensor::from_vec(rows.clone(), rows.len(), y.device())?;
        y.index_select(&rows, 2)
    }
}

/// FCM's `BasicResBlock`.
struct ResBlock {
    conv1: Conv2dBn,
    conv2: Conv2dBn,
    /// 1×1 projection when the block strides.
    shortcut: Option<Conv2dBn>,
}

impl ResBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let out = self.conv1.forward(x)?.relu()?;
        let out = self.conv2.forward(&out)?;
        let residual = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (out + residual)?.relu()
    }
}

/// A 1-D convolution `(out, in, k)` as host values (row-major) and a tensor.
struct Conv1d {
    weight: Tensor,
    host: Vec<f32>,
    bias: Option<(Tensor, Vec<f32>)>,
    shape: (usize, usize, usize),
}

impl Conv1d {
    fn new(
        host: Vec<f32>,
        bias: Option<Vec<f32>>,
        shape: (usize, usize, usize),
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (out, _, _) = shape;
        let bias = bias
            .map(|b| Ok::<_, candle_core::Error>((Tensor::from_slice(&b, (1, out, 1), device)?, b)))
            .transpose()?;
        Ok(Self {
            weight: Tensor::from_slice(&host, shape, device)?,
            host,
            bias,
            shape,
        })
    }

    /// A convolution from `vb` (`weight`, and `bias` when `with_bias`), no BatchNorm.
    fn load(
        vb: &VarBuilder,
        shape: (usize, usize, usize),
        with_bias: bool,
    ) -> candle_core::Result<Self> {
        let weight = vb.get(shape, "weight")?;
        let bias = if with_bias {
            Some(vb.get(shape.0, "bias")?.to_vec1()?)
        } else {
            None
        };
        Self::new(
            weight.flatten_all()?.to_vec1()?,
            bias,
            shape,
            weight.device(),
        )
    }

    /// A convolution from `vb` with the BatchNorm `bn` after it folded in.
    fn load_folded(
        vb: &VarBuilder,
        bn: &Affine,
        shape: (usize, usize, usize),
    ) -> candle_core::Result<Self> {
        let weight = vb.get(shape, "weight")?;
        let (w, b) = fold(&weight, bn)?;
        Self::new(w, Some(b), shape, weight.device())
    }

    /// `(B, in, T)` → `(B, out, T')` with padding `dilation · (k - 1) / 2`.
    fn forward(&self, x: &Tensor, stride: usize, dilation: usize) -> candle_core::Result<Tensor> {
        let (_, _, k) = self.shape;
        let y = if k == 1 && stride == 1 {
            self.weight.squeeze(2)?.broadcast_matmul(x)?
        } else {
            x.conv1d(&self.weight, dilation * (k - 1) / 2, stride, dilation, 1)?
        };
        match &self.bias {
            Some((b, _)) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// BatchNorm then ReLU (`"batchnorm-relu"` before a convolution), folded to scale and shift.
struct BnRelu {
    affine: Affine,
    scale: Tensor,
    shift: Tensor,
}

impl BnRelu {
    fn load(vb: &VarBuilder, channels: usize, device: &Device) -> candle_core::Result<Self> {
        let affine = Affine::load(&vb.pp("batchnorm"), channels, true)?;
        let (scale, shift) = affine.tensors(device)?;
        Ok(Self {
            affine,
            scale,
            shift,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)?
            .relu()
    }
}

/// One `CAMDenseTDNNLayer`: BatchNorm-ReLU, 1×1 bottleneck (BatchNorm folded) and ReLU, then
/// the CAM layer; its output is appended to the block's input.
struct DenseLayer {
    input_norm: BnRelu,
    bottleneck: Conv1d,
    local: Conv1d,
    context1: Conv1d,
    context2: Conv1d,
    dilation: usize,
}

impl DenseLayer {
    fn load(
        vb: &VarBuilder,
        cfg: &CamppConfig,
        in_channels: usize,
        kernel: usize,
        dilation: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let bn = cfg.bn_channels();
        let reduced = bn / cfg.context_reduction;
        let cam = vb.pp("cam_layer");
        let norm2 = Affine::load(&vb.pp("nonlinear2.batchnorm"), bn, true)?;
        Ok(Self {
            input_norm: BnRelu::load(&vb.pp("nonlinear1"), in_channels, device)?,
            bottleneck: Conv1d::load_folded(&vb.pp("linear1"), &norm2, (bn, in_channels, 1))?,
            local: Conv1d::load(
                &cam.pp("linear_local"),
                (cfg.growth_rate, bn, kernel),
                false,
            )?,
            context1: Conv1d::load(&cam.pp("linear1"), (reduced, bn, 1), true)?,
            context2: Conv1d::load(&cam.pp("linear2"), (cfg.growth_rate, reduced, 1), true)?,
            dilation,
        })
    }

    /// `(B, C, T)` → the `(B, growth_rate, T)` this layer adds.
    fn forward(&self, x: &Tensor, segment: usize) -> candle_core::Result<Tensor> {
        let h = self
            .bottleneck
            .forward(&self.input_norm.forward(x)?, 1, 1)?
            .relu()?;
        let y = self.local.forward(&h, 1, self.dilation)?;
        let frames = h.dim(2)?;
        let mean = h.mean_keepdim(2)?;
        let segments = frames.div_ceil(segment);
        let pooled = (0..segments)
            .map(|s| {
                let start = s * segment;
                h.narrow(2, start, segment.min(frames - start))?
                    .mean_keepdim(2)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let context = Tensor::cat(&pooled, 2)?.broadcast_add(&mean)?;
        let hidden = self.context1.forward(&context, 1, 1)?.relu()?;
        let mask = candle_nn::ops::sigmoid(&self.context2.forward(&hidden, 1, 1)?)?;
        let at: Vec<u32> = (0..frames).map(|t| (t / segment) as u32).collect();
        let at = Tensor::from_vec(at, frames, x.device())?;
        y.mul(&mask.index_select(&at, 2)?)
    }
}

/// A `TransitLayer`: BatchNorm-ReLU then a 1×1 convolution without bias.
struct Transit {
    norm: BnRelu,
    conv: Conv1d,
}

/// The CAM++ encoder with its weights loaded.
pub struct CamppEncoder {
    config: CamppConfig,
    stem: Conv2dBn,
    head_blocks: Vec<ResBlock>,
    head_out: Conv2dBn,
    tdnn: Conv1d,
    blocks: Vec<(Vec<DenseLayer>, Transit)>,
    out_norm: BnRelu,
    dense: Conv1d,
    /// The weights laid out for the CPU path.
    cpu: cpu::CpuModel,
    device: Device,
}

impl CamppEncoder {
    /// Builds the encoder from weights named as in the 3D-Speaker checkpoint; refuses a
    /// checkpoint whose tensors do not have the card's shape.
    pub fn new(config: CamppConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        config.check()?;
        let device = vb.device().clone();
        let m = config.m_channels;
        let head = vb.pp("head");
        let stem = Conv2dBn::load(&head.pp("conv1"), &head.pp("bn1"), (m, 1, 3), 1)?;
        let mut head_blocks = Vec::new();
        for (stage, &n) in config.head_blocks.iter().enumerate() {
            for i in 0..n {
                let b = head.pp(format!("layer{}.{i}", stage + 1));
                let stride = if i == 0 { 2 } else { 1 };
                head_blocks.push(ResBlock {
                    conv1: Conv2dBn::load(&b.pp("conv1"), &b.pp("bn1"), (m, m, 3), stride)?,
                    conv2: Conv2dBn::load(&b.pp("conv2"), &b.pp("bn2"), (m, m, 3), 1)?,
                    shortcut: (stride != 1)
                        .then(|| {
                            Conv2dBn::load(
                                &b.pp("shortcut.0"),
                                &b.pp("shortcut.1"),
                                (m, m, 1),
                                stride,
                            )
                        })
                        .transpose()?,
                });
            }
        }
        let head_out = Conv2dBn::load(&head.pp("conv2"), &head.pp("bn2"), (m, m, 3), 2)?;
        let x = vb.pp("xvector");
        let tdnn_norm = Affine::load(
            &x.pp("tdnn.nonlinear.batchnorm"),
            config.init_channels,
            true,
        )?;
        let tdnn = Conv1d::load_folded(
            &x.pp("tdnn.linear"),
            &tdnn_norm,
            (config.init_channels, config.head_out(), config.tdnn_kernel),
        )?;
        let mut channels = config.init_channels;
        let mut blocks = Vec::new();
        for b in 0..3 {
            let layers = (0..config.block_layers[b])
                .map(|i| {
                    DenseLayer::load(
                        &x.pp(format!("block{}.tdnnd{}", b + 1, i + 1)),
                        &config,
                        channels + i * config.growth_rate,
                        config.block_kernels[b],
                        config.block_dilations[b],
                        &device,
                    )
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            channels += config.block_layers[b] * config.growth_rate;
            let t = x.pp(format!("transit{}", b + 1));
            let transit = Transit {
                norm: BnRelu::load(&t.pp("nonlinear"), channels, &device)?,
                conv: Conv1d::load(&t.pp("linear"), (channels / 2, channels, 1), false)?,
            };
            channels /= 2;
            blocks.push((layers, transit));
        }
        let out_norm = BnRelu::load(&x.pp("out_nonlinear"), channels, &device)?;
        let dense_norm = Affine::load(
            &x.pp("dense.nonlinear.batchnorm"),
            config.embedding_size,
            false,
        )?;
        let dense = Conv1d::load_folded(
            &x.pp("dense.linear"),
            &dense_norm,
            (config.embedding_size, 2 * channels, 1),
        )?;
        Ok(Self {
            cpu: cpu::CpuModel::new((&stem, &head_blocks, &head_out), &tdnn, &blocks, &dense),
            config,
            stem,
            head_blocks,
            head_out,
            tdnn,
            blocks,
            out_norm,
            dense,
            device,
        })
    }

    /// Loads the encoder from a safetensors buffer onto `device`, refusing tensors the
    /// architecture does not use.
    pub fn from_safetensors(
        config: CamppConfig,
        bytes: &[u8],
        device: &Device,
    ) -> candle_core::Result<Self> {
        let names: HashSet<String> = safetensors_names(bytes)?;
        let expected: HashSet<String> = tensor_names(&config).into_iter().collect();
        if let Some(extra) = names.difference(&expected).min() {
            candle_core::bail!(
                "the weights hold tensor {extra}, which CAM++ of this shape does not use"
            );
        }
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)?;
        Self::new(config, vb)
    }

    /// The shape this encoder was built with.
    pub fn config(&self) -> &CamppConfig {
        &self.config
    }

    /// Embedding size.
    pub fn embedding_dim(&self) -> usize {
        self.config.embedding_size
    }

    /// Fewest input frames the encoder takes (two frames after the strided TDNN layer, for
    /// the standard deviation).
    pub fn min_frames(&self) -> usize {
        (1..)
            .find(|&f| self.config.tdnn_frames(f) >= 2)
            .unwrap_or(2)
    }

    /// Embeds `(batch, frames, feat_dim)` mean-normalised filterbanks into raw (un-normalised)
    /// `(batch, embedding_size)` embeddings.
    pub fn forward(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        let (_, frames, bins) = feats.dims3()?;
        if bins != self.config.feat_dim {
            candle_core::bail!(
                "CAM++ expects {} bins per frame, got {bins}",
                self.config.feat_dim
            );
        }
        if frames < self.min_frames() {
            candle_core::bail!(
                "CAM++ needs at least {} frames, got {frames}",
                self.min_frames()
            );
        }
        if feats.device().is_cpu() && self.device.is_cpu() {
            return cpu::forward(self, feats);
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
        for block in &self.head_blocks {
            x = block.forward(&x)?;
        }
        let x = self.head_out.forward(&x)?.relu()?;
        let (batch, c, f, t) = x.dims4()?;
        let x = x.reshape((batch, c * f, t))?;
        let mut x = self.tdnn.forward(&x, self.config.tdnn_stride, 1)?.relu()?;
        for (layers, transit) in &self.blocks {
            for layer in layers {
                let added = layer.forward(&x, self.config.segment_frames)?;
                x = Tensor::cat(&[&x, &added], 1)?;
            }
            x = transit.conv.forward(&transit.norm.forward(&x)?, 1, 1)?;
        }
        let x = self.out_norm.forward(&x)?;
        let frames = x.dim(D::Minus1)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (frames as f64 - 1.0))?;
        let stats = Tensor::cat(&[&mean, &var.sqrt()?], 1)?;
        self.dense.forward(&stats, 1, 1)?.squeeze(2)
    }
}

/// The tensor names in a safetensors buffer.
fn safetensors_names(bytes: &[u8]) -> candle_core::Result<HashSet<String>> {
    let tensors = candle_core::safetensors::SliceSafetensors::new(bytes)?;
    Ok(tensors
        .tensors()
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Every tensor name of a CAM++ of shape `cfg`, as 3D-Speaker names them.
pub fn tensor_names(cfg: &CamppConfig) -> Vec<String> {
    let bn = |p: &str| {
        ["weight", "bias", "running_mean", "running_var"]
            .map(|s| format!("{p}.{s}"))
            .to_vec()
    };
    let mut names = vec!["head.conv1.weight".to_string()];
    names.extend(bn("head.bn1"));
    for (stage, &n) in cfg.head_blocks.iter().enumerate() {
        for i in 0..n {
            let p = format!("head.layer{}.{i}", stage + 1);
            names.push(format!("{p}.conv1.weight"));
            names.extend(bn(&format!("{p}.bn1")));
            names.push(format!("{p}.conv2.weight"));
            names.extend(bn(&format!("{p}.bn2")));
            if i == 0 {
                names.push(format!("{p}.shortcut.0.weight"));
                names.extend(bn(&format!("{p}.shortcut.1")));
            }
        }
    }
    names.push("head.conv2.weight".into());
    names.extend(bn("head.bn2"));
    names.push("xvector.tdnn.linear.weight".into());
    names.extend(bn("xvector.tdnn.nonlinear.batchnorm"));
    for b in 0..3 {
        for i in 0..cfg.block_layers[b] {
            let p = format!("xvector.block{}.tdnnd{}", b + 1, i + 1);
            names.extend(bn(&format!("{p}.nonlinear1.batchnorm")));
            names.push(format!("{p}.linear1.weight"));
            names.extend(bn(&format!("{p}.nonlinear2.batchnorm")));
            names.push(format!("{p}.cam_layer.linear_local.weight"));
            for c in ["linear1", "linear2"] {
                names.push(format!("{p}.cam_layer.{c}.weight"));
                names.push(format!("{p}.cam_layer.{c}.bias"));
            }
        }
        let t = format!("xvector.transit{}", b + 1);
        names.extend(bn(&format!("{t}.nonlinear.batchnorm")));
        names.push(format!("{t}.linear.weight"));
    }
    names.extend(bn("xvector.out_nonlinear.batchnorm"));
    names.push("xvector.dense.linear.weight".into());
    names.push("xvector.dense.nonlinear.batchnorm.running_mean".into());
    names.push("xvector.dense.nonlinear.batchnorm.running_var".into());
    names
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_nn::VarMap;

    use super::*;

    /// A narrow CAM++ with several context segments per item and a partial last one.
    const SMALL: CamppConfig = CamppConfig {
        feat_dim: 16,
        m_channels: 4,
        head_blocks: [1, 2],
        init_channels: 8,
        tdnn_kernel: 5,
        tdnn_stride: 2,
        growth_rate: 4,
        bn_size: 2,
        block_layers: [2, 3, 2],
        block_kernels: [3, 3, 3],
        block_dilations: [1, 2, 2],
        context_reduction: 2,
        segment_frames: 4,
        embedding_size: 6,
    };

    /// Widths that are multiples of 16 everywhere, so that the CPU path takes the AVX-512
    /// panel kernel where the CPU has one (`SMALL` takes the portable one).
    const PANELLED: CamppConfig = CamppConfig {
        init_channels: 32,
        growth_rate: 16,
        bn_size: 2,
        block_layers: [2, 2, 2],
        embedding_size: 16,
        ..SMALL
    };

    /// Random tensors under every name of `cfg`, BatchNorm variances positive.
    fn random_tensors(cfg: CamppConfig) -> HashMap<String, Tensor> {
        let map = VarMap::new();
        CamppEncoder::new(cfg, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)).unwrap();
        let data = map.data().lock().unwrap();
        data.iter()
            .map(|(name, var)| {
                let shape = var.shape().clone();
                let t = if name.ends_with("running_var") {
                    Tensor::rand(0.5f32, 1.5, shape, &Device::Cpu)
                } else {
                    Tensor::randn(0f32, 0.4, shape, &Device::Cpu)
                };
                (name.clone(), t.unwrap())
            })
            .collect()
    }

    fn encoder_of(cfg: CamppConfig, tensors: &HashMap<String, Tensor>) -> CamppEncoder {
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        CamppEncoder::new(cfg, vb).unwrap()
    }

    fn encoder(tensors: &HashMap<String, Tensor>) -> CamppEncoder {
        encoder_of(SMALL, tensors)
    }

    #[test]
    fn the_names_are_those_the_encoder_reads() {
        let tensors = random_tensors(SMALL);
        let mut read: Vec<&String> = tensors.keys().collect();
        read.sort();
        let mut named = tensor_names(&SMALL);
        named.sort();
        assert_eq!(read, named.iter().collect::<Vec<_>>());
    }

    #[test]
    fn cpu_path_and_tensor_ops_agree() {
        for cfg in [SMALL, PANELLED] {
            let encoder = encoder_of(cfg, &random_tensors(cfg));
            // 3 × 60 rows after the strided layer: the products are split over threads too.
            for frames in [encoder.min_frames(), 8, 9, 23, 120] {
                let feats = Tensor::randn(0f32, 1.0, (3, frames, 16), &Device::Cpu).unwrap();
                let cpu = cpu::forward(&encoder, &feats).unwrap();
                let ops = encoder.forward_tensor_ops(&feats).unwrap();
                assert_eq!(cpu.dims(), &[3, cfg.embedding_size]);
                let scale = crate::encoder::max_abs(&ops);
                let diff = crate::encoder::max_abs(&(cpu - ops).unwrap());
                assert!(
                    diff <= 1e-4 * scale.max(1.0),
                    "{cfg:?}, {frames} frames: {diff} of {scale}"
                );
            }
        }
    }

    #[test]
    fn items_of_a_batch_are_independent() {
        let encoder = encoder(&random_tensors(SMALL));
        let feats = Tensor::randn(0f32, 1.0, (3, 17, 16), &Device::Cpu).unwrap();
        let all = encoder.forward(&feats).unwrap();
        let one = encoder.forward(&feats.narrow(0, 2, 1).unwrap()).unwrap();
        let diff = crate::encoder::max_abs(&(all.narrow(0, 2, 1).unwrap() - one).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn bad_inputs_and_weights_are_errors() {
        let tensors = random_tensors(SMALL);
        let encoder = encoder(&tensors);
        let zeros = |f, b| Tensor::zeros((1, f, b), DType::F32, &Device::Cpu).unwrap();
        assert!(encoder.forward(&zeros(20, 15)).is_err());
        assert!(encoder
            .forward(&zeros(encoder.min_frames() - 1, 16))
            .is_err());
        let mut missing = tensors.clone();
        missing.remove("xvector.block2.tdnnd3.cam_layer.linear2.bias");
        let vb = VarBuilder::from_tensors(missing, DType::F32, &Device::Cpu);
        let err = CamppEncoder::new(SMALL, vb).err().unwrap().to_string();
        assert!(err.contains("linear2.bias"), "{err}");
        let mut wider = SMALL;
        wider.growth_rate = 5;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        assert!(CamppEncoder::new(wider, vb).is_err());
    }
}
