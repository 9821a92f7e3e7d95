//! Encoders with a span head (extractive question answering): the
//! `SpanEncoder` trait the QA model thread runs, how windows of many requests
//! are grouped by length and padded only to the longest of their group, and
//! reading a checkpoint's tensors by name. Each architecture is its own file
//! (`distilbert`, `bert`), built from the blocks in `layers`.

pub mod bert;
pub mod distilbert;
pub mod layers;
pub mod shares;
pub mod weights;

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::generation::linear::Precision;

use crate::qa::windows::Window;

/// Windows padded to their longest, ready for a forward pass.
pub struct PaddedWindows {
    /// [windows, longest], padded with `pad_id`.
    pub ids: Tensor,
    /// [windows, longest], 1 for real tokens and 0 for padding.
    pub attention_mask: Tensor,
    /// [windows, longest], BERT's segments: 0 for the question part, 1 from
    /// the context on.
    pub token_types: Tensor,
}

impl PaddedWindows {
    pub fn new(windows: &[&Window], pad_id: i64, device: Device) -> PaddedWindows {
        let rows = windows.len();
        let columns = windows.iter().map(|w| w.ids.len()).max().unwrap_or(0);
        let mut ids = vec![pad_id; rows * columns];
        let mut mask = vec![0i64; rows * columns];
        let mut types = vec![0i64; rows * columns];
        for (row, window) in windows.iter().enumerate() {
            let offset = row * columns;
            ids[offset..offset + window.ids.len()].copy_from_slice(&window.ids);
            mask[offset..offset + window.ids.len()].fill(1);
            types[offset + window.context_start.min(window.ids.len())..offset + window.ids.len()]
                .fill(1);
        }
        let shape = [rows as i64, columns as i64];
        let tensor = |values: &[i64]| Tensor::from_slice(values).view(shape).to_device(device);
        PaddedWindows {
            ids: tensor(&ids),
            attention_mask: tensor(&mask),
            token_types: tensor(&types),
        }
    }
}

/// A transformer encoder with a start/end span head. Runs on the model
/// thread only, so it needs to be neither `Send` nor `Sync` once loaded.
pub trait SpanEncoder {
    /// Start and end logits, each [windows, longest] in fp32.
    fn span_logits(&self, windows: &PaddedWindows) -> (Tensor, Tensor);
    /// The id padding fills windows with.
    fn pad_id(&self) -> i64;
    fn device(&self) -> Device;
}

/// Loads the span encoder of a config.json's `model_type`.
pub fn load_span_encoder(
    model_type: &str,
    config_path: &Path,
    weights_path: &Path,
    precision: Precision,
    device: Device,
) -> Result<Box<dyn SpanEncoder>, String> {
    Ok(match model_type {
        "distilbert" => Box::new(distilbert::DistilBertQa::load(
            config_path,
            weights_path,
            precision,
            device,
        )?),
        "bert" => Box::new(bert::BertQa::load(
            config_path,
            weights_path,
            precision,
            device,
        )?),
        other => {
            return Err(format!(
                "question answering runs DistilBERT and BERT models; this one is {other}"
            ))
        }
    })
}

/// A span head's [windows, tokens, 2] output as start and end logits,
/// each [windows, tokens].
pub fn split_span_logits(logits: &Tensor) -> (Tensor, Tensor) {
    let parts = logits.split(1, 2);
    (parts[0].squeeze_dim(2), parts[1].squeeze_dim(2))
}

/// One window's logits, without padding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowLogits {
    pub start: Vec<f32>,
    pub end: Vec<f32>,
}

/// Runs every window through `encoder`, at most `group_size` windows per
/// forward pass; windows of similar length share a pass (sorted by length),
/// so a short window is never padded to a long one's length. Logits come
/// back in the order of `windows`.
pub fn run_windows(
    encoder: &dyn SpanEncoder,
    windows: &[&Window],
    group_size: usize,
) -> Vec<WindowLogits> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&index| windows[index].ids.len());
    let mut logits = vec![WindowLogits::default(); windows.len()];
    for group in order.chunks(group_size.max(1)) {
        let members: Vec<&Window> = group.iter().map(|&index| windows[index]).collect();
        let padded = PaddedWindows::new(&members, encoder.pad_id(), encoder.device());
        let (start, end) = tch::no_grad(|| encoder.span_logits(&padded));
        let (start, end) = (rows(&start), rows(&end));
        for (row, &index) in group.iter().enumerate() {
            let length = windows[index].ids.len();
            logits[index] = WindowLogits {
                start: start[row][..length].to_vec(),
                end: end[row][..length].to_vec(),
            };
        }
    }
    logits
}

/// A [rows, columns] tensor as rows of f32, copied to the CPU once.
fn rows(tensor: &Tensor) -> Vec<Vec<f32>> {
    let size = tensor.size();
    let (rows, columns) = (size[0] as usize, size[1] as usize);
    let flat = tensor
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
        .contiguous()
        .view([-1]);
    let values = Vec::<f32>::try_from(&flat).unwrap_or_default();
    (0..rows)
        .map(|row| {
            values
                .get(row * columns..(row + 1) * columns)
                .map(<[f32]>::to_vec)
                .unwrap_or_else(|| vec![0.0; columns])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits that tell where they came from: start = id, end = the pass's width.
    struct Echo;

    impl SpanEncoder for Echo {
        fn span_logits(&self, windows: &PaddedWindows) -> (Tensor, Tensor) {
            let start = windows.ids.to_kind(Kind::Float);
            let width = windows.ids.size()[1] as f64;
            (start.shallow_clone(), start.zeros_like() + width)
        }
        fn pad_id(&self) -> i64 {
            0
        }
        fn device(&self) -> Device {
            Device::Cpu
        }
    }

    #[test]
    fn windows_are_grouped_by_length_and_returned_in_order() {
        let window = |length: usize| Window {
            ids: (1..=length as i64).collect(),
            context_start: 1,
        };
        let windows = [window(7), window(2), window(6), window(3)];
        let refs: Vec<&Window> = windows.iter().collect();
        let logits = run_windows(&Echo, &refs, 2);
        assert_eq!(logits[0].start, vec![1., 2., 3., 4., 5., 6., 7.]);
        assert_eq!(logits[1].start, vec![1., 2.]);
        // 2 and 3 share a pass 3 wide; 6 and 7 one 7 wide.
        assert_eq!(logits[1].end, vec![3.; 2]);
        assert_eq!(logits[3].end, vec![3.; 3]);
        assert_eq!(logits[2].end, vec![7.; 6]);
    }

    #[test]
    fn padding_masks_and_segments() {
        let windows = [
            Window {
                ids: vec![101, 5, 102, 7, 102],
                context_start: 3,
            },
            Window {
                ids: vec![101, 5, 102],
                context_start: 3,
            },
        ];
        let padded = PaddedWindows::new(&[&windows[0], &windows[1]], 0, Device::Cpu);
        let values = |t: &Tensor| Vec::<i64>::try_from(&t.view([-1])).expect("i64");
        assert_eq!(
            values(&padded.ids),
            [101, 5, 102, 7, 102, 101, 5, 102, 0, 0]
        );
        assert_eq!(
            values(&padded.attention_mask),
            [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
        );
        assert_eq!(values(&padded.token_types), [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    }
}
