#include "encode/repack.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "encode/block_quants.h"
#include "encode/nibble_repack.h"
#include "read/dequant.h"
#include "util/error.h"
#include "util/half.h"

namespace mlx2gguf {

namespace {

// True when the float converts to fp16 and back unchanged (so Q4_1/Q5_1 can store it).
bool exact_in_f16(float value) {
  if (!std::isfinite(value)) return false;
  const float back = f16_to_f32(f32_to_f16(value));
  return back == value && std::signbit(back) == std::signbit(value);
}

// The same answer for every bf16 bit pattern, computed once: checking a big model's scales is then a lookup.
bool bf16_exact_in_f16(uint16_t bits) {
  static const std::vector<bool> table = [] {
    std::vector<bool> t(65536);
    for (uint32_t b = 0; b < 65536; ++b) t[b] = exact_in_f16(bf16_to_f32(static_cast<uint16_t>(b)));
    return t;
  }();
  return table[bits];
}

// Whether `count` stored floats (scales or biases of one row) are all exact in fp16.
bool all_exact_in_f16(const uint8_t* values, DType dtype, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint16_t bits;
    switch (dtype) {
      case DType::BF16:
        std::memcpy(&bits, values + 2 * i, 2);
        if (!bf16_exact_in_f16(bits)) return false;
        break;
      case DType::F16:
        std::memcpy(&bits, values + 2 * i, 2);
        if ((bits & 0x7c00) == 0x7c00) return false;  // inf or NaN
        break;
      default:
        if (!exact_in_f16(load_float(values, dtype, i))) return false;
    }
  }
  return true;
}

// ggml's UE4M3 reads the same bits as MLX's E4M3 for every non-negative code except 0x7F (NaN in MLX).
bool exact_in_ue4m3(uint8_t e4m3) { return (e4m3 & 0x80) == 0 && e4m3 != 0x7f; }

// ggml treats E8M0 0xFF as invalid; MLX decodes it as infinity.
bool exact_in_e8m0(uint8_t e8m0) { return e8m0 != 0xff; }

}  // namespace

LosslessTarget lossless_target(const QuantSpec& spec, int64_t row_length) {
  switch (spec.mode) {
    case QuantMode::Affine:
      if (spec.group_size % 32 != 0)
        return {std::nullopt, fmt::format("affine group size {} is not a multiple of 32", spec.group_size)};
      if (spec.bits <= 4) return {GgmlType::Q4_1, ""};
      if (spec.bits == 5) return {GgmlType::Q5_1, ""};
      return {std::nullopt, fmt::format("affine {}-bit has no exact GGUF type", spec.bits)};
    case QuantMode::MXFP4:
      if (spec.group_size != 32) return {std::nullopt, fmt::format("mxfp4 group size {} is not 32", spec.group_size)};
      return {GgmlType::MXFP4, ""};
    case QuantMode::NVFP4:
      if (spec.group_size != 16) return {std::nullopt, fmt::format("nvfp4 group size {} is not 16", spec.group_size)};
      if (row_length % 64 != 0)
        return {std::nullopt, fmt::format("nvfp4 rows of {} are not whole NVFP4 blocks of 64", row_length)};
      return {GgmlType::NVFP4, ""};
    case QuantMode::MXFP8: return {std::nullopt, "mxfp8 has no exact GGUF type"};
  }
  return {std::nullopt, "unknown mode"};
}

