// `mailtap diagnose`: the findings of one loaded capture (captures/reader.hpp), from every
// check of checks/list.cpp, errors first. Pure function of the capture; thread-safe.
#pragma once
#include <vector>

#include "captures/reader.hpp"
#include "diagnose/finding.hpp"

namespace mailtap::diagnose {

struct diagnosis {
  const captures::capture* cap = nullptr;
  std::vector<finding> findings;   // errors, then warnings, then infos; each by its first evidence's time
  std::size_t count(severity s) const;
  bool has_error() const { return count(severity::error) > 0; }
};

diagnosis diagnose_capture(const captures::capture& c);

}  // namespace mailtap::diagnose
