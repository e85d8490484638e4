// places-stub: a local stand-in for Google's legacy Places Nearby Search.
//
// Serves GET /maps/api/place/nearbysearch/json over HTTP/1.1 with keep-alive,
// or over HTTPS only when given --tls-cert and --tls-key. Results depend on
// (location, radius) alone, so runs are repeatable. Failure switches
// (--fail-status, --http-status, --delay-ms, --drop, --invalid-json) let
// tests drive every failure path of a client. See --help.

#include <boost/asio/dispatch.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// -- configuration ------------------------------------------------------------

struct stub_config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  int threads = 1;
  std::string port_file;
  std::string tls_cert;
  std::string tls_key;
  std::optional<std::string> valid_key;
  std::optional<int> forced_results; // replaces the per-location count
  std::string fail_status;           // empty: answer normally
  unsigned http_status = 0;          // 0: answer normally
  std::chrono::milliseconds delay{0};
  bool drop = false;
  bool invalid_json = false;
  bool log = false;
};

constexpr std::string_view search_path = "/maps/api/place/nearbysearch/json";
constexpr std::string_view json_type = "application/json; charset=UTF-8";
constexpr int page_size = 20;
constexpr int max_results = 60;
constexpr double max_radius_m = 50000;
constexpr double metres_per_degree = 111320;
constexpr double pi = 3.14159265358979323846;
constexpr auto io_timeout = 30s;
constexpr std::uint32_t header_limit = 16 * 1024;
constexpr std::uint64_t body_limit = 16 * 1024;

// -- deterministic randomness -------------------------------------------------

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr std::string_view b64url =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// splitmix64: small, fast, and the same on every platform.
class rng {
 public:
  explicit rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() { return mix(state_ += 0x9e3779b97f4a7c15ULL); }
  std::size_t below(std::size_t n) { return next() % n; }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // One word of a '|'-separated list.
  std::string_view pick(std::string_view list) {
    auto n = std::count(list.begin(), list.end(), '|') + 1;
    for (auto i = below(static_cast<std::size_t>(n)); i > 0; --i)
      list.remove_prefix(list.find('|') + 1);
    return list.substr(0, list.find('|'));
  }
  std::string chars(std::size_t n, std::string_view alphabet) {
    std::string s;
    while (s.size() < n)
      s += alphabet[below(alphabet.size())];
    return s;
  }

 private:
  std::uint64_t state_;
};

// A search normalised to integers, so "34" and "34.000000" give the same
// results and a page token can carry the search.
struct search_key {
  std::int32_t lat_e6;
  std::int32_t lng_e6;
  std::uint32_t radius_m;
};

std::uint64_t hash_of(const search_key& k) {
  auto h = mix(static_cast<std::uint32_t>(k.lat_e6));
  h = mix(h ^ static_cast<std::uint32_t>(k.lng_e6));
  return mix(h ^ k.radius_m);
}

// Most locations have 20..60 results, some 1..19, about 4% none at all.
int total_results(const search_key& k, const stub_config& cfg) {
  if (cfg.forced_results)
    return *cfg.forced_results;
  rng r(hash_of(k));
  auto bucket = r.below(100);
  if (bucket < 4)
    return 0;
  if (bucket < 10)
    return 1 + static_cast<int>(r.below(19));
  return 20 + static_cast<int>(r.below(max_results - 20 + 1));
}

// -- page tokens --------------------------------------------------------------

// The search in hex, then characters derived from it and a secret: opaque and
// long like Google's, and fully determined by the search, so checking a token
// means re-encoding what it claims to be.
std::string encode_page_token(const search_key& k, int page) {
  char head[32];
  std::snprintf(head, sizeof head, "AW%08x%08x%08x%02x",
                static_cast<std::uint32_t>(k.lat_e6),
                static_cast<std::uint32_t>(k.lng_e6), k.radius_m, page);
  rng tail(mix(hash_of(k) ^ 0x5eedca11ab1ef00dULL) +
           static_cast<unsigned>(page));
  return head + tail.chars(160, b64url);
}

// The search and page a token stands for, or nothing if it is not ours.
std::optional<std::pair<search_key, int>>
decode_page_token(std::string_view token) {
  std::uint32_t field[4] = {};
  for (std::size_t i = 0; i < 4 && token.size() > 28; ++i) {
    auto text = token.substr(2 + 8 * i, i < 3 ? 8 : 2);
    std::from_chars(text.data(), text.data() + text.size(), field[i], 16);
  }
  search_key k{static_cast<std::int32_t>(field[0]),
               static_cast<std::int32_t>(field[1]), field[2]};
  int page = static_cast<int>(field[3]);
  if (page < 1 || page > 2 || encode_page_token(k, page) != token)
    return std::nullopt;
  return std::make_pair(k, page);
}

