#pragma once
// JSON from input files. nlohmann's parser and the values it builds recurse once per nesting level, so a hostile
// file of a few hundred thousand '[' would overflow the stack: the nesting is measured first, without recursion,
// and anything deeper than any real config, tokenizer or safetensors header is refused.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace mlx2gguf {

// Deepest nesting accepted; real files stay below 20.
constexpr int kMaxJsonDepth = 256;

// Parses `text`; `what` names it in errors ("'config.json'", "the safetensors header of 'x'").
nlohmann::json parse_json_text(std::string_view text, const std::string& what);

// Parses a JSON file; a missing file, invalid JSON or too deep a nesting is an error naming the file.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace mlx2gguf
