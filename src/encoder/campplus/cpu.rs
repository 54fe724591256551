//! The CPU path of CAM++. The FCM head runs item by item on [`CpuConv`] (Winograd for its
//! stride-1 3×3 convolutions). From the TDNN layer on, activations are time-major: one row
//! per frame (the items of a batch one after another), one column per channel, so every
//! convolution is one product `bias + rows · Wᵀ` over the whole batch, on the AVX-512 panel
//! kernel where the CPU has it (`gemm` elsewhere), split over rayon's threads by rows. A dense
//! block keeps its growing input in one buffer and writes each layer's channels into the
//! columns after it, so the concatenation costs nothing; the kernel-3 convolutions read im2col
//! rows padded per item.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::{Affine, CamppConfig, CamppEncoder, Conv1d, Conv2dBn, DenseLayer, ResBlock};
use crate::encoder::conv2d_cpu::{matmul_add, CpuConv, Plane, Scratch};
#[cfg(target_arch = "x86_64")]
use crate::encoder::gemm_avx512::Panels;

/// Fewest rows one thread takes of a product.
const MIN_ROWS_PER_TASK: usize = 48;

/// A convolution as a product over time-major rows: `out[r, :] = bias + x[r, ..depth] · w`,
/// `w` the transposed kernel `(k · in, out)`, row `j · in + c` for tap `j` and channel `c`.
struct RowProduct {
    w: Vec<f32>,
    bias: Vec<f32>,
    depth: usize,
    width: usize,
    #[cfg(target_arch = "x86_64")]
    panels: Option<Panels>,
}

impl RowProduct {
    /// From a `(out, in, k)` convolution.
    fn new(conv: &Conv1d) -> Self {
        let (out, inp, k) = conv.shape;
        let depth = inp * k;
        let mut w = vec![0f32; depth * out];
        for o in 0..out {
            for c in 0..inp {
                for j in 0..k {
                    w[(j * inp + c) * out + o] = conv.host[(o * inp + c) * k + j];
                }
            }
        }
        let bias = conv
            .bias
            .as_ref()
            .map_or_else(|| vec![0.0; out], |(_, b)| b.clone());
        Self {
            #[cfg(target_arch = "x86_64")]
            panels: Panels::pack(&w, depth, out),
            w,
            bias,
            depth,
            width: out,
        }
    }

    /// `out` (`rows × width`) for `x` with rows `ldx` apart.
    fn apply(&self, x: &[f32], ldx: usize, rows: usize, out: &mut [f32]) {
        let out = &mut out[..rows * self.width];
        let threads = rayon::current_num_threads();
        if threads <= 1 || rows < 2 * MIN_ROWS_PER_TASK {
            return self.apply_serial(x, ldx, rows, out);
        }
        let per_task = rows.div_ceil(threads).max(MIN_ROWS_PER_TASK);
        out.par_chunks_mut(per_task * self.width)
            .enumerate()
            .for_each(|(i, chunk)| {
                let first = i * per_task;
                let n = chunk.len() / self.width;
                self.apply_serial(&x[first * ldx..], ldx, n, chunk);
            });
    }

    fn apply_serial(&self, x: &[f32], ldx: usize, rows: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(panels) = &self.panels {
            return panels.affine(x, ldx, rows, self.depth, &self.bias, out);
        }
        for row in out.chunks_exact_mut(self.width) {
            row.copy_from_slice(&self.bias);
        }
        matmul_add(
            (rows, self.width, self.depth),
            out,
            self.width,
            (x, ldx),
            (&self.w, self.width),
        );
    }
}

/// `out = relu(x[:, ..channels] · scale + shift)`, `x` with rows `ldx` apart, `out` dense.
fn bn_relu(affine: &Affine, x: &[f32], ldx: usize, rows: usize, out: &mut Vec<f32>) {
    let channels = affine.scale.len();
    out.resize(rows * channels, 0.0);
    for (dst, src) in out.chunks_exact_mut(channels).zip(x.chunks(ldx)) {
        for (((d, &v), &s), &t) in dst
            .iter_mut()
            .zip(&src[..channels])
            .zip(&affine.scale)
            .zip(&affine.shift)
        {
            *d = (v * s + t).max(0.0);
        }
    }
}

fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// im2col of time-major `x` (`items × frames` rows of `channels`): for output frame `t` of an
/// item, the input frames `t · stride + j · dilation - pad` side by side for taps `j < k`,
/// zeros where they fall outside the item.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[f32],
    channels: usize,
    (items, frames): (usize, usize),
    k: usize,
    stride: usize,
    dilation: usize,
    out_frames: usize,
    col: &mut Vec<f32>,
) {
    let pad = (dilation * (k - 1) / 2) as isize;
    let row_len = k * channels;
    col.clear();
    col.resize(items * out_frames * row_len, 0.0);
    for item in 0..items {
        let src = &x[item * frames * channels..(item + 1) * frames * channels];
        let dst = &mut col[item * out_frames * row_len..(item + 1) * out_frames * row_len];
        for (t, row) in dst.chunks_exact_mut(row_len).enumerate() {
            for (j, tap) in row.chunks_exact_mut(channels).enumerate() {
                let at = (t * stride + j * dilation) as isize - pad;
                if at >= 0 && (at as usize) < frames {
                    let at = at as usize;
                    tap.copy_from_slice(&src[at * channels..(at + 1) * channels]);
                }
            }
        }
    }
}

/// One dense layer's products.
struct CpuDenseLayer {
    bottleneck: RowProduct,
    local: RowProduct,
    context1: RowProduct,
    context2: RowProduct,
}

/// A head block's convolutions.
struct CpuBlock {
    conv1: CpuConv,
    conv2: CpuConv,
    shortcut: Option<CpuConv>,
}

/// The encoder's weights laid out for the CPU path.
pub(super) struct CpuModel {
    stem: CpuConv,
    blocks: Vec<CpuBlock>,
    head_out: CpuConv,
    tdnn: RowProduct,
    dense_layers: Vec<Vec<CpuDenseLayer>>,
    transits: Vec<RowProduct>,
    dense: RowProduct,
}

fn cpu_conv(conv: &Conv2dBn) -> CpuConv {
    CpuConv::new(
        conv.host.0.clone(),
        conv.host.1.clone(),
        conv.shape,
        (conv.stride, 1),
    )
}

impl CpuModel {
    /// The CPU layout of the encoder's parts.
    pub(super) fn new(
        (stem, blocks, head_out): (&Conv2dBn, &[ResBlock], &Conv2dBn),
        tdnn: &Conv1d,
        dense_blocks: &[(Vec<DenseLayer>, super::Transit)],
        dense: &Conv1d,
    ) -> Self {
        Self {
            stem: cpu_conv(stem),
            blocks: blocks
                .iter()
                .map(|b| CpuBlock {
                    conv1: cpu_conv(&b.conv1),
                    conv2: cpu_conv(&b.conv2),
                    shortcut: b.shortcut.as_ref().map(cpu_conv),
                })
                .collect(),
            head_out: cpu_conv(head_out),
            tdnn: RowProduct::new(tdnn),
            dense_layers: dense_blocks
                .iter()
                .map(|(layers, _)| {
                    layers
                        .iter()
                        .map(|l| CpuDenseLayer {
                            bottleneck: RowProduct::new(&l.bottleneck),
                            local: RowProduct::new(&l.local),
                            context1: RowProduct::new(&l.context1),
                            context2: RowProduct::new(&l.context2),
                        })
                        .collect()
                })
                .collect(),
            transits: dense_blocks
                .iter()
                .map(|(_, t)| RowProduct::new(&t.conv))
                .collect(),
            dense: RowProduct::new(dense),
        }
    }
}

/// Buffers reused across the layers of a forward pass, and across passes on one thread (so
/// that the large ones are not faulted in from the OS anew for every batch).
#[derive(Default)]
struct Buffers {
    scratch: Scratch,
    head: Vec<f32>,
    /// The dense block being built, and the next one.
    x: Vec<f32>,
    next: Vec<f32>,
    normed: Vec<f32>,
    hidden: Vec<f32>,
    col: Vec<f32>,
    local: Vec<f32>,
    context: Vec<f32>,
    reduced: Vec<f32>,
    mask: Vec<f32>,
}

