#pragma once
// Hugging Face repo ids (`mlx-community/Qwen3-4B-4bit`) given where a model or adapter folder is expected, found in
// the local Hugging Face hub cache as huggingface_hub lays it out; nothing is ever downloaded.
//
// The cache folder is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub (HUGGINGFACE_HUB_CACHE, the variable's older name, is honoured after HF_HUB_CACHE). A
// model repo `org/name` lives in `models--org--name/`: `refs/<revision>` holds the commit hash a branch or tag points
// to, and `snapshots/<hash>/` holds the files of that commit.
#include <filesystem>
#include <optional>
#include <string>

namespace mlx2gguf {

// The environment variables that decide where the cache is (unset = nullopt).
struct HfCacheEnvironment {
  std::optional<std::string> hf_hub_cache, huggingface_hub_cache, hf_home, xdg_cache_home, home;
  static HfCacheEnvironment current();
};

std::filesystem::path hf_hub_cache_dir(const HfCacheEnvironment& env);

// `org/name` or `org/name@revision` as the Hub spells repo ids (letters, digits, '-', '_', '.').
bool looks_like_hf_repo_id(const std::string& text);

struct ModelLocation {
  std::filesystem::path dir;  // the folder to read
  std::string repo_id;        // "org/name" when found in the Hugging Face cache, else empty
  // The name the folder is known by: its own name, or the repo's name (a snapshot folder is named by a hash).
  std::string name;
};

// An existing path is taken as it is. Otherwise a repo id is looked up in the cache (revision "main" unless
// `@revision` names a branch, tag or commit hash); anything else, or a repo id that is not cached, is an error
// saying where it looked. `what` names the argument in messages ("model folder", "adapter folder").
ModelLocation resolve_model_location(const std::string& argument, const std::string& what,
                                     const HfCacheEnvironment& env = HfCacheEnvironment::current());

}  // namespace mlx2gguf
