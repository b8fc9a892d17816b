// [[fault]] tables to rules. Each table is read by one param_reader: the common keys here,
// the type's own keys by its read/finish (types/<name>.cpp), then registry's check_rule.
#include "policies/scenario_loader.hpp"

#include <unordered_map>

#include <algorithm>
#include <fstream>
#include <map>

#include "policies/duration.hpp"
#include "policies/firewall.hpp"
#include "policies/glob.hpp"
#include "policies/limits.hpp"
#include "policies/param_reader.hpp"
#include "policies/registry.hpp"
#include "protocol/action.hpp"

namespace mailtap::policies {
namespace {

using protocol::phase;

// Keys a session-wide rule (and a firewall, whose parts include one) may carry.
constexpr std::string_view session_keys[] = {"name", "type", "client", "tls", "nth_session", "after", "for", "until",
                                             "probability", "max_count"};
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
  table_loader(std::string_view file, const toml::table& table) : r_(file, table), table_(table), file_(file) {}

  std::vector<rule> load() {
    const fault_type* type = read_type();
    if (!type && !firewall_) {
      read_name();   // an earlier bad name still wins in file order
      return {};
    }
    if (type) rule_.params = type->make();
    for (auto&& [key, node] : table_) {
      const std::string_view k = key.str();
      r_.focus(k, node);
      if (k == "type") continue;
      if (k == "name") {
        read_name();
      } else if (firewall_) {
        if (k == "profile") read_profile();
        else if (contains(firewall_keys, k)) common_key(k, nullptr);
        else if (is_common_key(k)) not_for("a firewall can match only client, tls, nth_session, after, for and until");
        else other_key(k, nullptr);
      } else if (contains(type->keys, k)) {
        type->read(r_, rule_.params);
      } else if (is_common_key(k)) {
        if (type->session_wide && !contains(session_keys, k))
          not_for("type '" + std::string(type->name) +
                         "' is session-wide (decided once at connect): it can match only client, tls, nth_session, "
                         "after, for, until, probability and max_count");
        else common_key(k, type);
      } else {
        other_key(k, type);
      }
    }
    if (!table_.contains("name")) r_.fail_key("name", "required");
    if (firewall_) {
      if (!table_.contains("profile")) r_.fail_key("profile", "required (cisco-pix-fixup or cisco-asa-esmtp)");
      if (r_.failed() || !profile_) return {};
      std::vector<rule> parts = expand_firewall(rule_.name, *profile_, rule_.match);
      for (auto& part : parts) {
        part.origin = rule_.origin;
        if (auto problem = check_rule(part)) {
          r_.fail_key("name", "firewall part '" + echo(part.name) + "': " + *problem);
          return {};
        }
      }
      return parts;
    }
    if (!type->session_wide && rule_.phases.empty() && type->default_phases.empty() && !table_.contains("phase"))
      r_.fail_key("phase", "required for type '" + std::string(type->name) + "' (one of " + phase_names() + ")");
    if (type->finish) type->finish(r_, rule_.params);
    if (r_.failed()) return {};
    if (auto problem = check_rule_at_key(rule_)) {
      r_.fail_key(problem->key, problem->text);   // at that key's line (the table's when it is absent)
      return {};
    }
    return {rule_};
  }

  const param_reader& reader() const { return r_; }

 private:
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
    const auto* s = n->as_string();
    if (!s) return r_.wrong_type("a string");
    if (!valid_rule_name(s->get()))
      return r_.fail("expected 1 to " + std::to_string(limits::rule_name_chars) +
                     " printable ASCII characters without spaces or quotes, got '" + echo(s->get()) + "'");
    rule_.name = s->get();
    rule_.origin = std::string(file_) + ":" + std::to_string(n->source().begin.line);
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

  void not_for(const std::string& why) { r_.fail("not allowed here: " + why); }

  // A key that is not common and not this type's: another type's, or unknown.
  void other_key(std::string_view k, const fault_type* type) {
    std::string owners;
    for (const auto& t : fault_types()) {
      if (!contains(t.keys, k)) continue;
      if (!owners.empty()) owners += ", ";
      owners += t.name;
    }
    if (k == "profile") owners = "firewall";
    if (owners.empty()) r_.fail("unknown key");
    else r_.fail("not a key of type '" + std::string(type ? type->name : "firewall") + "' (it belongs to " + owners + ")");
  }

  void common_key(std::string_view k, const fault_type* type) {
    matcher& m = rule_.match;
    if (k == "phase") read_phases(*type);
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

  void read_phases(const fault_type& type) {
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
      if (!contains(type.phases, *p)) {
        std::string allowed;
        for (auto a : type.phases) {
          if (!allowed.empty()) allowed += '|';
          allowed += protocol::to_string(a);
        }
        return r_.fail_at(*n, "phase", "phase '" + echo(s->get()) + "' is not allowed for type '" +
                                           std::string(type.name) + "' (allowed: " + allowed + ")");
      }
      if (contains(out, *p)) return r_.fail_at(*n, "phase", "phase '" + echo(s->get()) + "' is listed twice");
      out.push_back(*p);
    }
    rule_.phases = std::move(out);
  }

