// Which relays record into a capture directory, for its index: each relay that opens the index
// leaves a marker in its `meta` table naming its process (id and start time) and takes it away
// when it stops in order. A marker whose process is gone is a relay that was killed (or
// crashed), whose open captures never got their rows, so the next list or search rebuilds.
// Several relays may share a directory: each sees the others' markers alive, and none takes
// another's for a killed one (captures/FORMAT.md "The index", table meta).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace mailtap::captures {

// The meta key of a relay's marker: "relay_running:PID:START" (START: the process's start time
// in clock ticks since boot, /proc/PID/stat, so that a process id used again is another process).
inline constexpr std::string_view relay_marker_prefix = "relay_running:";
// The marker of one flag for every relay, written before markers named their process ("1"
// while a relay ran): found "1", the relay that wrote it is taken for a killed one.
inline constexpr std::string_view legacy_running_key = "relay_running";

// A process's start time (field 22 of /proc/PID/stat); nullopt when there is no such process.
std::optional<std::uint64_t> process_start_ticks(pid_t pid);
// This process's marker key.
std::string own_relay_marker();
// True when the marker names a process that is still the one that wrote it.
bool relay_marker_alive(std::string_view key);

}  // namespace mailtap::captures
