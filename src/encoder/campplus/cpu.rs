//! The CPU path of CAM++. The FCM head runs item by item on [`CpuConv`] (Winograd for its
//! stride-1 3×3 convolutions); from the TDNN layer on, the items of a batch sit side by side
//! as the columns of one `(channels, items × frames)` matrix, so every 1×1 convolution is one
//! product over the whole batch. A dense block writes each layer's output into the rows after
//! its input in one buffer, so the concatenation costs nothing; the dilated CAM convolution
//! is one product over im2col columns padded per item.

use candle_core::{DType, Device, Tensor};

use super::{Affine, CamppEncoder, Conv1d, Conv2dBn, DenseLayer};
use crate::encoder::conv2d_cpu::{matmul_add, CpuConv, Plane, Scratch};

/// A batch as columns: `rows × (items · frames)`, item after item along each row.
struct Columns {
    data: Vec<f32>,
    items: usize,
    frames: usize,
}

impl Columns {
    fn zeros(rows: usize, items: usize, frames: usize) -> Self {
        Self {
            data: vec![0.0; rows * items * frames],
            items,
            frames,
        }
    }

    /// Columns of a row.
    fn width(&self) -> usize {
        self.items * self.frames
    }
}

/// `out[r] = relu(x[r] · scale[r] + shift[r])` over the first `affine`-many rows of `x`.
fn bn_relu(affine: &Affine, x: &[f32], width: usize, out: &mut Vec<f32>) {
    let rows = affine.scale.len();
    out.clear();
    out.extend_from_slice(&x[..rows * width]);
    for ((row, &s), &t) in out
        .chunks_exact_mut(width)
        .zip(&affine.scale)
        .zip(&affine.shift)
    {
        for v in row {
            *v = (*v * s + t).max(0.0);
        }
    }
}

/// Fills `dst` (`out × width`, rows `width` apart) with the bias of `conv` (zero without one).
fn fill_bias(conv: &Conv1d, dst: &mut [f32], width: usize) {
    match &conv.bias {
        Some((_, bias)) => {
            for (row, &b) in dst.chunks_exact_mut(width).zip(bias) {
                row.fill(b);
            }
        }
        None => dst[..conv.shape.0 * width].fill(0.0),
    }
}

/// `dst = bias + conv · x` for a 1×1 `conv` over `x` (`in × width`).
fn pointwise(conv: &Conv1d, x: &[f32], width: usize, dst: &mut [f32]) {
    let (out, inp, _) = conv.shape;
    fill_bias(conv, dst, width);
    matmul_add((out, width, inp), dst, width, &conv.host, x, width);
}

/// im2col of a `(channels, items × frames)` batch for a kernel `k` with `stride` and
/// `dilation` (padding `dilation · (k - 1) / 2`, per item): rows `c · k + j`, columns
/// `item · out_frames + t`.
fn im2col(
    x: &Columns,
    channels: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    out_frames: usize,
    col: &mut Vec<f32>,
) {
    let width = x.items * out_frames;
    let pad = (dilation * (k - 1) / 2) as isize;
    col.clear();
    col.resize(channels * k * width, 0.0);
    for c in 0..channels {
        let row = &x.data[c * x.width()..(c + 1) * x.width()];
        for j in 0..k {
            let dst = &mut col[(c * k + j) * width..(c * k + j + 1) * width];
            let shift = (j * dilation) as isize - pad;
            for item in 0..x.items {
                let src = &row[item * x.frames..(item + 1) * x.frames];
                let out = &mut dst[item * out_frames..(item + 1) * out_frames];
                for (t, o) in out.iter_mut().enumerate() {
                    let at = (t * stride) as isize + shift;
                    if at >= 0 && (at as usize) < x.frames {
                        *o = src[at as usize];
                    }
                }
            }
        }
    }
}

