// places-stub: a local stand-in for Google's legacy Places Nearby Search.
//
// Serves GET /maps/api/place/nearbysearch/json over HTTP/1.1 (keep-alive) or,
// with --tls-cert/--tls-key, over HTTPS only. Results are deterministic: they
// depend on (location, radius) alone, so tests can compare runs. Failure
// switches (--fail-status, --http-status, --delay-ms, --drop, --invalid-json)
// let tests drive every failure path of a client. Run with --help for options.

#include <boost/asio/dispatch.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
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
  std::optional<int> forced_results; // overrides the per-location count
  std::string fail_status;           // empty: answer normally
  unsigned http_status = 0;          // 0: answer normally
  std::chrono::milliseconds delay{0};
  bool drop = false;
  bool invalid_json = false;
  bool log = false;
};

constexpr std::string_view search_path = "/maps/api/place/nearbysearch/json";
constexpr int max_total_results = 60;
constexpr int page_size = 20;
constexpr double max_radius_m = 50000;
constexpr auto io_timeout = 30s;
constexpr double pi = 3.14159265358979323846;
constexpr std::uint32_t header_limit = 16 * 1024;
constexpr std::uint64_t body_limit = 16 * 1024;

// -- deterministic randomness -------------------------------------------------

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// splitmix64: small, fast, and identical on every platform.
class rng {
 public:
  explicit rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() { return mix(state_ += 0x9e3779b97f4a7c15ULL); }
  std::size_t below(std::size_t n) {
    return static_cast<std::size_t>(next() % n);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  template<class T, std::size_t N>
  const T& pick(const std::array<T, N>& items) {
    return items[below(N)];
  }

 private:
  std::uint64_t state_;
};

// A search normalised to integers, so the same point written two ways
// ("34" and "34.000000") gives the same results, and page tokens can carry it.
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

// Most locations have 20..60 results, a few fewer, about 4% none at all.
int total_results(const search_key& k, const stub_config& cfg) {
  if (cfg.forced_results)
    return *cfg.forced_results;
  rng r(hash_of(k));
  auto bucket = r.below(100);
  if (bucket < 4)
    return 0;
  if (bucket < 10)
    return 1 + static_cast<int>(r.below(19));
  return 20 + static_cast<int>(r.below(41));
}

// -- page tokens: base64url(lat, lng, radius, page, filler, mac)
// ----------------

constexpr std::string_view b64url =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::uint64_t token_secret = 0x5eed'ca11'ab1e'f00dULL;
constexpr std::size_t token_filler = 120; // real tokens are long, too

std::uint64_t token_mac(const std::string& payload) {
  auto h = token_secret;
  for (unsigned char c : payload)
    h = mix(h ^ c);
  return h;
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out += static_cast<char>((v >> shift) & 0xff);
}

std::uint32_t get_u32(const std::string& in, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i)
    v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}

std::string encode_page_token(const search_key& k, int page) {
  std::string bytes;
  put_u32(bytes, static_cast<std::uint32_t>(k.lat_e6));
  put_u32(bytes, static_cast<std::uint32_t>(k.lng_e6));
  put_u32(bytes, k.radius_m);
  bytes += static_cast<char>(page);
  rng filler(hash_of(k) + static_cast<std::uint64_t>(page));
  for (std::size_t i = 0; i < token_filler; ++i)
    bytes += static_cast<char>(filler.next() & 0xff);
  auto mac = token_mac(bytes);
  put_u32(bytes, static_cast<std::uint32_t>(mac >> 32));
  put_u32(bytes, static_cast<std::uint32_t>(mac));
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    acc = (acc << 8) | c;
    for (bits += 8; bits >= 6; bits -= 6)
      out += b64url[(acc >> (bits - 6)) & 0x3f];
  }
  if (bits > 0)
    out += b64url[(acc << (6 - bits)) & 0x3f];
  return out;
}

