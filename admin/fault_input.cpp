// JSON or TOML request bodies to checked rules (admin/fault_input.hpp).
#include "admin/fault_input.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <limits>
#include <map>
#include <optional>

#include "config_reader/document.hpp"
#include "policies/limits.hpp"

namespace mailtap::admin {

namespace {

namespace json = boost::json;

// JSON values as the TOML values a [[fault]] table holds. nullopt (and `why`) for what TOML
// has no value for (null) or an integer past int64.
std::optional<toml::table> table_of(const json::object& o, std::string& why);

std::optional<toml::array> array_of(const json::array& a, std::string& why);

template <typename Put>
bool convert(const json::value& v, std::string& why, Put put) {
  switch (v.kind()) {
    case json::kind::bool_: put(toml::value<bool>(v.get_bool())); return true;
    case json::kind::int64: put(toml::value<std::int64_t>(v.get_int64())); return true;
    case json::kind::uint64:
      if (v.get_uint64() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        why = "integer too large: " + std::to_string(v.get_uint64());
        return false;
      }
      put(toml::value<std::int64_t>(static_cast<std::int64_t>(v.get_uint64())));
      return true;
    case json::kind::double_: put(toml::value<double>(v.get_double())); return true;
    case json::kind::string: put(toml::value<std::string>(std::string(v.get_string()))); return true;
    case json::kind::array: {
      auto a = array_of(v.get_array(), why);
      if (!a) return false;
      put(std::move(*a));
      return true;
    }
    case json::kind::object: {
      auto t = table_of(v.get_object(), why);
      if (!t) return false;
      put(std::move(*t));
      return true;
    }
    case json::kind::null: why = "null is not a value a [[fault]] table can hold"; return false;
  }
  return false;
}

std::optional<toml::table> table_of(const json::object& o, std::string& why) {
  toml::table t;
  for (const auto& [key, value] : o) {
    std::string key_text(key);
    if (!convert(value, why, [&](auto&& node) { t.insert_or_assign(key_text, std::forward<decltype(node)>(node)); })) {
      why = "key '" + key_text + "': " + why;
      return std::nullopt;
    }
  }
  return t;
}

std::optional<toml::array> array_of(const json::array& a, std::string& why) {
  toml::array out;
  for (const auto& value : a)
    if (!convert(value, why, [&](auto&& node) { out.push_back(std::forward<decltype(node)>(node)); })) return std::nullopt;
  return out;
}

constexpr std::string_view json_source = "request (JSON)";
constexpr std::string_view toml_source = "request";

policies::load_result from_json(std::string_view body) {
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec) return {{}, std::string(json_source) + ": not JSON: " + ec.message()};
  const json::array* rules = nullptr;
  json::array single;
  if (doc.is_object() && doc.get_object().contains("fault") && doc.get_object().size() == 1) {
    if (!doc.get_object().at("fault").is_array()) return {{}, std::string(json_source) + ": 'fault' must be an array of rules"};
    rules = &doc.get_object().at("fault").get_array();
  } else if (doc.is_object()) {
    single.push_back(doc);
    rules = &single;
  } else if (doc.is_array()) {
    rules = &doc.get_array();
  } else {
    return {{}, std::string(json_source) + ": expected a rule (an object), an array of rules, or {\"fault\": [...]}"};
  }
  // None to read: said in JSON's terms (the loader's "expected [[fault]] tables (an array of
  // tables)" names TOML's, which a JSON body has none of).
  if (rules->empty())
    return {{}, std::string(json_source) + ": no rule in the body: " +
                    (doc.is_array() ? "the array is empty" : "'fault' is an empty array") +
                    " (expected one or more rules, each an object)"};
  if (rules->size() > policies::limits::rules_per_file)
    return {{}, std::string(json_source) + ": more than " + std::to_string(policies::limits::rules_per_file) +
                    " rules in one request"};
  toml::array tables;
  for (std::size_t i = 0; i < rules->size(); ++i) {
    const auto& r = (*rules)[i];
    std::string why;
    std::optional<toml::table> t;
    if (!r.is_object()) why = "expected an object";
    else t = table_of(r.get_object(), why);
    if (!t) return {{}, std::string(json_source) + ": rule " + std::to_string(i + 1) + ": " + why};
    tables.push_back(std::move(*t));
  }
  // A JSON body has no lines to point at: each rule is read alone first, so that a problem
  // names the rule it is in ("request (JSON): rule 2: key 'code': ..."), and so is a name
  // given twice.
  std::map<std::string, std::size_t, std::less<>> named;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const std::string where = std::string(json_source) + ": rule " + std::to_string(i + 1);
    toml::array one;
    one.push_back(*tables[i].as_table());
    toml::table alone;
    alone.insert("fault", std::move(one));
    auto checked = policies::rules_from_toml(alone, where);
    if (!checked.ok()) return checked;
    if (checked.rules.size() != 1 || checked.rules.front().name.empty()) continue;
    const auto [at, fresh] = named.emplace(checked.rules.front().name, i + 1);
    if (!fresh)
      return {{}, where + ": key 'name': duplicate rule name '" + config_reader::echo(at->first) + "' (first in rule " +
                      std::to_string(at->second) + ")"};
  }
  toml::table root;
  root.insert("fault", std::move(tables));
  return policies::rules_from_toml(root, json_source);
}

policies::load_result from_toml(std::string_view body) {
  std::string error;
  auto doc = config_reader::parse(body, toml_source, error);
  if (!doc) return {{}, error};
  // Only [[fault]] tables, as in a scenario file.
  for (const auto& [key, node] : *doc)
    if (key.str() != "fault")
      return {{}, std::string(toml_source) + ": key '" + std::string(key.str()) + "': only [[fault]] tables are accepted"};
  return policies::rules_from_toml(*doc, toml_source);
}

}  // namespace

policies::load_result rules_from_body(std::string_view body, body_format format) {
  auto result = format == body_format::json ? from_json(body) : from_toml(body);
  if (result.ok() && result.rules.empty())
    result.error = std::string(format == body_format::json ? json_source : toml_source) + ": no [[fault]] rule in the body";
  return result;
}

}  // namespace mailtap::admin