/// Buffers reused across the layers of one forward pass.
#[derive(Default)]
struct Buffers {
    normed: Vec<f32>,
    hidden: Vec<f32>,
    col: Vec<f32>,
    context: Vec<f32>,
    reduced: Vec<f32>,
    mask: Vec<f32>,
}

/// One dense layer over `x`, whose first `in_channels` rows are its input: writes its
/// `growth_rate` rows right after them.
fn dense_layer(layer: &DenseLayer, x: &mut Columns, segment: usize, buf: &mut Buffers) {
    let width = x.width();
    let in_channels = layer.input_norm.affine.scale.len();
    let (bn, _, _) = layer.bottleneck.shape;
    bn_relu(&layer.input_norm.affine, &x.data, width, &mut buf.normed);
    buf.hidden.resize(bn * width, 0.0);
    pointwise(&layer.bottleneck, &buf.normed, width, &mut buf.hidden);
    for v in &mut buf.hidden {
        *v = v.max(0.0);
    }
    // Context per item and segment: the item's mean plus the segment's.
    let segments = x.frames.div_ceil(segment);
    let n_ctx = x.items * segments;
    buf.context.clear();
    buf.context.resize(bn * n_ctx, 0.0);
    for (c, row) in buf.hidden.chunks_exact(width).enumerate() {
        for item in 0..x.items {
            let frames = &row[item * x.frames..(item + 1) * x.frames];
            let mean = frames.iter().sum::<f32>() / x.frames as f32;
            for (s, seg) in frames.chunks(segment).enumerate() {
                let seg_mean = seg.iter().sum::<f32>() / seg.len() as f32;
                buf.context[c * n_ctx + item * segments + s] = mean + seg_mean;
            }
        }
    }
    let reduced = layer.context1.shape.0;
    buf.reduced.resize(reduced * n_ctx, 0.0);
    pointwise(&layer.context1, &buf.context, n_ctx, &mut buf.reduced);
    for v in &mut buf.reduced {
        *v = v.max(0.0);
    }
    let growth = layer.context2.shape.0;
    buf.mask.resize(growth * n_ctx, 0.0);
    pointwise(&layer.context2, &buf.reduced, n_ctx, &mut buf.mask);
    for v in &mut buf.mask {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
    // The dilated local convolution, into the rows after the input, then the mask.
    let (_, _, k) = layer.local.shape;
    let hidden = Columns {
        data: std::mem::take(&mut buf.hidden),
        items: x.items,
        frames: x.frames,
    };
    im2col(&hidden, bn, k, 1, layer.dilation, x.frames, &mut buf.col);
    buf.hidden = hidden.data;
    let out = &mut x.data[in_channels * width..(in_channels + growth) * width];
    out.fill(0.0);
    matmul_add(
        (growth, width, bn * k),
        out,
        width,
        &layer.local.host,
        &buf.col,
        width,
    );
    for (g, row) in out.chunks_exact_mut(width).enumerate() {
        for item in 0..x.items {
            let frames = &mut row[item * x.frames..(item + 1) * x.frames];
            for (s, seg) in frames.chunks_mut(segment).enumerate() {
                let m = buf.mask[g * n_ctx + item * segments + s];
                for v in seg {
                    *v *= m;
                }
            }
        }
    }
}

/// The CPU copy of a head convolution (built when the weights are on the CPU).
fn cpu_conv(conv: &Conv2dBn) -> CpuConv {
    let (c_out, c_in, k) = conv.shape;
    CpuConv::new(
        conv.host.0.clone(),
        conv.host.1.clone(),
        (c_out, c_in, k),
        (conv.stride, 1),
    )
}

/// [`CamppEncoder::forward`] on the CPU.
pub(super) fn forward(encoder: &CamppEncoder, feats: &Tensor) -> candle_core::Result<Tensor> {
    let cfg = &encoder.config;
    let (batch, frames, bins) = feats.dims3()?;
    let feats: Vec<f32> = feats.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let cpu = &encoder.cpu;
    // FCM head, item by item, into the columns of the TDNN layer's input.
    let head_rows = cfg.head_out();
    let mut head = Columns::zeros(head_rows, batch, frames);
    let mut scratch = Scratch::default();
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
        for (r, src) in x.data.chunks_exact(frames).enumerate() {
            head.data[r * batch * frames + item * frames..][..frames].copy_from_slice(src);
        }
    }
    // TDNN layer (strided), into the first block's buffer.
    let t_frames = cfg.tdnn_frames(frames);
    let mut buf = Buffers::default();
    im2col(
        &head,
        head_rows,
        cfg.tdnn_kernel,
        cfg.tdnn_stride,
        1,
        t_frames,
        &mut buf.col,
    );
    drop(head);
    let mut channels = cfg.init_channels;
    let mut x = Columns::zeros(
        channels + cfg.block_layers[0] * cfg.growth_rate,
        batch,
        t_frames,
    );
    let width = x.width();
    let tdnn = &mut x.data[..channels * width];
    fill_bias(&encoder.tdnn, tdnn, width);
    matmul_add(
        (channels, width, head_rows * cfg.tdnn_kernel),
        tdnn,
        width,
        &encoder.tdnn.host,
        &buf.col,
        width,
    );
    for v in tdnn.iter_mut() {
        *v = v.max(0.0);
    }
    // Dense blocks and transits.
    for (b, (layers, transit)) in encoder.blocks.iter().enumerate() {
        for layer in layers {
            dense_layer(layer, &mut x, cfg.segment_frames, &mut buf);
        }
        channels += layers.len() * cfg.growth_rate;
        bn_relu(&transit.norm.affine, &x.data, width, &mut buf.normed);
        channels /= 2;
        let next_rows = channels
            + cfg
                .block_layers
                .get(b + 1)
                .map_or(0, |&l| l * cfg.growth_rate);
        let mut next = Columns::zeros(next_rows, batch, t_frames);
        pointwise(
            &transit.conv,
            &buf.normed,
            width,
            &mut next.data[..channels * width],
        );
        x = next;
    }
    bn_relu(&encoder.out_norm.affine, &x.data, width, &mut buf.normed);
    // Statistics pooling per item (f64 sums), then the dense layer.
    let mut stats = vec![0f32; 2 * channels * batch];
    for (c, row) in buf.normed.chunks_exact(width).enumerate() {
        for item in 0..batch {
            let v = &row[item * t_frames..(item + 1) * t_frames];
            let n = v.len() as f64;
            let mean = v.iter().map(|&a| f64::from(a)).sum::<f64>() / n;
            let var = v
                .iter()
                .map(|&a| (f64::from(a) - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0);
            stats[c * batch + item] = mean as f32;
            stats[(channels + c) * batch + item] = var.sqrt() as f32;
        }
    }
    let dim = cfg.embedding_size;
    let mut embeddings = vec![0f32; dim * batch];
    pointwise(&encoder.dense, &stats, batch, &mut embeddings);
    // (dim, batch) -> (batch, dim)
    let mut out = vec![0f32; batch * dim];
    for (d, row) in embeddings.chunks_exact(batch).enumerate() {
        for (item, &v) in row.iter().enumerate() {
            out[item * dim + d] = v;
        }
    }
    Tensor::from_vec(out, (batch, dim), &Device::Cpu)
}

/// The head's convolutions in the CPU layout.
pub(super) struct CpuHead {
    stem: CpuConv,
    blocks: Vec<CpuBlock>,
    head_out: CpuConv,
}

struct CpuBlock {
    conv1: CpuConv,
    conv2: CpuConv,
    shortcut: Option<CpuConv>,
}

impl CpuHead {
    /// The CPU copies of the head of `stem`, `blocks` and `head_out`.
    pub(super) fn new(stem: &Conv2dBn, blocks: &[super::ResBlock], head_out: &Conv2dBn) -> Self {
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
        }
    }
}
