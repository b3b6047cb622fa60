#include "read/json_input.h"

#include <fstream>
#include <iterator>

#include "util/error.h"

namespace mlx2gguf {

namespace {

// The deepest nesting of arrays and objects in `text`, stopping early past `limit`; brackets inside strings do not
// count.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

nlohmann::json parse_json_text(std::string_view text, const std::string& what) {
  if (nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
    fail("{} nests arrays or objects more than {} levels deep: not a file mlx-lm or Hugging Face writes", what,
         kMaxJsonDepth);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", what, e.what());
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path.string());
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return parse_json_text(text, "'" + path.string() + "'");
}

}  // namespace mlx2gguf
