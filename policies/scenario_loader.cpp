// [[fault]] tables to rules. Each table is read by one config_reader::table_reader: the
// common keys here, the type's own keys by its read/finish (types/<name>.cpp); the rule as a
// whole is then checked by registry.cpp (rule_problems), and names by find_duplicate_name.
#include "policies/scenario_loader.hpp"

#include <algorithm>

#include "config_reader/document.hpp"
#include "policies/firewall.hpp"
#include "policies/glob.hpp"
#include "policies/limits.hpp"
#include "policies/registry.hpp"
#include "protocol/action.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::policies {
namespace {

using config_reader::problem_log;
using protocol::phase;

// Keys a firewall table may carry (its parts are session-wide rules and command rules alike).
constexpr std::string_view firewall_keys[] = {"name", "type", "profile", "client", "tls", "nth_session",
                                              "after", "for", "until"};

bool contains(const auto& list, const auto& k) { return std::find(std::begin(list), std::end(list), k) != std::end(list); }

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic Gregorian date.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::string phase_names() {
  std::string out;
  for (auto p : rule_phases()) {
    if (!out.empty()) out += '|';
    out += protocol::to_string(p);
  }
  return out;
}

// Reads one [[fault]] table into one rule (or a firewall's parts).
class table_loader {
 public:
  table_loader(problem_log& log, const toml::table& table) : r_(log, table), table_(table) {
    rule_.table_line = table.source().begin.line;
  }

  std::vector<rule> load() {
    const fault_type* type = read_type();
    if (!type && !firewall_) {
      read_name();   // an earlier name of the wrong type still wins in file order
      return {};
    }
    if (type) rule_.params = type->make();
    r_.each([&](std::string_view k) {
      if (k == "type") return true;
      if (k == "name") return read_name(), true;
      if (firewall_) return firewall_key(k);
      if (contains(type->keys, k)) return type->read(r_, rule_.params), true;
      if (is_common_key(k)) return common_key(k), true;
      return other_key(k, type);
    });
    if (!table_.contains("name")) r_.fail_key("name", "required");
    if (firewall_) return firewall_parts();
    if (type->finish) type->finish(r_, rule_.params);
    if (r_.failed()) return {};
    // The rule as a whole, each problem at its key's line (the table's when the key is absent).
    for (const auto& problem : rule_problems(rule_)) r_.fail_key(problem.key, problem.text);
    if (r_.failed()) return {};
    return {rule_};
  }

 private:
  bool firewall_key(std::string_view k) {
    if (k == "profile") read_profile();
    else if (contains(firewall_keys, k)) common_key(k);
    else if (is_common_key(k)) r_.fail("not allowed here: a firewall can match only client, tls, nth_session, after, for and until");
    else return other_key(k, nullptr);
    return true;
  }

  std::vector<rule> firewall_parts() {
    if (!table_.contains("profile")) r_.fail_key("profile", "required (cisco-pix-fixup or cisco-asa-esmtp)");
    if (r_.failed() || !profile_) return {};
    std::vector<rule> parts = expand_firewall(rule_.name, *profile_, rule_.match);
    for (auto& part : parts) {
      part.origin = rule_.origin;
      part.table_line = rule_.table_line;
      if (auto problem = check_rule(part)) {
        r_.fail_key("name", "firewall part '" + echo(part.name) + "': " + *problem);
        return {};
      }
    }
    return parts;
  }

  const fault_type* read_type() {
    const toml::node* n = table_.get("type");
    if (!n) {
      r_.fail_key("type", "required (one of " + type_names() + "|firewall)");
      return nullptr;
    }
    r_.focus("type", *n);
    const auto* s = n->as_string();
    if (!s) {
      r_.wrong_type("a string naming a fault type");
      return nullptr;
    }
    if (s->get() == "firewall") {
      firewall_ = true;
      return nullptr;
    }
    const fault_type* t = find_type(s->get());
    if (!t) r_.fail("unknown fault type '" + echo(s->get()) + "' (expected one of " + type_names() + "|firewall)");
    return t;
  }

  void read_name() {
    const toml::node* n = table_.get("name");
    if (!n) return;
    r_.focus("name", *n);
    const std::string* s = r_.string("a string");
    if (!s) return;
    rule_.name = *s;   // checked with the rule (registry.cpp rule_problems)
    rule_.origin = r_.log().file() + ":" + std::to_string(n->source().begin.line);
  }

  void read_profile() {
    if (auto v = r_.choice({"cisco-pix-fixup", "cisco-asa-esmtp"})) profile_ = parse_firewall_profile(*v);
  }

  static bool is_common_key(std::string_view k) {
    static constexpr std::string_view keys[] = {
        "phase",     "verb",        "argument",        "sender",           "sender_domain",      "recipient",
        "recipient_domain", "ehlo", "client",          "tls",              "nth_session",        "nth_transaction",
        "after",     "for",         "until",           "probability",      "max_count",          "line_longer_than",
        "address_longer_than",      "recipients_more_than", "nth_recipient"};
    return contains(keys, k);
  }

