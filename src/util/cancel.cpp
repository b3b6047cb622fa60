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

// The handler may only use async-signal-safe calls, so each tracked path lives in a buffer that is allocated once and
// never freed, guarded by its slot's state: the handler reads only armed slots.
enum SlotState : int { kFree = 0, kBusy = 1, kArmed = 2 };
constexpr size_t kCleanupSlots = 1024;  // a split output writes one temporary file per part
constexpr size_t kPathBytes = 4096;
struct CleanupSlot {
  std::atomic<int> state{kFree};
  char* path = nullptr;
};
CleanupSlot cleanup_slots[kCleanupSlots];

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
  for (auto& slot : cleanup_slots)
    if (slot.state.load() == kArmed) ::unlink(slot.path);
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
  if (path.empty() || path.size() >= kPathBytes) return;  // too long to track: the first-signal path still cleans up
  for (auto& slot : cleanup_slots) {
    int expected = kFree;
    if (!slot.state.compare_exchange_strong(expected, kBusy)) continue;
    if (slot.path == nullptr) slot.path = new char[kPathBytes];
    std::memcpy(slot.path, path.c_str(), path.size() + 1);
    slot.state.store(kArmed);
    return;
  }
}

void clear_cancel_cleanup_path(const std::string& path) {
  for (auto& slot : cleanup_slots) {
    if (slot.state.load() != kArmed || path != slot.path) continue;
    int expected = kArmed;
    if (slot.state.compare_exchange_strong(expected, kBusy)) {
      slot.state.store(kFree);
      return;
    }
  }
}

}  // namespace mlx2gguf