// -- JSON in Google's pretty-printed style ------------------------------------

// Writes `{\n   "key" : value,\n ...}` with 3-space indentation, as the legacy
// web services do. It places every comma itself, so the output is valid JSON
// whenever begin and end calls pair up.
class json_writer {
 public:
  json_writer& key(std::string_view k) {
    before_value();
    quoted(k);
    out_ += " : ";
    after_key_ = true;
    return *this;
  }
  json_writer& begin(char bracket) {
    before_value();
    out_ += bracket;
    empty_.push_back(true);
    return *this;
  }
  json_writer& end(char bracket) {
    bool was_empty = empty_.back();
    empty_.pop_back();
    if (!was_empty)
      newline();
    out_ += bracket;
    return *this;
  }
  json_writer& value(std::string_view s) {
    before_value();
    quoted(s);
    return *this;
  }
  json_writer& value(const char* s) { return value(std::string_view(s)); }
  json_writer& value(bool b) { return raw(b ? "true" : "false"); }
  json_writer& value(std::size_t n) { return raw(std::to_string(n)); }
  // Fixed notation with trailing zeros trimmed: never an exponent.
  json_writer& number(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    std::string s = buf;
    if (decimals > 0)
      s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.')
      s.pop_back();
    return raw(s == "-0" ? "0" : s);
  }
  // A space-separated list of words, on one line as Google writes "types".
  json_writer& words(std::string_view list) {
    before_value();
    out_ += "[ ";
    for (std::size_t start = 0; start <= list.size();) {
      auto stop = std::min(list.find(' ', start), list.size());
      quoted(list.substr(start, stop - start));
      out_ += stop < list.size() ? ", " : " ]";
      start = stop + 1;
    }
    return *this;
  }
  std::string finish() && { return std::move(out_) + '\n'; }

 private:
  json_writer& raw(std::string_view text) {
    before_value();
    out_ += text;
    return *this;
  }
  void before_value() {
    if (std::exchange(after_key_, false) || empty_.empty())
      return;
    if (!std::exchange(empty_.back(), false))
      out_ += ',';
    newline();
  }
  void newline() {
    out_ += '\n';
    out_.append(3 * empty_.size(), ' ');
  }
  void quoted(std::string_view s) {
    out_ += '"';
    for (char c : s) {
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (c == '<' || c == '>' || static_cast<unsigned char>(c) < 0x20) {
        char buf[8]; // Google escapes HTML brackets too
        std::snprintf(buf, sizeof buf, "\\u%04x",
                      static_cast<unsigned char>(c));
        out_ += buf;
      } else {
        out_ += c;
      }
    }
    out_ += '"';
  }

  std::string out_;
  std::vector<char> empty_; // per open container: nothing written into it yet
  bool after_key_ = false;
};

// -- the places ---------------------------------------------------------------

struct category {
  const char* icon;       // under icons/v1/png_71/
  const char* background; // icon_background_color
  const char* mask;       // under icons/v2/
  const char* suffixes;   // '|'-separated name endings
  const char* types;      // space-separated
};

constexpr category categories[] = {
    {"restaurant-71.png", "#FF9E67", "restaurant_pinlet",
     "Kitchen|Bistro|Grill|Trattoria",
     "restaurant food point_of_interest establishment"},
    {"cafe-71.png", "#FF9E67", "cafe_pinlet", "Cafe|Coffee|Roasters|Tea House",
     "cafe food point_of_interest establishment"},
    {"bar-71.png", "#FF9E67", "bar_pinlet", "Bar|Tavern|Pub|Taproom",
     "bar restaurant food point_of_interest establishment"},
    {"lodging-71.png", "#909CE1", "hotel_pinlet", "Hotel|Inn|Suites|Lodge",
     "lodging point_of_interest establishment"},
    {"shopping-71.png", "#4B96F3", "shopping_pinlet",
     "Boutique|Outfitters|Apparel|Clothing Co.",
     "clothing_store store point_of_interest establishment"},
    {"shopping-71.png", "#4B96F3", "shopping_pinlet",
     "Market|Grocery|Foods|Supermarket",
     "supermarket grocery_or_supermarket food store point_of_interest "
     "establishment"},
    {"park-71.png", "#4DB546", "tree_pinlet", "Park|Gardens|Commons|Reserve",
     "park tourist_attraction point_of_interest establishment"},
    {"museum-71.png", "#13B5C7", "museum_pinlet",
     "Museum|Gallery|Art Center|History Museum",
     "museum tourist_attraction point_of_interest establishment"},
    {"bank_dollar-71.png", "#909CE1", "bank-dollar_pinlet",
     "Bank|Savings|Credit Union|Trust",
     "bank finance point_of_interest establishment"},
    {"gas_station-71.png", "#909CE1", "gas_pinlet",
     "Gas|Fuel|Service Station|Gas & Go",
     "gas_station convenience_store food store point_of_interest "
     "establishment"},
    {"generic_business-71.png", "#7B9EB0", "generic_pinlet",
     "Pharmacy|Drugs|Apothecary|Chemist",
     "pharmacy health store point_of_interest establishment"},
    {"generic_business-71.png", "#7B9EB0", "generic_pinlet",
     "Fitness|Gym|Athletic Club|Yoga Studio",
     "gym health point_of_interest establishment"},
};