// Returns the search and page a token stands for, or nothing if forged.
std::optional<std::pair<search_key, int>>
decode_page_token(std::string_view token) {
  std::string bytes;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : token) {
    auto pos = b64url.find(c);
    if (pos == std::string_view::npos)
      return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(pos);
    if ((bits += 6) >= 8) {
      bits -= 8;
      bytes += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  constexpr std::size_t mac_at = 13 + token_filler;
  if (bytes.size() != mac_at + 8)
    return std::nullopt;
  auto mac = token_mac(bytes.substr(0, mac_at));
  if (get_u32(bytes, mac_at) != static_cast<std::uint32_t>(mac >> 32) ||
      get_u32(bytes, mac_at + 4) != static_cast<std::uint32_t>(mac))
    return std::nullopt;
  search_key k{static_cast<std::int32_t>(get_u32(bytes, 0)),
               static_cast<std::int32_t>(get_u32(bytes, 4)), get_u32(bytes, 8)};
  return std::make_pair(k, static_cast<int>(bytes[12]));
}

// -- a writer for Google's pretty-printed JSON style
// ----------------------------

// Writes `{\n   "key" : value,\n ...}` with 3-space indentation, the way the
// legacy web services format their answers. Commas are handled here, so every
// document it produces is well-formed as long as begin/end calls pair up.
class json_writer {
 public:
  json_writer() { out_.reserve(40 * 1024); }

  json_writer& key(std::string_view k) {
    before_value();
    append_string(k);
    out_ += " : ";
    after_key_ = true;
    return *this;
  }
  json_writer& begin_object() { return open('{'); }
  json_writer& end_object() { return close('}'); }
  json_writer& begin_array() { return open('['); }
  json_writer& end_array() { return close(']'); }
  json_writer& value(std::string_view s) {
    before_value();
    append_string(s);
    return *this;
  }
  json_writer& value(const char* s) { return value(std::string_view{s}); }
  json_writer& value(bool b) { return raw(b ? "true" : "false"); }
  json_writer& value(long long n) { return raw(std::to_string(n)); }
  // Fixed notation with trailing zeros trimmed: never an exponent.
  json_writer& number(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    std::string s = buf;
    if (s.find('.') != std::string::npos) {
      s.erase(s.find_last_not_of('0') + 1);
      if (s.back() == '.')
        s.pop_back();
    }
    return raw(s == "-0" ? "0" : s);
  }
  // Google writes short string lists on one line: [ "a", "b" ].
  template<class Range> json_writer& inline_strings(const Range& items) {
    before_value();
    out_ += '[';
    const char* sep = " ";
    for (const auto& item : items) {
      out_ += sep;
      append_string(item);
      sep = ", ";
    }
    out_ += " ]";
    return *this;
  }
  std::string finish() && { return std::move(out_) + '\n'; }

 private:
  json_writer& raw(std::string_view text) {
    before_value();
    out_ += text;
    return *this;
  }
  json_writer& open(char bracket) {
    before_value();
    out_ += bracket;
    empty_.push_back(true);
    return *this;
  }
  json_writer& close(char bracket) {
    bool was_empty = empty_.back();
    empty_.pop_back();
    if (!was_empty)
      newline();
    out_ += bracket;
    return *this;
  }
  void before_value() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (empty_.empty())
      return;
    if (!empty_.back())
      out_ += ',';
    empty_.back() = false;
    newline();
  }
  void newline() {
    out_ += '\n';
    out_.append(3 * empty_.size(), ' ');
  }
  void append_string(std::string_view s) {
    out_ += '"';
    for (char c : s) {
      switch (c) {
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      case '<':
        out_ += "\\u003c";
        break; // as Google escapes HTML
      case '>':
        out_ += "\\u003e";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x",
                        static_cast<unsigned>(static_cast<unsigned char>(c)));
          out_ += buf;
        } else {
          out_ += c;
        }
      }
    }
    out_ += '"';
  }

  std::string out_;
  std::vector<bool> empty_; // one per open container: nothing written yet
  bool after_key_ = false;
};

// -- the places themselves
// ------------------------------------------------------

struct category {
  const char* icon;
  const char* background;
  const char* mask;
  std::array<const char*, 4> suffixes;
  std::vector<const char*> types;
};

