// The Places body as it goes back to a client: the legacy Nearby Search JSON
// with `results` cut to the bound, touched no more than that needs. The body
// is scanned once without building a DOM: everything that goes back to the
// client is validated, the dropped result elements are only stepped over
// (their strings and brackets), and everything but them is copied verbatim.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace herd::places {

/// Returns `body` with the top-level "results" array cut to its first `bound`
/// elements, every run of two or more '\n' collapsed to one and trailing
/// newlines removed, so that the client's reply can end with "\n\n". Returns
/// nullopt, and sets `why`, when `body` is not one valid JSON object holding
/// a "results" array and a "status" string; errors inside the elements past
/// the bound are caught only where they break strings or brackets (those
/// elements are cut, and what is returned is valid JSON either way).
std::optional<std::string> cut_results(std::string_view body, int bound,
                                       std::string& why);

/// A legacy-shaped error body: `{"html_attributions":[],"results":[],
/// "status":"UNKNOWN_ERROR","error_message":"<message>"}` with the message
/// JSON-escaped. Used when upstream failed before it sent a usable body.
std::string unknown_error_json(std::string_view message);

/// Collapses runs of '\n' and removes trailing newlines in place.
void normalize_newlines(std::string& json);

} // namespace herd::places
