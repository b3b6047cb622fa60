#include "read/hf_cache.h"

#include <gtest/gtest.h>

#include <fstream>

#include "read/test_support.h"
#include "util/error.h"

namespace mlx2gguf {
namespace {

namespace fs = std::filesystem;
using test_support::TempDir;

constexpr const char* kMain = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kOld = "fedcba9876543210fedcba9876543210fedcba98";

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A cached model repo as huggingface_hub leaves it: refs/main → the newest commit, one snapshot per commit.
fs::path add_cached_repo(const fs::path& cache, const std::string& folder) {
  const fs::path repo = cache / folder;
  write_text(repo / "refs" / "main", kMain);  // huggingface_hub writes the hash without a newline
  write_text(repo / "snapshots" / kMain / "config.json", "{}");
  write_text(repo / "snapshots" / kOld / "config.json", "{}");
  fs::create_directories(repo / "blobs");
  return repo;
}

HfCacheEnvironment only_home(const fs::path& home) {
  HfCacheEnvironment env;
  env.home = home.string();
  return env;
}

TEST(HfCache, CacheFolderFollowsHuggingFaceHubPrecedence) {
  HfCacheEnvironment env;
  env.home = "/h";
  EXPECT_EQ(hf_hub_cache_dir(env), fs::path("/h/.cache/huggingface/hub"));
  env.xdg_cache_home = "/xdg";
  EXPECT_EQ(hf_hub_cache_dir(env), fs::path("/xdg/huggingface/hub"));
  env.hf_home = "/hf-home";
  EXPECT_EQ(hf_hub_cache_dir(env), fs::path("/hf-home/hub"));
  env.huggingface_hub_cache = "/legacy";
  EXPECT_EQ(hf_hub_cache_dir(env), fs::path("/legacy"));
  env.hf_hub_cache = "/hub-cache";
  EXPECT_EQ(hf_hub_cache_dir(env), fs::path("/hub-cache"));
}

TEST(HfCache, RepoIdsAreOrgSlashName) {
  EXPECT_TRUE(looks_like_hf_repo_id("mlx-community/Qwen3-4B-4bit"));
  EXPECT_TRUE(looks_like_hf_repo_id("mlx-community/Qwen3-4B-4bit@main"));
  EXPECT_TRUE(looks_like_hf_repo_id("org/model.v1_2"));
  EXPECT_FALSE(looks_like_hf_repo_id("Qwen3-4B-4bit"));         // no organisation
  EXPECT_FALSE(looks_like_hf_repo_id("/abs/path"));
  EXPECT_FALSE(looks_like_hf_repo_id("./org/name"));
  EXPECT_FALSE(looks_like_hf_repo_id("a/b/c"));
  EXPECT_FALSE(looks_like_hf_repo_id("org/../etc"));
  EXPECT_FALSE(looks_like_hf_repo_id("org--x/name"));
}

TEST(HfCache, RepoIdResolvesToTheSnapshotRefsMainNames) {
  TempDir temp;
  const fs::path cache = temp / "home" / ".cache" / "huggingface" / "hub";
  const fs::path repo = add_cached_repo(cache, "models--mlx-community--Qwen3-4B-4bit");
  const ModelLocation found = resolve_model_location("mlx-community/Qwen3-4B-4bit", "model folder", only_home(temp / "home"));
  EXPECT_EQ(found.dir, repo / "snapshots" / kMain);
  EXPECT_EQ(found.repo_id, "mlx-community/Qwen3-4B-4bit");
  EXPECT_EQ(found.name, "Qwen3-4B-4bit");
}

TEST(HfCache, EachVariableMovesTheCacheItIsLookedUpIn) {
  TempDir temp;
  const fs::path hub_cache = temp / "hub-cache", hf_home = temp / "hf-home", home = temp / "home";
  add_cached_repo(hub_cache, "models--org--a");
  add_cached_repo(hf_home / "hub", "models--org--b");
  add_cached_repo(home / ".cache" / "huggingface" / "hub", "models--org--c");
  HfCacheEnvironment env = only_home(home);
  env.hf_home = hf_home.string();
  env.hf_hub_cache = hub_cache.string();
  EXPECT_EQ(resolve_model_location("org/a", "model folder", env).dir, hub_cache / "models--org--a" / "snapshots" / kMain);
  // HF_HUB_CACHE replaces the other locations rather than adding to them.
  EXPECT_THROW(resolve_model_location("org/b", "model folder", env), Error);
  env.hf_hub_cache.reset();
  EXPECT_EQ(resolve_model_location("org/b", "model folder", env).dir, hf_home / "hub" / "models--org--b" / "snapshots" / kMain);
  EXPECT_THROW(resolve_model_location("org/c", "model folder", env), Error);
  env.hf_home.reset();
  EXPECT_EQ(resolve_model_location("org/c", "model folder", env).dir,
            home / ".cache" / "huggingface" / "hub" / "models--org--c" / "snapshots" / kMain);
}

TEST(HfCache, RevisionPicksABranchRefOrACommit) {
  TempDir temp;
  const fs::path cache = temp / "home" / ".cache" / "huggingface" / "hub";
  const fs::path repo = add_cached_repo(cache, "models--org--name");
  write_text(repo / "refs" / "v1", std::string(kOld) + "\n");
  EXPECT_EQ(resolve_model_location("org/name@v1", "model folder", only_home(temp / "home")).dir, repo / "snapshots" / kOld);
  EXPECT_EQ(resolve_model_location(std::string("org/name@") + kOld, "model folder", only_home(temp / "home")).dir,
            repo / "snapshots" / kOld);
  try {
    resolve_model_location("org/name@v2", "model folder", only_home(temp / "home"));
    FAIL() << "an unknown revision resolved";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no ref 'v2'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(kMain), std::string::npos) << e.what();
  }
}

TEST(HfCache, AnUncachedRepoIsAClearErrorAndNothingIsFetched) {
  TempDir temp;
  fs::create_directories(temp / "home");
  try {
    resolve_model_location("mlx-community/Absent-4bit", "model folder", only_home(temp / "home"));
    FAIL() << "an uncached repo resolved";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("mlx-community/Absent-4bit"), std::string::npos) << message;
    EXPECT_NE(message.find((temp / "home" / ".cache" / "huggingface" / "hub").string()), std::string::npos) << message;
    EXPECT_NE(message.find("does not download"), std::string::npos) << message;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(temp / "home"), fs::directory_iterator()), 0) << "the cache was written to";
}

TEST(HfCache, ARefToAMissingSnapshotOrAGarbledRefIsAnError) {
  TempDir temp;
  const fs::path cache = temp / "home" / ".cache" / "huggingface" / "hub";
  const fs::path repo = add_cached_repo(cache, "models--org--name");
  fs::remove_all(repo / "snapshots" / kMain);
  EXPECT_THROW(resolve_model_location("org/name", "model folder", only_home(temp / "home")), Error);
  write_text(repo / "refs" / "main", "../../../../etc");
  EXPECT_THROW(resolve_model_location("org/name", "model folder", only_home(temp / "home")), Error);
}

TEST(HfCache, AnExistingPathWinsOverTheCache) {
  TempDir temp;
  const fs::path local = temp / "org" / "name";
  fs::create_directories(local);
  const fs::path cwd = fs::current_path();
  fs::current_path(temp.path());
  const ModelLocation found = resolve_model_location("org/name", "model folder", only_home(temp / "nowhere"));
  fs::current_path(cwd);
  EXPECT_EQ(found.dir, fs::path("org/name"));
  EXPECT_EQ(found.repo_id, "");
  EXPECT_EQ(found.name, "name");
}

}  // namespace
}  // namespace mlx2gguf