const std::array<category, 12>& categories() {
  static const std::array<category, 12> all{{
      {"restaurant-71.png",
       "#FF9E67",
       "restaurant_pinlet",
       {"Kitchen", "Bistro", "Grill", "Trattoria"},
       {"restaurant", "food", "point_of_interest", "establishment"}},
      {"cafe-71.png",
       "#FF9E67",
       "cafe_pinlet",
       {"Cafe", "Coffee", "Roasters", "Tea House"},
       {"cafe", "food", "point_of_interest", "establishment"}},
      {"bar-71.png",
       "#FF9E67",
       "bar_pinlet",
       {"Bar", "Tavern", "Pub", "Taproom"},
       {"bar", "restaurant", "food", "point_of_interest", "establishment"}},
      {"lodging-71.png",
       "#909CE1",
       "hotel_pinlet",
       {"Hotel", "Inn", "Suites", "Lodge"},
       {"lodging", "point_of_interest", "establishment"}},
      {"shopping-71.png",
       "#4B96F3",
       "shopping_pinlet",
       {"Boutique", "Outfitters", "Apparel", "Clothing Co."},
       {"clothing_store", "store", "point_of_interest", "establishment"}},
      {"shopping-71.png",
       "#4B96F3",
       "shopping_pinlet",
       {"Market", "Grocery", "Foods", "Supermarket"},
       {"supermarket", "grocery_or_supermarket", "food", "store",
        "point_of_interest", "establishment"}},
      {"park-71.png",
       "#4DB546",
       "tree_pinlet",
       {"Park", "Gardens", "Commons", "Reserve"},
       {"park", "tourist_attraction", "point_of_interest", "establishment"}},
      {"museum-71.png",
       "#13B5C7",
       "museum_pinlet",
       {"Museum", "Gallery", "Art Center", "History Museum"},
       {"museum", "tourist_attraction", "point_of_interest", "establishment"}},
      {"bank_dollar-71.png",
       "#909CE1",
       "bank-dollar_pinlet",
       {"Bank", "Savings", "Credit Union", "Trust"},
       {"bank", "finance", "point_of_interest", "establishment"}},
      {"gas_station-71.png",
       "#909CE1",
       "gas_pinlet",
       {"Gas", "Fuel", "Service Station", "Gas & Go"},
       {"gas_station", "convenience_store", "food", "store",
        "point_of_interest", "establishment"}},
      {"generic_business-71.png",
       "#7B9EB0",
       "generic_pinlet",
       {"Pharmacy", "Drugs", "Apothecary", "Chemist"},
       {"pharmacy", "health", "store", "point_of_interest", "establishment"}},
      {"generic_business-71.png",
       "#7B9EB0",
       "generic_pinlet",
       {"Fitness", "Gym", "Athletic Club", "Yoga Studio"},
       {"gym", "health", "point_of_interest", "establishment"}},
  }};
  return all;
}

constexpr std::array<const char*, 16> adjectives{
    "Golden", "Blue",  "Red",   "Silver", "Little", "Old",
    "Royal",  "Sunny", "Lucky", "Urban",  "Corner", "Harbor",
    "Maple",  "Cedar", "Grand", "Crystal"};
constexpr std::array<const char*, 16> nouns{
    "Lantern", "Spoon", "Table", "Oven", "Leaf", "Bean",  "Door",  "Bridge",
    "Anchor",  "Fox",   "Owl",   "Bear", "Pine", "Stone", "Crown", "Feather"};
constexpr std::array<const char*, 10> owners{
    "Rosa's", "Joe's",   "Maria's", "Kenji's", "Amara's",
    "Luca's", "Priya's", "Omar's",  "Nina's",  "Sam's"};
constexpr std::array<const char*, 16> streets{
    "Main",   "Oak",      "Maple",   "Market", "Church", "Mill",
    "Bridge", "High",     "Station", "Park",   "Elm",    "Lake",
    "King",   "Victoria", "Union",   "Spring"};
constexpr std::array<const char*, 8> street_kinds{"St", "Ave", "Rd", "Blvd",
                                                  "Ln", "Way", "Pl", "Dr"};