constexpr std::string_view adjectives =
    "Golden|Blue|Red|Silver|Little|Old|Royal|Sunny|Lucky|Urban|Corner|Harbor|"
    "Maple|Cedar|Grand|Crystal";
constexpr std::string_view nouns = "Lantern|Spoon|Table|Oven|Leaf|Bean|Door|"
                                   "Bridge|Anchor|Fox|Owl|Bear|Pine|Stone|"
                                   "Crown|Feather";
constexpr std::string_view owners =
    "Rosa's|Joe's|Maria's|Kenji's|Amara's|Luca's|Priya's|Omar's|Nina's|Sam's";
constexpr std::string_view streets =
    "Main|Oak|Maple|Market|Church|Mill|Bridge|High|Station|Park|Elm|Lake|King|"
    "Victoria|Union|Spring";
constexpr std::string_view street_kinds = "St|Ave|Rd|Blvd|Ln|Way|Pl|Dr";
constexpr std::string_view localities =
    "Riverside|Old Town|Westbrook|Eastgate|Northfield|Southport|Harbourside|"
    "Millbrook|Fairview|Greenwood|Lakeside|Hillcrest|Brookdale|Kingsbury|"
    "Ashford|Newhaven";
constexpr std::string_view regions =
    "Central District|North County|South County|East Province|West Province";

struct point {
  double lat;
  double lng;
};

double wrap_lng(double lng) {
  return std::fmod(std::fmod(lng + 180, 360) + 360, 360) - 180;
}

// Moves `metres` from `from` on `bearing` (radians from north). A flat-earth
// step is good enough within 50 km.
point offset(point from, double metres, double bearing) {
  double cos_lat = std::max(std::cos(from.lat * pi / 180), 1e-6);
  return {std::clamp(from.lat + metres * std::cos(bearing) / metres_per_degree,
                     -90.0, 90.0),
          wrap_lng(from.lng +
                   metres * std::sin(bearing) / (metres_per_degree * cos_lat))};
}

// A real 10-digit Open Location Code, e.g. "4RRH46R6+G2".
std::string plus_code(point p) {
  constexpr std::string_view digits = "23456789CFGHJMPQRVWX";
  double y = std::clamp(p.lat + 90, 0.0, 180 - 1e-9);
  double x = wrap_lng(p.lng) + 180;
  std::string code;
  for (double step = 20; code.size() < 11; step /= 20) {
    auto dy = std::min(19, static_cast<int>(y / step));
    auto dx = std::min(19, static_cast<int>(x / step));
    y -= dy * step;
    x -= dx * step;
    code += digits[static_cast<std::size_t>(dy)];
    code += digits[static_cast<std::size_t>(dx)];
    if (code.size() == 8)
      code += '+';
  }
  return code;
}

void write_point(json_writer& j, std::string_view name, point p, int digits) {
  j.key(name).begin('{');
  j.key("lat").number(p.lat, digits);
  j.key("lng").number(p.lng, digits);
  j.end('}');
}

