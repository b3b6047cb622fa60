// Memory of `verify`'s logits level, printed (never asserted): for each model folder, the peak resident memory of
// the reference forward pass over N tokens, then (given a GGUF file and a llama.cpp library) of llama.cpp's run of
// the same tokens, each split into anonymous memory (what the process allocates) and file-backed pages (the mapped
// safetensors or GGUF, which the kernel can drop at any time). The reference's anonymous memory should stay at
// activations plus a chunk of rows whatever the model size.
//
// Both are sampled from /proc/self/status every 2 ms by a second thread (the kernel keeps only the peak of their
// sum, VmHWM, which is printed too, for the whole process so far).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "eval/reference.h"
#include "model_size.h"
#include "read/source_model.h"
#include "verify/llama_library.h"
#include "verify/logits_compare.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;

struct Status {
  uint64_t anon_kib = 0, file_kib = 0, hwm_kib = 0;
};

Status read_status() {
  std::ifstream status("/proc/self/status");
  std::string line;
  Status s;
  while (std::getline(status, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    fields >> key >> kib;
    if (key == "RssAnon:") s.anon_kib = kib;
    else if (key == "RssFile:" || key == "RssShmem:") s.file_kib += kib;
    else if (key == "VmHWM:") s.hwm_kib = kib;
  }
  return s;
}

// Runs `work` while a thread records the peaks of anonymous and file-backed resident memory.
Status measure(const std::function<void()>& work) {
  std::atomic<bool> done = false;
  std::mutex mutex;
  Status peak = read_status();
  std::thread sampler([&] {
    while (!done) {
      const Status now = read_status();
      {
        std::lock_guard lock(mutex);
        peak.anon_kib = std::max(peak.anon_kib, now.anon_kib);
        peak.file_kib = std::max(peak.file_kib, now.file_kib);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  work();
  done = true;
  sampler.join();
  const Status last = read_status();
  peak.anon_kib = std::max(peak.anon_kib, last.anon_kib);
  peak.file_kib = std::max(peak.file_kib, last.file_kib);
  peak.hwm_kib = last.hwm_kib;
  return peak;
}

using mlx2gguf::tools::kMiB;
using mlx2gguf::tools::safetensors_bytes;

void print_row(const std::string& what, const Status& before, const Status& peak) {
  fmt::print("  {:<28} {:>9.0f} {:>9.0f} {:>9.0f} {:>9.0f}\n", what, peak.anon_kib / 1024.0,
             (static_cast<double>(peak.anon_kib) - static_cast<double>(before.anon_kib)) / 1024.0, peak.file_kib / 1024.0,
             peak.hwm_kib / 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Peak memory of verify's logits level: the reference forward pass and llama.cpp, anonymous vs file-backed"};
  std::string model_dir, gguf, llama_lib;
  int tokens = 16;
  app.add_option("MODEL_DIR", model_dir, "mlx-lm model folder")->required()->check(CLI::ExistingDirectory);
  app.add_option("--gguf", gguf, "The GGUF file converted from it (with --llama-lib: also measure llama.cpp)");
  app.add_option("--llama-lib", llama_lib, "libllama shared library to run --gguf with");
  app.add_option("--tokens", tokens, "Tokens evaluated")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    using namespace mlx2gguf;
    const bool with_llama = !gguf.empty() && !llama_lib.empty();
    int64_t vocab = 0;
    int32_t first = 1;
    if (!gguf.empty()) {
      const GgufFile file = GgufFile::read(gguf);
      if (const GgufValue* list = file.metadata.get("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(list->size());
      if (const GgufValue* bos = file.metadata.get("tokenizer.ggml.bos_token_id"); bos && !bos->ints.empty())
        first = static_cast<int32_t>(bos->ints[0]);
    }
    fmt::print("{}: {:.0f} MiB of safetensors, {} tokens\n", model_dir, safetensors_bytes(model_dir) / kMiB, tokens);
    fmt::print("  {:<28} {:>9} {:>9} {:>9} {:>9}\n", "phase", "anon MiB", "+anon", "file MiB", "HWM MiB");
    const Status start = read_status();
    std::vector<float> reference;
    const Status ref_peak = measure([&] {
      const SourceModel model = SourceModel::open(model_dir);
      if (vocab == 0) vocab = model.config().value("vocab_size", int64_t{2});
      reference = reference_logits(model, verify_tokens(vocab, tokens, first));
    });
    print_row("reference forward pass", start, ref_peak);
    if (with_llama) {
      const Status before = read_status();
      int64_t llama_vocab = 0;
      std::vector<float> llama;
      const Status llama_peak = measure([&] {
        llama = LlamaLibrary::open(llama_lib)->logits(gguf, verify_tokens(vocab, tokens, first), llama_vocab);
      });
      print_row("llama.cpp (same process)", before, llama_peak);
      if (llama_vocab * tokens == static_cast<int64_t>(reference.size()))
        fmt::print("  NMSE llama.cpp vs reference: {:.3e}\n",
                   compare_logits(verify_tokens(vocab, tokens, first), llama, reference, llama_vocab).nmse);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