constexpr std::array<const char*, 16> localities{
    "Riverside",  "Old Town",  "Westbrook",   "Eastgate",
    "Northfield", "Southport", "Harbourside", "Millbrook",
    "Fairview",   "Greenwood", "Lakeside",    "Hillcrest",
    "Brookdale",  "Kingsbury", "Ashford",     "Newhaven"};
constexpr std::array<const char*, 6> regions{
    "Central District", "North County",  "South County",
    "East Province",    "West Province", "Coastal Region"};
constexpr std::array<std::pair<int, int>, 6> photo_sizes{{{4032, 3024},
                                                          {3024, 4032},
                                                          {1080, 1920},
                                                          {1920, 1080},
                                                          {608, 1080},
                                                          {4000, 3000}}};

std::string random_chars(rng& r, std::size_t n, std::string_view alphabet) {
  std::string s;
  s.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    s += alphabet[r.below(alphabet.size())];
  return s;
}

// A real Open Location Code (10 digits) for the point.
std::string plus_code(double lat, double lng) {
  constexpr std::string_view digits = "23456789CFGHJMPQRVWX";
  double y = std::clamp(lat + 90, 0.0, 180 - 1e-9);
  double x = std::fmod(std::fmod(lng + 180, 360) + 360, 360);
  std::string code;
  double resolution = 20;
  for (int pair = 0; pair < 5; ++pair) {
    auto dy = std::min(19, static_cast<int>(y / resolution));
    auto dx = std::min(19, static_cast<int>(x / resolution));
    y -= dy * resolution;
    x -= dx * resolution;
    code += digits[static_cast<std::size_t>(dy)];
    code += digits[static_cast<std::size_t>(dx)];
    if (pair == 3)
      code += '+';
    resolution /= 20;
  }
  return code;
}

struct point {
  double lat;
  double lng;
};

// Moves `metres` from `from` on `bearing`, in a flat-earth approximation that
// is good enough within 50 km.
point offset(point from, double metres, double bearing) {
  constexpr double metres_per_degree = 111320;
  double lat = from.lat + metres * std::cos(bearing) / metres_per_degree;
  double cos_lat = std::max(std::cos(from.lat * pi / 180), 1e-6);
  double lng =
      from.lng + metres * std::sin(bearing) / (metres_per_degree * cos_lat);
  lat = std::clamp(lat, -90.0, 90.0);
  lng = std::fmod(std::fmod(lng + 180, 360) + 360, 360) - 180;
  return {lat, lng};
}

void write_lat_lng(json_writer& j, std::string_view name, point p, int digits) {
  j.key(name).begin_object();
  j.key("lat").number(p.lat, digits);
  j.key("lng").number(p.lng, digits);
  j.end_object();
}

