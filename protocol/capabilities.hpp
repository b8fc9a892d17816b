// The EHLO capability list (RFC 5321 4.1.1.1): read from a 250 reply, edited, written back.
// Keywords compare case-insensitively; order and parameters are kept. Pure value type.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/reply.hpp"

namespace mailtap::protocol {

struct capability {
  std::string keyword;   // as advertised, e.g. "SIZE"
  std::string params;    // text after the keyword and its space, e.g. "10240000"
};

class capabilities {
 public:
  // From a 250 EHLO reply: the first line is the greeting, each further line one extension.
  static capabilities from_reply(const reply& r);

  bool has(std::string_view keyword) const;
  std::optional<std::string> params(std::string_view keyword) const;
  // Returns true when something was removed.
  bool remove(std::string_view keyword);
  void set(std::string_view keyword, std::string_view params);
  // Shows `keyword` as `shown` (parameters kept); returns true when it was there.
  bool rename(std::string_view keyword, std::string_view shown);

  const std::string& greeting() const { return greeting_; }
  const std::vector<capability>& list() const { return list_; }
  // Serialises as a multi-line 250 reply.
  std::string to_reply_bytes() const;

 private:
  std::string greeting_;
  std::vector<capability> list_;
};

}  // namespace mailtap::protocol