  // A key that is not common and not this type's: another type's (reported here), or unknown
  // (false: each() reports it).
  bool other_key(std::string_view k, const fault_type* type) {
    std::string owners;
    for (const auto& t : fault_types()) {
      if (!contains(t.keys, k)) continue;
      if (!owners.empty()) owners += ", ";
      owners += t.name;
    }
    if (k == "profile") owners = "firewall";
    if (owners.empty()) return false;
    r_.fail("not a key of type '" + std::string(type ? type->name : "firewall") + "' (it belongs to " + owners + ")");
    return true;
  }

  void common_key(std::string_view k) {
    matcher& m = rule_.match;
    if (k == "phase") read_phases();
    else if (k == "verb") m.verb = glob();
    else if (k == "argument") m.argument = glob();
    else if (k == "sender") m.sender = glob();
    else if (k == "recipient") m.recipient = glob();
    else if (k == "ehlo") m.ehlo = glob();
    else if (k == "sender_domain") m.sender_domain = domain();
    else if (k == "recipient_domain") m.recipient_domain = domain();
    else if (k == "client") read_client();
    else if (k == "tls") m.tls = r_.boolean();
    else if (k == "nth_session") m.nth_session = count(1, limits::count_value);
    else if (k == "nth_transaction") m.nth_transaction = count(1, limits::count_value);
    else if (k == "nth_recipient") m.nth_recipient = count(1, limits::recipients_threshold);
    else if (k == "after") {
      if (auto d = r_.duration()) m.after_us = *d;
    } else if (k == "for") {
      if (auto d = r_.duration(); d && *d == 0) r_.fail("expected a duration > 0");
      else if (d) m.for_us = *d;
    } else if (k == "until") read_until();
    else if (k == "probability") {
      if (auto p = r_.number(0.0, 1.0)) m.probability = *p;
    } else if (k == "max_count") m.max_count = count(0, limits::count_value);
    else if (k == "line_longer_than") m.line_longer_than = count(0, limits::length_threshold);
    else if (k == "address_longer_than") m.address_longer_than = count(0, limits::length_threshold);
    else if (k == "recipients_more_than") m.recipients_more_than = count(0, limits::recipients_threshold);
  }

  std::optional<std::uint64_t> count(std::int64_t lo, std::int64_t hi) {
    auto v = r_.integer(lo, hi);
    if (!v) return std::nullopt;
    return static_cast<std::uint64_t>(*v);
  }

  // Any characters but controls (an empty glob matches only the empty string, e.g. the null sender).
  std::optional<std::string> glob() {
    const auto* s = r_.value().as_string();
    if (!s) {
      r_.wrong_type("a string (a glob with * and ?)");
      return std::nullopt;
    }
    if (s->get().size() > limits::glob_chars) {
      r_.fail("longer than " + std::to_string(limits::glob_chars) + " characters");
      return std::nullopt;
    }
    for (unsigned char c : s->get()) {
      if (c < 0x20 || c == 0x7f) {
        r_.fail("control characters are not allowed, got '" + echo(s->get()) + "'");
        return std::nullopt;
      }
    }
    return s->get();
  }

  std::optional<std::string> domain() {
    const auto* s = r_.value().as_string();
    if (!s) {
      r_.wrong_type("a string (a domain)");
      return std::nullopt;
    }
    const std::string& d = s->get();
    const bool ok = !d.empty() && d.size() <= limits::domain_chars &&
                    std::all_of(d.begin(), d.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f && c != '@'; });
    if (!ok) {
      r_.fail("expected a domain (no '@', no spaces, at most " + std::to_string(limits::domain_chars) +
              " characters), got '" + echo(d) + "'");
      return std::nullopt;
    }
    return d;
  }

  void read_client() {
    std::vector<const toml::node*> items;
    if (r_.value().is_string()) {
      items.push_back(&r_.value());
    } else if (const auto* arr = r_.value().as_array()) {
      if (arr->empty()) return r_.fail("expected at least one CIDR");
      if (arr->size() > limits::cidrs_per_rule)
        return r_.fail("more than " + std::to_string(limits::cidrs_per_rule) + " CIDRs");
      for (const toml::node& n : *arr) items.push_back(&n);
    } else {
      return r_.wrong_type("a CIDR string like \"127.0.0.0/8\" or an array of them");
    }
    std::vector<cidr> blocks;
    for (const toml::node* n : items) {
      const auto* s = n->as_string();
      if (!s) {
        return r_.fail_at(*n, r_.key(), "expected a CIDR string, got " + std::string(toml_type_name(n->type())));
      }
      std::string problem;
      auto c = parse_cidr(s->get(), problem);
      if (!c) return r_.fail_at(*n, r_.key(), "bad CIDR '" + echo(s->get()) + "': " + problem);
      blocks.push_back(*c);
    }
    rule_.match.client = std::move(blocks);
  }

