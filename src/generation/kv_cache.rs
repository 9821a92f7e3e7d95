//! Keys and values of every sequence in a running batch, left-padded to a
//! common length so one decoding step serves them all.
//!
//! Per layer, keys and values are [batch, heads, capacity, head_dim]; the
//! first `len` columns are in use. Row `i` holds its sequence in columns
//! `starts[i]..len`; the columns before are padding (zeros), masked out;
//! columns from `len` on may hold stale values and are written before they
//! are read. A sequence joins with the cache of its prefill (`Prefilled`), or
//! with no tokens yet (`add_empty_rows`, an encoder-decoder's decoder), and
//! leaves at any step; a beam search reorders rows in place (`select_rows`),
//! or, in a cache that defers reorders (`deferring_reorders`), only notes
//! for each row and column which buffer row holds it (`row_sources`), for
//! src/native's attention to read through, and moves the rows when it must.
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
    /// Whether a beam search's reorder only updates `sources`.
    defer_reorders: bool,
    /// With reorders deferred: [rows * capacity], for each row and column
    /// in use, the buffer row that holds it. None: each row holds its own.
    sources: Option<Vec<i64>>,
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
            defer_reorders: false,
            sources: None,
            starts: Vec::new(),
            len: 0,
            capacity: 0,
            heads,
            head_dim,
            device,
        }
    }

    /// This cache, reordered by a beam search through `row_sources` instead
    /// of by moving its rows, where src/native's attention reads it (fp32
    /// on a CPU with AVX2 and FMA): a 16-client beam-4 translation spent 9%
    /// of its time moving rows.
    pub fn deferring_reorders(mut self) -> KvCache {
        self.defer_reorders = self.device == Device::Cpu && crate::native::attention::available();
        self
    }

    /// An empty cache of the same shape and kind.
    fn emptied(&self) -> KvCache {
        let mut empty = KvCache::new(self.layers.len(), self.heads, self.head_dim, self.device);
        empty.defer_reorders = self.defer_reorders;
        empty
    }

    /// With a deferred reorder pending, [rows, len + 1] int64: for each row
    /// and column in use, and the column of this step (each row's own), the
    /// buffer row that holds it (`layers::attend_through`).
    pub fn row_sources(&self) -> Option<Tensor> {
        let sources = self.sources.as_ref()?;
        let (rows, capacity, len) = (self.rows(), self.capacity as usize, self.len as usize);
        let mut table = Vec::with_capacity(rows * (len + 1));
        for row in 0..rows {
            table.extend_from_slice(&sources[row * capacity..row * capacity + len]);
            table.push(row as i64);
        }
        Some(
            Tensor::from_slice(&table)
                .view([rows as i64, len as i64 + 1])
                .to_device(self.device),
        )
    }

    /// Moves every row's columns into the row itself, ending a deferred
    /// reorder.
    fn materialize(&mut self) {
        let Some(table) = self.sources.take() else {
            return;
        };
        let (rows, capacity, len) = (self.rows(), self.capacity as usize, self.len as usize);
        if len == 0 || rows == 0 {
            return;
        }
        let used: Vec<i64> = (0..rows)
            .flat_map(|row| table[row * capacity..row * capacity + len].iter().copied())
            .collect();
        let sources = Tensor::from_slice(&used)
            .view([rows as i64, len as i64])
            .to_device(self.device);
        for (keys, values) in self.layers.iter_mut() {
            for tensor in [keys, values] {
                let mut in_use = tensor.narrow(2, 0, len as i64);
                // gather_columns copies: every row is read before any is written.
                let gathered = gather_columns(&in_use, &sources);
                in_use.copy_(&gathered);
            }
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
        if let Some(sources) = self.sources.as_mut() {
            let (capacity, len) = (self.capacity as usize, self.len as usize);
            for (row, source) in sources.iter_mut().skip(len).step_by(capacity).enumerate() {
                *source = row as i64;
            }
        }
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
        self.materialize();
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
        self.materialize();
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
            *self = self.emptied();
            return;
        }
        let identity = rows.len() == self.rows() && rows.iter().enumerate().all(|(i, &r)| i == r);
        if identity {
            return;
        }
        let first_used = rows.iter().map(|&row| self.starts[row]).min().unwrap_or(0);
        if self.defer_reorders && rows.len() == self.rows() && first_used == 0 {
            self.defer(rows);
            return;
        }
        self.materialize();
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

    /// Row `i` becomes row `rows[i]` in `sources` only: each row's columns
    /// are read where they are until `materialize`.
    fn defer(&mut self, rows: &[usize]) {
        let (capacity, len) = (self.capacity as usize, self.len as usize);
        let old = self.sources.take().unwrap_or_else(|| {
            (0..self.rows())
                .flat_map(|row| std::iter::repeat_n(row as i64, capacity))
                .collect()
        });
        let mut sources = vec![0i64; rows.len() * capacity];
        for (target, &source) in rows.iter().enumerate() {
            sources[target * capacity..target * capacity + len]
                .copy_from_slice(&old[source * capacity..source * capacity + len]);
        }
        self.sources = Some(sources);
        self.starts = rows.iter().map(|&row| self.starts[row]).collect();
    }

    /// Keeps only the rows in `keep` (in that order) and drops the columns
    /// that are padding for every remaining row.
    pub fn retain_rows(&mut self, keep: &[usize]) {
        if keep.len() == self.rows() {
            return;
        }
        if keep.is_empty() {
            *self = self.emptied();
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
        self.materialize();
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

/// [rows, heads, columns, head_dim] buffers read as row b's column k =
/// buffer row `sources[b][k]` ([batch, columns] int64): [batch, heads,
/// columns, head_dim], a copy.
pub fn gather_columns(buffer: &Tensor, sources: &Tensor) -> Tensor {
    let size = sources.size();
    let columns = Tensor::arange(size[1], (Kind::Int64, sources.device()))
        .unsqueeze(0)
        .expand([size[0], size[1]], false);
    buffer
        .permute([0, 2, 1, 3])
        .index(&[Some(sources), Some(&columns)])
        .permute([0, 2, 1, 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row b's columns in use and the new one, as a reader sees them:
    /// through `row_sources` where a reorder is deferred.
    fn seen(cache: &KvCache) -> (Tensor, Tensor) {
        let (keys, values) = cache.layer_with_new_column(0);
        match cache.row_sources() {
            Some(sources) => (
                gather_columns(&keys, &sources),
                gather_columns(&values, &sources),
            ),
            None => (keys.contiguous(), values.contiguous()),
        }
    }

    fn same(deferred: &KvCache, moved: &KvCache) {
        let (deferred_keys, deferred_values) = seen(deferred);
        let (keys, values) = seen(moved);
        assert!(deferred_keys.equal(&keys) && deferred_values.equal(&values));
        assert_eq!(
            deferred.attention_bias(1).size(),
            moved.attention_bias(1).size()
        );
        assert!(deferred.attention_bias(1).equal(&moved.attention_bias(1)));
    }

    /// A beam search's steps on a cache that defers its reorders read the
    /// same keys and values as on one that moves its rows, through every
    /// way out of deferral: rows leaving, rows joining, growth.
    #[test]
    fn deferred_reorders_read_what_moved_rows_hold() {
        tch::manual_seed(8);
        let mut deferred = KvCache::new(1, 2, 3, Device::Cpu).deferring_reorders();
        if !deferred.defer_reorders {
            return; // this CPU does not run src/native's attention
        }
        let mut moved = KvCache::new(1, 2, 3, Device::Cpu);
        let mut rows = 4;
        for cache in [&mut deferred, &mut moved] {
            cache.add_empty_rows(rows);
        }
        let orders: [&[usize]; 6] = [
            &[1, 1, 0, 3],
            &[3, 2, 2, 0],
            &[0, 1, 2, 3],
            &[2, 0], // two rows leave
            &[1, 1],
            &[0, 1, 2, 2], // after two rows joined
        ];
        for (step, order) in orders.iter().enumerate() {
            let keys = Tensor::randn([rows as i64, 2, 1, 3], (Kind::Float, Device::Cpu));
            let values = Tensor::randn([rows as i64, 2, 1, 3], (Kind::Float, Device::Cpu));
            for cache in [&mut deferred, &mut moved] {
                cache.reserve_column();
                cache.write_column(0, &keys, &values);
            }
            same(&deferred, &moved);
            for cache in [&mut deferred, &mut moved] {
                cache.commit_column();
                cache.select_rows(order);
            }
            rows = order.len();
            if step == 4 {
                for cache in [&mut deferred, &mut moved] {
                    cache.add_empty_rows(2);
                }
                rows += 2;
            }
            same(&deferred, &moved);
        }
        assert!(
            deferred.sources.is_some(),
            "the last reorder stays deferred"
        );
        // Growing past the capacity moves the rows first.
        for _ in 0..GROWTH + 1 {
            let keys = Tensor::randn([rows as i64, 2, 1, 3], (Kind::Float, Device::Cpu));
            for cache in [&mut deferred, &mut moved] {
                cache.reserve_column();
                cache.write_column(0, &keys, &keys);
                cache.commit_column();
            }
        }
        same(&deferred, &moved);
    }
}
