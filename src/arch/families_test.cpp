// Every architecture family is whole: each model type its mapping converts has a reference forward pass, each model
// type the generator writes is one the mapping converts, and a tiny model of each converts and evaluates.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "eval/reference.h"
#include "gen/model_builder.h"
#include "plan/architecture.h"
#include "plan/planner.h"
#include "read/source_model.h"
#include "read/test_support.h"

namespace mlx2gguf {
namespace {

TEST(ArchitectureFamilies, EveryMappedModelTypeHasAReferenceForwardPass) {
  for (const std::string& type : supported_model_types()) EXPECT_TRUE(reference_supports(type)) << type;
  EXPECT_EQ(reference_model_types(), supported_model_types());
}

TEST(ArchitectureFamilies, EveryFamilyHasABuilderAndEveryBuiltTypeIsMapped) {
  std::set<std::string> built_families;
  for (const gen::ModelTypeBuilder& type : gen::model_type_builders()) {
    const Family* family = find_family(type.name);
    ASSERT_NE(family, nullptr) << "the generator writes model type '" << type.name << "', which no mapping converts";
    built_families.insert(family->name);
  }
  for (const Family* family : all_families()) EXPECT_TRUE(built_families.contains(family->name)) << family->name;
  EXPECT_EQ(built_families.size(), all_families().size());
}

TEST(ArchitectureFamilies, ATinyModelOfEveryBuiltTypeConvertsAndEvaluates) {
  for (const gen::ModelTypeBuilder& type : gen::model_type_builders()) {
    SCOPED_TRACE(type.name);
    test_support::TempDir temp;
    gen::TinyModelSpec spec;
    spec.model_type = type.name;
    spec.hidden = 64;
    spec.intermediate = 64;
    write_tiny_model(spec, temp / "model");
    const SourceModel model = SourceModel::open(temp / "model");
    const ConversionPlan plan = make_plan(model, PlanOptions{});
    EXPECT_EQ(plan.metadata.get("general.architecture")->strings.at(0),
              find_architecture(model.folder().model_type())->gguf_name);
    const std::vector<float> logits = reference_logits(model, {1, 2, 3});
    ASSERT_FALSE(logits.empty());
    for (float value : logits) ASSERT_TRUE(std::isfinite(value));
  }
}

}  // namespace
}  // namespace mlx2gguf