  // An offset date-time (local times have no fixed instant: the relay's zone would decide).
  void read_until() {
    const auto* dt = r_.value().as_date_time();
    if (!dt || !dt->get().offset) {
      return r_.fail("expected a TOML date-time with an offset, e.g. 2030-01-01T00:00:00Z, got " +
                     std::string(dt ? "a local date-time" : toml_type_name(r_.value().type())));
    }
    const toml::date_time& v = dt->get();
    const std::int64_t days = days_from_civil(v.date.year, v.date.month, v.date.day);
    rule_.match.until_s = days * 86400 + v.time.hour * 3600 + v.time.minute * 60 + v.time.second -
                          static_cast<std::int64_t>(v.offset->minutes) * 60;
  }

  // Names and no repeats; whether the type allows them is the rule's check (registry.cpp).
  void read_phases() {
    std::vector<const toml::node*> items;
    if (r_.value().is_string()) {
      items.push_back(&r_.value());
    } else if (const auto* arr = r_.value().as_array()) {
      if (arr->empty()) return r_.fail("expected at least one phase");
      if (arr->size() > rule_phases().size()) return r_.fail("more phases than there are");
      for (const toml::node& n : *arr) items.push_back(&n);
    } else {
      return r_.wrong_type("a phase name or an array of them");
    }
    std::vector<phase> out;
    for (const toml::node* n : items) {
      const auto* s = n->as_string();
      if (!s) return r_.fail_at(*n, "phase", "expected a phase name, got " + std::string(toml_type_name(n->type())));
      const auto p = protocol::parse_phase(s->get());
      if (!p || !contains(rule_phases(), *p))
        return r_.fail_at(*n, "phase", "unknown phase '" + echo(s->get()) + "' (expected one of " + phase_names() + ")");
      if (contains(out, *p)) return r_.fail_at(*n, "phase", "phase '" + echo(s->get()) + "' is listed twice");
      out.push_back(*p);
    }
    rule_.phases = std::move(out);
  }

  table_reader r_;
  const toml::table& table_;
  rule rule_;
  bool firewall_ = false;
  std::optional<firewall_profile> profile_;
};

}  // namespace

std::vector<rule> read_fault_tables(problem_log& log, const toml::table& doc) {
  const toml::node* f = doc.get("fault");
  if (!f) return {};
  const auto* arr = f->as_array();
  if (!arr || arr->empty() || !arr->is_array_of_tables()) {
    log.at(*f, "fault", "expected [[fault]] tables (an array of tables)");
    return {};
  }
  if (arr->size() > limits::rules_per_file) {
    log.at(*f, "fault", "more than " + std::to_string(limits::rules_per_file) + " [[fault]] tables");
    return {};
  }
  std::vector<rule> rules;
  for (const toml::node& n : *arr) {
    for (auto& r : table_loader(log, *n.as_table()).load()) rules.push_back(std::move(r));
  }
  std::vector<const rule*> all;
  for (const auto& r : rules) all.push_back(&r);
  // Ranked at the second rule's table: a problem in an earlier table still comes first.
  if (auto duplicate = find_duplicate_name(all)) log.at_line(duplicate->second->table_line, duplicate->message);
  if (log.failed()) rules.clear();
  return rules;
}

namespace {

load_result result_of(problem_log& log, std::vector<rule> rules) {
  if (log.failed()) return {{}, log.first()};
  return {std::move(rules), {}};
}

// An error not made by the problem log (a read failure, an exception's text): as safe on a
// terminal as the log's (protocol/terminal_text.hpp).
load_result refused(std::string error) { return {{}, protocol::terminal_safe(error)}; }

}  // namespace

load_result rules_from_toml(const toml::table& doc, std::string_view file) {
  const std::string shown = config_reader::echo_path(file);
  try {
    problem_log log(shown);
    auto rules = read_fault_tables(log, doc);
    return result_of(log, std::move(rules));
  } catch (const std::exception& e) {
    return refused(shown + ": " + config_reader::one_line(e.what()));
  } catch (...) {
    return {{}, shown + ": cannot load the [[fault]] tables"};
  }
}

load_result load_scenario(const std::string& path) {
  const std::string shown = config_reader::echo_path(path);
  try {
    auto file = config_reader::read_file(path, limits::scenario_file_bytes);
    if (!file.ok())
      return refused(shown + (file.opened ? ": cannot read the scenario file: " : ": cannot open the scenario file: ") +
                    file.problem);
    std::string error;
    auto doc = config_reader::parse(file.text, path, error);
    if (!doc) return {{}, error};
    problem_log log(shown);
    table_reader top(log, *doc);
    top.each([&](std::string_view k) {
      if (k != "fault") top.fail("unknown key (a scenario file holds only [[fault]] tables)");
      return true;
    });
    if (!log.failed() && !doc->contains("fault")) return {{}, shown + ": no [[fault]] tables"};
    auto rules = read_fault_tables(log, *doc);
    return result_of(log, std::move(rules));
  } catch (const std::exception& e) {
    return refused(shown + ": " + config_reader::one_line(e.what()));
  } catch (...) {
    return {{}, shown + ": cannot load the scenario file"};
  }
}

}  // namespace mailtap::policies