  param_reader r_;
  const toml::table& table_;
  std::string_view file_;
  rule rule_;
  bool firewall_ = false;
  std::optional<firewall_profile> profile_;
};

std::string one_line(std::string_view text) {
  std::string out(text);
  std::replace_if(out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return out;
}

load_result rules_from_toml_impl(const toml::table& doc, std::string_view file) {
  load_result out;
  const toml::node* f = doc.get("fault");
  if (!f) return out;
  const std::string shown = protocol::escape_bytes(file, 4096);
  const auto* arr = f->as_array();
  if (!arr || arr->empty() || !arr->is_array_of_tables()) {
    out.error = shown + ":" + std::to_string(f->source().begin.line) +
                ": key 'fault': expected [[fault]] tables (an array of tables)";
    return out;
  }
  if (arr->size() > limits::rules_per_file) {
    out.error = shown + ":" + std::to_string(f->source().begin.line) + ": key 'fault': more than " +
                std::to_string(limits::rules_per_file) + " [[fault]] tables";
    return out;
  }
  std::map<std::string, std::uint32_t, std::less<>> first_line;   // rule name -> line of its table
  for (const toml::node& n : *arr) {
    const toml::table& t = *n.as_table();
    table_loader loader(shown, t);
    std::vector<rule> rules = loader.load();
    if (!loader.reader().error().empty()) {
      out.rules.clear();
      out.error = loader.reader().error();
      return out;
    }
    const std::uint32_t line = t.source().begin.line;
    for (auto& r : rules) {
      if (auto it = first_line.find(r.name); it != first_line.end()) {
        const toml::node* name_node = t.get("name");
        out.rules.clear();
        out.error = shown + ":" + std::to_string(name_node ? name_node->source().begin.line : line) +
                    ": key 'name': duplicate rule name '" + echo(r.name) + "' (first at line " +
                    std::to_string(it->second) + ")";
        return out;
      }
      first_line.emplace(r.name, line);
      out.rules.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace

load_result rules_from_toml(const toml::table& doc, std::string_view file) {
  try {
    return rules_from_toml_impl(doc, file);
  } catch (const std::exception& e) {
    return {{}, protocol::escape_bytes(file, 4096) + ": " + one_line(e.what())};
  } catch (...) {
    return {{}, protocol::escape_bytes(file, 4096) + ": cannot load the [[fault]] tables"};
  }
}

load_result load_scenario(const std::string& path) {
  const std::string shown = protocol::escape_bytes(path, 4096);
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) return {{}, shown + ": cannot open the scenario file"};
    std::string text(limits::scenario_file_bytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    if (in.bad()) return {{}, shown + ": cannot read the scenario file"};
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > limits::scenario_file_bytes)
      return {{}, shown + ": file larger than " + std::to_string(limits::scenario_file_bytes) + " bytes"};
    toml::table doc;
    try {
      doc = toml::parse(text, path);
    } catch (const toml::parse_error& e) {
      return {{}, shown + ":" + std::to_string(e.source().begin.line) + ": " + one_line(e.description())};
    }
    // A scenario holds only [[fault]] tables; report the first other key in file order.
    const toml::node* stray = nullptr;
    std::string stray_key;
    for (auto&& [key, node] : doc) {
      if (key.str() == "fault") continue;
      if (!stray || node.source().begin.line < stray->source().begin.line) {
        stray = &node;
        stray_key = std::string(key.str());
      }
    }
    if (stray)
      return {{}, shown + ":" + std::to_string(stray->source().begin.line) + ": key '" + echo(stray_key) +
                      "': unknown key (a scenario file holds only [[fault]] tables)"};
    if (!doc.contains("fault")) return {{}, shown + ": no [[fault]] tables"};
    return rules_from_toml(doc, path);
  } catch (const std::exception& e) {
    return {{}, shown + ": " + one_line(e.what())};
  } catch (...) {
    return {{}, shown + ": cannot load the scenario file"};
  }
}

std::optional<std::string> duplicate_rule_name(const std::vector<rule>& rules) {
  std::unordered_map<std::string_view, const rule*> seen;
  for (const auto& r : rules) {
    auto [it, fresh] = seen.emplace(r.name, &r);
    if (fresh) continue;
    const rule& first = *it->second;
    std::string where = first.origin.empty() ? std::string() : " (first at " + first.origin + ")";
    if (r.origin.empty()) return "rule '" + r.name + "': duplicate rule name" + where;
    return r.origin + ": key 'name': duplicate rule name '" + r.name + "'" + where;
  }
  return std::nullopt;
}

}  // namespace mailtap::policies
