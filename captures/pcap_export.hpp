// Writing a capture as a pcap file (`mailtap export pcap`), with libpcap: the frames of
// pcap_frames.hpp, Ethernet link type, microsecond timestamps.
#pragma once
#include <filesystem>
#include <string>

#include "captures/pcap_frames.hpp"

namespace mailtap::captures {

// False and a one-line error naming the file when it cannot be written. Returns the number
// of frames written in `frames_written`.
bool write_pcap(const capture& c, const std::filesystem::path& file, const pcap_options& options,
                std::size_t& frames_written, std::string& error);

}  // namespace mailtap::captures
