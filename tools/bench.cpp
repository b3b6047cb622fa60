// Speed benchmark, printing ratios measured in the same run (never asserted):
//   encoders  weights/s of each of our encoders on all threads vs ggml's quantizer (ggml_quantize_chunk from the
//             prebuilt libggml-base) on the same data, also on all threads;
//   repack    `convert --outtype auto` of an MLX-quantized folder (lossless repack) vs `cat` of its safetensors
//             into a file in the same output directory;
//   q4_k_m    `mlx2gguf convert --outtype q4_k_m --pure` of a float folder vs llama.cpp's llama_model_quantize
//             (what llama-quantize runs) of the same weights as a bf16 GGUF, in weights per CPU-second (the
//             machine may be busy with other work: CPU time is what each side actually used), and whether the
//             two files hold the same tensor bytes.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "convert.h"
#include "gguf_listing.h"
#include "encode/row_encoder.h"
#include "llama_oracle.h"
#include "util/error.h"

namespace {

namespace fs = std::filesystem;
using namespace mlx2gguf;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Best of `repeats` timings: the least disturbed run.
template <typename F>
double best_time(int repeats, F&& run) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    run();
    best = std::min(best, seconds_since(start));
  }
  return best;
}

void bench_encoders(int threads, int64_t rows, int64_t row_length) {
  std::vector<float> data(static_cast<size_t>(rows * row_length));
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& x : data) x = normal(rng);
  const double weights = static_cast<double>(data.size());
  const int64_t rows_per_task = std::max<int64_t>(1, rows / (8 * threads));
  fmt::print("encoders: {} weights ({} rows of {}), {} threads, best of 3\n", data.size(), rows, row_length, threads);
  fmt::print("  {:<6} {:>14} {:>14} {:>8}\n", "type", "ours Mw/s", "ggml Mw/s", "ratio");
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K,
                        GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::MXFP4, GgmlType::NVFP4}) {
    const int64_t row_bytes = ggml_row_bytes(type, row_length);
    std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
    const int64_t tasks = (rows + rows_per_task - 1) / rows_per_task;
    auto task_rows = [&](int64_t t) { return std::min(rows_per_task, rows - t * rows_per_task); };
    const double ours = best_time(3, [&] {
      tbb::parallel_for(int64_t{0}, tasks, [&](int64_t t) {
        const int64_t first = t * rows_per_task;
        encode_rows(type, data.data() + first * row_length, task_rows(t), row_length, out.data() + first * row_bytes);
      });
    });
    const double ggml = best_time(3, [&] {
      tbb::parallel_for(int64_t{0}, tasks, [&](int64_t t) {
        const int64_t first = t * rows_per_task;
        const auto bytes = oracle::ggml_quantize(static_cast<int>(type), data.data() + first * row_length, task_rows(t), row_length);
        std::copy(bytes.begin(), bytes.end(), out.begin() + first * row_bytes);
      });
    });
    fmt::print("  {:<6} {:>14.1f} {:>14.1f} {:>8.2f}\n", ggml_type_info(type).name, weights / ours / 1e6,
               weights / ggml / 1e6, ggml / ours);
  }
}

uint64_t safetensors_bytes(const fs::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".safetensors") total += entry.file_size();
  return total;
}

