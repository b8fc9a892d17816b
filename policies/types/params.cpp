// The type name of a parameter set, from the alternative it holds.
#include "policies/types/params.hpp"

namespace mailtap::policies {

std::string_view type_name(const type_params& p) {
  return std::visit([](const auto& alt) { return std::decay_t<decltype(alt)>::type_name; }, p);
}

}  // namespace mailtap::policies
