// The pcap file through libpcap: pcap_open_dead for the link type and snapshot length,
// pcap_dump for each frame (pcap_export.hpp).
#include "captures/pcap_export.hpp"
#include "captures/private_file.hpp"

#include <pcap/pcap.h>

namespace mailtap::captures {

namespace {
// Every frame fits whole: a segment of max_segment_bytes plus its Ethernet, IPv6 and TCP headers.
constexpr int snapshot_length = 65535;
static_assert(max_segment_bytes + 14 + 40 + 20 <= snapshot_length);
}  // namespace

bool write_pcap(const capture& c, const std::filesystem::path& file, const pcap_options& options,
                std::size_t& frames_written, std::string& error) {
  const auto frames = synthesize_frames(c, options);
  pcap_t* dead = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, snapshot_length, PCAP_TSTAMP_PRECISION_MICRO);
  if (!dead) {
    error = file.string() + ": cannot start a pcap file (libpcap)";
    return false;
  }
  if (!make_private_file(file, error)) {
    pcap_close(dead);
    return false;
  }
  pcap_dumper_t* out = pcap_dump_open(dead, file.c_str());
  if (!out) {
    error = file.string() + ": cannot write: " + pcap_geterr(dead);
    pcap_close(dead);
    return false;
  }
  for (const auto& f : frames) {
    pcap_pkthdr header{};
    header.ts.tv_sec = static_cast<time_t>(f.unix_us / 1'000'000);
    header.ts.tv_usec = static_cast<suseconds_t>(f.unix_us % 1'000'000);
    header.caplen = header.len = static_cast<bpf_u_int32>(f.bytes.size());
    pcap_dump(reinterpret_cast<u_char*>(out), &header, reinterpret_cast<const u_char*>(f.bytes.data()));
  }
  const bool ok = pcap_dump_flush(out) == 0;
  pcap_dump_close(out);
  pcap_close(dead);
  if (!ok) {
    error = file.string() + ": cannot write the frames";
    return false;
  }
  frames_written = frames.size();
  return true;
}

}  // namespace mailtap::captures
