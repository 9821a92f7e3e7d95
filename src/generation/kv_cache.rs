//! Keys and values of every sequence in a running batch, left-padded to a
//! common length so one decoding step serves them all.
//!
//! Per layer, keys and values are [batch, heads, capacity, head_dim]; the
//! first `len` columns are in use. Row `i` holds its sequence in columns
//! `starts[i]..len`; the columns before are padding (zeros), masked out;
//! columns from `len` on may hold stale values and are written before they
//! are read. A sequence joins with the cache of its prefill (`Prefilled`), or
//! with no tokens yet (`add_empty_rows`, an encoder-decoder's decoder), and
//! leaves at any step; a beam search reorders rows in place (`select_rows`).
//! Nothing here depends on the architecture: any causal LM with per-layer
//! keys and values uses it.

use tch::{Device, Kind, Tensor};

/// Prompts run through the model together, left-padded to a common length.
pub struct Prefilled {
    /// Next-token logits after each prompt, [rows, vocab].
    pub logits: Tensor,
    /// Per layer, keys and values: [rows, heads, columns, head_dim].
    pub layers: Vec<(Tensor, Tensor)>,
    /// Per row, the first column holding a token (the rest is padding).
    pub starts: Vec<i64>,
}

impl Prefilled {
    /// Repeats row `i` `counts[i]` times (several completions of one prompt).
    pub fn repeat_rows(&self, counts: &[usize]) -> Prefilled {
        let rows: Vec<i64> = counts
            .iter()
            .enumerate()
            .flat_map(|(row, &count)| std::iter::repeat_n(row as i64, count))
            .collect();
        let index = Tensor::from_slice(&rows).to_device(self.logits.device());
        Prefilled {
            logits: self.logits.index_select(0, &index),
            layers: self
                .layers
                .iter()
                .map(|(keys, values)| {
                    (keys.index_select(0, &index), values.index_select(0, &index))
                })
                .collect(),
            starts: rows.iter().map(|&row| self.starts[row as usize]).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    pub fn columns(&self) -> i64 {
        self.layers.first().map_or(0, |(keys, _)| keys.size()[2])
    }
}

/// Extra columns allocated whenever the cache grows, so appending one token
/// per step rarely reallocates.
const GROWTH: i64 = 64;

pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    starts: Vec<i64>,
    len: i64,
    capacity: i64,
    heads: i64,
    head_dim: i64,
    device: Device,
}

impl KvCache {
    pub fn new(layers: usize, heads: i64, head_dim: i64, device: Device) -> KvCache {
        KvCache {
            layers: (0..layers)
                .map(|_| {
                    (
                        Self::empty(0, heads, 0, head_dim, device),
                        Self::empty(0, heads, 0, head_dim, device),
                    )
                })
                .collect(),
            starts: Vec::new(),
            len: 0,
            capacity: 0,
            heads,
            head_dim,
            device,
        }
    }

    fn empty(rows: i64, heads: i64, columns: i64, head_dim: i64, device: Device) -> Tensor {
        Tensor::zeros([rows, heads, columns, head_dim], (Kind::Float, device))
    }

    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    /// Per row, the tokens it holds (its padding excluded): the position of
    /// the token it takes next.
    pub fn row_lengths(&self) -> Vec<i64> {
        self.starts.iter().map(|start| self.len - start).collect()
    }

    /// Columns in use, padding included.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Keys and values of `layer` over the columns in use and the one
    /// written by `write_column` in this step.
    pub fn layer_with_new_column(&self, layer: usize) -> (Tensor, Tensor) {
        let (keys, values) = &self.layers[layer];
        (
            keys.narrow(2, 0, self.len + 1),
            values.narrow(2, 0, self.len + 1),
        )
    }

    /// Writes one new column for every row: `keys`/`values` are
    /// [rows, heads, 1, head_dim]. Call `reserve_column` once per step first.
    pub fn write_column(&mut self, layer: usize, keys: &Tensor, values: &Tensor) {
        let (cached_keys, cached_values) = &mut self.layers[layer];
        cached_keys.narrow(2, self.len, 1).copy_(keys);
        cached_values.narrow(2, self.len, 1).copy_(values);
    }

    /// Makes room for one more column in every layer.
    pub fn reserve_column(&mut self) {
        if self.len == self.capacity {
            self.reallocate(self.len + GROWTH, &self.all_rows(), 0, 0);
        }
    }

    /// Counts the column written by `write_column` as in use.
    pub fn commit_column(&mut self) {
        self.len += 1;
    }

    /// Additive attention bias, [rows, 1, 1, len + extra]: 0 where a row has a
    /// token, -inf on its padding. `extra` columns (the step being computed)
    /// are always visible.
    pub fn attention_bias(&self, extra: i64) -> Tensor {
        let columns = Tensor::arange(self.len + extra, (Kind::Int64, self.device)).unsqueeze(0);
        let starts = Tensor::from_slice(&self.starts)
            .to_device(self.device)
            .unsqueeze(1);
        let padding = columns.lt_tensor(&starts);
        Tensor::zeros(padding.size(), (Kind::Float, self.device))
            .masked_fill(&padding, f64::NEG_INFINITY)
            .view([self.starts.len() as i64, 1, 1, -1])
    }

