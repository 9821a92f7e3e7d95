//! How libtorch's OpenMP threads wait between parallel regions, and how
//! many of them a thread's operations use.
//!
//! libgomp (the OpenMP runtime of the torch wheel) reads `OMP_WAIT_POLICY`
//! once, when the library loads, before `main`. Its default lets idle
//! intra-op threads spin for a while before sleeping; spinning only turns
//! into short naps when the process holds more OpenMP threads than the
//! machine has cores. When the cores are shared (HTTP workers, the tokenizer
//! pool, other processes), spinning threads take the cores the model thread
//! needs: on 2 cores under an overload of 64 clients, completion served 6
//! requests/s with spinning and 30 with `PASSIVE` (`make overload-smoke`),
//! while unloaded latency stayed within the run-to-run spread. So the server
//! runs with `PASSIVE` unless the variable is already set.
//!
//! The price of sleeping threads is a wake-up in every parallel region, and
//! a decoding step over a few rows runs hundreds of small ones. So a model
//! thread sets its own count per step (`StepThreads`): one thread below
//! `SINGLE_THREADED_BELOW_ROWS` rows, all of them above. On 2 cores, int8
//! beam-4 translation of one sentence took 421-431 ms (p50) this way against
//! 490-754 ms with both threads on every step, and 16 clients were served no
//! slower (6.9-7.7 req/s against 4.6-6.4).

use std::cell::Cell;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

const VARIABLE: &str = "OMP_WAIT_POLICY";

/// Replaces this process by itself with `OMP_WAIT_POLICY=PASSIVE` when the
/// environment does not set the policy; returns (with a warning) only if that
/// fails, or at once when the policy is set. The process keeps its id.
pub fn ensure_passive_wait_policy() {
    if std::env::var_os(VARIABLE).is_some() {
        return;
    }
    let executable = match std::env::current_exe() {
        Ok(executable) => executable,
        Err(error) => return warn(&error),
    };
    let mut arguments = std::env::args_os();
    let name = arguments
        .next()
        .unwrap_or_else(|| OsString::from("nlp-serve"));
    let error = Command::new(executable)
        .arg0(name)
        .args(arguments)
        .env(VARIABLE, "PASSIVE")
        .exec();
    warn(&error);
}

fn warn(error: &std::io::Error) {
    eprintln!(
        "warning: could not restart with {VARIABLE}=PASSIVE ({error}); \
         set it in the environment to keep idle libtorch threads off shared cores"
    );
}

/// libgomp's `void omp_set_num_threads(int)`, looked up once. libgomp is
/// loaded by libtorch, not linked into this binary, so it is found by name.
fn omp_set_num_threads() -> Option<extern "C" fn(libc::c_int)> {
    static FUNCTION: OnceLock<Option<extern "C" fn(libc::c_int)>> = OnceLock::new();
    *FUNCTION.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT only searches the loaded libraries;
        // the symbol, when found, is libgomp's function of that signature.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"omp_set_num_threads".as_ptr());
            (!symbol.is_null()).then(|| {
                std::mem::transmute::<*mut libc::c_void, extern "C" fn(libc::c_int)>(symbol)
            })
        }
    })
}

/// Sets how many threads libtorch's parallel regions use when started from
/// this thread, leaving every other thread's count as it is; returns whether
/// libgomp took it.
///
/// `tch::set_num_threads` cannot do this: it also changes the process-wide
/// count that each new libtorch thread starts from. OpenMP's own
/// `omp_set_num_threads` sets only the calling thread's count, but libtorch
/// applies the process-wide count to a thread the first time that thread
/// asks for it, so that happens first (`tch::get_num_threads`). MKL's fp32
/// products keep the count libtorch gave them.
pub fn set_threads_here(count: i32) -> bool {
    let _ = tch::get_num_threads();
    let Some(set_num_threads) = omp_set_num_threads() else {
        return false;
    };
    set_num_threads(count.max(1));
    tch::get_num_threads() == count.max(1)
}

/// MKL's `int MKL_Set_Num_Threads_Local(int)` (its C interface; the
/// lower-case name is the Fortran one, which takes a pointer), looked up
/// once. The torch wheel links MKL into libtorch and exports it.
fn mkl_set_num_threads_local() -> Option<extern "C" fn(libc::c_int) -> libc::c_int> {
    static FUNCTION: OnceLock<Option<extern "C" fn(libc::c_int) -> libc::c_int>> = OnceLock::new();
    *FUNCTION.get_or_init(|| {
        // SAFETY: as in `omp_set_num_threads`: the symbol, when found, is
        // MKL's function of that signature.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"MKL_Set_Num_Threads_Local".as_ptr());
            (!symbol.is_null()).then(|| {
                std::mem::transmute::<*mut libc::c_void, extern "C" fn(libc::c_int) -> libc::c_int>(
                    symbol,
                )
            })
        }
    })
}

/// Runs `operation` with MKL on this thread alone when libtorch runs this
/// thread's operations single-threaded (a small step, `StepThreads`), and
/// as it is otherwise.
///
/// For attention: MKL keeps the process-wide count libtorch gave it
/// (`set_threads_here` does not reach its products), and in a
/// single-threaded step libtorch's fused attention calls MKL once per row
/// and head, a matrix-vector product for a one-token query. A profile of
/// int8 sampled completion on a 2-vCPU AMD EPYC (Zen 4) had 36% of its
/// samples in libgomp's futex wake-ups and waits, under MKL's threaded
/// matrix-vector product among others. With MKL alone there, in
/// alternating runs, 128 sampled tokens took 494-505 ms (p50) at one client
/// against 914-984 ms, and 4 clients were served 3.95-4.42 req/s against
/// 1.30-1.40.
pub fn mkl_alone_in_small_steps<T>(operation: impl FnOnce() -> T) -> T {
    if tch::get_num_threads() > 1 {
        return operation();
    }
    let Some(set_local) = mkl_set_num_threads_local() else {
        return operation();
    };
    let previous = set_local(1);
    let result = operation();
    set_local(previous);
    result
}

