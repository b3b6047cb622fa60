#include "write/ollama_modelfile.h"

#include <algorithm>
#include <fstream>

#include "util/error.h"

namespace mlx2gguf {

namespace {

// A path as the Modelfile refers to it: relative to the Modelfile's folder ("./model.gguf") when the file lies
// under it, absolute otherwise. Ollama resolves relative paths against the Modelfile's folder.
std::string reference(const std::filesystem::path& file, const std::filesystem::path& modelfile) {
  const auto dir = std::filesystem::absolute(modelfile).lexically_normal().parent_path();
  const auto target = std::filesystem::absolute(file).lexically_normal();
  const auto relative = target.lexically_relative(dir);
  if (!relative.empty() && *relative.begin() != "..") return "./" + relative.generic_string();
  return target.string();
}

const GgufValue* typed(const GgufMetadata& metadata, const std::string& key, GgufType type) {
  const GgufValue* value = metadata.get(key);
  return value != nullptr && value->type == type && value->size() == 1 ? value : nullptr;
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The text of the end-of-generation tokens (eos, eot, eom) as stop strings.
std::vector<std::string> stop_strings(const GgufMetadata& metadata) {
  const GgufValue* tokens = metadata.get("tokenizer.ggml.tokens");
  std::vector<std::string> stops;
  if (tokens == nullptr || !tokens->is_array() || tokens->element_type != GgufType::STRING) return stops;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const GgufValue* id = typed(metadata, key, GgufType::UINT32);
    if (id == nullptr || id->ints[0] < 0 || static_cast<size_t>(id->ints[0]) >= tokens->strings.size()) continue;
    const std::string& text = tokens->strings[static_cast<size_t>(id->ints[0])];
    if (text.empty() || text.find('\n') != std::string::npos) continue;
    if (std::find(stops.begin(), stops.end(), text) == stops.end()) stops.push_back(text);
  }
  return stops;
}

}  // namespace

std::filesystem::path modelfile_path_for(const std::filesystem::path& outfile) {
  std::string stem = outfile.string();
  if (stem.size() > 5 && stem.ends_with(".gguf")) stem.resize(stem.size() - 5);
  return stem + ".Modelfile";
}

std::string render_modelfile(const ModelfileSpec& spec, const GgufMetadata& metadata) {
  std::string out = "# Ollama Modelfile: ollama create NAME -f " + spec.modelfile.filename().string() + "\n";
  if (spec.model_files.size() > 1)
    out += "# A split GGUF set: one FROM per file (Ollama versions that import split sets take them all).\n";
  for (const auto& file : spec.model_files) out += "FROM " + reference(file, spec.modelfile) + "\n";
  if (spec.adapter_file) out += "ADAPTER " + reference(*spec.adapter_file, spec.modelfile) + "\n";

  const GgufValue* arch = typed(metadata, "general.architecture", GgufType::STRING);
  if (arch != nullptr && (arch->strings[0] == "qwen35" || arch->strings[0] == "qwen35moe")) {
    out += "# Ollama's own Qwen3.5 prompt rendering and output parsing (needed by Ollama 0.17.5 to 0.24, optional from "
           "0.30 on)\nRENDERER qwen3.5\nPARSER qwen3.5\n";
  }

  // Ollama applies its own defaults unless the Modelfile says otherwise: carry the model's recommendations over.
  struct Parameter {
    const char* gguf_key;
    const char* ollama_name;
    GgufType type;
  };
  static const Parameter parameters[] = {
      {"general.sampling.temp", "temperature", GgufType::FLOAT32},
      {"general.sampling.top_k", "top_k", GgufType::INT32},
      {"general.sampling.top_p", "top_p", GgufType::FLOAT32},
      {"general.sampling.min_p", "min_p", GgufType::FLOAT32},
      {"general.sampling.penalty_repeat", "repeat_penalty", GgufType::FLOAT32},
      {"general.sampling.penalty_last_n", "repeat_last_n", GgufType::INT32},
  };
  for (const auto& parameter : parameters) {
    const GgufValue* value = typed(metadata, parameter.gguf_key, parameter.type);
    if (value == nullptr) continue;
    const std::string text = parameter.type == GgufType::FLOAT32
                                 ? fmt::format("{}", static_cast<float>(value->floats[0]))
                                 : fmt::format("{}", value->ints[0]);
    out += fmt::format("PARAMETER {} {}\n", parameter.ollama_name, text);
  }
  for (const auto& stop : stop_strings(metadata)) out += "PARAMETER stop " + quoted(stop) + "\n";
  return out;
}

void write_modelfile(const ModelfileSpec& spec, const GgufMetadata& metadata) {
  const std::string text = render_modelfile(spec, metadata);
  const std::filesystem::path temp = spec.modelfile.string() + ".partial";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(temp, ec);
      fail("cannot write '{}'", temp.string());
    }
  }
  std::error_code ec;
  std::filesystem::rename(temp, spec.modelfile, ec);
  if (ec) {
    std::filesystem::remove(temp, ec);
    fail("cannot rename '{}' to '{}'", temp.string(), spec.modelfile.string());
  }
}

}  // namespace mlx2gguf