void write_place(json_writer& j, const search_key& k, std::size_t index,
                 std::string_view locality, std::string_view region) {
  rng r(mix(hash_of(k) ^ (index + 1) * 0x51ed27ULL));
  const category& cat = categories[r.below(std::size(categories))];
  point centre{k.lat_e6 / 1e6, k.lng_e6 / 1e6};
  // sqrt spreads points evenly over the disc; 0.95 keeps rounding inside it.
  point where = offset(centre, 0.95 * k.radius_m * std::sqrt(r.unit()),
                       2 * pi * r.unit());
  double corner = (0.0012 + 0.0004 * r.unit()) * metres_per_degree * 1.4142;
  std::string name;
  if (auto style = r.below(3); style == 0)
    name.append(r.pick(adjectives)).append(" ").append(r.pick(nouns));
  else if (style == 1)
    name.append("The ").append(r.pick(nouns));
  else
    name.append(r.pick(owners));
  name.append(" ").append(r.pick(cat.suffixes));
  std::string id = "ChIJ" + r.chars(23, b64url);
  std::string code = plus_code(where);
  std::size_t long_side = r.below(2) == 0 ? 4032 : 1920;
  bool portrait = r.below(3) == 0;

  j.begin('{');
  j.key("business_status")
      .value(r.below(20) == 0 ? "CLOSED_TEMPORARILY" : "OPERATIONAL");
  j.key("geometry").begin('{');
  write_point(j, "location", where, 7);
  j.key("viewport").begin('{');
  write_point(j, "northeast", offset(where, corner, pi / 4), 13);
  write_point(j, "southwest", offset(where, corner, 5 * pi / 4), 13);
  j.end('}').end('}');
  const std::string icons =
      "https://maps.gstatic.com/mapfiles/place_api/icons/";
  j.key("icon").value(icons + "v1/png_71/" + cat.icon);
  j.key("icon_background_color").value(cat.background);
  j.key("icon_mask_base_uri").value(icons + "v2/" + cat.mask);
  j.key("name").value(name);
  j.key("opening_hours").begin('{').key("open_now").value(r.below(4) != 0);
  j.end('}');
  j.key("photos").begin('[').begin('{');
  j.key("height").value(portrait ? long_side : long_side * 3 / 4);
  j.key("html_attributions").begin('[');
  j.value("<a href=\"https://maps.google.com/maps/contrib/1" +
          r.chars(20, "0123456789") + "\">" + name + "</a>");
  j.end(']');
  j.key("photo_reference").value("AUc7tX" + r.chars(84, b64url));
  j.key("width").value(portrait ? long_side * 3 / 4 : long_side);
  j.end('}').end(']');
  j.key("place_id").value(id);
  j.key("plus_code").begin('{');
  j.key("compound_code")
      .value(code.substr(4) + " " + std::string(locality) + ", " +
             std::string(region));
  j.key("global_code").value(code);
  j.end('}');
  j.key("price_level").value(1 + r.below(4));
  j.key("rating").number(3.0 + 0.1 * static_cast<double>(r.below(21)), 1);
  j.key("reference").value(id);
  j.key("scope").value("GOOGLE");
  j.key("types").words(cat.types);
  j.key("user_ratings_total")
      .value(static_cast<std::size_t>(std::exp(r.unit() * 8.5)));
  j.key("vicinity")
      .value(std::to_string(1 + r.below(2400)) + " " +
             std::string(r.pick(streets)) + " " +
             std::string(r.pick(street_kinds)) + ", " + std::string(locality));
  j.end('}');
}

// -- answering a request (pure: no sockets) -----------------------------------

// A reply body, shared: a cached page is written from the cache itself,
// not copied per request.
class shared_text {
 public:
  shared_text() = default;
  shared_text(std::string s) // NOLINT: implicit, like the string it holds
      : text_(std::make_shared<const std::string>(std::move(s))) {}
  shared_text(const char* s) : shared_text(std::string(s)) {} // NOLINT
  std::string_view view() const {
    return text_ ? std::string_view(*text_) : std::string_view();
  }
  std::size_t size() const { return view().size(); }

 private:
  std::shared_ptr<const std::string> text_;
};

struct reply {
  unsigned http_status;
  std::string_view content_type;
  shared_text body;
  std::string places_status = {}; // for the log; empty if not a Places body
  std::size_t results = 0;
};

reply legacy_status(std::string_view status, std::string_view message,
                    unsigned http_status = 200) {
  json_writer j;
  j.begin('{');
  if (!message.empty())
    j.key("error_message").value(message);
  j.key("html_attributions").begin('[').end(']');
  j.key("results").begin('[').end(']');
  j.key("status").value(status);
  j.end('}');
  return {http_status, json_type, std::move(j).finish(), std::string(status)};
}

reply invalid_request(std::string_view message) {
  return legacy_status("INVALID_REQUEST", message, 400);
}

std::string_view message_for(std::string_view status) {
  if (status == "OK" || status == "ZERO_RESULTS")
    return {};
  if (status == "OVER_QUERY_LIMIT")
    return "You have exceeded your daily request quota for this API. If you "
           "did not set a custom daily request quota, verify your project has "
           "an active billing account: http://g.co/dev/maps-no-account";
  if (status == "REQUEST_DENIED")
    return "The provided API key is invalid.";
  if (status == "INVALID_REQUEST")
    return "Invalid request. Missing the 'location' parameter.";
  return "An internal error occurred. Please try again.";
}

