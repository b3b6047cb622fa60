#include "read/hf_cache.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <vector>

#include "util/error.h"

namespace mlx2gguf {

namespace fs = std::filesystem;

namespace {

std::optional<std::string> variable(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::string folder_name(const fs::path& path) {
  fs::path normal = fs::absolute(path).lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();  // "models/Foo/" names "Foo"
  return normal.filename().string();
}

// A ref file holds a commit hash; refuse anything that could point outside snapshots/.
std::string read_ref(const fs::path& ref_file) {
  std::ifstream in(ref_file);
  std::string hash;
  std::getline(in, hash);
  while (!hash.empty() && std::isspace(static_cast<unsigned char>(hash.back()))) hash.pop_back();
  static const std::regex commit("[0-9a-fA-F]{7,64}");
  if (!std::regex_match(hash, commit))
    fail("'{}' should hold a commit hash, holds '{}': the Hugging Face cache is damaged", ref_file.string(),
         hash.substr(0, 80));
  return hash;
}

std::vector<std::string> snapshot_names(const fs::path& snapshots) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(snapshots, ec))
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

fs::path find_snapshot(const fs::path& repo_dir, const std::string& repo_id, const std::optional<std::string>& revision) {
  const fs::path snapshots = repo_dir / "snapshots";
  const std::string wanted = revision.value_or("main");
  const fs::path ref = repo_dir / "refs" / wanted;
  if (fs::is_regular_file(ref)) {
    const fs::path snapshot = snapshots / read_ref(ref);
    if (!fs::is_directory(snapshot))
      fail("'{}' points to snapshot '{}', which is not in the cache (an interrupted download?)", ref.string(),
           snapshot.string());
    return snapshot;
  }
  if (revision && !revision->empty() && revision->find('/') == std::string::npos && fs::is_directory(snapshots / *revision))
    return snapshots / *revision;  // a commit hash
  const std::vector<std::string> names = snapshot_names(snapshots);
  // Downloaded at a commit rather than a branch: no ref, one snapshot.
  if (!revision && names.size() == 1) return snapshots / names.front();
  if (names.empty()) fail("'{}' is in the Hugging Face cache ('{}') without any snapshot", repo_id, repo_dir.string());
  fail("'{}' in the Hugging Face cache ('{}') has no ref '{}'; give one of its snapshots as {}@<hash>: {}", repo_id,
       repo_dir.string(), wanted, repo_id, fmt::format("{}", fmt::join(names, ", ")));
}

}  // namespace

HfCacheEnvironment HfCacheEnvironment::current() {
  return {variable("HF_HUB_CACHE"), variable("HUGGINGFACE_HUB_CACHE"), variable("HF_HOME"), variable("XDG_CACHE_HOME"),
          variable("HOME")};
}

fs::path hf_hub_cache_dir(const HfCacheEnvironment& env) {
  if (env.hf_hub_cache) return *env.hf_hub_cache;
  if (env.huggingface_hub_cache) return *env.huggingface_hub_cache;
  if (env.hf_home) return fs::path(*env.hf_home) / "hub";
  if (env.xdg_cache_home) return fs::path(*env.xdg_cache_home) / "huggingface" / "hub";
  if (env.home) return fs::path(*env.home) / ".cache" / "huggingface" / "hub";
  fail("cannot find the Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME or HOME is set");
}

bool looks_like_hf_repo_id(const std::string& text) {
  static const std::regex repo_id(R"([A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(@[A-Za-z0-9_./-]{1,200})?)");
  return std::regex_match(text, repo_id) && text.find("..") == std::string::npos &&
         text.find("--") == std::string::npos;
}

ModelLocation resolve_model_location(const std::string& argument, const std::string& what,
                                     const HfCacheEnvironment& env) {
  if (fs::exists(argument) || !looks_like_hf_repo_id(argument)) return {argument, "", folder_name(argument)};
  const size_t at = argument.find('@');
  const std::string repo_id = argument.substr(0, at);
  const std::optional<std::string> revision =
      at == std::string::npos ? std::nullopt : std::optional<std::string>(argument.substr(at + 1));
  const fs::path cache = hf_hub_cache_dir(env);
  const size_t slash = repo_id.find('/');
  const fs::path repo_dir = cache / ("models--" + repo_id.substr(0, slash) + "--" + repo_id.substr(slash + 1));
  if (!fs::is_directory(repo_dir))
    fail("{} '{}' does not exist, and the Hugging Face cache '{}' has no copy of the repo '{}' (no '{}'); mlx2gguf "
         "does not download: fetch it first (e.g. `hf download {}`) or give the folder's path",
         what, argument, cache.string(), repo_id, repo_dir.filename().string(), repo_id);
  return {find_snapshot(repo_dir, repo_id, revision), repo_id, repo_id.substr(slash + 1)};
}

}  // namespace mlx2gguf