/// One dense layer over the first `in_channels` columns of `x` (`items × frames` rows, rows
/// `stride` apart): writes its `growth_rate` channels into the columns after them.
#[allow(clippy::too_many_arguments)]
fn dense_layer(
    layer: &DenseLayer,
    cpu: &CpuDenseLayer,
    cfg: &CamppConfig,
    x: &mut [f32],
    stride: usize,
    in_channels: usize,
    (items, frames): (usize, usize),
    buf: &mut Buffers,
) {
    let rows = items * frames;
    let bn = cpu.bottleneck.width;
    bn_relu(&layer.input_norm.affine, x, stride, rows, &mut buf.normed);
    buf.hidden.resize(rows * bn, 0.0);
    cpu.bottleneck
        .apply(&buf.normed, in_channels, rows, &mut buf.hidden);
    relu(&mut buf.hidden);
    // Context per item and segment: the item's mean plus the segment's, channel by channel.
    let segment = cfg.segment_frames;
    let segments = frames.div_ceil(segment);
    buf.context.clear();
    buf.context.resize(items * segments * bn, 0.0);
    let mut mean = vec![0f32; bn];
    for item in 0..items {
        let h = &buf.hidden[item * frames * bn..(item + 1) * frames * bn];
        mean.fill(0.0);
        for row in h.chunks_exact(bn) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= frames as f32;
        }
        for (s, seg) in h.chunks(segment * bn).enumerate() {
            let n = (seg.len() / bn) as f32;
            let ctx = &mut buf.context[(item * segments + s) * bn..][..bn];
            for row in seg.chunks_exact(bn) {
                for (c, &v) in ctx.iter_mut().zip(row) {
                    *c += v;
                }
            }
            for (c, &m) in ctx.iter_mut().zip(&mean) {
                *c = *c / n + m;
            }
        }
    }
    let n_ctx = items * segments;
    buf.reduced.resize(n_ctx * cpu.context1.width, 0.0);
    cpu.context1
        .apply(&buf.context, bn, n_ctx, &mut buf.reduced);
    relu(&mut buf.reduced);
    let growth = cpu.context2.width;
    buf.mask.resize(n_ctx * growth, 0.0);
    cpu.context2
        .apply(&buf.reduced, cpu.context1.width, n_ctx, &mut buf.mask);
    for v in &mut buf.mask {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
    // The dilated local convolution, masked, into the columns after the input.
    let k = cpu.local.depth / bn;
    im2col(
        &buf.hidden,
        bn,
        (items, frames),
        k,
        1,
        layer.dilation,
        frames,
        &mut buf.col,
    );
    buf.local.resize(rows * growth, 0.0);
    cpu.local.apply(&buf.col, k * bn, rows, &mut buf.local);
    for item in 0..items {
        for t in 0..frames {
            let r = item * frames + t;
            let m = &buf.mask[(item * segments + t / segment) * growth..][..growth];
            let src = &buf.local[r * growth..(r + 1) * growth];
            let dst = &mut x[r * stride + in_channels..][..growth];
            for ((d, &v), &m) in dst.iter_mut().zip(src).zip(m) {
                *d = v * m;
            }
        }
    }
}

thread_local! {
    /// This thread's buffers, between forward passes.
    static BUFFERS: RefCell<Buffers> = RefCell::default();
}

/// [`CamppEncoder::forward`] on the CPU, with this thread's buffers (fresh ones when they are in
/// use: a rayon thread waiting inside a pass may run another).
pub(super) fn forward(encoder: &CamppEncoder, feats: &Tensor) -> candle_core::Result<Tensor> {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => forward_with(encoder, feats, &mut buf),
        Err(_) => forward_with(encoder, feats, &mut Buffers::default()),
    })
}

