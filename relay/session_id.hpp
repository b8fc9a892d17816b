// Session ids (make_session_id's form), which name each session's capture file.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mailtap {

// "20260102-150405-1a2b3c4d-000042": UTC start time, a per-process nonce, the session number.
// Capture files are named by it; the listener names connections it refuses by it too.
std::string make_session_id(std::uint64_t number);
// Whether `id` has make_session_id's form (start second, the run's nonce, the number): a
// capture the relay named, as opposed to a renamed copy or another program's file.
bool is_relay_session_id(std::string_view id);

}  // namespace mailtap