void write_place(json_writer& j, const search_key& k, int index,
                 const std::string& area) {
  rng r(
      mix(hash_of(k) ^ (static_cast<std::uint64_t>(index) + 1) * 0x51ed27ULL));
  const category& cat = categories()[r.below(categories().size())];
  point centre{k.lat_e6 / 1e6, k.lng_e6 / 1e6};
  // sqrt spreads points evenly over the disc; 0.95 keeps rounding inside it.
  point where = offset(centre, 0.95 * k.radius_m * std::sqrt(r.unit()),
                       2 * pi * r.unit());
  double half = 0.0012 + 0.0004 * r.unit();
  std::string name;
  switch (r.below(3)) {
  case 0:
    name = std::string(r.pick(adjectives)) + " " + r.pick(nouns);
    break;
  case 1:
    name = std::string("The ") + r.pick(nouns);
    break;
  default:
    name = r.pick(owners);
    break;
  }
  name += std::string(" ") + cat.suffixes[r.below(cat.suffixes.size())];
  std::string place_id = "ChIJ" + random_chars(r, 23, b64url);
  std::string code = plus_code(where.lat, where.lng);

  j.begin_object();
  j.key("business_status")
      .value(r.below(20) == 0 ? "CLOSED_TEMPORARILY" : "OPERATIONAL");
  j.key("geometry").begin_object();
  write_lat_lng(j, "location", where, 7);
  j.key("viewport").begin_object();
  write_lat_lng(j, "northeast", offset(where, half * 111320 * 1.41, pi / 4),
                13);
  write_lat_lng(j, "southwest", offset(where, half * 111320 * 1.41, 5 * pi / 4),
                13);
  j.end_object().end_object();
  j.key("icon").value(
      std::string(
          "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/") +
      cat.icon);
  j.key("icon_background_color").value(cat.background);
  j.key("icon_mask_base_uri")
      .value(
          std::string("https://maps.gstatic.com/mapfiles/place_api/icons/v2/") +
          cat.mask);
  j.key("name").value(name);
  j.key("opening_hours").begin_object();
  j.key("open_now").value(r.below(4) != 0);
  j.end_object();
  auto [width, height] = r.pick(photo_sizes);
  j.key("photos").begin_array().begin_object();
  j.key("height").value(static_cast<long long>(height));
  j.key("html_attributions").begin_array();
  j.value("<a href=\"https://maps.google.com/maps/contrib/1" +
          random_chars(r, 20, "0123456789") + "\">" + name + "</a>");
  j.end_array();
  j.key("photo_reference").value("AUc7tX" + random_chars(r, 400, b64url));
  j.key("width").value(static_cast<long long>(width));
  j.end_object().end_array();
  j.key("place_id").value(place_id);
  j.key("plus_code").begin_object();
  j.key("compound_code").value(code.substr(4) + " " + area);
  j.key("global_code").value(code);
  j.end_object();
  j.key("price_level").value(static_cast<long long>(1 + r.below(4)));
  j.key("rating").number(3.0 + 0.1 * static_cast<double>(r.below(21)), 1);
  j.key("reference").value(place_id);
  j.key("scope").value("GOOGLE");
  j.key("types").inline_strings(cat.types);
  j.key("user_ratings_total")
      .value(static_cast<long long>(std::exp(r.unit() * 8.5)));
  j.key("vicinity")
      .value(std::to_string(1 + r.below(2400)) + " " + r.pick(streets) + " " +
             r.pick(street_kinds) + ", " + area.substr(0, area.find(',')));
  j.end_object();
}

// -- answering a request (pure: no sockets)
// -------------------------------------

struct reply {
  unsigned http_status = 200;
  std::string content_type = "application/json; charset=UTF-8";
  std::string body;
  std::string places_status; // for the log; empty when not a Places answer
  int results = 0;
};

reply legacy_status(std::string_view status, std::string_view message,
                    unsigned http_status = 200) {
  json_writer j;
  j.begin_object();
  if (!message.empty())
    j.key("error_message").value(message);
  j.key("html_attributions").begin_array().end_array();
  j.key("results").begin_array().end_array();
  j.key("status").value(status);
  j.end_object();
  return {http_status, "application/json; charset=UTF-8", std::move(j).finish(),
          std::string(status), 0};
}

std::string_view message_for(std::string_view status) {
  if (status == "OVER_QUERY_LIMIT")
    return "You have exceeded your daily request quota for this API. If you "
           "did not set a custom daily request quota, verify your project has "
           "an active billing account: http://g.co/dev/maps-no-account";
  if (status == "REQUEST_DENIED")
    return "The provided API key is invalid.";
  if (status == "INVALID_REQUEST")
    return "Invalid request. Missing the 'location' parameter.";
  if (status == "OK" || status == "ZERO_RESULTS")
    return {};
  return "An internal error occurred. Please try again.";
}

reply plain_reply(unsigned http_status, std::string_view text) {
  return {http_status,
          "text/plain; charset=UTF-8",
          std::string(text) + "\n",
          {},
          0};
}

reply search_page(const search_key& k, int page, const stub_config& cfg) {
  int total = total_results(k, cfg);
  int first = page * page_size;
  if (total == 0 && page == 0)
    return legacy_status("ZERO_RESULTS", {});
  if (first >= total)
    return legacy_status("INVALID_REQUEST", "Invalid page token.", 400);
  int count = std::min(page_size, total - first);
  rng area_rng(mix(static_cast<std::uint64_t>(k.lat_e6 / 100000) * 7919 ^
                   static_cast<std::uint64_t>(k.lng_e6 / 100000)));
  std::string area =
      std::string(area_rng.pick(localities)) + ", " + area_rng.pick(regions);

  json_writer j;
  j.begin_object();
  j.key("html_attributions").begin_array().end_array();
  if (first + count < total)
    j.key("next_page_token").value(encode_page_token(k, page + 1));
  j.key("results").begin_array();
  for (int i = first; i < first + count; ++i)
    write_place(j, k, i, area);
  j.end_array();
  j.key("status").value("OK");
  j.end_object();
  return {200, "application/json; charset=UTF-8", std::move(j).finish(), "OK",
          count};
}

