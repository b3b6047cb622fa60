#pragma once
// Cancellation by SIGINT / SIGTERM. The first signal asks the running conversion to stop: workers notice it at
// their next chunk and throw Cancelled, and unwinding removes the temporary output file. A second signal (the user
// insisting) removes the registered temporary file from the handler itself and exits at once.
#include <string>

#include "util/error.h"

namespace mlx2gguf {

class Cancelled : public Error {
 public:
  explicit Cancelled(int signal_number);
  int signal_number() const { return signal_number_; }
  // The conventional exit status of a process stopped by the signal: 128 + its number (130 for SIGINT).
  int exit_status() const { return 128 + signal_number_; }

 private:
  int signal_number_;
};

// Installs the SIGINT / SIGTERM handlers (and ignores SIGXFSZ, so that exceeding a file-size limit is a write
// error naming the file instead of a silent kill). Call once, from the main thread, before starting work.
void install_cancel_handlers();

// Throws Cancelled when a signal asked to stop. Cheap: one atomic load.
void throw_if_cancelled();

// Temporary files the second-signal path removes: every file being written (one per part of a split output, up to
// 1024) is registered until it is renamed or removed.
void set_cancel_cleanup_path(const std::string& path);
void clear_cancel_cleanup_path(const std::string& path);

}  // namespace mlx2gguf
