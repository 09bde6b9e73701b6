#include "framework/net/heartbeat_line.h"

#include <nlohmann/json.hpp>

#include "framework/net/heartbeat.h"

namespace reglage::net {

namespace {

using json = nlohmann::json;

// v as an integer in [lo, hi]; false for any other type (floats and booleans included) or value.
bool integer_in(const json& v, int64_t lo, int64_t hi, int64_t& out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(hi)) return false;
    out = int64_t(u);
  } else if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else {
    return false;
  }
  return out >= lo && out <= hi;
}

bool string_of(const json& v, size_t min_bytes, std::string& out) {
  if (!v.is_string()) return false;
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() < min_bytes || s.size() > kHeartbeatMaxString) return false;
  out = s;
  return true;
}

std::optional<BeatLine> no(std::string* why, const char* reason) {
  if (why != nullptr) *why = reason;
  return std::nullopt;
}

}  // namespace

std::string format_beat(const std::string& key, const BeatLine& b) {
  return json{{"key", key},
              {"rank", b.rank},
              {"host", cut_utf8(b.host, kHeartbeatMaxString)},
              {"pid", b.pid},
              {"stage", cut_utf8(b.stage, kHeartbeatMaxString)},
              {"step", b.step},
              {"total", b.total},
              {"op", cut_utf8(b.op, kHeartbeatMaxString)},
              {"progress", b.progress}}
             .dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;  // every byte is compared, whatever the first difference
  for (size_t i = 0; i < a.size(); ++i) diff = diff | (static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]));
  return diff == 0;
}

std::optional<BeatLine> parse_beat(const std::string& line, const std::string& key, int np, std::string* why) {
  try {
    if (line.size() > kHeartbeatMaxLine) return no(why, "line too long");
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);  // bad UTF-8 is a parse error
    if (j.is_discarded() || !j.is_object()) return no(why, "not a JSON object");
    if (j.size() != 9) return no(why, "not the 9 fields of a beat");
    const auto field = [&](const char* name) -> const json* {
      const auto it = j.find(name);
      return it == j.end() ? nullptr : &*it;
    };
    const json* k = field("key");
    if (k == nullptr || !k->is_string() || key.empty() || !same_secret(k->get_ref<const std::string&>(), key))
      return no(why, "wrong or missing key");
    BeatLine b;
    int64_t rank = 0, progress = 0;
    const json *r = field("rank"), *h = field("host"), *p = field("pid"), *st = field("stage"), *sp = field("step"),
               *t = field("total"), *o = field("op"), *g = field("progress");
    if (r == nullptr || !integer_in(*r, 0, int64_t(np) - 1, rank)) return no(why, "rank not an integer in [0, np)");
    if (h == nullptr || !string_of(*h, 1, b.host)) return no(why, "host not a string of 1..256 bytes");
    if (p == nullptr || !integer_in(*p, 2, kHeartbeatMaxPid, b.pid)) return no(why, "pid not an integer in [2, 2^22]");
    if (st == nullptr || !string_of(*st, 0, b.stage)) return no(why, "stage not a string of at most 256 bytes");
    if (sp == nullptr || !integer_in(*sp, 0, INT64_MAX, b.step)) return no(why, "step not an integer >= 0");
    if (t == nullptr || !integer_in(*t, 0, INT64_MAX, b.total)) return no(why, "total not an integer >= 0");
    if (o == nullptr || !string_of(*o, 0, b.op)) return no(why, "op not a string of at most 256 bytes");
    if (g == nullptr) return no(why, "progress missing");
    if (g->is_number_unsigned()) b.progress = g->get<uint64_t>();
    else if (!integer_in(*g, 0, INT64_MAX, progress)) return no(why, "progress not an integer >= 0");
    else b.progress = uint64_t(progress);
    b.rank = int(rank);
    return b;
  } catch (const std::exception&) {  // not expected (every access above is type-checked), but never thrown on
    return no(why, "unreadable");
  }
}

}  // namespace reglage::net