std::optional<std::string> repack_obstacle(const SourceTensor& tensor, GgmlType target) {
  const int64_t groups = tensor.groups_per_row();
  SourceTensor::PackedRowBuffer buffer;
  for (int64_t r = 0; r < tensor.row_count(); ++r) {
    const SourceTensor::PackedRow row = tensor.packed_row(r, buffer);
    switch (target) {
      case GgmlType::Q4_1:
      case GgmlType::Q5_1:
        if (all_exact_in_f16(row.scales, tensor.value_dtype(), groups) &&
            all_exact_in_f16(row.biases, tensor.value_dtype(), groups))
          break;
        for (int64_t g = 0; g < groups; ++g) {  // name the first offending group
          const float scale = load_float(row.scales, tensor.value_dtype(), g);
          const float bias = load_float(row.biases, tensor.value_dtype(), g);
          if (!exact_in_f16(scale) || !exact_in_f16(bias))
            return fmt::format("'{}': row {} group {} has scale {} / bias {}, not exact in fp16", tensor.name(), r, g,
                               scale, bias);
        }
        break;
      case GgmlType::MXFP4:
        for (int64_t g = 0; g < groups; ++g)
          if (!exact_in_e8m0(row.scales[g]))
            return fmt::format("'{}': row {} group {} has the invalid E8M0 scale 0xFF", tensor.name(), r, g);
        break;
      case GgmlType::NVFP4:
        for (int64_t g = 0; g < groups; ++g)
          if (!exact_in_ue4m3(row.scales[g]))
            return fmt::format("'{}': row {} group {} has E4M3 scale 0x{:02X}, which unsigned E4M3 cannot hold",
                               tensor.name(), r, g, row.scales[g]);
        break;
      default: fail("internal error: {} is not a repack target", ggml_type_info(target).name);
    }
  }
  return std::nullopt;
}

std::optional<std::vector<int64_t>> column_map_as_groups(const std::vector<int64_t>& column_map, int64_t group_size) {
  if (column_map.size() % static_cast<size_t>(group_size) != 0) return std::nullopt;
  std::vector<int64_t> groups(column_map.size() / static_cast<size_t>(group_size));
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t first = column_map[g * group_size];
    if (first % group_size != 0) return std::nullopt;
    for (int64_t j = 1; j < group_size; ++j)
      if (column_map[g * group_size + j] != first + j) return std::nullopt;
    groups[g] = first / group_size;
  }
  return groups;
}

namespace {

// 4-bit codes into Q4_1, MXFP4 or NVFP4 blocks: the nibbles of each block re-paired straight from the packed row
// (a run of whole blocks at a time), then the block headers. False when the case needs the general path.
bool repack_4bit_row(const SourceTensor& tensor, const SourceTensor::PackedRow& source, GgmlType target,
                     const std::vector<int64_t>& groups, uint8_t* out, Isa isa) {
  const QuantSpec& spec = *tensor.quant();
  if (spec.bits != 4) return false;
  const int64_t length = tensor.row_length();
  const int64_t group_size = spec.group_size;
  const int64_t block_bytes = ggml_type_info(target).type_size;
  auto source_group = [&](int64_t g) { return groups.empty() ? g : groups[static_cast<size_t>(g)]; };
  switch (target) {
    case GgmlType::Q4_1: {
      // One call per run of groups taken in order (the whole row when there is no group map).
      const int64_t blocks_per_group = group_size / 32;
      const int64_t group_count = length / group_size;
      for (int64_t g = 0; g < group_count;) {
        int64_t run = 1;
        while (g + run < group_count && source_group(g + run) == source_group(g) + run) ++run;
        repair_nibbles(isa, NibblePairing::Half16, source.codes + source_group(g) * group_size / 2,
                       run * blocks_per_group, out + g * blocks_per_group * block_bytes + 4, block_bytes);
        g += run;
      }
      for (int64_t g = 0; g < group_count; ++g) {
        const int64_t from = source_group(g);
        const uint16_t d = f32_to_f16(load_float(source.scales, tensor.value_dtype(), from));
        const uint16_t m = f32_to_f16(load_float(source.biases, tensor.value_dtype(), from));
        for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
          std::memcpy(out + b * block_bytes, &d, 2);
          std::memcpy(out + b * block_bytes + 2, &m, 2);
        }
      }
      return true;
    }
    case GgmlType::MXFP4: {
      if (!groups.empty()) return false;
      repair_nibbles(isa, NibblePairing::Half16, source.codes, length / 32, out + 1, block_bytes);
      for (int64_t b = 0; b < length / 32; ++b) out[b * block_bytes] = source.scales[b];
      return true;
    }
    case GgmlType::NVFP4: {
      if (!groups.empty()) return false;
      repair_nibbles(isa, NibblePairing::Half8, source.codes, length / 64, out + 4, block_bytes);
      for (int64_t b = 0; b < length / 64; ++b) std::memcpy(out + b * block_bytes, source.scales + 4 * b, 4);
      return true;
    }
    default: return false;
  }
}

}  // namespace