std::string percent_decode(std::string_view s) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
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

using query_params = std::vector<std::pair<std::string, std::string>>;

query_params parse_query(std::string_view query) {
  query_params params;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    if (part.empty())
      continue;
    auto eq = part.find('=');
    params.emplace_back(percent_decode(part.substr(0, eq)),
                        eq == std::string_view::npos
                            ? std::string{}
                            : percent_decode(part.substr(eq + 1)));
  }
  return params;
}

const std::string* find_param(const query_params& params,
                              std::string_view name) {
  for (const auto& [k, v] : params)
    if (k == name)
      return &v;
  return nullptr;
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
  if (cfg.http_status != 0) {
    auto code = cfg.http_status;
    if (code == 204 || code == 304)
      return {code, "text/html; charset=UTF-8", {}, {}, 0};
    return {code,
            "text/html; charset=UTF-8",
            "<!DOCTYPE html>\n<html lang=en>\n<title>Error " +
                std::to_string(code) + "</title>\n<p><b>" +
                std::to_string(code) + ".</b> That's an error.\n",
            {},
            0};
  }
  if (cfg.invalid_json)
    return {200,
            "application/json; charset=UTF-8",
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n"
            "         \"name\" : \"x\"",
            {},
            0};
  if (!cfg.fail_status.empty())
    return legacy_status(cfg.fail_status, message_for(cfg.fail_status));

  if (method != http::verb::get)
    return plain_reply(405, "Method Not Allowed");
  auto qmark = target.find('?');
  if (target.substr(0, qmark) != search_path)
    return plain_reply(404, "Not Found");
  auto params =
      parse_query(qmark == std::string_view::npos ? std::string_view{}
                                                  : target.substr(qmark + 1));

  auto key = find_param(params, "key");
  if (key == nullptr || key->empty())
    return legacy_status(
        "REQUEST_DENIED",
        "You must use an API key to authenticate each request to Google Maps "
        "Platform APIs. For additional information, please refer to "
        "http://g.co/dev/maps-no-account");
  if (cfg.valid_key && *key != *cfg.valid_key)
    return legacy_status("REQUEST_DENIED", "The provided API key is invalid.");

  // With a page token, every other parameter is ignored (as Google does).
  if (auto token = find_param(params, "pagetoken"); token && !token->empty()) {
    auto decoded = decode_page_token(*token);
    if (!decoded || decoded->second < 1)
      return legacy_status("INVALID_REQUEST", "Invalid page token.", 400);
    return search_page(decoded->first, decoded->second, cfg);
  }

  auto location = find_param(params, "location");
  if (location == nullptr || location->empty())
    return legacy_status("INVALID_REQUEST",
                         "Invalid request. Missing the 'location' parameter.",
                         400);
  auto comma = location->find(',');
  auto lat = parse_number(std::string_view(*location).substr(0, comma));
  auto lng = comma == std::string::npos
                 ? std::nullopt
                 : parse_number(std::string_view(*location).substr(comma + 1));
  if (!lat || !lng || *lat < -90 || *lat > 90 || *lng < -180 || *lng > 180)
    return legacy_status("INVALID_REQUEST",
                         "Invalid request. Invalid 'location' parameter.", 400);
  auto radius_param = find_param(params, "radius");
  auto radius = radius_param ? parse_number(*radius_param) : std::nullopt;
  if (!radius || *radius <= 0)
    return legacy_status("INVALID_REQUEST",
                         "Invalid request. Invalid 'radius' parameter.", 400);

  search_key k{static_cast<std::int32_t>(std::llround(*lat * 1e6)),
               static_cast<std::int32_t>(std::llround(*lng * 1e6)),
               static_cast<std::uint32_t>(
                   std::max(1.0, std::round(std::min(*radius, max_radius_m))))};
  return search_page(k, 0, cfg);
}

