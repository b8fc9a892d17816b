// Matching a request to a route (admin/router.hpp).
#include "admin/router.hpp"

#include <cstdint>
#include <exception>

namespace mailtap::admin {

namespace {

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    if (path.front() == '/') path.remove_prefix(1);
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash);
  }
  return out;
}

bool matches(std::string_view pattern, std::string_view path, std::map<std::string, std::string>& params) {
  const auto want = segments(pattern);
  const auto got = segments(path);
  if (want.size() != got.size()) return false;
  std::map<std::string, std::string> found;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto w = want[i];
    if (w.size() > 2 && w.front() == '{' && w.back() == '}') {
      std::string value;
      if (got[i].empty() || !percent_decode(got[i], false, value)) return false;
      found.emplace(std::string(w.substr(1, w.size() - 2)), std::move(value));
    } else if (w != got[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

}  // namespace

void router::add(std::string method, std::string pattern, handler run) {
  routes_.push_back({std::move(method), std::move(pattern), std::move(run)});
}

response router::handle(const request& req) const {
  parsed_target target;
  if (!parse_target(req.target, target)) return error_response(400, "bad request target");
  // A 405's Allow names the methods of the most literal patterns that match: for
  // /faults/reset that is reset's own POST, not the DELETE of a rule that happens to be
  // named "reset" (/faults/{name}), which would read as how to reset.
  std::string allowed;
  std::size_t allowed_params = SIZE_MAX;
  for (const auto& r : routes_) {
    std::map<std::string, std::string> params;
    if (!matches(r.pattern, target.raw_path, params)) continue;
    // RFC 9110 9.3.2: a GET route answers HEAD too; the server sends its header only.
    const bool head_of_get = req.method == "HEAD" && r.method == "GET";
    if (r.method != req.method && !head_of_get) {
      if (params.size() < allowed_params) allowed.clear();
      if (params.size() > allowed_params) continue;
      allowed_params = params.size();
      allowed += (allowed.empty() ? "" : ", ") + r.method + (r.method == "GET" ? ", HEAD" : "");
      continue;
    }
    try {
      return r.run(call{req, std::move(params), target.query});
    } catch (const std::exception& e) {
      return error_response(500, std::string("internal error: ") + e.what());
    } catch (...) {
      return error_response(500, "internal error");
    }
  }
  if (!allowed.empty()) {
    auto r = error_response(405, "method " + req.method + " not allowed on " + target.path + " (allowed: " + allowed + ")");
    r.headers.emplace_back("Allow", allowed);
    return r;
  }
  return error_response(404, "no such route: " + target.path);
}

}  // namespace mailtap::admin