void repack_row(const SourceTensor& tensor, int64_t row, GgmlType target, const std::vector<int64_t>& groups,
                uint8_t* out) {
  repack_row(tensor, row, target, groups, out, best_isa());
}

void repack_row(const SourceTensor& tensor, int64_t row, GgmlType target, const std::vector<int64_t>& groups,
                uint8_t* out, Isa isa) {
  const QuantSpec& spec = *tensor.quant();
  const int64_t length = tensor.row_length();
  const int64_t group_size = spec.group_size;
  thread_local SourceTensor::PackedRowBuffer buffer;
  const SourceTensor::PackedRow source = tensor.packed_row(row, buffer);
  if (repack_4bit_row(tensor, source, target, groups, out, isa)) return;
  auto source_group = [&](int64_t g) { return groups.empty() ? g : groups[static_cast<size_t>(g)]; };

  // Codes of the output row, in output order.
  thread_local std::vector<uint8_t> codes;
  codes.resize(static_cast<size_t>(length));
  for (int64_t g = 0; g < length / group_size; ++g) {
    const int64_t from = source_group(g) * group_size;
    uint8_t* group_codes = codes.data() + g * group_size;
    if (spec.bits == 4) {  // the common case: two codes per byte, low nibble first
      const uint8_t* packed = source.codes + from / 2;
      for (int64_t k = 0; k < group_size / 2; ++k) {
        group_codes[2 * k] = packed[k] & 0x0f;
        group_codes[2 * k + 1] = packed[k] >> 4;
      }
      continue;
    }
    for (int64_t j = 0; j < group_size; ++j)
      group_codes[j] = static_cast<uint8_t>(unpack_code(source.codes, from + j, spec.bits));
  }

  const int64_t block_size = ggml_type_info(target).block_size;
  const int64_t block_bytes = ggml_type_info(target).type_size;
  int64_t converted_group = -1;
  uint16_t d = 0, m = 0;
  for (int64_t b = 0; b < length / block_size; ++b) {
    const uint8_t* block_codes = codes.data() + b * block_size;
    uint8_t* block = out + b * block_bytes;
    switch (target) {
      case GgmlType::Q4_1:
      case GgmlType::Q5_1: {
        // A group of 64 or 128 spans several blocks that share its scale and bias.
        const int64_t g = source_group(b * block_size / group_size);
        if (g != converted_group) {
          d = f32_to_f16(load_float(source.scales, tensor.value_dtype(), g));
          m = f32_to_f16(load_float(source.biases, tensor.value_dtype(), g));
          converted_group = g;
        }
        if (target == GgmlType::Q4_1)
          pack_q4_1_block(d, m, block_codes, block);
        else
          pack_q5_1_block(d, m, block_codes, block);
        break;
      }
      case GgmlType::MXFP4: pack_mxfp4_block(source.scales[source_group(b)], block_codes, block); break;
      case GgmlType::NVFP4: {
        uint8_t scales[4];
        for (int s = 0; s < 4; ++s) scales[s] = source.scales[source_group(4 * b + s)];
        pack_nvfp4_block(scales, block_codes, block);
        break;
      }
      default: fail("internal error: {} is not a repack target", ggml_type_info(target).name);
    }
  }
}

}  // namespace mlx2gguf