// -- logging ------------------------------------------------------------------

std::mutex log_mutex;

void log_line(const std::string& line) {
  std::lock_guard<std::mutex> guard(log_mutex);
  std::cout << line << std::endl;
}

// The legacy API carries the key in the URL: it must never reach a log.
std::string redact(std::string_view target) {
  auto qmark = target.find('?');
  if (qmark == std::string_view::npos)
    return std::string(target);
  std::string out(target.substr(0, qmark + 1));
  auto query = target.substr(qmark + 1);
  const char* sep = "";
  while (true) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    out += sep;
    out += part.substr(0, 4) == "key=" ? std::string("key=REDACTED")
                                       : std::string(part);
    sep = "&";
    if (amp == std::string_view::npos)
      break;
    query = query.substr(amp + 1);
  }
  return out;
}

// -- one connection
// -------------------------------------------------------------

// One request at a time per connection: read, (wait), answer, write, repeat.
// Stream is beast::tcp_stream or beast::ssl_stream<beast::tcp_stream>.
template<class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
 public:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;

  template<class... StreamArgs>
  session(const stub_config& cfg, tcp::socket&& socket, StreamArgs&... args)
      : cfg_(cfg), stream_(std::move(socket), args...),
        timer_(stream_.get_executor()) {}

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
      // A broken request gets a 400; a dead or timed-out peer gets nothing.
      if (ec.category() !=
          http::make_error_code(http::error::bad_target).category())
        return;
      if (cfg_.log)
        log_line("- - -> 400 malformed request (" + ec.message() + ")");
      reply bad = plain_reply(400, "Bad Request");
      return send(bad, 11, false);
    }
    request_ = parser_->release();
    if (cfg_.delay.count() > 0) {
      timer_.expires_after(cfg_.delay);
      return timer_.async_wait(beast::bind_front_handler(
          &session::on_delay, this->shared_from_this()));
    }
    respond();
  }

  void on_delay(beast::error_code ec) {
    if (!ec)
      respond();
  }

  void respond() {
    std::string what;
    if (cfg_.log)
      what = std::string(request_.method_string()) + " " +
             redact(request_.target()) + " -> ";
    if (cfg_.drop) {
      if (cfg_.log)
        log_line(what + "dropped");
      beast::error_code ignored;
      beast::get_lowest_layer(stream_).socket().shutdown(
          tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(stream_).close();
      return;
    }
    reply r = answer(request_.method(), request_.target(), cfg_);
    if (cfg_.log)
      log_line(what + std::to_string(r.http_status) + " " +
               (r.places_status.empty() ? "-" : r.places_status) +
               " results=" + std::to_string(r.results) +
               " bytes=" + std::to_string(r.body.size()));
    send(r, request_.version(), request_.keep_alive());
  }

  void send(reply& r, unsigned version, bool keep_alive) {
    response_ = {};
    response_.version(version);
    response_.result(r.http_status);
    response_.set(http::field::server, "scaffolding on HTTPServer2");
    response_.set(http::field::content_type, r.content_type);
    if (r.http_status == 405)
      response_.set(http::field::allow, "GET");
    response_.body() = std::move(r.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
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
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

// -- accepting connections
// ------------------------------------------------------

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(net::io_context& ioc, const stub_config& cfg, ssl::context* tls,
           tcp::endpoint endpoint)
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
      // Out of descriptors and the like: wait a little instead of spinning.
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

// -- command line
// ---------------------------------------------------------------

constexpr const char* usage = R"(usage: places-stub [options]

A local stand-in for Google's legacy Places Nearby Search:
  GET /maps/api/place/nearbysearch/json?location=LAT,LNG&radius=M&key=K
  GET /maps/api/place/nearbysearch/json?pagetoken=T&key=K
Results are deterministic per (location, radius): 0..60 in total, 20 a page.

options:
  --host ADDR          IP address to listen on (default 127.0.0.1)
  --port N             port to listen on; 0 picks a free one (default 0)
  --threads N          I/O threads (default 1)
  --port-file FILE     once listening, write the port number and a newline to
                       FILE (written to a temporary file, then renamed)
  --tls-cert FILE      PEM certificate chain; with --tls-key, serve HTTPS only
  --tls-key FILE       PEM private key
  --valid-key K        accept only key K (otherwise any non-empty key)
  --results N          every location has N results in total (0..60)
  --log                print one line per request on stdout (keys redacted)
failure switches (they apply to every request; the first one set wins):
  --drop               read each request, then close without answering
  --http-status N      answer with HTTP status N (200..599) and an HTML body
  --invalid-json       answer 200 with truncated JSON
  --fail-status S      answer 200 with a legacy body of status S (e.g.
                       OVER_QUERY_LIMIT) and no results
  --delay-ms N         delay every answer (or drop) by N milliseconds
  --help               show this text

On start it prints "places-stub listening on http(s)://HOST:PORT".
Exit status: 0 on SIGINT/SIGTERM, 1 if it cannot start, 2 on a bad option.
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
    bad_option(option + " needs an integer in [" + std::to_string(min) + ", " +
               std::to_string(max) + "], got '" + text + "'");
  return v;
}

stub_config parse_command_line(int argc, char** argv) {
  stub_config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('=');
        arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    auto value = [&]() -> std::string {
      if (inline_value)
        return *inline_value;
      if (i + 1 >= argc)
        bad_option(arg + " needs a value");
      return argv[++i];
    };
    auto flag = [&]() {
      if (inline_value)
        bad_option(arg + " takes no value");
      return true;
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      std::exit(0);
    } else if (arg == "--host") {
      cfg.host = value();
    } else if (arg == "--port") {
      cfg.port = static_cast<std::uint16_t>(parse_int(arg, value(), 0, 65535));
    } else if (arg == "--threads") {
      cfg.threads = static_cast<int>(parse_int(arg, value(), 1, 256));
    } else if (arg == "--port-file") {
      cfg.port_file = value();
    } else if (arg == "--tls-cert") {
      cfg.tls_cert = value();
    } else if (arg == "--tls-key") {
      cfg.tls_key = value();
    } else if (arg == "--valid-key") {
      cfg.valid_key = value();
      if (cfg.valid_key->empty())
        bad_option("--valid-key needs a non-empty key");
    } else if (arg == "--results") {
      cfg.forced_results =
          static_cast<int>(parse_int(arg, value(), 0, max_total_results));
    } else if (arg == "--fail-status") {
      cfg.fail_status = value();
      if (cfg.fail_status.empty() ||
          cfg.fail_status.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") !=
              std::string::npos)
        bad_option("--fail-status needs a status like OVER_QUERY_LIMIT");
    } else if (arg == "--http-status") {
      cfg.http_status =
          static_cast<unsigned>(parse_int(arg, value(), 200, 599));
    } else if (arg == "--delay-ms") {
      cfg.delay = std::chrono::milliseconds(
          parse_int(arg, value(), 0, 24LL * 3600 * 1000));
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

void write_port_file(const std::string& path, std::uint16_t port) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << '\n';
    if (!out.flush())
      throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

} // namespace

int main(int argc, char** argv) {
  stub_config cfg = parse_command_line(argc, argv);
  beast::error_code ec;
  auto address = net::ip::make_address(
      cfg.host == "localhost" ? std::string("127.0.0.1") : cfg.host, ec);
  if (ec)
    bad_option("--host needs an IP address, got '" + cfg.host + "'");

  try {
    // Declared before the io_context, so sessions die before the context.
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
    std::uint16_t port = server->port();
    server->run();

    net::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&ioc](beast::error_code, int) { ioc.stop(); });

    if (!cfg.port_file.empty())
      write_port_file(cfg.port_file, port);
    std::string shown = address.is_v6() ? "[" + cfg.host + "]" : cfg.host;
    std::cout << "places-stub listening on " << (tls ? "https" : "http")
              << "://" << shown << ":" << port << std::endl;

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
