//! How libtorch's OpenMP threads wait between parallel regions.
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

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

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

/// Makes libtorch run this thread's operations on this thread alone (its
/// parallel regions get a team of one), leaving every other thread's
/// setting as it is; returns whether libgomp took it.
///
/// `tch::set_num_threads` cannot do this: it also changes the process-wide
/// count that each new libtorch thread starts from. OpenMP's own
/// `omp_set_num_threads` sets only the calling thread's count, but libtorch
/// applies the process-wide count to a thread the first time that thread
/// asks for it, so that happens first (`tch::get_num_threads`). libgomp is
/// loaded by libtorch, not linked into this binary: its function is looked
/// up by name.
pub fn run_single_threaded_here() -> bool {
    let _ = tch::get_num_threads();
    // SAFETY: dlsym with RTLD_DEFAULT only searches the loaded libraries; the
    // symbol, when found, is libgomp's `void omp_set_num_threads(int)`.
    unsafe {
        let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"omp_set_num_threads".as_ptr());
        if symbol.is_null() {
            return false;
        }
        let set_num_threads: extern "C" fn(libc::c_int) = std::mem::transmute(symbol);
        set_num_threads(1);
    }
    tch::get_num_threads() == 1
}
