// Routing of the admin API: each route is a method and a path pattern whose `{name}`
// segments capture one path segment ("/api/v1/faults/{name}"). A path no route has is 404;
// a path with routes but not for this method is 405 with an Allow header. The route table is
// public so that a test can hold it against the OpenAPI document (admin/openapi.json).
// Handlers run on the admin worker threads (admin/http_server.hpp); the router is read-only
// once built. A handler that throws gets a 500 one-line error.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "admin/http_types.hpp"

namespace mailtap::admin {

// What a handler gets: the request, its decoded path parameters and query.
struct call {
  const request& req;
  std::map<std::string, std::string> params;   // {name} -> the decoded segment
  const std::map<std::string, std::string>& query;
};

using handler = std::function<response(const call&)>;

struct route {
  std::string method;
  std::string pattern;
  handler run;
};

class router {
 public:
  void add(std::string method, std::string pattern, handler run);
  response handle(const request& req) const;
  const std::vector<route>& routes() const { return routes_; }

 private:
  std::vector<route> routes_;
};

}  // namespace mailtap::admin
