// The parameters of each fault type, one struct per type, with the README's defaults as
// member initialisers. A rule holds exactly one of them (type_params); the alternative names
// the rule's type. The loader fills them (types/<name>.cpp reads the keys); tests may build
// them directly. Pure value types.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "protocol/fault.hpp"

namespace mailtap::policies {

// Which leg's writes a shaping type paces.
enum class shaping_direction : unsigned char { to_client, to_upstream, both };

struct delay_params {
  static constexpr std::string_view type_name = "delay";
  enum class when_kind : unsigned char { reply, command };
  enum class draw_kind : unsigned char { fixed, uniform, normal };
  when_kind when = when_kind::reply;
  draw_kind draw = draw_kind::fixed;
  std::uint64_t delay_us = 0;             // fixed
  std::uint64_t min_us = 0, max_us = 0;   // uniform in [min, max]
  std::uint64_t mean_us = 0, jitter_us = 0;   // normal(mean, jitter), clipped at 0
};

struct reply_params {
  static constexpr std::string_view type_name = "reply";
  protocol::reply_spec reply;   // code required; text defaults by the code's class
};

struct reply_and_close_params {
  static constexpr std::string_view type_name = "reply_and_close";
  protocol::reply_spec reply{421, "4.7.0", "Service not available, closing transmission channel"};
};

struct disconnect_params {
  static constexpr std::string_view type_name = "disconnect";
  std::optional<protocol::reply_spec> reply;   // sent before the FIN when `code` is given
};

struct reset_params {
  static constexpr std::string_view type_name = "reset";
};

struct stall_params {
  static constexpr std::string_view type_name = "stall";
  std::uint64_t max_us = 0;   // 0: until the peer gives up (bounded by timeouts.client_idle)
};

struct throttle_params {
  static constexpr std::string_view type_name = "throttle";
  std::uint64_t bytes_per_second = 0;
  shaping_direction direction = shaping_direction::both;
};

struct slice_params {
  static constexpr std::string_view type_name = "slice";
  std::uint64_t segment_bytes = 0;   // 0: writes are not cut (split_dot alone)
  std::uint64_t gap_us = 10'000;
  shaping_direction direction = shaping_direction::both;
  bool split_dot = false;
};

struct capabilities_params {
  static constexpr std::string_view type_name = "capabilities";
  std::vector<std::string> strip;
  std::vector<std::string> mask;
  std::optional<std::uint64_t> size;
};

struct banner_params {
  static constexpr std::string_view type_name = "banner";
  bool mask = false;
  std::optional<std::string> text;
};

struct greylist_params {
  static constexpr std::string_view type_name = "greylist";
  std::uint64_t retry_after_us = 300'000'000;   // 5 minutes (postgrey's default delay)
  protocol::reply_spec reply{451, "4.7.1", "Greylisted, please try again later"};
};

struct quota_params {
  static constexpr std::string_view type_name = "quota";
  enum class per_kind : unsigned char { client, sender, all };
  std::uint64_t limit = 0;
  std::uint64_t window_us = 0;
  per_kind per = per_kind::all;
  protocol::reply_spec reply{452, "4.5.3", "Quota exceeded, please try again later"};   // or 421 4.7.0, then close
};

struct fail_then_pass_params {
  static constexpr std::string_view type_name = "fail_then_pass";
  enum class key_kind : unsigned char { envelope, sender, client, message_id };
  std::uint64_t failures = 0;
  key_kind key = key_kind::envelope;
  protocol::reply_spec reply{451, "4.3.0", "Temporary failure, please try again later"};
};

struct blackhole_params {
  static constexpr std::string_view type_name = "blackhole";
  std::optional<std::string> text;   // default "Ok: queued as <id>"
};

struct upstream_unreachable_params {
  static constexpr std::string_view type_name = "upstream_unreachable";
  bool no_greeting = false;   // mode = "no_greeting"; otherwise "refused"
};

struct verb_filter_params {
  static constexpr std::string_view type_name = "verb_filter";
  std::vector<std::string> allow;   // upper-case verbs
};

struct split_dot_withhold_params {
  static constexpr std::string_view type_name = "split_dot_withhold";
};

using type_params =
    std::variant<delay_params, reply_params, reply_and_close_params, disconnect_params, reset_params, stall_params,
                 throttle_params, slice_params, capabilities_params, banner_params, greylist_params, quota_params,
                 fail_then_pass_params, blackhole_params, upstream_unreachable_params, verb_filter_params,
                 split_dot_withhold_params>;

// The type name of the alternative held ("delay", "reply", ...).
std::string_view type_name(const type_params& p);

}  // namespace mailtap::policies
