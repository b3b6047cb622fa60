#pragma once
// Progress of writing tensors: bytes done of the total, throughput and time left. On a terminal one line is
// redrawn a few times a second; otherwise (a log file, a pipe) a line is printed at every 10 %. Either way the
// last line printed says 100 %.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

namespace mlx2gguf {

// "writing tensors  42% (12.3 / 29.0 MiB, 85.1 MiB/s, ETA 0:02)"; at 100 % the elapsed time replaces the ETA.
std::string progress_line(uint64_t done, uint64_t total, double seconds);

// "0:07", "12:34", "1:02:03".
std::string format_duration(double seconds);

class Progress {
 public:
  using Log = std::function<void(const std::string&)>;
  // `log` may be empty (silent). `interactive`: redraw one line with '\r' (a terminal) instead of printing lines.
  Progress(Log log, uint64_t total, bool interactive);
  // Called from any thread as chunks are written.
  void advance(uint64_t bytes);
  // After the last chunk: makes sure the 100 % line was printed (and ends the redrawn line).
  void finish();

 private:
  double elapsed() const;

  Log log_;
  uint64_t total_;
  bool interactive_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::mutex mutex_;
  uint64_t done_ = 0;
  int next_percent_ = 10;
  bool printed_complete_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace mlx2gguf
