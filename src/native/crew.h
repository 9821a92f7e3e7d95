// Helper threads for the products of src/native/int8.cpp and fp32.cpp: a
// model thread's crew, which polls for work between products.
#pragma once

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace nlp {

// How long a helper keeps polling for the next product before it sleeps:
// longer than the gaps between a decoding step's linear layers (attention,
// norms: tens of microseconds), so that within a step it never sleeps, and
// short enough that between steps, or beside another model's thread, it
// gives its core back at once. It yields the core while it polls.
inline constexpr auto POLL_BEFORE_SLEEP = std::chrono::microseconds(150);

// Helper threads of one model thread for these products. libgomp's threads
// (`OMP_WAIT_POLICY=PASSIVE`, see src/openmp.rs) sleep after each parallel
// region and take tens of microseconds to wake, once per layer; a decoding
// step's product over one row reads a few megabytes, which two cores stream
// twice as fast as one, so the wake-ups ate the gain. These helpers poll
// between products instead. A product is split in chunks that the caller
// and its helpers take in turn, so a helper late to wake costs nothing: the
// caller takes its chunks.
class Crew {
public:
  explicit Crew(int helpers) {
    for (int i = 0; i < helpers; ++i) {
      threads_.emplace_back([this] { serve(); });
    }
  }

  ~Crew() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true);
    }
    wake_.notify_all();
    for (std::thread &thread : threads_) {
      thread.join();
    }
  }

  int size() const { return static_cast<int>(threads_.size()) + 1; }

  // `task(chunk)` for every chunk in [0, chunks), on this thread and the
  // helpers; returns when all have run and no helper holds the task.
  void run(int64_t chunks, const std::function<void(int64_t)> &task) {
    const Job job{&task, chunks};
    next_.store(0);
    job_.store(&job);
    closed_.store(false);
    sequence_.fetch_add(1);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    work(job);
    // A helper that counted itself in before this saw the job open and
    // holds it until it leaves; one that counts itself in after sees it
    // closed and does not touch it.
    closed_.store(true);
    while (active_.load() != 0) {
      _mm_pause();
    }
  }

private:
  struct Job {
    const std::function<void(int64_t)> *task;
    int64_t chunks;
  };

  void work(const Job &job) {
    for (int64_t chunk = next_.fetch_add(1); chunk < job.chunks; chunk = next_.fetch_add(1)) {
      (*job.task)(chunk);
    }
  }

  void serve() {
    uint64_t seen = 0;
    for (;;) {
      uint64_t sequence = sequence_.load();
      auto since = std::chrono::steady_clock::now();
      for (int polls = 1; sequence == seen; ++polls) {
        if (stop_.load()) {
          return;
        }
        _mm_pause();
        if (polls % 64 == 0) {
          sched_yield();
          if (std::chrono::steady_clock::now() - since > POLL_BEFORE_SLEEP) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleepers_.fetch_add(1);
            wake_.wait(lock, [&] { return sequence_.load() != seen || stop_.load(); });
            sleepers_.fetch_sub(1);
            since = std::chrono::steady_clock::now();
          }
        }
        sequence = sequence_.load();
      }
      seen = sequence;
      active_.fetch_add(1);
      if (!closed_.load()) {
        work(*job_.load());
      }
      active_.fetch_sub(1);
    }
  }

  std::vector<std::thread> threads_;
  std::atomic<uint64_t> sequence_{0};
  std::atomic<const Job *> job_{nullptr};
  std::atomic<int64_t> next_{0};
  std::atomic<bool> closed_{true};
  std::atomic<int> active_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// The calling thread's crew of `threads - 1` helpers (made on first use).
inline Crew &crew_of(int threads) {
  static thread_local std::unique_ptr<Crew> crew;
  if (!crew || crew->size() != threads) {
    crew.reset();
    crew = std::make_unique<Crew>(threads - 1);
  }
  return *crew;
}

// `task(chunk)` for every chunk in [0, chunks): on the calling thread alone
// for one thread or one chunk, else shared with its crew (at most 64).
inline void share(int64_t threads, int64_t chunks, const std::function<void(int64_t)> &task) {
  if (threads <= 1 || chunks < 2) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      task(chunk);
    }
  } else {
    crew_of(static_cast<int>(std::min<int64_t>(threads, 64))).run(chunks, task);
  }
}

}  // namespace nlp
