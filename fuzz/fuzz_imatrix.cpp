// libFuzzer entry point of the "imatrix" target; what it does with an input is run_imatrix in inputs.h.
#include "inputs.h"
#include "support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mlx2gguf::fuzz::expect_clean_outcome([&] { mlx2gguf::fuzz::run_imatrix(mlx2gguf::fuzz::as_text(data, size)); });
  return 0;
}