/// Makes libtorch run this thread's operations on this thread alone.
pub fn run_single_threaded_here() -> bool {
    set_threads_here(1)
}

/// A decoding step over fewer rows than this runs libtorch single-threaded
/// (MKL's fp32 products excepted, see `set_threads_here`). Its operations
/// are too small to gain from a second thread, which only adds a wake-up per
/// parallel region: a beam-4 sentence's step (4 rows) runs hundreds of them,
/// each waking a sleeping thread (`OMP_WAIT_POLICY=PASSIVE`). A step's
/// int8 and few-row fp32 products and its attention run on the model
/// thread's crew (src/native) whatever this count; with those there, 16
/// beam-4 sentences' steps (64 rows) also gained from one thread: on a
/// 2-vCPU AMD EPYC (Zen 4), alternating, int8 translation at 16 clients
/// served 17.1-17.9 req/s with 128 here against 16.3-16.7 with 32, and fp32
/// 5.40 against 5.34.
pub const SINGLE_THREADED_BELOW_ROWS: usize = 128;

thread_local! {
    /// The count a model thread started with (`StepThreads::new`); 0 on
    /// other threads.
    static MOST_THREADS: Cell<i32> = const { Cell::new(0) };
}

/// The threads an operation of a model thread may use, its own included,
/// whatever the step's count (`StepThreads`); 1 on other threads (QA's
/// shares, tests).
pub fn model_threads() -> i32 {
    MOST_THREADS.get().max(1)
}

/// Runs `operation` on all of a model thread's threads even within a
/// single-threaded step. For the few large operations of a small step: an
/// int8 projection onto a vocabulary on fbgemm (where int8 does not run on
/// src/native/int8.cpp's kernel and its crew) over one row reads 26-39 MB of
/// weights, which one core streams at about half the speed two do (1 x 768
/// x 50,257 on a 2-core AMD EPYC: 3.8 ms on one thread, 2.2 ms on two), for
/// one wake-up of the second thread. Elsewhere it just runs `operation`.
pub fn on_all_step_threads<T>(operation: impl FnOnce() -> T) -> T {
    let most = MOST_THREADS.get();
    let current = tch::get_num_threads();
    if most <= current || !set_threads_here(most) {
        return operation();
    }
    let result = operation();
    set_threads_here(current);
    result
}

/// The thread count a model thread gives libtorch for each step: one for
/// small steps, all of them (the count it started with) for large ones.
pub struct StepThreads {
    most: i32,
    current: i32,
}

impl StepThreads {
    /// Reads the calling thread's count: call it on the model thread.
    pub fn new() -> StepThreads {
        let most = tch::get_num_threads().max(1);
        MOST_THREADS.set(most);
        StepThreads {
            most,
            current: most,
        }
    }

    /// Sets the count for a step over `rows` rows (no call when unchanged).
    pub fn for_rows(&mut self, rows: usize) {
        let wanted = if rows < SINGLE_THREADED_BELOW_ROWS {
            1
        } else {
            self.most
        };
        if wanted != self.current && set_threads_here(wanted) {
            self.current = wanted;
        }
    }
}

impl Default for StepThreads {
    fn default() -> Self {
        StepThreads::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_steps_run_single_threaded_and_large_ones_on_all_threads() {
        std::thread::spawn(|| {
            assert!(set_threads_here(2), "libgomp not found");
            let mut threads = StepThreads::new();
            threads.for_rows(SINGLE_THREADED_BELOW_ROWS - 1);
            assert_eq!(tch::get_num_threads(), 1);
            threads.for_rows(SINGLE_THREADED_BELOW_ROWS);
            assert_eq!(tch::get_num_threads(), 2);
            threads.for_rows(1);
            assert_eq!(tch::get_num_threads(), 1);
            let inside = on_all_step_threads(tch::get_num_threads);
            assert_eq!(inside, 2, "a large operation runs on both threads");
            assert_eq!(tch::get_num_threads(), 1, "and the step goes on with one");
        })
        .join()
        .expect("the test thread panicked");
    }

    /// MKL's thread-local count for this thread (0: none, the
    /// process-wide count applies), read by setting it and putting it back.
    fn mkl_local_threads() -> i32 {
        let set_local = mkl_set_num_threads_local().expect("MKL found");
        let local = set_local(0);
        set_local(local);
        local
    }

    #[test]
    fn mkl_runs_alone_in_small_steps_only() {
        std::thread::spawn(|| {
            assert!(set_threads_here(2), "libgomp not found");
            let mut threads = StepThreads::new();
            assert_eq!(mkl_local_threads(), 0);
            threads.for_rows(SINGLE_THREADED_BELOW_ROWS);
            assert_eq!(mkl_alone_in_small_steps(mkl_local_threads), 0);
            threads.for_rows(1);
            assert_eq!(mkl_alone_in_small_steps(mkl_local_threads), 1);
            assert_eq!(mkl_local_threads(), 0, "and MKL's count is put back");
        })
        .join()
        .expect("the test thread panicked");
    }

    #[test]
    fn outside_a_model_thread_large_operations_keep_the_count() {
        std::thread::spawn(|| {
            assert!(set_threads_here(1), "libgomp not found");
            assert_eq!(on_all_step_threads(tch::get_num_threads), 1);
        })
        .join()
        .expect("the test thread panicked");
    }
}