reply search_page(const search_key& k, int page, const stub_config& cfg) {
  int total = total_results(k, cfg);
  int first = page * page_size;
  if (total == 0 && page == 0)
    return legacy_status("ZERO_RESULTS", {});
  if (first >= total)
    return invalid_request("Invalid page token.");
  int last = std::min(first + page_size, total);
  // Neighbouring searches share a locality: one name per 0.1 degree cell.
  rng area(mix(static_cast<std::uint64_t>(k.lat_e6 / 100000) * 7919 ^
               static_cast<std::uint64_t>(k.lng_e6 / 100000)));
  auto locality = area.pick(localities);
  auto region = area.pick(regions);

  json_writer j;
  j.begin('{');
  j.key("html_attributions").begin('[').end(']');
  if (last < total)
    j.key("next_page_token").value(encode_page_token(k, page + 1));
  j.key("results").begin('[');
  for (int i = first; i < last; ++i)
    write_place(j, k, static_cast<std::size_t>(i), locality, region);
  j.end(']');
  j.key("status").value("OK");
  j.end('}');
  return {200, json_type, std::move(j).finish(), "OK",
          static_cast<std::size_t>(last - first)};
}

// Pages are a pure function of the search, so a page is rendered once and
// then served from memory: the stand-in must keep up with a node under load
// without making the node's benchmark a benchmark of JSON writing.
class page_cache {
 public:
  reply get(const search_key& k, int page, const stub_config& cfg) {
    auto key = std::make_tuple(k.lat_e6, k.lng_e6, k.radius_m, page);
    {
      std::lock_guard<std::mutex> guard(mtx_);
      auto it = pages_.find(key);
      if (it != pages_.end())
        return it->second;
    }
    auto r = search_page(k, page, cfg);
    std::lock_guard<std::mutex> guard(mtx_);
    if (pages_.size() >= max_pages)
      pages_.clear(); // bounded memory; a rebuild costs one render per page
    pages_.emplace(key, r);
    return r;
  }

 private:
  static constexpr std::size_t max_pages = 4096;
  std::mutex mtx_;
  std::map<std::tuple<std::int32_t, std::int32_t, std::uint32_t, int>, reply>
      pages_;
};

page_cache& pages() {
  static page_cache cache;
  return cache;
}

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    c = static_cast<char>(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 &&
        hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// The decoded value of the first `name` parameter in the query, if any.
std::optional<std::string> query_param(std::string_view query,
                                       std::string_view name) {
  for (std::size_t start = 0; start < query.size();) {
    auto stop = std::min(query.find('&', start), query.size());
    auto part = query.substr(start, stop - start);
    auto eq = std::min(part.find('='), part.size());
    if (percent_decode(part.substr(0, eq)) == name)
      return percent_decode(part.substr(std::min(eq + 1, part.size())));
    start = stop + 1;
  }
  return std::nullopt;
}

std::optional<double> parse_number(std::string_view s) {
  while (!s.empty() && s.front() == ' ')
    s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ')
    s.remove_suffix(1);
  if (!s.empty() && s.front() == '+')
    s.remove_prefix(1);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size() ||
      !std::isfinite(v))
    return std::nullopt;
  return v;
}

