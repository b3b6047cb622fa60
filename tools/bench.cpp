// Speed benchmark, printing ratios measured in the same run (never asserted):
//   encoders  weights/s of each of our encoders on all threads vs ggml's quantizer (ggml_quantize_chunk from the
//             prebuilt libggml-base) on the same data, also on all threads;
//   repack    `convert --outtype auto` of an MLX-quantized folder (lossless repack) vs `cat` of its safetensors
//             into a file in the same output directory.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "convert.h"
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
  CLI11_PARSE(app, argc, argv);
  try {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, std::max(1, threads));
    bench_encoders(threads, rows, row_length);
    if (!model.empty()) bench_repack(model, out_dir, threads);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
