// Whole-model benchmark (scripts/bench.sh), printing what one run measured (never asserted): for each model folder,
// `cat` of its safetensors to /dev/null and to a file (the floor of reading, and of reading plus writing, the same
// bytes), then `mlx2gguf convert` to each output type, each with wall time, CPU time (user + system), peak resident
// memory split into anonymous (heap: what the converter allocates) and file-backed (mapped input and output pages,
// which the kernel can drop at any time), the output size and the ratios to `cat`.
//
// Peak anonymous and file-backed memory are sampled from /proc/<pid>/status every 5 ms (the kernel keeps only the
// peak of their sum, VmHWM, which is printed too).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model_size.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Measurement {
  double wall = 0, cpu = 0;
  uint64_t peak_anon_kib = 0, peak_file_kib = 0, peak_total_kib = 0;
};

// Reads "Key:   123 kB" lines of /proc/<pid>/status; false once the process is gone.
bool sample_status(pid_t pid, Measurement& m) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  if (!status) return false;
  std::string line;
  uint64_t anon = 0, file = 0, shmem = 0;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    fields >> key >> kib;
    if (key == "RssAnon:") anon = kib;
    else if (key == "RssFile:") file = kib;
    else if (key == "RssShmem:") shmem = kib;
  }
  m.peak_anon_kib = std::max(m.peak_anon_kib, anon);
  m.peak_file_kib = std::max(m.peak_file_kib, file + shmem);
  return true;
}

// Runs argv (no shell), sampling its memory until it exits. Throws if it fails.
Measurement run(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    execvp(args[0], args.data());
    _exit(127);
  }
  Measurement m;
  int status = 0;
  rusage usage{};
  while (true) {
    const pid_t done = wait4(pid, &status, WNOHANG, &usage);
    if (done == pid) break;
    if (done < 0) throw std::runtime_error("wait4 failed");
    sample_status(pid, m);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  m.wall = std::chrono::duration<double>(Clock::now() - start).count();
  const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  m.cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
  m.peak_total_kib = static_cast<uint64_t>(usage.ru_maxrss);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(fmt::format("'{}' failed (status {})", fmt::join(argv, " "), status));
  return m;
}

Measurement run_shell(const std::string& command) { return run({"/bin/sh", "-c", command}); }

using mlx2gguf::tools::kMiB;
using mlx2gguf::tools::safetensors_bytes;

void print_row(const std::string& what, const Measurement& m, double input_mib, double cat_file, double cat_null,
               const std::string& output) {
  fmt::print("  {:<16} {:>7.2f} {:>7.2f} {:>8.0f} {:>9.0f} {:>9.0f} {:>8.0f} {:>9.2f} {:>9.2f}  {}\n", what, m.wall,
             m.cpu, input_mib / m.wall, m.peak_anon_kib / 1024.0, m.peak_file_kib / 1024.0, m.peak_total_kib / 1024.0,
             cat_file > 0 ? m.wall / cat_file : 0.0, cat_null > 0 ? m.wall / cat_null : 0.0, output);
}

void bench_model(const fs::path& model, const std::string& binary, const fs::path& out_dir, int threads,
                 const std::vector<std::string>& out_types) {
  const double input_mib = safetensors_bytes(model) / kMiB;
  const std::string files = fmt::format("'{}'/*.safetensors", model.string());
  const fs::path copy = out_dir / "bench-model-cat.bin";
  fmt::print("\nwhole model: {} ({:.0f} MiB of safetensors), {} threads, one run each after a warm-up read\n",
             model.string(), input_mib, threads);
  fmt::print("  {:<16} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}\n", "run", "wall s", "CPU s", "MiB/s",
             "anon MiB", "file MiB", "HWM MiB", "/cat>file", "/cat>null");
  run_shell(fmt::format("cat {} > /dev/null", files));  // page cache warm for every run below
  const Measurement cat_null = run_shell(fmt::format("cat {} > /dev/null", files));
  const Measurement cat_file = run_shell(fmt::format("cat {} > '{}'", files, copy.string()));
  const Measurement cat_sync = run_shell(fmt::format("cat {} > '{}' && sync '{}'", files, copy.string(), copy.string()));
  fs::remove(copy);
  print_row("cat > /dev/null", cat_null, input_mib, cat_file.wall, cat_null.wall, "");
  print_row("cat > file", cat_file, input_mib, cat_file.wall, cat_null.wall, "");
  print_row("cat > file+sync", cat_sync, input_mib, cat_file.wall, cat_null.wall, "");
  for (const auto& type : out_types) {
    const fs::path gguf = out_dir / fmt::format("bench-model-{}.gguf", type);
    const Measurement m = run({binary, "convert", model.string(), "-o", gguf.string(), "--outtype", type, "-q",
                               "--threads", std::to_string(threads)});
    const double out_mib = static_cast<double>(fs::file_size(gguf)) / kMiB;
    fs::remove(gguf);
    print_row("convert " + type, m, input_mib, cat_file.wall, cat_null.wall, fmt::format("→ {:.0f} MiB", out_mib));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlx2gguf whole-model benchmark"};
  std::vector<std::string> models;
  std::vector<std::string> out_types = {"auto", "bf16", "f16", "q8_0", "q4_k_m"};
  std::string binary = "build/mlx2gguf";
  std::string out_dir = "build/bench";
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  app.add_option("MODEL_DIR", models, "mlx-lm folders to convert")->required();
  app.add_option("--outtypes", out_types, "Output types to time")->capture_default_str();
  app.add_option("--binary", binary, "The mlx2gguf binary")->capture_default_str();
  app.add_option("--out-dir", out_dir, "Where outputs are written (removed after each run)")->capture_default_str();
  app.add_option("--threads", threads, "Threads given to mlx2gguf")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    fs::create_directories(out_dir);
    for (const auto& model : models) bench_model(model, binary, out_dir, threads, out_types);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