reply answer(http::verb method, std::string_view target,
             const stub_config& cfg) {
  // Failure switches override everything, so a test gets what it asked for.
  if (cfg.http_status == 204 || cfg.http_status == 304)
    return {cfg.http_status, "text/html; charset=UTF-8", {}};
  if (cfg.http_status != 0) {
    auto code = std::to_string(cfg.http_status);
    return {cfg.http_status, "text/html; charset=UTF-8",
            "<!DOCTYPE html>\n<html lang=en>\n<title>Error " + code +
                "</title>\n<p><b>" + code + ".</b> That's an error.\n"};
  }
  if (cfg.invalid_json)
    return {200, json_type,
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n"
            "         \"name\" : \"x\""};
  if (!cfg.fail_status.empty())
    return legacy_status(cfg.fail_status, message_for(cfg.fail_status));

  if (method != http::verb::get)
    return {405, "text/plain; charset=UTF-8", "Method Not Allowed\n"};
  auto qmark = std::min(target.find('?'), target.size());
  if (target.substr(0, qmark) != search_path)
    return {404, "text/plain; charset=UTF-8", "Not Found\n"};
  auto query = target.substr(std::min(qmark + 1, target.size()));

  auto key = query_param(query, "key");
  if (!key || key->empty())
    return legacy_status(
        "REQUEST_DENIED",
        "You must use an API key to authenticate each request to Google Maps "
        "Platform APIs. For additional information, please refer to "
        "http://g.co/dev/maps-no-account");
  if (cfg.valid_key && *key != *cfg.valid_key)
    return legacy_status("REQUEST_DENIED", "The provided API key is invalid.");

  // With a page token, every other parameter is ignored (as Google does).
  if (auto token = query_param(query, "pagetoken"); token && !token->empty()) {
    auto decoded = decode_page_token(*token);
    if (!decoded)
      return invalid_request("Invalid page token.");
    return pages().get(decoded->first, decoded->second, cfg);
  }

  auto location = query_param(query, "location");
  if (!location || location->empty())
    return invalid_request(
        "Invalid request. Missing the 'location' parameter.");
  auto comma = std::min(location->find(','), location->size());
  auto lat = parse_number(std::string_view(*location).substr(0, comma));
  auto lng = comma == location->size()
                 ? std::nullopt
                 : parse_number(std::string_view(*location).substr(comma + 1));
  if (!lat || !lng || std::abs(*lat) > 90 || std::abs(*lng) > 180)
    return invalid_request("Invalid request. Invalid 'location' parameter.");
  auto radius_text = query_param(query, "radius");
  auto radius = radius_text ? parse_number(*radius_text) : std::nullopt;
  if (!radius || *radius <= 0)
    return invalid_request("Invalid request. Invalid 'radius' parameter.");

  search_key k{static_cast<std::int32_t>(std::llround(*lat * 1e6)),
               static_cast<std::int32_t>(std::llround(*lng * 1e6)),
               static_cast<std::uint32_t>(
                   std::max(1.0, std::round(std::min(*radius, max_radius_m))))};
  return pages().get(k, 0, cfg);
}

// -- logging ------------------------------------------------------------------

void log_line(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> guard(mutex);
  std::cout << line << std::endl;
}

// The legacy API carries the key in the URL: it must never reach a log.
std::string redact(std::string_view target) {
  std::string out;
  for (std::size_t start = 0; start <= target.size();) {
    auto stop = std::min(target.find_first_of("?&", start), target.size());
    auto part = target.substr(start, stop - start);
    out += part.substr(0, 4) == "key=" ? "key=REDACTED" : part;
    if (stop < target.size())
      out += target[stop];
    start = stop + 1;
  }
  return out;
}

// -- one connection -----------------------------------------------------------

