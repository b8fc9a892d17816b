// Shared by the libFuzzer targets: FUZZ_CHECK aborts with a message so libFuzzer reports the
// input as a crash (the targets are built with -fsanitize=fuzzer, tests/fuzz/CMakeLists.txt).
#pragma once
#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "invariant violated: %s (%s:%d)\n", what, __FILE__, __LINE__); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)
