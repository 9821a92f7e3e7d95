// The C boundary of src/native's C++: tensors cross it as pointers, and no
// exception does. A function wraps its body in GUARD, which reports a C++
// exception through `nlp_last_error` (ops.cpp) and returns null; it takes
// the body as variadic arguments, so that commas in it do not split it.
#pragma once

#include <ATen/ATen.h>

#include <exception>

typedef at::Tensor *tensor;

extern "C" void nlp_set_last_error(const char *message);

#define GUARD(...)                                                             \
  try {                                                                        \
    __VA_ARGS__                                                                \
  } catch (const std::exception &error) {                                      \
    nlp_set_last_error(error.what());                                          \
  } catch (...) {                                                              \
    nlp_set_last_error("unknown C++ exception");                               \
  }                                                                            \
  return nullptr;
