#include "util/cancel.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>

namespace mlx2gguf {

namespace {

std::atomic<int> requested_signal{0};

// The handler may only use async-signal-safe calls, so the path lives in a fixed buffer guarded by a flag.
char cleanup_path[4096];
std::atomic<bool> cleanup_armed{false};

void write_stderr(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void on_cancel_signal(int signal_number) {
  int expected = 0;
  if (requested_signal.compare_exchange_strong(expected, signal_number)) {
    write_stderr("\ncancelling: stopping the workers and removing the temporary file (signal again to stop at once)\n");
    return;
  }
  if (cleanup_armed.load()) ::unlink(cleanup_path);
  ::_exit(128 + signal_number);
}

std::string signal_name(int signal_number) {
  if (signal_number == SIGINT) return "SIGINT";
  if (signal_number == SIGTERM) return "SIGTERM";
  return fmt::format("signal {}", signal_number);
}

}  // namespace

Cancelled::Cancelled(int signal_number)
    : Error(fmt::format("cancelled by {}: the output file was not written", signal_name(signal_number))),
      signal_number_(signal_number) {}

void install_cancel_handlers() {
  struct sigaction action {};
  action.sa_handler = on_cancel_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}

void throw_if_cancelled() {
  if (const int signal_number = requested_signal.load(std::memory_order_relaxed)) throw Cancelled(signal_number);
}

void set_cancel_cleanup_path(const std::string& path) {
  cleanup_armed.store(false);
  if (path.size() >= sizeof(cleanup_path)) return;  // too long to track: the first-signal path still cleans up
  std::memcpy(cleanup_path, path.c_str(), path.size() + 1);
  cleanup_armed.store(true);
}

void clear_cancel_cleanup_path(const std::string& path) {
  if (cleanup_armed.load() && path == cleanup_path) cleanup_armed.store(false);
}

}  // namespace mlx2gguf
