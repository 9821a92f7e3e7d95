//! Running a linear layer over a window's rows in shares, one per core.
//!
//! libtorch runs fbgemm's fp16 kernel on the calling thread only, and its
//! int8 one in a parallel region over libtorch's threads; a window has
//! hundreds of rows, so they are split between the threads of a pool kept
//! for the life of the process, one share per thread.
//! Each pool thread runs libtorch single-threaded: a share that opened
//! parallel regions of its own would put two teams on the same cores.
//!
//! The pool replaced a thread spawned per share per call. On a 2-core AMD
//! EPYC, each spawned thread also started a fresh OpenMP team for the
//! kernel's own parallel regions: 30 one-window requests took 7.6 s of CPU
//! time with 27,700 context switches and 1,287 migrations, against 5.8 s,
//! 10,300 and 42 with this pool (`perf stat` on the server).

use std::sync::OnceLock;

use tch::{Kind, Tensor};

use crate::generation::linear::Linear;

/// The process's pool, or None when it could not be started (the caller
/// then runs the layer on its own thread).
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("linear-share-{index}"))
            .start_handler(|_| {
                if !crate::openmp::run_single_threaded_here() {
                    tracing::warn!("a linear-share thread could not run libtorch single-threaded");
                }
            })
            .build();
        match built {
            Ok(pool) => Some(pool),
            Err(error) => {
                tracing::warn!(%error, "no thread pool for linear layers; they run on the model thread");
                None
            }
        }
    })
    .as_ref()
}

/// How many threads share a layer's rows.
pub fn threads() -> usize {
    pool().map_or(1, rayon::ThreadPool::current_num_threads)
}

/// `linear` over each of `chunks` (2-D, [rows, in]) on the pool's threads,
/// concatenated in order: [sum of rows, out]. A layer that can write into a
/// given buffer (int8) writes each share's rows in place; concatenating
/// the shares' outputs afterwards ran on the model thread alone, 4.6% of a
/// 16-client int8 QA profile on a 2-vCPU Zen 4.
pub fn forward_in_shares(linear: &Linear, chunks: Vec<Tensor>) -> Tensor {
    let Some(pool) = pool() else {
        return linear.forward(&Tensor::cat(&chunks, 0));
    };
    if let (Some(outputs), Some(first)) = (linear.writes_into(), chunks.first()) {
        let rows: i64 = chunks.iter().map(|chunk| chunk.size()[0]).sum();
        let output = Tensor::empty([rows, outputs], (Kind::Float, first.device()));
        into_rows(pool, linear, chunks, &output, false);
        return output;
    }
    // A tensor may move between threads but not be shared by them: each
    // share gets its own handle on the layer's storage.
    let jobs: Vec<(Linear, Tensor)> = chunks
        .into_iter()
        .map(|chunk| (linear.shallow_clone(), chunk))
        .collect();
    let mut outputs: Vec<Option<Tensor>> = jobs.iter().map(|_| None).collect();
    let slots: Vec<&mut Option<Tensor>> = outputs.iter_mut().collect();
    pool.scope(move |scope| {
        for (slot, (layer, chunk)) in slots.into_iter().zip(jobs) {
            scope.spawn(move |_| *slot = Some(layer.forward(&chunk)));
        }
    });
    // rayon's scope returns once every share has run, and re-raises a
    // share's panic on this thread: each slot is filled.
    let outputs: Vec<Tensor> = outputs.into_iter().flatten().collect();
    Tensor::cat(&outputs, 0)
}

/// Adds `linear(chunks)` in place to `residual` (contiguous fp32 with the
/// output's elements, in any shape), each share into its rows: the residual
/// sum in the product's pass (an fp32 read and write of the output fewer).
/// False, `residual` untouched, where that cannot be done: no pool, a layer
/// that does not write into a buffer, or another residual.
pub fn add_in_shares(linear: &Linear, chunks: &[Tensor], residual: &Tensor) -> bool {
    let (Some(pool), Some(outputs)) = (pool(), linear.writes_into()) else {
        return false;
    };
    let rows: i64 = chunks.iter().map(|chunk| chunk.size()[0]).sum();
    if residual.kind() != Kind::Float
        || !residual.is_contiguous()
        || residual.numel() != usize::try_from(rows * outputs).unwrap_or(usize::MAX)
    {
        return false;
    }
    let chunks = chunks.iter().map(Tensor::shallow_clone).collect();
    into_rows(pool, linear, chunks, &residual.view([rows, outputs]), true);
    true
}