// Serves one request at a time: read, (wait), answer, write, read again.
// Stream is beast::tcp_stream or beast::ssl_stream<beast::tcp_stream>.
template<class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
 public:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;

  template<class... StreamArgs>
  session(const stub_config& cfg, tcp::socket&& socket, StreamArgs&... args)
      : cfg_(cfg), stream_(std::move(socket), args...),
        delay_(stream_.get_executor()) {}

  void run() {
    net::dispatch(
        stream_.get_executor(),
        beast::bind_front_handler(&session::on_run, this->shared_from_this()));
  }

 private:
  void on_run() {
    if constexpr (is_tls) {
      beast::get_lowest_layer(stream_).expires_after(io_timeout);
      stream_.async_handshake(
          ssl::stream_base::server,
          beast::bind_front_handler(&session::on_handshake,
                                    this->shared_from_this()));
    } else {
      do_read();
    }
  }

  void on_handshake(beast::error_code ec) {
    if (!ec)
      do_read();
  }

  void do_read() {
    parser_.emplace();
    parser_->header_limit(header_limit);
    parser_->body_limit(body_limit);
    beast::get_lowest_layer(stream_).expires_after(io_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream)
      return do_close();
    if (ec) {
      // A broken request gets a 400; a gone or timed-out peer gets nothing.
      if (ec.category() !=
          http::make_error_code(http::error::bad_target).category())
        return;
      if (cfg_.log)
        log_line("- - -> 400 malformed request (" + ec.message() + ")");
      return send({400, "text/plain; charset=UTF-8", "Bad Request\n"}, 11,
                  false);
    }
    request_ = parser_->release();
    if (cfg_.delay.count() == 0)
      return respond();
    delay_.expires_after(cfg_.delay);
    delay_.async_wait(beast::bind_front_handler(&session::on_delay,
                                                this->shared_from_this()));
  }

  void on_delay(beast::error_code ec) {
    if (!ec)
      respond();
  }

  void respond() {
    std::string line = cfg_.log ? std::string(request_.method_string()) + " " +
                                      redact(request_.target()) + " -> "
                                : std::string();
    if (cfg_.drop) {
      if (cfg_.log)
        log_line(line + "dropped");
      beast::error_code ignored;
      auto& socket = beast::get_lowest_layer(stream_).socket();
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
      return;
    }
    reply r = answer(request_.method(), request_.target(), cfg_);
    if (cfg_.log)
      log_line(line + std::to_string(r.http_status) + " " +
               (r.places_status.empty() ? "-" : r.places_status) +
               " results=" + std::to_string(r.results) +
               " bytes=" + std::to_string(r.body.size()));
    send(std::move(r), request_.version(), request_.keep_alive());
  }

  void send(reply r, unsigned version, bool keep_alive) {
    response_ = {};
    response_.version(version);
    response_.result(r.http_status);
    response_.set(http::field::server, "scaffolding on HTTPServer2");
    response_.set(http::field::content_type, r.content_type);
    if (r.http_status == 405)
      response_.set(http::field::allow, "GET");
    current_ = std::move(r.body); // kept until the write is done
    response_.body() = {current_.view().data(), current_.size()};
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    if (r.http_status == 204) // a 204 carries no Content-Length at all
      response_.erase(http::field::content_length);
    beast::get_lowest_layer(stream_).expires_after(io_timeout);
    http::async_write(stream_, response_,
                      beast::bind_front_handler(&session::on_write,
                                                this->shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (ec)
      return;
    if (response_.need_eof())
      return do_close();
    do_read();
  }

  void do_close() {
    if constexpr (is_tls) {
      beast::get_lowest_layer(stream_).expires_after(io_timeout);
      stream_.async_shutdown(beast::bind_front_handler(
          &session::on_shutdown, this->shared_from_this()));
    } else {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  void on_shutdown(beast::error_code) {}

  const stub_config& cfg_;
  Stream stream_;
  net::steady_timer delay_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  shared_text current_;
  http::response<http::span_body<const char>> response_;
};

// -- accepting connections ----------------------------------------------------

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(net::io_context& ioc, const stub_config& cfg, ssl::context* tls,
           const tcp::endpoint& endpoint)
      : ioc_(ioc), cfg_(cfg), tls_(tls), acceptor_(net::make_strand(ioc)),
        backoff_(acceptor_.get_executor()) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(net::socket_base::max_listen_connections);
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void run() {
    net::dispatch(
        acceptor_.get_executor(),
        beast::bind_front_handler(&listener::do_accept, shared_from_this()));
  }

 private:
  void do_accept() {
    acceptor_.async_accept(
        net::make_strand(ioc_),
        beast::bind_front_handler(&listener::on_accept, shared_from_this()));
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec) {
      // Out of descriptors and the like: pause instead of spinning.
      std::cerr << "places-stub: accept: " << ec.message() << std::endl;
      backoff_.expires_after(100ms);
      return backoff_.async_wait([self = shared_from_this()](
                                     beast::error_code) { self->do_accept(); });
    }
    if (tls_ != nullptr)
      std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(
          cfg_, std::move(socket), *tls_)
          ->run();
    else
      std::make_shared<session<beast::tcp_stream>>(cfg_, std::move(socket))
          ->run();
    do_accept();
  }

  net::io_context& ioc_;
  const stub_config& cfg_;
  ssl::context* tls_;
  tcp::acceptor acceptor_;
  net::steady_timer backoff_;
};

// -- command line -------------------------------------------------------------

constexpr const char* usage = R"(usage: places-stub [options]

A local stand-in for Google's legacy Places Nearby Search:
  GET /maps/api/place/nearbysearch/json?location=LAT,LNG&radius=M&key=K
  GET /maps/api/place/nearbysearch/json?pagetoken=T&key=K
Results are deterministic per (location, radius): 0..60 in all, 20 a page.

options:
  --host ADDR         IP address to listen on (default 127.0.0.1)
  --port N            port to listen on; 0 picks a free one (default 0)
  --threads N         I/O threads (default 1)
  --port-file FILE    once listening, write the port number and a newline to
                      FILE (via a temporary file and a rename)
  --tls-cert FILE     PEM certificate chain; with --tls-key, speak HTTPS only
  --tls-key FILE      PEM private key
  --valid-key K       accept only key K (default: any non-empty key)
  --results N         every location has N results in all (0..60)
  --log               print one line per request on stdout, keys redacted
failure switches (for every request; the first in this list wins):
  --drop              read each request, then close without answering
  --http-status N     answer with HTTP status N (200..599) and an HTML body
  --invalid-json      answer 200 with truncated JSON
  --fail-status S     answer 200 with a legacy body of status S (such as
                      OVER_QUERY_LIMIT or UNKNOWN_ERROR) and no results
  --delay-ms N        wait N ms before each answer (or drop)
  --help              show this text

Once listening it prints "places-stub listening on http(s)://HOST:PORT".
Exit status: 0 after SIGINT/SIGTERM, 1 if it cannot start, 2 on bad options.
)";

