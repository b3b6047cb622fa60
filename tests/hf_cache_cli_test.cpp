// `mlx2gguf convert org/name`: a Hugging Face repo id found in a (fake) local Hugging Face cache.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "e2e_support.h"
#include "read/test_support.h"
#include "write/gguf_file.h"

namespace {

namespace fs = std::filesystem;
using mlx2gguf::test_support::TempDir;

constexpr const char* kCommit = "3f2a9c41d0b7e8a6c5d4e3f2a1b0c9d8e7f6a5b4";

fs::path tiny_qwen_like() {
  mlx2gguf::gen::TinyModelSpec spec;
  spec.model_type = "llama";
  spec.seed = 41;
  spec.quant = mlx2gguf::gen::QuantRecipe::parse("affine:4:64");
  return e2e::cached_model("hf-cache-llama-q4", spec);
}

// HF_HUB_CACHE for the child processes of one test.
class ScopedHubCache {
 public:
  explicit ScopedHubCache(const fs::path& dir) { ::setenv("HF_HUB_CACHE", dir.c_str(), 1); }
  ~ScopedHubCache() { ::unsetenv("HF_HUB_CACHE"); }
};

// The layout huggingface_hub leaves: files in blobs/, snapshot entries linking to them, refs/main → the commit.
fs::path cache_model(const fs::path& cache, const fs::path& model) {
  const fs::path repo = cache / "models--mlx-community--Tiny-Llama-4bit";
  const fs::path snapshot = repo / "snapshots" / kCommit;
  fs::create_directories(snapshot);
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "refs");
  int blob = 0;
  for (const auto& entry : fs::directory_iterator(model)) {
    const fs::path target = repo / "blobs" / ("blob" + std::to_string(blob++));
    fs::copy_file(entry.path(), target);
    fs::create_symlink(fs::path("../../blobs") / target.filename(), snapshot / entry.path().filename());
  }
  std::ofstream(repo / "refs" / "main") << kCommit;
  return snapshot;
}

TEST(HfCacheCli, RepoIdConvertsTheCachedSnapshotNamedAfterTheRepo) {
  TempDir temp;
  const fs::path cache = temp / "hub";
  cache_model(cache, tiny_qwen_like());
  const fs::path work = temp / "work";
  fs::create_directories(work);
  ScopedHubCache scoped(cache);
  const auto result = e2e::run_mlx2gguf({"convert", "mlx-community/Tiny-Llama-4bit", "-q"}, work);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // Named after the repo, not after the snapshot's commit hash: llama.cpp's {Basename}-{SizeLabel}-{TYPE}.gguf with
  // "-4bit" dropped as a conversion suffix.
  std::vector<fs::path> written;
  for (const auto& entry : fs::directory_iterator(work)) written.push_back(entry.path());
  ASSERT_EQ(written.size(), 1u) << result.output;
  const fs::path out = written.front();
  EXPECT_TRUE(out.filename().string().starts_with("Tiny-Llama-")) << out;
  EXPECT_TRUE(out.filename().string().ends_with("-Q4_1.gguf")) << out;
  const mlx2gguf::GgufFile file = mlx2gguf::GgufFile::read(out);
  EXPECT_EQ(file.metadata.get("general.name")->strings.at(0), "Tiny Llama");
  EXPECT_EQ(file.metadata.get("general.type")->strings.at(0), "model");

  // The same tensors as converting the folder itself (only the names in the metadata differ).
  const fs::path direct = temp / "direct.gguf";
  ASSERT_EQ(e2e::run_mlx2gguf({"convert", tiny_qwen_like().string(), "-q", "-o", direct.string()}).exit_code, 0);
  const mlx2gguf::GgufFile direct_file = mlx2gguf::GgufFile::read(direct);
  ASSERT_EQ(direct_file.tensors.size(), file.tensors.size());
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    EXPECT_EQ(direct_file.tensors[i].name, file.tensors[i].name);
    EXPECT_EQ(direct_file.tensors[i].type, file.tensors[i].type) << file.tensors[i].name;
    EXPECT_EQ(direct_file.tensors[i].offset, file.tensors[i].offset) << file.tensors[i].name;
  }
  EXPECT_EQ(fs::file_size(direct) - direct_file.data_start, fs::file_size(out) - file.data_start);
}

TEST(HfCacheCli, AnUncachedRepoIdIsOneClearErrorAndWritesNothing) {
  TempDir temp;
  fs::create_directories(temp / "hub");
  const fs::path work = temp / "work";
  fs::create_directories(work);
  ScopedHubCache scoped(temp / "hub");
  const auto result = e2e::run_mlx2gguf({"convert", "mlx-community/Not-Downloaded-4bit"}, work);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("error: model folder 'mlx-community/Not-Downloaded-4bit' does not exist, and the Hugging "
                               "Face cache '" + (temp / "hub").string() + "' has no copy"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("does not download"), std::string::npos) << result.output;
  EXPECT_EQ(std::distance(fs::directory_iterator(work), fs::directory_iterator()), 0);
  EXPECT_EQ(std::distance(fs::directory_iterator(temp / "hub"), fs::directory_iterator()), 0);
}

}  // namespace