void bench_repack(const fs::path& model, const fs::path& out_dir, int threads) {
  const uint64_t bytes = safetensors_bytes(model);
  const fs::path copy = out_dir / "bench-cat.bin", gguf = out_dir / "bench-repack.gguf";
  const std::string cat = fmt::format("cat '{}'/*.safetensors > '{}'", model.string(), copy.string());
  // convert publishes its file durably (fsync before the rename), so `cat` is timed both ways.
  const std::string cat_sync = cat + fmt::format(" && sync '{}'", copy.string());
  auto run = [](const std::string& command) {
    if (std::system(command.c_str()) != 0) fail("'{}' failed", command);
  };
  run(cat);  // also warms the page cache for every run below
  const double cat_seconds = best_time(3, [&] { run(cat); });
  const double cat_sync_seconds = best_time(3, [&] { run(cat_sync); });
  ConvertSummary summary;
  const double repack_seconds = best_time(3, [&] {
    ConvertOptions options;
    options.model_dir = model;
    options.outfile = gguf;
    options.threads = threads;
    summary = convert(options);
  });
  const double mib = 1048576.0;
  fmt::print("repack: {} ({:.0f} MiB of safetensors) → {:.0f} MiB GGUF, {} threads, best of 3\n", model.string(),
             bytes / mib, summary.file_bytes / mib, threads);
  for (const auto& [type, s] : summary.types)
    fmt::print("  {:<6} {:4d} tensors{}\n", type, s.tensors, s.notes.empty() ? "" : fmt::format(" ({})", s.notes.begin()->first));
  fmt::print("  cat of the safetensors:         {:.2f} s ({:.0f} MiB/s)\n", cat_seconds, bytes / mib / cat_seconds);
  fmt::print("  cat + sync of the output:       {:.2f} s ({:.0f} MiB/s)\n", cat_sync_seconds, bytes / mib / cat_sync_seconds);
  fmt::print("  mlx2gguf convert (auto, fsync): {:.2f} s ({:.0f} MiB/s of input)\n", repack_seconds,
             bytes / mib / repack_seconds);
  fmt::print("  time ratio convert / cat:        {:.2f}\n", repack_seconds / cat_seconds);
  fmt::print("  time ratio convert / (cat+sync): {:.2f}\n", repack_seconds / cat_sync_seconds);
  fs::remove(copy);
  fs::remove(gguf);
}