/// Each of `chunks` through `linear` on the pool's threads, written (or
/// with `add` added) into its rows of `output`, in order.
fn into_rows(
    pool: &rayon::ThreadPool,
    linear: &Linear,
    chunks: Vec<Tensor>,
    output: &Tensor,
    add: bool,
) {
    let mut start = 0;
    let jobs: Vec<(Linear, Tensor, Tensor)> = chunks
        .into_iter()
        .map(|chunk| {
            let count = chunk.size()[0];
            let rows = output.narrow(0, start, count);
            start += count;
            (linear.shallow_clone(), chunk, rows)
        })
        .collect();
    pool.scope(move |scope| {
        for (layer, chunk, rows) in jobs {
            scope.spawn(move |_| {
                if let Err(error) = layer.forward_into(&chunk, &rows, add) {
                    panic!("linear layer share: {error}");
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn pool_threads_run_libtorch_single_threaded() {
        let Some(pool) = pool() else {
            panic!("the pool starts");
        };
        let inside = pool.install(|| {
            // A parallel-capable operation first, as a share runs, then the
            // count libtorch would use for the next one.
            let _ = Tensor::ones([1 << 20], (Kind::Float, Device::Cpu)).sum(Kind::Float);
            tch::get_num_threads()
        });
        assert_eq!(inside, 1);
    }

    #[test]
    fn shares_are_concatenated_in_order() {
        tch::manual_seed(4);
        let input = Tensor::randn([70, 16], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([8, 16], (Kind::Float, Device::Cpu));
        let layer = Linear::new(&weight, None, crate::generation::linear::Precision::Fp32);
        let split = forward_in_shares(&layer, input.chunk(3, 0));
        assert!(split.allclose(&input.linear(&weight, None::<&Tensor>), 1e-6, 1e-6, false));
    }

    /// An int8 layer on src/native/int8.cpp's kernel writes each share's
    /// rows in place: its rows are quantised one by one, so the result is
    /// exactly one call's.
    #[test]
    fn int8_shares_write_their_rows_in_place() {
        tch::manual_seed(5);
        let input = Tensor::randn([70, 32], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([24, 32], (Kind::Float, Device::Cpu));
        let layer = Linear::new(&weight, None, crate::generation::linear::Precision::Int8);
        if layer.writes_into().is_none() {
            return;
        }
        let split = forward_in_shares(&layer, input.chunk(3, 0));
        assert_eq!(split.size(), [70, 24]);
        assert!(split.equal(&layer.forward(&input)));
    }

    /// The residual sum in place: what `forward(x) + residual` gives, in
    /// the residual's own storage; a residual of another shape is given
    /// back untouched.
    #[test]
    fn int8_shares_add_into_the_residual() {
        tch::manual_seed(6);
        let input = Tensor::randn([70, 32], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([24, 32], (Kind::Float, Device::Cpu));
        let residual = Tensor::randn([70, 24], (Kind::Float, Device::Cpu));
        let layer = Linear::new(&weight, None, crate::generation::linear::Precision::Int8);
        if layer.writes_into().is_none() || pool().is_none() {
            return;
        }
        let expected = layer.forward(&input) + &residual;
        let sum = residual.copy();
        assert!(add_in_shares(&layer, &input.chunk(3, 0), &sum));
        assert!(sum.equal(&expected));
        let wrong = residual.narrow(0, 0, 69).copy();
        assert!(!add_in_shares(&layer, &input.chunk(3, 0), &wrong));
        assert!(wrong.equal(&residual.narrow(0, 0, 69)));
        let fp32 = Linear::new(&weight, None, crate::generation::linear::Precision::Fp32);
        let untouched = residual.copy();
        assert!(!add_in_shares(&fp32, &input.chunk(3, 0), &untouched));
        assert!(untouched.equal(&residual));
    }
}
