// The few helpers the plain C++ test binaries share: "ok"/"not ok" lines and their counts, and a
// short scientific format for errors. Each binary ends with "N passed, N failed".
#pragma once

#include <cstdio>
#include <string>

static int passed = 0, failed = 0;

static inline std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

static inline void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok" : "not ok", what.c_str());
  std::fflush(stdout);
  (ok ? passed : failed)++;
}