double cpu_seconds(int who) {
  rusage usage{};
  getrusage(who, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Runs argv (no shell) and waits; throws if it fails.
void run_child(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) fail("fork failed");
  if (pid == 0) {
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("'{}' failed", fmt::join(argv, " "));
}

std::string file_range(const fs::path& path, uint64_t offset, uint64_t bytes) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string data(bytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(bytes));
  return data;
}

// Tensors whose type or bytes differ between the two files (by name), and the weights of the first file.
struct Comparison {
  int64_t weights = 0;
  int tensors = 0;
  std::vector<std::string> different;
};

Comparison compare_tensors(const fs::path& ours, const fs::path& theirs) {
  const oracle::GgufListing a = oracle::gguf_list_file(ours.string());
  const oracle::GgufListing b = oracle::gguf_list_file(theirs.string());
  Comparison c;
  for (const auto& t : a.tensors) {
    int64_t elements = 1;
    for (int64_t d : t.ne) elements *= d;
    c.weights += elements;
    ++c.tensors;
    const auto match = std::find_if(b.tensors.begin(), b.tensors.end(), [&](const auto& u) { return u.name == t.name; });
    if (match == b.tensors.end() || match->type != t.type || match->bytes != t.bytes ||
        file_range(ours, t.file_offset, t.bytes) != file_range(theirs, match->file_offset, match->bytes))
      c.different.push_back(t.name);
  }
  return c;
}

// Q4_K_M encoding of a float MLX folder: ours (the mlx2gguf binary, a child process: its CPU time is the
// children's) against llama_model_quantize in this process on the same weights as a bf16 GGUF written by us.
void bench_q4_k_m(const fs::path& model, const std::string& binary, const fs::path& out_dir, int threads) {
  const fs::path source = out_dir / "bench-q4km-source-bf16.gguf";
  const fs::path ours = out_dir / "bench-q4km-ours.gguf", theirs = out_dir / "bench-q4km-llama.gguf";
  run_child({binary, "convert", model.string(), "-o", source.string(), "--outtype", "bf16", "-q"});
  // Both sides read their input once before being timed, so the page cache is warm for each.
  run_child({binary, "convert", model.string(), "-o", ours.string(), "--outtype", "q4_k_m", "--pure", "-q",
             "--threads", std::to_string(threads)});
  const double our_cpu_before = cpu_seconds(RUSAGE_CHILDREN);
  auto start = Clock::now();
  run_child({binary, "convert", model.string(), "-o", ours.string(), "--outtype", "q4_k_m", "--pure", "-q",
             "--threads", std::to_string(threads)});
  const double our_wall = seconds_since(start), our_cpu = cpu_seconds(RUSAGE_CHILDREN) - our_cpu_before;
  oracle::llama_quantize_file(source.string(), theirs.string(), 15, threads);  // 15 = LLAMA_FTYPE_MOSTLY_Q4_K_M
  const double their_cpu_before = cpu_seconds(RUSAGE_SELF);
  start = Clock::now();
  oracle::llama_quantize_file(source.string(), theirs.string(), 15, threads);
  const double their_wall = seconds_since(start), their_cpu = cpu_seconds(RUSAGE_SELF) - their_cpu_before;
  const Comparison c = compare_tensors(ours, theirs);
  double load[1] = {0};
  getloadavg(load, 1);
  fmt::print("q4_k_m: {} ({} weights in {} tensors), {} threads, load average {:.1f} at the end\n", model.string(),
             c.weights, c.tensors, threads, load[0]);
  fmt::print("  {:<28} {:>7} {:>7} {:>16}\n", "run", "wall s", "CPU s", "Mweights/CPU-s");
  const double w = static_cast<double>(c.weights) / 1e6;
  fmt::print("  {:<28} {:>7.2f} {:>7.2f} {:>16.1f}\n", "mlx2gguf convert --pure", our_wall, our_cpu, w / our_cpu);
  fmt::print("  {:<28} {:>7.2f} {:>7.2f} {:>16.1f}\n", "llama_model_quantize (bf16)", their_wall, their_cpu,
             w / their_cpu);
  fmt::print("  weights per CPU-second, ours / llama-quantize: {:.2f}\n", their_cpu / our_cpu);
  fmt::print("  tensor bytes: {}\n", c.different.empty() ? std::string("identical")
                                                          : fmt::format("{} of {} tensors differ (first: {})",
                                                                        c.different.size(), c.tensors, c.different[0]));
  for (const auto& f : {source, ours, theirs}) fs::remove(f);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlx2gguf speed benchmark (prints numbers, asserts nothing)"};
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int64_t rows = 4096, row_length = 4096;
  std::string model, out_dir = ".";
  app.add_option("--threads,-t", threads, "Threads for both sides")->capture_default_str();
  app.add_option("--rows", rows, "Rows of encoder test data")->capture_default_str();
  app.add_option("--row-length", row_length, "Row length of encoder test data (multiple of 256)")->capture_default_str();
  app.add_option("--repack-model", model, "MLX-quantized folder to time `convert --outtype auto` on");
  app.add_option("--out-dir", out_dir, "Where the repack benchmark writes (removed afterwards)")->capture_default_str();
  std::string q4_k_m_model, binary = "build/mlx2gguf";
  bool skip_encoders = false;
  app.add_option("--q4-k-m-model", q4_k_m_model, "Float MLX folder to time Q4_K_M encoding on, against llama_model_quantize");
  app.add_option("--binary", binary, "The mlx2gguf binary timed by --q4-k-m-model")->capture_default_str();
  app.add_flag("--skip-encoders", skip_encoders, "Leave out the encoder table");
  CLI11_PARSE(app, argc, argv);
  try {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, std::max(1, threads));
    if (!skip_encoders) bench_encoders(threads, rows, row_length);
    if (!model.empty()) bench_repack(model, out_dir, threads);
    if (!q4_k_m_model.empty()) bench_q4_k_m(q4_k_m_model, binary, out_dir, threads);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
