# Placeholder: replaced by the real llama.cpp oracle set-up.
add_library(llama_oracle INTERFACE)