    /// Adds the rows of a prefill (left-padded to its own length) as new
    /// last rows.
    pub fn join(&mut self, prefilled: &Prefilled) {
        let tokens = prefilled.columns();
        if tokens > self.len {
            // Shift the running rows right so the newcomers fit.
            let shift = tokens - self.len;
            let capacity = tokens.max(self.capacity) + GROWTH;
            self.reallocate(capacity, &self.all_rows(), 0, shift);
        }
        let offset = self.len - tokens;
        let rows = self.rows() as i64;
        let new_rows = prefilled.rows() as i64;
        let (heads, capacity, head_dim, device) =
            (self.heads, self.capacity, self.head_dim, self.device);
        for ((keys, values), (new_keys, new_values)) in
            self.layers.iter_mut().zip(&prefilled.layers)
        {
            let grow = |cached: &Tensor, new: &Tensor| {
                let block = Self::empty(new_rows, heads, capacity, head_dim, device);
                block.narrow(2, offset, tokens).copy_(new);
                Tensor::cat(&[cached.narrow(0, 0, rows), block], 0)
            };
            *keys = grow(keys, new_keys);
            *values = grow(values, new_values);
        }
        self.starts
            .extend(prefilled.starts.iter().map(|start| offset + start));
    }

    /// Adds `count` rows with no tokens yet (an encoder-decoder's decoder
    /// before its start token): all their columns so far are padding.
    pub fn add_empty_rows(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let rows = self.rows() as i64;
        let (heads, capacity, head_dim, device) =
            (self.heads, self.capacity, self.head_dim, self.device);
        for (keys, values) in self.layers.iter_mut() {
            let block = Self::empty(count as i64, heads, capacity, head_dim, device);
            *keys = Tensor::cat(&[&keys.narrow(0, 0, rows), &block], 0);
            let block = Self::empty(count as i64, heads, capacity, head_dim, device);
            *values = Tensor::cat(&[&values.narrow(0, 0, rows), &block], 0);
        }
        self.starts.extend(std::iter::repeat_n(self.len, count));
    }

    /// Row `i` becomes row `rows[i]`: rows may repeat, be reordered or
    /// leave (a beam search's step). Columns that are padding for every
    /// remaining row are dropped.
    pub fn select_rows(&mut self, rows: &[usize]) {
        if rows.is_empty() {
            *self = KvCache::new(self.layers.len(), self.heads, self.head_dim, self.device);
            return;
        }
        let identity = rows.len() == self.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
        if identity {
            return;
        }
        let first_used = rows.iter().map(|&row| self.starts[row]).min().unwrap_or(0);
        if rows.len() > self.rows() {
            self.reallocate(self.len - first_used + GROWTH, rows, first_used, 0);
            return;
        }
        // A beam search reorders every step: only the columns in use are
        // gathered, into the buffers already there (no new capacity to
        // allocate and clear; the columns past the new length are written
        // before they are read).
        let used = self.len - first_used;
        let count = rows.len() as i64;
        // Rows that keep their own contents stay where they are when no
        // column is dropped: a beam that extends itself is not copied.
        let (targets, sources): (Vec<i64>, Vec<i64>) = rows
            .iter()
            .enumerate()
            .filter(|&(target, &source)| first_used > 0 || target != source)
            .map(|(target, &source)| (target as i64, source as i64))
            .unzip();
        let to_device = |values: &[i64]| Tensor::from_slice(values).to_device(self.device);
        let (targets, sources) = (to_device(&targets), to_device(&sources));
        for (keys, values) in self.layers.iter_mut() {
            for tensor in [keys, values] {
                // Gathered before anything is written: a row may be read
                // for one target and overwritten as another.
                let selected = tensor.narrow(2, first_used, used).index_select(0, &sources);
                *tensor = tensor.narrow(0, 0, count);
                let _ = tensor
                    .narrow(2, 0, used)
                    .index_copy_(0, &targets, &selected);
            }
        }
        self.starts = rows
            .iter()
            .map(|&row| self.starts[row] - first_used)
            .collect();
        self.len = used;
    }

    /// Keeps only the rows in `keep` (in that order) and drops the columns
    /// that are padding for every remaining row.
    pub fn retain_rows(&mut self, keep: &[usize]) {
        if keep.len() == self.rows() {
            return;
        }
        if keep.is_empty() {
            *self = KvCache::new(self.layers.len(), self.heads, self.head_dim, self.device);
            return;
        }
        let first_used = keep.iter().map(|&row| self.starts[row]).min().unwrap_or(0);
        self.reallocate(self.len - first_used + GROWTH, keep, first_used, 0);
    }

    fn all_rows(&self) -> Vec<usize> {
        (0..self.rows()).collect()
    }

    /// Copies `rows` (in that order), columns `from..len`, into fresh buffers
    /// of `capacity`, starting at column `to`.
    fn reallocate(&mut self, capacity: i64, rows: &[usize], from: i64, to: i64) {
        let in_order = rows.len() == self.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
        let index = (!in_order).then(|| {
            Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>())
                .to_device(self.device)
        });
        let used = self.len - from;
        let (heads, head_dim, device) = (self.heads, self.head_dim, self.device);
        for (keys, values) in self.layers.iter_mut() {
            let move_into = |old: &Tensor| {
                let fresh = Self::empty(rows.len() as i64, heads, capacity, head_dim, device);
                if used > 0 && !rows.is_empty() {
                    let kept = old.narrow(2, from, used);
                    let kept = match &index {
                        Some(index) => kept.index_select(0, index),
                        None => kept,
                    };
                    fresh.narrow(2, to, used).copy_(&kept);
                }
                fresh
            };
            *keys = move_into(keys);
            *values = move_into(values);
        }
        self.starts = rows
            .iter()
            .map(|&row| self.starts[row] - from + to)
            .collect();
        self.len = used + to;
        self.capacity = capacity;
    }
}
