#include "plan/permutations.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "util/error.h"

namespace mlx2gguf {
namespace {

// ---- rope_halves_to_pairs -------------------------------------------------------------------------------------

TEST(RopeHalvesToPairs, InterleavesTheTwoHalvesOfOneHead) {
  // Half-split pairs (0,4) (1,5) (2,6) (3,7) become adjacent rows.
  EXPECT_EQ(rope_halves_to_pairs(1, 8), (IndexMap{0, 4, 1, 5, 2, 6, 3, 7}));
}

TEST(RopeHalvesToPairs, PermutesEachHeadWithinItsOwnRows) {
  const IndexMap expected = {0, 2, 1, 3,    // head 0, head_dim 4: pairs (0,2) (1,3)
                             4, 6, 5, 7,    // head 1
                             8, 10, 9, 11}; // head 2
  EXPECT_EQ(rope_halves_to_pairs(3, 4), expected);
}

TEST(RopeHalvesToPairs, HeadDimTwoIsAlreadyPaired) {
  EXPECT_EQ(rope_halves_to_pairs(3, 2), (IndexMap{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(is_identity(rope_halves_to_pairs(5, 2)));
}

// The permutation as the reference converters state it: view the rows as [heads, 2, hd/2, in], swap axes 1 and 2,
// flatten back. Computed here with explicit index arithmetic on the 4-D array, independently of the map.
std::vector<float> reshape_swap_reference(const std::vector<float>& w, int64_t heads, int64_t head_dim, int64_t in) {
  const int64_t half = head_dim / 2;
  // Source viewed as s[h][k][j][c] with strides (2*half*in, half*in, in, 1).
  // Output viewed as o[h][j][k][c] with strides (half*2*in, 2*in, in, 1), o[h][j][k][c] = s[h][k][j][c].
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t k = 0; k < 2; ++k)
      for (int64_t j = 0; j < half; ++j)
        for (int64_t c = 0; c < in; ++c) {
          const int64_t src = ((h * 2 + k) * half + j) * in + c;
          const int64_t dst = ((h * half + j) * 2 + k) * in + c;
          out[static_cast<size_t>(dst)] = w[static_cast<size_t>(src)];
        }
  return out;
}

TEST(RopeHalvesToPairs, AppliedAsRowMapEqualsReshapeAndAxisSwap) {
  const int64_t heads = 3, head_dim = 6, in = 5;
  std::vector<float> w(static_cast<size_t>(heads * head_dim * in));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f - 7.0f;

  const IndexMap map = rope_halves_to_pairs(heads, head_dim);
  ASSERT_EQ(map.size(), static_cast<size_t>(heads * head_dim));
  std::vector<float> permuted(w.size());
  for (int64_t r = 0; r < heads * head_dim; ++r)
    for (int64_t c = 0; c < in; ++c)
      permuted[static_cast<size_t>(r * in + c)] = w[static_cast<size_t>(map[static_cast<size_t>(r)] * in + c)];

  EXPECT_EQ(permuted, reshape_swap_reference(w, heads, head_dim, in));
}

TEST(RopeHalvesToPairs, OddHeadDimIsRejected) {
  try {
    rope_halves_to_pairs(2, 7);
    FAIL() << "odd head_dim accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("odd"), std::string::npos) << e.what();
  }
}

// ---- grouped_to_tiled_heads -----------------------------------------------------------------------------------

TEST(GroupedToTiledHeads, TwoKeyHeadsFourValueHeadsOfSizeOne) {
  // Grouped [k0:v0, k0:v1, k1:v0, k1:v1] → tiled [k0:v0, k1:v0, k0:v1, k1:v1].
  EXPECT_EQ(grouped_to_tiled_heads(2, 4, 1), (IndexMap{0, 2, 1, 3}));
}

TEST(GroupedToTiledHeads, MovesWholeHeadsOfSeveralIndices) {
  EXPECT_EQ(grouped_to_tiled_heads(2, 4, 3), (IndexMap{0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11}));
}

TEST(GroupedToTiledHeads, ThreeValueHeadsPerKeyHead) {
  // nk = 2, r = 3: new head p = v*2 + k holds old head k*3 + v.
  EXPECT_EQ(grouped_to_tiled_heads(2, 6, 1), (IndexMap{0, 3, 1, 4, 2, 5}));
}

TEST(GroupedToTiledHeads, EqualHeadCountsNeedNoReorder) {
  EXPECT_TRUE(is_identity(grouped_to_tiled_heads(4, 4, 5)));
  EXPECT_EQ(grouped_to_tiled_heads(4, 4, 5).size(), 20u);
}

TEST(GroupedToTiledHeads, ValueHeadsNotAMultipleOfKeyHeadsAreRejected) {
  try {
    grouped_to_tiled_heads(3, 4, 2);
    FAIL() << "4 value heads over 3 key heads accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find('4'), std::string::npos) << message;
    EXPECT_NE(message.find('3'), std::string::npos) << message;
  }
  EXPECT_THROW(grouped_to_tiled_heads(0, 4, 1), Error);
}

// ---- with_identity_prefix, compose, is_identity -----------------------------------------------------------

TEST(WithIdentityPrefix, KeepsThePrefixAndShiftsTheTail) {
  EXPECT_EQ(with_identity_prefix(3, IndexMap{1, 0, 2}), (IndexMap{0, 1, 2, 4, 3, 5}));
  EXPECT_EQ(with_identity_prefix(0, IndexMap{1, 0}), (IndexMap{1, 0}));
  EXPECT_EQ(with_identity_prefix(2, IndexMap{}), (IndexMap{0, 1}));
}

TEST(WithIdentityPrefix, QkvChannelsReorderOnlyTheValuePart) {
  // conv channels [q(4) | k(4) | v(4 heads of 2)], nk = 2, nv = 4.
  const IndexMap map = with_identity_prefix(8, grouped_to_tiled_heads(2, 4, 2));
  EXPECT_EQ(map, (IndexMap{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15}));
}

TEST(Compose, AppliesTheInnerMapToTheOuterIndex) {
  const IndexMap outer = {2, 0, 1};
  const IndexMap inner = {10, 20, 30};
  // result[i] = inner[outer[i]]
  EXPECT_EQ(compose(outer, inner), (IndexMap{30, 10, 20}));
}

TEST(Compose, WithIdentityLeavesAMapUnchanged) {
  const IndexMap map = rope_halves_to_pairs(2, 4);
  IndexMap identity(map.size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  EXPECT_EQ(compose(map, identity), map);
  EXPECT_EQ(compose(identity, map), map);
}

TEST(Compose, TwoSuccessiveRowMapsEqualTheComposedMap) {
  // Applying map a to data, then map b to the result, equals applying compose(b, a) to the data.
  const IndexMap a = grouped_to_tiled_heads(2, 4, 2);
  const IndexMap b = rope_halves_to_pairs(2, 4);
  std::vector<int> data(8);
  for (size_t i = 0; i < data.size(); ++i) data[i] = 100 + static_cast<int>(i);
  std::vector<int> once(8), twice(8), composed(8);
  for (size_t i = 0; i < 8; ++i) once[i] = data[static_cast<size_t>(a[i])];
  for (size_t i = 0; i < 8; ++i) twice[i] = once[static_cast<size_t>(b[i])];
  const IndexMap c = compose(b, a);
  for (size_t i = 0; i < 8; ++i) composed[i] = data[static_cast<size_t>(c[i])];
  EXPECT_EQ(composed, twice);
}

TEST(IsIdentity, RecognisesOnlyTheIdentity) {
  EXPECT_TRUE(is_identity(IndexMap{}));
  EXPECT_TRUE(is_identity(IndexMap{0, 1, 2, 3}));
  EXPECT_FALSE(is_identity(IndexMap{0, 2, 1, 3}));
  EXPECT_FALSE(is_identity(IndexMap{1}));
  EXPECT_FALSE(is_identity(rope_halves_to_pairs(1, 4)));
}

}  // namespace
}  // namespace mlx2gguf
