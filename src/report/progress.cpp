#include "report/progress.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace mlx2gguf {

std::string format_duration(double seconds) {
  const auto whole = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  const int64_t hours = whole / 3600, minutes = whole / 60 % 60, secs = whole % 60;
  if (hours > 0) return fmt::format("{}:{:02d}:{:02d}", hours, minutes, secs);
  return fmt::format("{}:{:02d}", minutes, secs);
}

std::string progress_line(uint64_t done, uint64_t total, double seconds) {
  constexpr double kMiB = 1048576.0;
  const int percent = total ? static_cast<int>(100 * done / total) : 100;
  // Before any measurable time has passed there is no rate to speak of.
  const bool measured = seconds > 1e-3 && done > 0;
  const double rate = measured ? done / kMiB / seconds : 0.0;
  std::string tail;
  if (done >= total)
    tail = fmt::format("{} elapsed", format_duration(seconds));
  else if (measured)
    tail = fmt::format("ETA {}", format_duration(static_cast<double>(total - done) / kMiB / rate));
  else
    tail = "ETA --:--";
  return fmt::format("writing tensors {:3d}% ({:.1f} / {:.1f} MiB, {:.1f} MiB/s, {})", percent, done / kMiB,
                     total / kMiB, rate, tail);
}

Progress::Progress(Log log, uint64_t total, bool interactive)
    : log_(std::move(log)), total_(total), interactive_(interactive) {}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(uint64_t bytes) {
  if (!log_) return;
  std::lock_guard lock(mutex_);
  // Counted under the lock, so lines come out in order and the one that completes the total is the last.
  done_ += bytes;
  const bool complete = done_ >= total_;
  if (interactive_) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(250) && !complete) return;
    last_draw_ = now;
    log_("\r  " + progress_line(done_, total_, elapsed()));
  } else {
    const int percent = total_ ? static_cast<int>(100 * done_ / total_) : 100;
    if (percent < next_percent_) return;
    while (next_percent_ <= percent) next_percent_ += 10;
    log_("  " + progress_line(done_, total_, elapsed()) + "\n");
  }
  printed_complete_ = complete;
}

void Progress::finish() {
  if (!log_) return;
  std::lock_guard lock(mutex_);
  if (!printed_complete_) {
    done_ = total_;
    log_((interactive_ ? "\r  " : "  ") + progress_line(done_, total_, elapsed()) + (interactive_ ? "" : "\n"));
    printed_complete_ = true;
  }
  if (interactive_) log_("\n");
}

}  // namespace mlx2gguf
