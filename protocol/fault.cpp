// Names of the fault vocabulary, for captures and logs.
#include "protocol/fault.hpp"

namespace mailtap::protocol {

std::string_view to_string(fault_stage s) {
  switch (s) {
    case fault_stage::command: return "command";
    case fault_stage::reply: return "reply";
    case fault_stage::message: return "message";
  }
  return "command";
}

std::string_view to_string(verdict v) {
  switch (v) {
    case verdict::proceed: return "proceed";
    case verdict::delay: return "delay";
    case verdict::reply: return "reply";
    case verdict::reply_and_close: return "reply_and_close";
    case verdict::disconnect: return "disconnect";
    case verdict::reset: return "reset";
    case verdict::stall: return "stall";
    case verdict::blackhole: return "blackhole";
    case verdict::unreachable: return "unreachable";
  }
  return "proceed";
}

}  // namespace mailtap::protocol