fn forward_with(
    encoder: &CamppEncoder,
    feats: &Tensor,
    buf: &mut Buffers,
) -> candle_core::Result<Tensor> {
    let cfg = &encoder.config;
    let cpu = &encoder.cpu;
    let (batch, frames, bins) = feats.dims3()?;
    let feats: Vec<f32> = feats.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    // FCM head, item by item, into time-major rows.
    let head_channels = cfg.head_out();
    let mut head = std::mem::take(&mut buf.head);
    head.resize(batch * frames * head_channels, 0.0);
    let mut scratch = std::mem::take(&mut buf.scratch);
    for (item, input) in feats.chunks_exact(frames * bins).enumerate() {
        let mut plane = vec![0f32; frames * bins];
        for (t, row) in input.chunks_exact(bins).enumerate() {
            for (f, &v) in row.iter().enumerate() {
                plane[f * frames + t] = v;
            }
        }
        let mut x = cpu
            .stem
            .run(&Plane::new(plane, bins, frames), None, &mut scratch);
        for block in &cpu.blocks {
            let hidden = block.conv1.run(&x, None, &mut scratch);
            let residual = match &block.shortcut {
                Some(shortcut) => shortcut.run_linear(&x, &mut scratch),
                None => x,
            };
            x = block.conv2.run(&hidden, Some(residual.data), &mut scratch);
        }
        let x = cpu.head_out.run(&x, None, &mut scratch);
        let rows = &mut head[item * frames * head_channels..(item + 1) * frames * head_channels];
        for (c, src) in x.data.chunks_exact(frames).enumerate() {
            for (t, &v) in src.iter().enumerate() {
                rows[t * head_channels + c] = v;
            }
        }
    }
    // The strided TDNN layer, into the first block's buffer.
    let t_frames = cfg.tdnn_frames(frames);
    let rows = batch * t_frames;
    im2col(
        &head,
        head_channels,
        (batch, frames),
        cfg.tdnn_kernel,
        cfg.tdnn_stride,
        1,
        t_frames,
        &mut buf.col,
    );
    buf.head = head;
    buf.scratch = scratch;
    let mut channels = cfg.init_channels;
    let mut stride = channels + cfg.block_layers[0] * cfg.growth_rate;
    // Every column a layer reads was written before: the buffers need no clearing.
    let mut x = std::mem::take(&mut buf.x);
    let mut next = std::mem::take(&mut buf.next);
    x.resize(rows * stride, 0.0);
    buf.local.resize(rows * channels, 0.0);
    cpu.tdnn
        .apply(&buf.col, cpu.tdnn.depth, rows, &mut buf.local);
    relu(&mut buf.local);
    for (dst, src) in x
        .chunks_exact_mut(stride)
        .zip(buf.local.chunks_exact(channels))
    {
        dst[..channels].copy_from_slice(src);
    }
    // Dense blocks and transits.
    for (b, ((layers, transit), cpu_layers)) in
        encoder.blocks.iter().zip(&cpu.dense_layers).enumerate()
    {
        for (layer, cpu_layer) in layers.iter().zip(cpu_layers) {
            dense_layer(
                layer,
                cpu_layer,
                cfg,
                &mut x,
                stride,
                channels,
                (batch, t_frames),
                buf,
            );
            channels += cfg.growth_rate;
        }
        bn_relu(&transit.norm.affine, &x, stride, rows, &mut buf.normed);
        let product = &cpu.transits[b];
        channels = product.width;
        stride = channels
            + cfg
                .block_layers
                .get(b + 1)
                .map_or(0, |&l| l * cfg.growth_rate);
        buf.local.resize(rows * channels, 0.0);
        product.apply(&buf.normed, product.depth, rows, &mut buf.local);
        std::mem::swap(&mut x, &mut next);
        x.resize(rows * stride, 0.0);
        for (dst, src) in x
            .chunks_exact_mut(stride)
            .zip(buf.local.chunks_exact(channels))
        {
            dst[..channels].copy_from_slice(src);
        }
    }
    bn_relu(&encoder.out_norm.affine, &x, stride, rows, &mut buf.normed);
    (buf.x, buf.next) = (x, next);
    // Statistics pooling per item (f64 sums), then the dense layer.
    let mut stats = vec![0f32; batch * 2 * channels];
    for (item, out) in stats.chunks_exact_mut(2 * channels).enumerate() {
        let h = &buf.normed[item * t_frames * channels..(item + 1) * t_frames * channels];
        let n = t_frames as f64;
        for c in 0..channels {
            let column = h.iter().skip(c).step_by(channels);
            let mean = column.clone().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = column.map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / (n - 1.0);
            out[c] = mean as f32;
            out[channels + c] = var.sqrt() as f32;
        }
    }
    let mut embeddings = vec![0f32; batch * cfg.embedding_size];
    cpu.dense
        .apply(&stats, 2 * channels, batch, &mut embeddings);
    Tensor::from_vec(embeddings, (batch, cfg.embedding_size), &Device::Cpu)
}
