// Helpers shared by the fault types: phase sets, the stage a rule is asked at, and the reply keys.
#include "policies/limits.hpp"
#include "policies/types/type.hpp"

namespace mailtap::policies {

using protocol::phase;

const std::vector<phase>& rule_phases() {
  static const std::vector<phase> all = {
      phase::connect, phase::banner, phase::ehlo, phase::helo, phase::starttls, phase::auth,
      phase::mail,    phase::rcpt,   phase::data, phase::data_end, phase::bdat, phase::rset,
      phase::noop,    phase::vrfy,   phase::expn, phase::help, phase::quit,   phase::other,
  };
  return all;
}

const std::vector<phase>& command_phases() {
  static const std::vector<phase> commands = {
      phase::ehlo, phase::helo, phase::starttls, phase::auth, phase::mail, phase::rcpt, phase::data, phase::bdat,
      phase::rset, phase::noop, phase::vrfy,     phase::expn, phase::help, phase::quit, phase::other,
  };
  return commands;
}

protocol::fault_stage fault_type::stage_at(const type_params& p, phase ph) const {
  if (ph == phase::connect) return protocol::fault_stage::command;
  if (ph == phase::banner) return protocol::fault_stage::reply;
  return stage ? stage(p) : protocol::fault_stage::command;
}

namespace {

// RFC 3463 2: class "." subject "." detail; class is 2, 4 or 5; subject and detail 1-3 digits.
bool valid_enhanced(std::string_view e) {
  if (e.size() < 5 || (e[0] != '2' && e[0] != '4' && e[0] != '5') || e[1] != '.') return false;
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (i < e.size() && e[i] >= '0' && e[i] <= '9') {
      ++i;
      ++digits;
    }
    if (digits == 0 || digits > 3) return false;
    if (part == 0) {
      if (i >= e.size() || e[i] != '.') return false;
      ++i;
    }
  }
  return i == e.size();
}

}  // namespace

bool read_reply_key(table_reader& r, protocol::reply_spec& reply, int min_code, int max_code) {
  if (r.key() == "code") {
    if (auto v = r.integer(min_code, max_code)) reply.code = static_cast<int>(*v);
  } else if (r.key() == "enhanced") {
    const auto* s = r.value().as_string();
    if (!s) {
      r.wrong_type("an enhanced status code like \"5.2.2\"");
    } else if (!valid_enhanced(s->get())) {
      r.fail("expected an enhanced status code like \"5.2.2\" (RFC 3463), got '" + echo(s->get()) + "'");
    } else {
      reply.enhanced = s->get();
    }
  } else if (r.key() == "text") {
    if (auto t = r.text(limits::reply_text_chars)) reply.text = *t;
  } else {
    return false;
  }
  return true;
}

void finish_reply(table_reader& r, protocol::reply_spec& reply, int default_code) {
  if (r.has("code") && reply.code != default_code) {
    if (!r.has("enhanced")) reply.enhanced.clear();
    if (!r.has("text")) reply.text = default_reply_text(reply.code);
  }
  if (reply.enhanced.empty() || reply.code == 0) return;
  if (reply.enhanced[0] - '0' != reply.code / 100)
    r.fail_key("enhanced", "class " + reply.enhanced.substr(0, 1) + " does not match code " +
                               std::to_string(reply.code) + " (RFC 3463: the class is the code's first digit)");
}

std::string default_reply_text(int code) {
  switch (code / 100) {
    case 2: return "Ok";
    case 3: return "Go ahead";
    case 4: return "Temporary failure, please try again later";
    default: return "Rejected";
  }
}

}  // namespace mailtap::policies
