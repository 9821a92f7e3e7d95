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

use tch::Tensor;

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
/// concatenated in order: [sum of rows, out].
pub fn forward_in_shares(linear: &Linear, chunks: Vec<Tensor>) -> Tensor {
    let Some(pool) = pool() else {
        return linear.forward(&Tensor::cat(&chunks, 0));
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

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
}