[[noreturn]] void bad_option(const std::string& message) {
  std::cerr << "places-stub: " << message << " (see --help)" << std::endl;
  std::exit(2);
}

long long parse_int(const std::string& option, const std::string& text,
                    long long min, long long max) {
  long long v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() ||
      v < min || v > max)
    bad_option(option + " needs an integer from " + std::to_string(min) +
               " to " + std::to_string(max) + ", not '" + text + "'");
  return v;
}

stub_config parse_command_line(int argc, char** argv) {
  stub_config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::optional<std::string> attached; // from --option=value
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != arg.npos) {
      attached = arg.substr(eq + 1);
      arg.resize(eq);
    }
    auto value = [&] {
      if (!attached && i + 1 >= argc)
        bad_option(arg + " needs a value");
      return attached ? *attached : std::string(argv[++i]);
    };
    auto number = [&](long long min, long long max) {
      return parse_int(arg, value(), min, max);
    };
    auto flag = [&] {
      if (attached)
        bad_option(arg + " takes no value");
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      std::exit(0);
    } else if (arg == "--host") {
      cfg.host = value();
    } else if (arg == "--port") {
      cfg.port = static_cast<std::uint16_t>(number(0, 65535));
    } else if (arg == "--threads") {
      cfg.threads = static_cast<int>(number(1, 256));
    } else if (arg == "--port-file") {
      cfg.port_file = value();
    } else if (arg == "--tls-cert") {
      cfg.tls_cert = value();
    } else if (arg == "--tls-key") {
      cfg.tls_key = value();
    } else if (arg == "--valid-key") {
      if ((cfg.valid_key = value())->empty())
        bad_option("--valid-key needs a non-empty key");
    } else if (arg == "--results") {
      cfg.forced_results = static_cast<int>(number(0, max_results));
    } else if (arg == "--fail-status") {
      cfg.fail_status = value();
      if (cfg.fail_status.empty() ||
          cfg.fail_status.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") !=
              std::string::npos)
        bad_option("--fail-status needs a status such as OVER_QUERY_LIMIT");
    } else if (arg == "--http-status") {
      cfg.http_status = static_cast<unsigned>(number(200, 599));
    } else if (arg == "--delay-ms") {
      cfg.delay = std::chrono::milliseconds(number(0, 86'400'000));
    } else if (arg == "--drop") {
      cfg.drop = flag();
    } else if (arg == "--invalid-json") {
      cfg.invalid_json = flag();
    } else if (arg == "--log") {
      cfg.log = flag();
    } else {
      bad_option("unknown option '" + arg + "'");
    }
  }
  if (cfg.tls_cert.empty() != cfg.tls_key.empty())
    bad_option("--tls-cert and --tls-key go together");
  return cfg;
}

// Written whole or not at all, so a test polling for the file never reads
// half a number.
void write_port_file(const std::string& path, std::uint16_t port) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::ofstream out(tmp, std::ios::trunc);
  out << port << '\n';
  out.close();
  if (out.fail() || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write port file " + path);
  }
}

} // namespace

int main(int argc, char** argv) {
  stub_config cfg = parse_command_line(argc, argv);
  std::signal(SIGPIPE, SIG_IGN); // a closed stdout must not kill us mid-log
  beast::error_code ec;
  auto address = net::ip::make_address(
      cfg.host == "localhost" ? "127.0.0.1" : cfg.host, ec);
  if (ec)
    bad_option("--host needs an IP address, not '" + cfg.host + "'");

  try {
    // Declared before the io_context, so sessions go before the context does.
    std::optional<ssl::context> tls;
    if (!cfg.tls_cert.empty()) {
      tls.emplace(ssl::context::tls_server);
      tls->set_options(ssl::context::default_workarounds |
                       ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(cfg.tls_cert);
      tls->use_private_key_file(cfg.tls_key, ssl::context::pem);
    }

    net::io_context ioc(cfg.threads);
    auto server = std::make_shared<listener>(ioc, cfg, tls ? &*tls : nullptr,
                                             tcp::endpoint{address, cfg.port});
    server->run();
    net::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&ioc](beast::error_code, int) { ioc.stop(); });

    if (!cfg.port_file.empty())
      write_port_file(cfg.port_file, server->port());
    std::cout << "places-stub listening on " << (tls ? "https" : "http")
              << "://"
              << (address.is_v6() ? "[" + address.to_string() + "]"
                                  : address.to_string())
              << ":" << server->port() << std::endl;

    std::vector<std::thread> workers;
    for (int i = 1; i < cfg.threads; ++i)
      workers.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& worker : workers)
      worker.join();
  } catch (const std::exception& e) {
    std::cerr << "places-stub: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
